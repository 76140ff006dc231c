//! Generates the etcd v3 messages and the tonic client and server code from `proto/`, and the
//! serde impls the JSON gateway uses (`pbjson-build`, from the descriptor set protoc writes).
//! `protoc` comes from Debian's `protobuf-compiler` (scripts/install-deps.sh installs it).

fn main() {
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/v3lockpb/v3lock.proto",
        "proto/v3electionpb/v3election.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    if std::env::var_os("PROTOC").is_none() && which("protoc").is_none() {
        panic!(
            "protoc not found: run scripts/install-deps.sh (installs Debian's protobuf-compiler)"
        );
    }
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let descriptors = out_dir.join("etcd_descriptors.bin");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&protos, &["proto"])
        .expect("compiling the etcd .proto files");

    // JSON as etcd's gateway speaks it: proto field names (`range_end`, `ID`, `grantedTTL`),
    // 64-bit integers as strings, bytes as base64, enums by name, default values left out.
    // etcd's gateway skips fields it does not know, so these impls do too.
    let descriptor_set = std::fs::read(&descriptors).expect("reading the descriptor set");
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)
        .expect("registering the descriptor set")
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])
        .expect("generating the JSON impls");
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(bin))
            .find(|candidate| candidate.is_file())
    })
}

//! TLS as a kubeadm control plane runs etcd, side by side with etcd 3.4: client URLs served
//! over TLS with client certificates required (`--cert-file`, `--key-file`,
//! `--client-cert-auth`, `--trusted-ca-file`), peers the same, and `--listen-metrics-urls`
//! serving the kubelet's liveness probe over plain HTTP. etcdctl with the client certificate
//! works on both; without one, or with another CA's, it fails on both; an `https://` URL
//! without a certificate stops both at start-up with etcd's message. A three-member Ballast
//! cluster whose peers speak TLS elects, replicates and serves linearizable reads through every
//! member.
//!
//! Invariants: every wait is bounded; the servers are killed and their temp dirs removed when
//! the test ends, also when it fails.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ballast_conformance::server::free_port;
use ballast_conformance::tls::Pki;
use ballast_conformance::{etcdctl, process};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{PutRequest, RangeRequest};

const CTL_TIMEOUT: Duration = Duration::from_secs(20);

/// `GET path` over plain HTTP/1.0 on 127.0.0.1:`port`: (status line, body).
async fn http_get(port: u16, path: &str) -> Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP response to GET {path}: {text:?}"))?;
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// What one server did with the same requests.
#[derive(Debug, PartialEq)]
struct Seen {
    put_with_cert: (Option<i32>, String),
    get_with_cert: (Option<i32>, String),
    without_cert_failed: bool,
    stranger_cert_failed: bool,
    liveness: String,
    metrics_has_leader: bool,
}

async fn exercise(server: &Server, pki: &Pki, metrics_port: u16) -> Result<Seen> {
    let endpoint = server.client_url();
    let client = pki.etcdctl_args(&pki.client);
    let with = |extra: &[&str]| -> Vec<String> {
        client
            .iter()
            .cloned()
            .chain(extra.iter().map(|a| (*a).to_owned()))
            .collect()
    };
    let args = with(&["put", "/registry/pods/default/web", "v1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let put = etcdctl::run(&endpoint, &args, None, CTL_TIMEOUT).await?;
    let args = with(&["get", "/registry/pods/default/web"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let get = etcdctl::run(&endpoint, &args, None, CTL_TIMEOUT).await?;

    let ca_only = ["--cacert", pki.ca.to_str().unwrap_or_default(), "get", "a"];
    let without = etcdctl::run(&endpoint, &ca_only, None, CTL_TIMEOUT).await?;
    let stranger = pki.stranger()?;
    let args = pki.etcdctl_args(&stranger);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["get", "a"]);
    let foreign = etcdctl::run(&endpoint, &args, None, CTL_TIMEOUT).await?;

    // The kubelet's probe of a kubeadm member, on the metrics URL, over plain HTTP.
    let (status, body) =
        http_get(metrics_port, "/health?exclude=NOSPACE&serializable=true").await?;
    if !status.contains(" 200 ") {
        bail!(
            "{}: GET /health on the metrics URL: {status}",
            server.kind().label()
        );
    }
    let health: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("/health answered {body:?}"))?;
    let (_, metrics) = http_get(metrics_port, "/metrics").await?;

    // The harness's own gRPC clients present the client certificate too.
    let mut clients = server.clients().await?;
    let got = clients
        .kv
        .range(RangeRequest {
            key: b"/registry/pods/default/web".to_vec().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if got.kvs.first().map(|kv| kv.value.as_ref()) != Some(&b"v1"[..]) {
        bail!("{}: gRPC over TLS read {got:?}", server.kind().label());
    }

    Ok(Seen {
        put_with_cert: (put.code, put.stdout_text()),
        get_with_cert: (get.code, get.stdout_text()),
        without_cert_failed: without.code != Some(0),
        stranger_cert_failed: foreign.code != Some(0),
        liveness: health["health"].as_str().unwrap_or_default().to_owned(),
        metrics_has_leader: metrics.contains("etcd_server_has_leader 1"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeadm_style_member_serves_tls_as_etcd_does() {
    let pki = Arc::new(Pki::new("etcd-ca").expect("making certificates"));
    let mut seen = Vec::new();
    for kind in [Kind::Etcd, Kind::Ballast] {
        let metrics_port = free_port().unwrap();
        let metrics_url = format!("http://127.0.0.1:{metrics_port}");
        let server = Server::start_tls(
            kind,
            &pki,
            &[
                "--listen-metrics-urls",
                &metrics_url,
                "--snapshot-count=10000",
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("starting {}: {e:#}", kind.label()));
        let s = exercise(&server, &pki, metrics_port)
            .await
            .unwrap_or_else(|e| {
                server.print_log();
                panic!("{}: {e:#}", kind.label())
            });
        seen.push(s);
    }
    let (etcd, ballast) = (&seen[0], &seen[1]);
    assert_eq!(etcd.put_with_cert, (Some(0), "OK\n".to_owned()));
    assert!(
        etcd.without_cert_failed && etcd.stranger_cert_failed,
        "{etcd:?}"
    );
    assert_eq!(etcd.liveness, "true");
    assert_eq!(ballast, etcd);
}

/// Starts `program` with `args` on fresh ports and a temp data dir, expecting it to exit by
/// itself within a few seconds: (exit code, everything it printed).
fn run_to_exit(program: &std::path::Path, args: &[String]) -> Result<(Option<i32>, String)> {
    let dir = tempfile::tempdir()?;
    let run = process::run_to_exit(
        std::process::Command::new(program)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .current_dir(dir.path()),
        Duration::from_secs(10),
    )?;
    Ok((run.code, run.output()))
}

#[test]
fn an_https_url_without_a_certificate_stops_start_up_as_in_etcd() {
    let client = free_port().unwrap();
    let peer = free_port().unwrap();
    let args: Vec<String> = [
        "--listen-client-urls".to_owned(),
        format!("https://127.0.0.1:{client}"),
        "--advertise-client-urls".to_owned(),
        format!("https://127.0.0.1:{client}"),
        "--listen-peer-urls".to_owned(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".to_owned(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-cluster".to_owned(),
        format!("default=http://127.0.0.1:{peer}"),
    ]
    .into();
    let want = format!(
        "TLS key/cert (--cert-file, --key-file) must be provided for client url \
         https://127.0.0.1:{client} with HTTPS scheme"
    );
    for program in [
        std::path::PathBuf::from("etcd"),
        ballast_conformance::server::ballast_bin(),
    ] {
        let (code, out) = run_to_exit(&program, &args).unwrap();
        assert_ne!(code, Some(0), "{}: {out}", program.display());
        assert!(out.contains(&want), "{}: {out}", program.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_peers_speak_tls_replicates() {
    let pki = Arc::new(Pki::new("etcd-ca").expect("making certificates"));
    let servers = Server::start_cluster_tls(Kind::Ballast, 3, &pki, &[])
        .await
        .expect("starting a three-member cluster over TLS");
    for (i, writer) in servers.iter().enumerate() {
        let key = format!("/registry/configmaps/default/cm-{i}");
        let mut clients = writer.clients().await.unwrap();
        clients
            .kv
            .put(PutRequest {
                key: key.clone().into_bytes().into(),
                value: format!("through m{i}").into_bytes().into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("put through m{i}: {e}"));
        for reader in &servers {
            let mut clients = reader.clients().await.unwrap();
            let got = clients
                .kv
                .range(RangeRequest {
                    key: key.clone().into_bytes().into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                got.kvs.first().map(|kv| kv.value.to_vec()),
                Some(format!("through m{i}").into_bytes()),
                "{} reading {key}",
                reader.name()
            );
        }
    }
    // etcdctl sees every member over TLS.
    let endpoints = servers
        .iter()
        .map(Server::client_url)
        .collect::<Vec<_>>()
        .join(",");
    let mut args: Vec<String> = pki.etcdctl_args(&pki.client);
    args.extend(["member".to_owned(), "list".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etcdctl::run(&endpoints, &args, None, CTL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = out.stdout_text();
    for server in &servers {
        assert!(text.contains(&server.peer_url()), "{text}");
    }
}

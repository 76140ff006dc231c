//! Where Ballast keeps a key when it runs several shards, as a black-box test must know it: the
//! Kubernetes preset of Ballast's partition map (`net/src/partition.rs`), without pins, restated
//! here so the conformance crate keeps depending on the protocol alone.
//!
//! The rule: a key `/registry/<resource>/<anything>` with a non-empty `<resource>` (the first
//! segment after `/registry/`) lives in shard `fnv1a64(<resource>) % shards`; every other key
//! lives in shard 0. Each shard has its own revision counter, so tests use this to know which
//! writes share a counter (and so must get distinct, increasing revisions) and which requests
//! stay in one shard (the ones whose answers are etcd's).
//!
//! Invariant: this agrees with the server's map; `tests` pins the same keys to the same shards
//! as the server's stability test (`placement_is_pinned_to_fnv1a64_for_two_and_four_shards`),
//! so a change on either side fails a test instead of making these tests check the wrong thing.

/// The Kubernetes key prefix the preset spreads over the shards.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// The first key after every `/registry/` key (`'/' + 1 == '0'`): a range starting here holds
/// only keys of shard 0 (every key of this crate's other tests sorts after it).
pub const AFTER_REGISTRY: &[u8] = b"/registry0";

/// FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `<resource>` of a `/registry/<resource>/...` key (`None` for every other key, and for
/// `/registry/<resource>` without a slash after it).
pub fn resource_of(key: &[u8]) -> Option<&[u8]> {
    let after = key.strip_prefix(REGISTRY_PREFIX.as_bytes())?;
    let slash = after.iter().position(|&b| b == b'/')?;
    Some(&after[..slash])
}

/// The shard that keeps `key` on a server running `shards` shards.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    assert!(shards > 0, "a server runs at least one shard");
    match resource_of(key) {
        Some(resource) if !resource.is_empty() => (fnv1a64(resource) % shards as u64) as usize,
        _ => 0,
    }
}

/// Built-in Kubernetes resources (the first segment of their keys), in an order that puts the
/// most common first; for every shard count from 1 to 16 at least one of them lives in shard 0.
pub const KUBE_RESOURCES: [&str; 26] = [
    "pods",
    "events",
    "configmaps",
    "secrets",
    "leases",
    "serviceaccounts",
    "replicasets",
    "minions",
    "roles",
    "statefulsets",
    "daemonsets",
    "controllerrevisions",
    "jobs",
    "cronjobs",
    "services",
    "endpoints",
    "persistentvolumes",
    "ingress",
    "poddisruptionbudgets",
    "priorityclasses",
    "csinodes",
    "storageclasses",
    "clusterroles",
    "rolebindings",
    "limitranges",
    "resourcequotas",
];

/// The first of [`KUBE_RESOURCES`] whose keys live in shard 0 on `shards` shards: writes there
/// count on the same revision counter as every key outside `/registry/`, so on a server where
/// nothing else is written they get etcd's revisions.
pub fn shard0_resource(shards: usize) -> Option<&'static str> {
    KUBE_RESOURCES
        .iter()
        .copied()
        .find(|r| shard_of(format!("{REGISTRY_PREFIX}{r}/x").as_bytes(), shards) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_servers_pinned_placement() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // (key, shard of 2, shard of 4), as in net/src/partition/tests.rs.
        let cases: &[(&str, usize, usize)] = &[
            ("/registry/pods/default/a", 1, 1),
            ("/registry/events/default/a", 0, 0),
            ("/registry/leases/kube-node-lease/n1", 0, 2),
            ("/registry/services/specs/default/kubernetes", 1, 1),
            ("/registry/ranges/serviceips", 1, 3),
            ("/registry/configmaps/default/c", 0, 0),
            ("/registry/minions/node-1", 0, 0),
            ("/registry/namespaces/default", 1, 1),
            (
                "/registry/apiextensions.k8s.io/customresourcedefinitions/x",
                1,
                3,
            ),
            ("/registry/crd.projectcalico.org/ippools/default", 0, 2),
        ];
        for &(key, s2, s4) in cases {
            assert_eq!(shard_of(key.as_bytes(), 2), s2, "2 shards: {key}");
            assert_eq!(shard_of(key.as_bytes(), 4), s4, "4 shards: {key}");
            assert_eq!(shard_of(key.as_bytes(), 1), 0, "1 shard: {key}");
        }
        for key in [
            "/registry/pods",
            "/registry/",
            "/registry//x",
            "/registry0",
            "compact_rev_key",
            "foo",
            "",
        ] {
            assert_eq!(shard_of(key.as_bytes(), 4), 0, "{key:?}");
        }
    }

    #[test]
    fn a_shard0_resource_exists_for_up_to_16_shards() {
        for shards in 1..=16 {
            let r = shard0_resource(shards)
                .unwrap_or_else(|| panic!("no resource in shard 0 of {shards}"));
            assert_eq!(shard_of(format!("/registry/{r}/a").as_bytes(), shards), 0);
        }
        assert_eq!(shard0_resource(1), Some("pods"));
        assert_eq!(shard0_resource(2), Some("events"));
        assert_eq!(shard0_resource(5), Some("serviceaccounts"));
    }
}

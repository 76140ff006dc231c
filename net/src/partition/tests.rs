use super::*;

use ballast_engine::{DeleteRangeRequest, PutRequest, RangeRequest};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn preset(shards: usize) -> PartitionMap {
    PartitionMap::new(shards, Vec::new()).unwrap()
}

fn set(shards: &[usize]) -> ShardSet {
    shards.iter().copied().collect()
}

/// `[prefix, prefix_end(prefix))`, etcd's `--prefix` range.
fn prefix_range(map: &PartitionMap, prefix: &[u8]) -> ShardSet {
    let end = prefix_end(prefix).unwrap_or_else(|| b"\0".to_vec());
    map.shards_of_range(prefix, &end)
}

#[test]
fn fnv1a64_matches_the_published_test_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn preset_places_real_kubernetes_keys_by_their_first_segment() {
    let map = preset(4);
    let cases: &[(&str, usize)] = &[
        ("/registry/pods/default/nginx-7c5ddbdf54-x2k9q", 1),
        ("/registry/pods/kube-system/coredns-5d78c9869d-abcde", 1),
        ("/registry/events/default/nginx.17a8f3c2b1d4e5f6", 0),
        ("/registry/leases/kube-node-lease/node-1", 2),
        ("/registry/leases/kube-system/kube-scheduler", 2),
        // Aggregated APIs and CRDs: the group is the first segment, so it is the resource.
        ("/registry/apiregistration.k8s.io/apiservices/v1.apps", 2),
        ("/registry/stable.example.com/crontabs/default/my-cron", 1),
        ("/registry/stable.example.com/widgets/default/w1", 1),
        ("/registry/ranges/serviceips", 3),
        ("/registry/ranges/servicenodeports", 3),
        ("/registry/masterleases/10.0.0.1", 0),
        ("/registry/deployments/default/web", 3),
        ("/registry/secrets/kube-system/token", 2),
    ];
    for &(key, shard) in cases {
        assert_eq!(map.shard_of(key.as_bytes()), shard, "{key}");
    }
    // Everything that is not `/registry/<resource>/...` lives in shard 0.
    for key in [
        "/registry/pods",
        "/registry/ranges",
        "/registry/",
        "/registry",
        "/registry//x",
        "/registryx/pods/a",
        "/registry0",
        "compact_rev_key",
        "health",
        "foo",
        "",
        "\u{0}",
    ] {
        assert_eq!(map.shard_of(key.as_bytes()), 0, "{key:?}");
    }
    // Binary keys are keys like any other.
    assert_eq!(map.shard_of(b"\xff\xfe"), 0);
    assert_eq!(
        map.shard_of(b"/registry/pods/\xff"),
        map.shard_of(b"/registry/pods/a")
    );
}

#[test]
fn placement_is_pinned_to_fnv1a64_for_two_and_four_shards() {
    // These numbers are a format: data written under one placement is found under it. A change
    // of hash or of the resource rule fails here before it moves anyone's keys.
    let cases: &[(&str, usize, usize)] = &[
        // (key, shard of 2, shard of 4)
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
    let (two, four, one) = (preset(2), preset(4), preset(1));
    for &(key, s2, s4) in cases {
        assert_eq!(two.shard_of(key.as_bytes()), s2, "2 shards: {key}");
        assert_eq!(four.shard_of(key.as_bytes()), s4, "4 shards: {key}");
        assert_eq!(one.shard_of(key.as_bytes()), 0, "1 shard: {key}");
    }
    // And the same map built twice agrees (no per-process randomness).
    assert_eq!(preset(4), preset(4));
}

#[test]
fn ranges_follow_etcds_rules() {
    let map = preset(4);
    // Empty range_end: one key.
    assert_eq!(
        map.shards_of_range(b"/registry/pods/default/a", b""),
        set(&[1])
    );
    assert_eq!(map.shards_of_range(b"/registry/pods", b""), set(&[0]));
    // Inverted or empty ranges touch nothing.
    assert!(map.shards_of_range(b"b", b"a").is_empty());
    assert!(map.shards_of_range(b"a", b"a").is_empty());
    assert!(map
        .shards_of_range(b"/registry/pods/", b"/registry/events/")
        .is_empty());
    // `key + "\0"` as range_end is the one key, too.
    assert_eq!(
        map.shards_of_range(b"/registry/pods/x", b"/registry/pods/x\0"),
        set(&[1])
    );
    assert_eq!(
        map.shards_of_range(b"/registry/pods", b"/registry/pods\0"),
        set(&[0])
    );
    // "\0": every key from `key` on. The whole keyspace is every shard...
    assert_eq!(map.shards_of_range(b"\0", b"\0"), ShardSet::all(4));
    assert_eq!(map.shards_of_range(b"", b"\0"), ShardSet::all(4));
    // ... but keys from "a" on are all after `/registry0` ('/' < 'a'): shard 0 only.
    assert_eq!(map.shards_of_range(b"a", b"\0"), set(&[0]));
    assert_eq!(map.shards_of_range(b"/registry0", b"\0"), set(&[0]));
    // From inside one resource to the end: that resource, then everything after it.
    assert_eq!(
        map.shards_of_range(b"/registry/pods/x", b"\0"),
        ShardSet::all(4)
    );
}

#[test]
fn a_range_inside_one_resource_is_one_shard() {
    let map = preset(4);
    assert_eq!(prefix_range(&map, b"/registry/pods/").single(), Some(1));
    assert_eq!(
        prefix_range(&map, b"/registry/pods/default/").single(),
        Some(1)
    );
    assert_eq!(
        map.shards_of_range(b"/registry/pods/a", b"/registry/pods/b")
            .single(),
        Some(1)
    );
    assert_eq!(
        prefix_range(&map, b"/registry/apiregistration.k8s.io/apiservices/").single(),
        Some(2)
    );
    assert_eq!(
        prefix_range(&map, b"/registry/stable.example.com/").single(),
        Some(1)
    );
    assert_eq!(prefix_range(&map, b"/registry/ranges/").single(), Some(3));
    assert_eq!(prefix_range(&map, b"/registry/events/").single(), Some(0));
    // The empty resource `/registry//` is shard 0's.
    assert_eq!(prefix_range(&map, b"/registry//").single(), Some(0));
    // Keys outside `/registry/` are shard 0's.
    assert_eq!(map.shards_of_range(b"a", b"z").single(), Some(0));
    assert_eq!(
        map.shards_of_range(b"/reg", b"/registry/").single(),
        Some(0)
    );
}

#[test]
fn a_range_across_resources_is_every_shard_it_may_touch() {
    for shards in [2, 4, 8, 64] {
        let map = preset(shards);
        let all = ShardSet::all(shards);
        // `/registry/` itself (shard 0) and every resource.
        assert_eq!(prefix_range(&map, b"/registry/"), all, "{shards}");
        assert_eq!(prefix_range(&map, b"/"), all, "{shards}");
        // Two resources and, between them, any name sorting there.
        assert_eq!(
            map.shards_of_range(b"/registry/pods/", b"/registry/services/"),
            all
        );
        // Without the trailing slash the prefix also covers `/registry/pods-x/...`.
        assert_eq!(prefix_range(&map, b"/registry/pods"), all, "{shards}");
    }
    // One shard: everything is shard 0.
    assert_eq!(prefix_range(&preset(1), b"/registry/"), set(&[0]));
}

#[test]
fn pins_override_the_preset_and_the_longest_prefix_wins() {
    let pins = vec![
        Pin::new("/registry/events/", 1),
        Pin::new("/registry/", 3),
        Pin::new("/registry/events/kube-system/", 2),
    ];
    let map = PartitionMap::new(4, pins.clone()).unwrap();
    assert_eq!(map.shard_of(b"/registry/events/default/e1"), 1);
    assert_eq!(map.shard_of(b"/registry/events/kube-system/e2"), 2);
    assert_eq!(map.shard_of(b"/registry/events/"), 1);
    assert_eq!(map.shard_of(b"/registry/pods/default/p"), 3);
    assert_eq!(map.shard_of(b"/registry/"), 3);
    assert_eq!(map.shard_of(b"/registry"), 0);
    assert_eq!(map.shard_of(b"foo"), 0);
    // The order the pins are given in does not matter.
    let mut reversed = pins;
    reversed.reverse();
    assert_eq!(PartitionMap::new(4, reversed).unwrap(), map);
    assert_eq!(
        map.pins()
            .iter()
            .map(|p| p.prefix.len())
            .collect::<Vec<_>>(),
        vec![29, 17, 10],
        "longest first"
    );

    // Ranges are cut where pins start and stop.
    assert_eq!(prefix_range(&map, b"/registry/"), set(&[1, 2, 3]));
    assert_eq!(prefix_range(&map, b"/registry/events/"), set(&[1, 2]));
    assert_eq!(
        prefix_range(&map, b"/registry/events/kube-system/").single(),
        Some(2)
    );
    assert_eq!(
        map.shards_of_range(b"/registry/events/a", b"/registry/events/b"),
        set(&[1])
    );
    assert_eq!(map.shards_of_range(b"\0", b"\0"), set(&[0, 1, 2, 3]));
    assert_eq!(
        map.shards_of_range(b"/registry/", b"\0"),
        set(&[0, 1, 2, 3])
    );
    assert_eq!(map.shards_of_range(b"a", b"\0"), set(&[0]));

    // A pin on one resource moves it alone; the preset still spreads the rest.
    let map = PartitionMap::new(4, vec![Pin::new("/registry/events/", 3)]).unwrap();
    assert_eq!(map.shard_of(b"/registry/events/default/e"), 3);
    assert_eq!(preset(4).shard_of(b"/registry/events/default/e"), 0);
    assert_eq!(map.shard_of(b"/registry/pods/default/p"), 1);
    assert_eq!(prefix_range(&map, b"/registry/events/").single(), Some(3));
    assert_eq!(prefix_range(&map, b"/registry/"), ShardSet::all(4));

    // Everything under `/registry/` pinned: a `/registry/` range is that one shard.
    let map = PartitionMap::new(4, vec![Pin::new("/registry/", 2)]).unwrap();
    assert_eq!(prefix_range(&map, b"/registry/").single(), Some(2));
    assert_eq!(map.shards_of_range(b"\0", b"\0"), set(&[0, 2]));
}

#[test]
fn a_pin_may_end_the_keyspace_or_split_a_resource() {
    // A prefix of 0xff bytes has no end key: it runs to the end of the keyspace.
    let map = PartitionMap::new(2, vec![Pin::new(b"\xff".to_vec(), 1)]).unwrap();
    assert_eq!(map.shard_of(b"\xff\x01"), 1);
    assert_eq!(map.shards_of_range(b"\0", b"\0"), set(&[0, 1]));
    assert_eq!(map.shards_of_range(b"\xff", b"\0"), set(&[1]));
    assert_eq!(map.shards_of_range(b"a", b"\0"), set(&[0, 1]));

    // A pin inside a resource (one namespace of pods) cuts the resource's range in three.
    let map = PartitionMap::new(4, vec![Pin::new("/registry/pods/big-ns/", 3)]).unwrap();
    assert_eq!(prefix_range(&map, b"/registry/pods/"), set(&[1, 3]));
    assert_eq!(prefix_range(&map, b"/registry/pods/small/"), set(&[1]));
    // A pin that is not on a segment boundary still matches by bytes.
    let map = PartitionMap::new(4, vec![Pin::new("/registry/po", 2)]).unwrap();
    assert_eq!(map.shard_of(b"/registry/pods/default/p"), 2);
    assert_eq!(map.shard_of(b"/registry/pods"), 2);
    assert_eq!(prefix_range(&map, b"/registry/pods/").single(), Some(2));
}

#[test]
fn bad_pins_are_refused_with_a_clear_message() {
    let err = PartitionMap::new(4, vec![Pin::new("/registry/events/", 4)]).unwrap_err();
    assert_eq!(
        err,
        PartitionError::ShardOutOfRange {
            prefix: "/registry/events/".into(),
            shard: 4,
            shards: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "prefix \"/registry/events/\" is pinned to shard 4, but there are 4 shards (numbered 0 to 3)"
    );
    let err = PartitionMap::new(4, vec![Pin::new("", 1)]).unwrap_err();
    assert_eq!(err, PartitionError::EmptyPrefix { shard: 1 });
    assert!(err.to_string().contains("empty prefix"), "{err}");
    let err = PartitionMap::new(
        4,
        vec![
            Pin::new("/registry/events/", 1),
            Pin::new("/registry/leases/", 2),
            Pin::new("/registry/events/", 3),
        ],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "prefix \"/registry/events/\" is pinned twice (to shard 1 and to shard 3)"
    );
    assert_eq!(
        PartitionMap::new(0, Vec::new()).unwrap_err(),
        PartitionError::NoShards
    );
    assert_eq!(
        PartitionMap::new(MAX_SHARDS + 1, Vec::new()).unwrap_err(),
        PartitionError::TooManyShards {
            shards: MAX_SHARDS + 1,
            max: MAX_SHARDS
        }
    );
    assert_eq!(
        PartitionMap::new(MAX_SHARDS, Vec::new()).unwrap().shards(),
        MAX_SHARDS
    );
}

#[test]
fn the_map_from_settings_counts_shards_per_core_when_shards_is_zero() {
    let rules = ballast_tuning::settings::parse_partition(
        "partition",
        "/registry/events/=3,/registry/leases/=1",
    )
    .unwrap();
    let settings = Settings {
        shards: 0,
        partition: rules,
        ..Settings::default()
    };
    let map = PartitionMap::from_settings(&settings, 4).unwrap();
    assert_eq!(map.shards(), 4);
    assert_eq!(map.shard_of(b"/registry/events/default/e"), 3);
    assert_eq!(map.shard_of(b"/registry/leases/ns/l"), 1);
    let err = PartitionMap::from_settings(&settings, 2).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::ShardOutOfRange {
                shard: 3,
                shards: 2,
                ..
            }
        ),
        "{err}"
    );
    let settings = Settings {
        shards: 8,
        ..settings
    };
    assert_eq!(
        PartitionMap::from_settings(&settings, 2).unwrap().shards(),
        8
    );
    // The xlarge profile's pin fits its own shard count.
    let xlarge = ballast_tuning::Profile::by_name("xlarge")
        .unwrap()
        .settings();
    let map = PartitionMap::from_settings(&xlarge, 1).unwrap();
    assert_eq!(map.shard_of(b"/registry/events/default/e"), 15);
}

fn range_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        ..RangeRequest::default()
    })
}

fn put_op(key: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        ..PutRequest::default()
    })
}

fn compare(key: &str, range_end: &str) -> Compare {
    Compare {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        ..Compare::default()
    }
}

#[test]
fn txn_shards_cover_compares_both_branches_and_nested_txns() {
    let map = preset(4);
    // Kubernetes' optimistic update: compare the key's mod revision, put it or read it back.
    let pod = "/registry/pods/default/nginx";
    let update = TxnRequest {
        compare: vec![compare(pod, "")],
        success: vec![put_op(pod)],
        failure: vec![range_op(pod, "")],
    };
    assert_eq!(map.shards_of_txn(&update).single(), Some(1));
    assert!(map.shards_of_txn(&TxnRequest::default()).is_empty());

    // The failure branch counts although only one branch runs.
    let across = TxnRequest {
        compare: vec![compare(pod, "")],
        success: vec![put_op(pod)],
        failure: vec![put_op("/registry/events/default/e")],
    };
    assert_eq!(map.shards_of_txn(&across), set(&[0, 1]));

    // A compare over a range, a delete-range, and a txn nested two deep.
    let nested = TxnRequest {
        compare: vec![compare("/registry/ranges/", "/registry/ranges0")],
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"/registry/pods/default/"),
            range_end: Bytes::from_static(b"/registry/pods/default0"),
            prev_kv: false,
        })],
        failure: vec![RequestOp::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp::Txn(TxnRequest {
                compare: Vec::new(),
                success: vec![put_op("/registry/leases/kube-node-lease/n1")],
                failure: Vec::new(),
            })],
            failure: Vec::new(),
        })],
    };
    assert_eq!(map.shards_of_txn(&nested), set(&[1, 2, 3]));
    // A txn over the whole keyspace touches every shard.
    let everything = TxnRequest {
        compare: Vec::new(),
        success: vec![range_op("\0", "\0")],
        failure: Vec::new(),
    };
    assert_eq!(map.shards_of_txn(&everything), ShardSet::all(4));
}

#[test]
fn shard_sets_are_bitsets_with_one_shard_or_many() {
    assert!(ShardSet::all(0).is_empty());
    assert_eq!(ShardSet::all(1).single(), Some(0));
    assert_eq!(ShardSet::all(64).len(), 64);
    assert_eq!(ShardSet::all(65).len(), 65);
    assert!(ShardSet::all(65).contains(64) && !ShardSet::all(65).contains(65));
    assert_eq!(ShardSet::all(MAX_SHARDS).len(), MAX_SHARDS);
    let mut s = ShardSet::new();
    assert_eq!(s.single(), None);
    s.insert(200);
    assert_eq!(s.single(), Some(200));
    s.insert(3);
    s.insert(3);
    assert_eq!(s.single(), None);
    assert_eq!(s.len(), 2);
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 200]);
    assert_eq!(s.to_string(), "3, 200");
    assert_eq!(format!("{s:?}"), "{3, 200}");
    assert!(!s.contains(MAX_SHARDS));
    let mut t = ShardSet::one(7);
    t.union_with(&s);
    assert_eq!(t, set(&[3, 7, 200]));
}

/// Keys built from the pieces that matter to the rules (the registry prefix, slashes, bytes
/// around '/' and '0', 0x00 and 0xff) plus random bytes.
fn random_key(rng: &mut StdRng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"/registry/",
        b"/registry",
        b"/registry/pods/",
        b"/registry0",
        b"/",
        b"pods",
        b"events",
        b"leases",
        b"a",
        b"b",
        b"0",
        b"-",
        b".",
        b"\0",
        b"\x01",
        b"\xff",
    ];
    let mut key = Vec::new();
    for _ in 0..rng.gen_range(0..5) {
        if rng.gen_bool(0.8) {
            key.extend_from_slice(PIECES[rng.gen_range(0..PIECES.len())]);
        } else {
            key.push(rng.gen());
        }
    }
    key
}

fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        b"" => k == key,
        b"\0" => k >= key,
        end => key <= k && k < end,
    }
}

#[test]
fn property_every_key_of_a_range_maps_into_its_shard_set() {
    let mut rng = StdRng::seed_from_u64(0x0ba1_1a57);
    let mut checked = 0usize;
    for _ in 0..300 {
        let shards = [1, 2, 3, 4, 8, 64][rng.gen_range(0..6)];
        let mut pins: Vec<Pin> = Vec::new();
        for _ in 0..rng.gen_range(0..4) {
            let prefix = random_key(&mut rng);
            if !prefix.is_empty() && !pins.iter().any(|p| p.prefix == prefix) {
                pins.push(Pin::new(prefix, rng.gen_range(0..shards)));
            }
        }
        let map = PartitionMap::new(shards, pins.clone()).unwrap();
        for _ in 0..40 {
            let key = random_key(&mut rng);
            let range_end = match rng.gen_range(0..5) {
                0 => Vec::new(),
                1 => b"\0".to_vec(),
                2 => prefix_end(&key).unwrap_or_else(|| b"\0".to_vec()),
                3 => [key.as_slice(), &random_key(&mut rng)].concat(),
                _ => random_key(&mut rng),
            };
            let got = map.shards_of_range(&key, &range_end);
            assert!(
                got.iter().all(|s| s < shards),
                "{got:?} names a shard >= {shards}"
            );
            if range_end.is_empty() {
                assert_eq!(got, ShardSet::one(map.shard_of(&key)));
            }
            // Keys near the range's edges and the pins' edges, and anywhere.
            let mut candidates = vec![key.clone()];
            let bounds = [key.as_slice(), range_end.as_slice()]
                .into_iter()
                .chain(pins.iter().map(|p| p.prefix.as_slice()));
            for bound in bounds {
                for cut in 0..=bound.len() {
                    candidates.push([&bound[..cut], &random_key(&mut rng)].concat());
                }
                if let Some((&last, head)) = bound.split_last() {
                    let below = [head, &[last.wrapping_sub(1)], &random_key(&mut rng)].concat();
                    candidates.push(below);
                }
            }
            for _ in 0..10 {
                candidates.push(random_key(&mut rng));
            }
            for k in candidates.iter().filter(|k| in_range(k, &key, &range_end)) {
                let shard = map.shard_of(k);
                assert!(
                    got.contains(shard),
                    "key {k:?} (shard {shard}) in range [{key:?}, {range_end:?}) \
                     outside {got:?}; {shards} shards, pins {pins:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "only {checked} keys landed inside ranges");
}

//! Every workload, run small against the reference etcd: its counts must add up against what
//! the server holds afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ballast_bench::driver::run;
use ballast_bench::keys::KeyGen;
use ballast_bench::workload::pager::list_all;
use ballast_bench::workload::{k8s, list, put, range, txn_cas, watch};
use ballast_proto::etcdserverpb::RangeRequest;
use common::{etcd, pool, spec};

fn keys(prefix: &str, key_space: u64, sequential: bool) -> KeyGen {
    KeyGen {
        prefix: prefix.into(),
        key_size: 16,
        key_space,
        sequential,
    }
}

async fn count_prefix(p: &ballast_bench::conn::Pool, g: &KeyGen) -> i64 {
    let (key, range_end) = g.prefix_range();
    let req = RangeRequest {
        key,
        range_end,
        count_only: true,
        ..Default::default()
    };
    p.kv(0).range(req).await.expect("count").into_inner().count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_writes_every_counted_key() {
    let server = etcd().await;
    let p = pool(&server, 2).await;
    let g = keys("/t/put/", 1000, true);
    let out = run(Arc::new(put::Put::new(g.clone(), 64)), &p, &spec(4, 300))
        .await
        .expect("runs");
    let r = &out.result;
    assert!(r.counts_add_up(), "{r:?}");
    assert_eq!(r.ops, 300);
    assert_eq!(r.successes, 300, "errors: {:?}", r.errors);
    assert_eq!(out.latency.count(), 300);
    assert!(r.qps > 0.0 && r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
    // Sequential keys 0..300 of a 1000-key space: exactly 300 distinct keys now exist.
    assert_eq!(count_prefix(&p, &g).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_preloaded_keys() {
    let server = etcd().await;
    let p = pool(&server, 1).await;
    let g = keys("/t/range/", 100, false);
    for serializable in [false, true] {
        let w = range::Range::new(g.clone(), 32, serializable, None, true);
        let r = run(Arc::new(w), &p, &spec(4, 200))
            .await
            .expect("runs")
            .result;
        assert!(r.counts_add_up());
        assert_eq!((r.ops, r.successes), (200, 200), "errors: {:?}", r.errors);
        assert_eq!(r.counters["kvs_read"], 200, "one key per read");
    }
    assert_eq!(
        count_prefix(&p, &g).await,
        100,
        "preload wrote the key space"
    );
    let w = range::Range::new(g.clone(), 32, false, Some(10), false);
    let r = run(Arc::new(w), &p, &spec(2, 50))
        .await
        .expect("runs")
        .result;
    assert_eq!(r.successes, 50);
    assert_eq!(r.counters["kvs_read"], 500, "limit 10 per prefix read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_cas_successes_equal_versions_written() {
    let server = etcd().await;
    let p = pool(&server, 1).await;
    let g = keys("/t/cas/", 2, false);
    let w = txn_cas::TxnCas::new(g.clone(), 16, 1000);
    let r = run(Arc::new(w), &p, &spec(8, 200))
        .await
        .expect("runs")
        .result;
    assert!(r.counts_add_up());
    assert_eq!(r.ops, 200);
    // Every successful GuaranteedUpdate is exactly one Put: versions add up to successes.
    let (key, range_end) = g.prefix_range();
    let kvs = p
        .kv(0)
        .range(RangeRequest {
            key,
            range_end,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .kvs;
    let versions: i64 = kvs.iter().map(|kv| kv.version).sum();
    assert_eq!(versions as u64, r.successes, "errors: {:?}", r.errors);
    println!(
        "txn-cas: {} successes, {} conflicts",
        r.successes,
        r.counters.get("conflicts").unwrap_or(&0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_equal_puts_times_watchers() {
    let server = etcd().await;
    let p = pool(&server, 2).await;
    let w = watch::Watch::new(keys("/t/watch/", 50, false), 32, 3, Duration::from_secs(10));
    let out = run(Arc::new(w), &p, &spec(2, 150)).await.expect("runs");
    let r = &out.result;
    assert!(r.counts_add_up());
    assert_eq!(r.successes, 150, "errors: {:?}", r.errors);
    assert_eq!(r.counters["puts_total"], 150);
    assert_eq!(r.counters["events_expected"], 450);
    assert_eq!(r.counters["events_received"], 450);
    assert_eq!(r.counters["watchers_lost"], 0);
    assert_eq!(
        out.latencies["event"].count(),
        450,
        "every event's latency measured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_cover_every_key_once() {
    let server = etcd().await;
    let p = pool(&server, 1).await;
    let g = keys("/t/list/", 250, true);
    let w = list::List::new(g.clone(), 16, 40, false);
    let r = run(Arc::new(w), &p, &spec(2, 6))
        .await
        .expect("runs")
        .result;
    assert!(r.counts_add_up());
    assert_eq!(r.successes, 6, "errors: {:?}", r.errors);
    assert_eq!(r.counters["lists"], 6);
    assert_eq!(r.counters["keys_listed"], 6 * 250);
    assert!(!r.counters.contains_key("list_mismatch"));
    // And directly: one listing returns each preloaded key exactly once, in 7 pages of <= 40.
    let (key, range_end) = g.prefix_range();
    let listing = list_all(&mut p.kv(0), key, range_end, 40, false)
        .await
        .expect("lists");
    let expected: Vec<_> = (0..250).map(|n| g.key(n)).collect();
    assert_eq!(listing.keys, expected);
    assert_eq!(listing.pages, 7);
    assert_eq!(r.counters["pages"], 6 * 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_mix_counts_add_up() {
    let server = etcd().await;
    let p = pool(&server, 2).await;
    let cfg = k8s::K8sConfig {
        resources: vec!["pods".into(), "configmaps".into()],
        namespaces: 3,
        objects: 30,
        value_min: 1024,
        value_max: 4096,
        page_size: 7,
        compact_every: Duration::from_millis(400),
        event_ttl_s: 30,
        max_retries: 100,
    };
    let mut s = spec(4, 1_000_000);
    s.duration = Some(Duration::from_secs(2));
    let r = run(Arc::new(k8s::K8s::new(cfg)), &p, &s)
        .await
        .expect("runs")
        .result;
    assert!(r.counts_add_up());
    assert!(r.ops > 50, "ran: {r:?}");
    let kinds: u64 = [
        "op_get",
        "op_list",
        "op_create",
        "op_update",
        "op_delete",
        "op_event",
    ]
    .iter()
    .map(|k| r.counters.get(*k).copied().unwrap_or(0))
    .sum();
    assert_eq!(kinds, r.ops, "every operation has exactly one kind");
    assert!(r.counters["compactions"] >= 1, "{:?}", r.counters);
    assert!(r.counters["watch_events"] > 0);
    assert_eq!(r.counters["watchers"], 3, "one per resource plus events");
    assert_eq!(r.counters["watchers_lost"], 0);
    assert_eq!(r.error_total, 0, "errors: {:?}", r.errors);
}

//! kube-apiserver's compaction recipe, side by side with etcd: a txn on `compact_rev_key`
//! (compare its version, put the revision to compact) and then Compact at that revision, as the
//! apiserver does every few minutes. Each side's transcript of revisions, txn outcomes and
//! errors must be equal, and reads below the compaction fail on both.
//!
//! The objects written live under a resource that Ballast keeps in shard 0 with as many shards
//! as it runs (`pods` with one shard; see `ballast_conformance::partition`), beside
//! `compact_rev_key`: then every write counts on one revision counter, as in etcd, and the
//! transcripts stay comparable revision for revision with any `BALLAST_SHARDS`. Compaction over
//! objects in several shards is checked by `kube_traffic.rs`.

use anyhow::Result;
use ballast_conformance::partition::shard0_resource;
use ballast_conformance::{Pair, Server};
use ballast_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ballast_proto::etcdserverpb::request_op::Request;
use ballast_proto::etcdserverpb::{
    CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use bytes::Bytes;

const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";

/// One round of the apiserver's compactor: claim `rev` if the key is still at `version`.
fn claim(version: i64, rev: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: Bytes::from_static(COMPACT_REV_KEY),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::Version(version)),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from_static(COMPACT_REV_KEY),
                value: Bytes::from(rev.to_string()),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: Bytes::from_static(COMPACT_REV_KEY),
                ..Default::default()
            })),
        }],
    }
}

async fn scenario(server: &Server, resource: &str) -> Result<Vec<String>> {
    let mut c = server.clients().await?;
    let mut out = Vec::new();
    let mut version = 0;
    for round in 0..3 {
        for i in 0..5 {
            let key = format!("/registry/{resource}/default/p{i}");
            let value = format!("round {round}");
            c.kv.put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .await?;
        }
        let current =
            c.kv.range(RangeRequest {
                key: "x".into(),
                ..Default::default()
            })
            .await?;
        let rev = current.into_inner().header.unwrap_or_default().revision;
        let txn = c.kv.txn(claim(version, rev)).await?.into_inner();
        out.push(format!(
            "round {round}: claim v{version} rev {rev} -> succeeded {} header {}",
            txn.succeeded,
            txn.header.unwrap_or_default().revision
        ));
        if txn.succeeded {
            version += 1;
            let compacted =
                c.kv.compact(CompactionRequest {
                    revision: rev,
                    physical: true,
                })
                .await?;
            out.push(format!(
                "compact {rev} header {}",
                compacted.into_inner().header.unwrap_or_default().revision
            ));
            let old =
                c.kv.range(RangeRequest {
                    key: format!("/registry/{resource}/default/p0").into(),
                    revision: rev - 1,
                    ..Default::default()
                })
                .await;
            match old {
                Ok(r) => out.push(format!(
                    "read below compaction succeeded: {:?}",
                    r.into_inner().kvs
                )),
                Err(s) => out.push(format!(
                    "read below compaction: {:?} {}",
                    s.code(),
                    s.message()
                )),
            }
        }
    }
    // A stale compactor (an apiserver that lost the race) claims with an old version and fails.
    let stale = c.kv.txn(claim(0, 1)).await?.into_inner();
    out.push(format!("stale claim succeeded {}", stale.succeeded));
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_compaction_recipe_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let shards = pair.ballast.shard_count().await?;
    let resource = shard0_resource(shards)
        .unwrap_or_else(|| panic!("no resource of the list lives in shard 0 of {shards}"));
    let etcd = scenario(&pair.etcd, resource).await?;
    let ballast = scenario(&pair.ballast, resource).await?;
    assert!(etcd.iter().any(|l| l.contains("OutOfRange")), "{etcd:?}");
    assert_eq!(
        etcd, ballast,
        "compaction transcripts differ (left: etcd, right: ballast)"
    );
    Ok(())
}

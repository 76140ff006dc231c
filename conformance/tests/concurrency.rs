//! The Lock and Election services, run as the same scenario against the reference etcd and
//! Ballast: each side must block and release waiters the same way, and the transcripts of
//! keys, values, revisions and errors must be equal.

use std::time::Duration;

use anyhow::{ensure, Result};
use ballast_conformance::{Pair, Server};
use ballast_proto::etcdserverpb::lease_client::LeaseClient;
use ballast_proto::etcdserverpb::LeaseGrantRequest;
use ballast_proto::v3electionpb::election_client::ElectionClient;
use ballast_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use ballast_proto::v3lockpb::lock_client::LockClient;
use ballast_proto::v3lockpb::{LockRequest, UnlockRequest};
use bytes::Bytes;

const LEASE_A: i64 = 0x1000;
const LEASE_B: i64 = 0x2000;
/// How long a waiter must stay blocked to count as blocked.
const BLOCKED_FOR: Duration = Duration::from_millis(300);
/// Upper bound for a released waiter to return.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

fn err_line(status: &tonic::Status) -> String {
    format!("error {:?} {}", status.code(), status.message())
}

async fn grant_leases(server: &Server) -> Result<()> {
    let mut lease = LeaseClient::new(server.channel().await?);
    for id in [LEASE_A, LEASE_B] {
        lease.lease_grant(LeaseGrantRequest { ttl: 60, id }).await?;
    }
    Ok(())
}

async fn lock_scenario(server: &Server) -> Result<Vec<String>> {
    grant_leases(server).await?;
    let mut out = Vec::new();
    let ch = server.channel().await?;
    let mut lock = LockClient::new(ch.clone());
    let first = lock
        .lock(LockRequest {
            name: Bytes::from_static(b"L"),
            lease: LEASE_A,
        })
        .await?
        .into_inner();
    out.push(format!(
        "locked {} rev {}",
        String::from_utf8_lossy(&first.key),
        first.header.unwrap_or_default().revision
    ));

    let mut second_client = LockClient::new(ch.clone());
    let second = tokio::spawn(async move {
        second_client
            .lock(LockRequest {
                name: Bytes::from_static(b"L"),
                lease: LEASE_B,
            })
            .await
    });
    tokio::time::sleep(BLOCKED_FOR).await;
    ensure!(
        !second.is_finished(),
        "{}: a second Lock did not wait for the first",
        server.kind().label()
    );

    let unlocked = lock
        .unlock(UnlockRequest {
            key: first.key.clone(),
        })
        .await?
        .into_inner();
    out.push(format!(
        "unlocked rev {}",
        unlocked.header.unwrap_or_default().revision
    ));
    let second = tokio::time::timeout(RELEASE_WITHIN, second)
        .await???
        .into_inner();
    out.push(format!(
        "locked {} rev {}",
        String::from_utf8_lossy(&second.key),
        second.header.unwrap_or_default().revision
    ));
    lock.unlock(UnlockRequest { key: second.key }).await?;

    match lock
        .lock(LockRequest {
            name: Bytes::from_static(b"L"),
            lease: 0x9999,
        })
        .await
    {
        Ok(resp) => out.push(format!("unexpected lock {:?}", resp.into_inner().key)),
        Err(status) => out.push(err_line(&status)),
    }
    Ok(out)
}

async fn election_scenario(server: &Server) -> Result<Vec<String>> {
    grant_leases(server).await?;
    let mut out = Vec::new();
    let ch = server.channel().await?;
    let mut election = ElectionClient::new(ch.clone());
    let name = Bytes::from_static(b"E");

    match election.leader(LeaderRequest { name: name.clone() }).await {
        Ok(_) => out.push("unexpected leader".into()),
        Err(status) => out.push(err_line(&status)),
    }

    let a = election
        .campaign(CampaignRequest {
            name: name.clone(),
            lease: LEASE_A,
            value: Bytes::from_static(b"v1"),
        })
        .await?
        .into_inner();
    let leader_a: LeaderKey = a.leader.clone().unwrap_or_default();
    out.push(format!(
        "campaign a: key {} rev {} header {}",
        String::from_utf8_lossy(&leader_a.key),
        leader_a.rev,
        a.header.unwrap_or_default().revision
    ));

    let mut observe = election
        .observe(LeaderRequest { name: name.clone() })
        .await?
        .into_inner();
    let first = tokio::time::timeout(RELEASE_WITHIN, observe.message())
        .await??
        .unwrap_or_default();
    out.push(format!(
        "observe: {}",
        String::from_utf8_lossy(&first.kv.unwrap_or_default().value)
    ));

    let mut other = ElectionClient::new(ch.clone());
    let campaign_name = name.clone();
    let b = tokio::spawn(async move {
        other
            .campaign(CampaignRequest {
                name: campaign_name,
                lease: LEASE_B,
                value: Bytes::from_static(b"v2"),
            })
            .await
    });
    tokio::time::sleep(BLOCKED_FOR).await;
    ensure!(
        !b.is_finished(),
        "{}: a second Campaign did not wait for the leader",
        server.kind().label()
    );

    let p = election
        .proclaim(ProclaimRequest {
            leader: Some(leader_a.clone()),
            value: Bytes::from_static(b"v1b"),
        })
        .await?
        .into_inner();
    out.push(format!(
        "proclaim rev {}",
        p.header.unwrap_or_default().revision
    ));
    let seen = tokio::time::timeout(RELEASE_WITHIN, observe.message())
        .await??
        .unwrap_or_default();
    out.push(format!(
        "observe: {}",
        String::from_utf8_lossy(&seen.kv.unwrap_or_default().value)
    ));

    let stale = LeaderKey {
        rev: leader_a.rev + 1000,
        ..leader_a.clone()
    };
    match election
        .proclaim(ProclaimRequest {
            leader: Some(stale),
            value: Bytes::from_static(b"x"),
        })
        .await
    {
        Ok(_) => out.push("unexpected proclaim".into()),
        Err(status) => out.push(err_line(&status)),
    }

    let leader = election
        .leader(LeaderRequest { name: name.clone() })
        .await?
        .into_inner();
    out.push(format!(
        "leader: {}",
        String::from_utf8_lossy(&leader.kv.unwrap_or_default().value)
    ));

    let r = election
        .resign(ResignRequest {
            leader: Some(leader_a),
        })
        .await?
        .into_inner();
    out.push(format!(
        "resign rev {}",
        r.header.unwrap_or_default().revision
    ));
    let b = tokio::time::timeout(RELEASE_WITHIN, b)
        .await???
        .into_inner();
    let leader_b = b.leader.unwrap_or_default();
    out.push(format!(
        "campaign b: key {} rev {}",
        String::from_utf8_lossy(&leader_b.key),
        leader_b.rev
    ));
    let seen = tokio::time::timeout(RELEASE_WITHIN, observe.message())
        .await??
        .unwrap_or_default();
    out.push(format!(
        "observe: {}",
        String::from_utf8_lossy(&seen.kv.unwrap_or_default().value)
    ));
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_blocks_and_releases_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let etcd = lock_scenario(&pair.etcd).await?;
    let ballast = lock_scenario(&pair.ballast).await?;
    assert_eq!(
        etcd, ballast,
        "Lock transcripts differ (left: etcd, right: ballast)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_proclaim_observe_resign_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let etcd = election_scenario(&pair.etcd).await?;
    let ballast = election_scenario(&pair.ballast).await?;
    assert_eq!(
        etcd, ballast,
        "Election transcripts differ (left: etcd, right: ballast)"
    );
    Ok(())
}

//! `--auto-compaction-mode periodic --auto-compaction-retention 2s`, side by side with etcd
//! 3.4.23: both servers are started with it, a client writes one key every
//! [`WRITE_EVERY`] and reads it at the revision of its first write until that read is refused.
//! On both, the refusal is etcd's `OutOfRange` "mvcc: required revision has been compacted"
//! within [`DETECT_WITHIN`]; the compact revision (as `HashKV` reports it) is a revision that
//! was current about one retention before (at least [`RETENTION`], at most
//! [`KEPT_AT_MOST`]); a read at the compact revision succeeds and one below it is refused.
//! Both sides run at the same time; the test takes about 5–8 seconds.
//!
//! Revision mode is not run here: etcd checks it every 5 minutes, too long for a bounded
//! test; `net/src/compactor/tests.rs` covers its schedule.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_conformance::{Kind, Server};
use ballast_proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};

/// The retention both servers are given.
const RETENTION_ARG: &str = "2s";
const RETENTION: Duration = Duration::from_secs(2);
/// etcd keeps 11 samples a tenth of the retention apart: the oldest is 1.1 retentions old,
/// plus one sample tick, one write interval (how late the client notices) and slack for a
/// loaded machine.
const KEPT_AT_MOST: Duration = Duration::from_millis(2200 + 200 + 100 + 700);
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// The first compaction comes one retention after start (at the revision at start, before
/// the first write when a server is slow to start), the next one retention later.
const DETECT_WITHIN: Duration = Duration::from_secs(12);
const KEY: &str = "auto-compaction/key";

/// What one side showed.
#[derive(Debug)]
struct Observed {
    /// The refusal of the read at the first write's revision: (code, message).
    refusal: (tonic::Code, String),
    first_revision: i64,
    compact_revision: i64,
    /// How long before the refusal was seen the compact revision was written.
    compacted_written_ago: Duration,
    /// How long before the refusal was seen the revision after it was written.
    next_written_ago: Duration,
    /// Reads at the compact revision and just below it: Ok or the refusal's code.
    at_compact: Result<(), tonic::Code>,
    below_compact: Result<(), tonic::Code>,
}

async fn scenario(server: &Server) -> Result<Observed> {
    let mut c = server.clients().await?;
    let mut written: Vec<(Instant, i64)> = Vec::new();
    let start = Instant::now();
    let mut first = None;
    let refusal = loop {
        if start.elapsed() > DETECT_WITHIN {
            bail!(
                "{}: no compaction within {DETECT_WITHIN:?} (wrote {:?})",
                server.kind().label(),
                written.iter().map(|w| w.1).collect::<Vec<_>>()
            );
        }
        let put =
            c.kv.put(PutRequest {
                key: KEY.into(),
                value: format!("v{}", written.len()).into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let revision = put.header.context("put header")?.revision;
        written.push((Instant::now(), revision));
        let first = *first.get_or_insert(revision);
        let old =
            c.kv.range(RangeRequest {
                key: KEY.into(),
                revision: first,
                ..Default::default()
            })
            .await;
        if let Err(status) = old {
            break (status.code(), status.message().to_owned());
        }
        tokio::time::sleep(WRITE_EVERY).await;
    };
    let seen = Instant::now();
    let compact_revision = c
        .maintenance
        .hash_kv(HashKvRequest { revision: 0 })
        .await?
        .into_inner()
        .compact_revision;
    let written_at = |revision: i64| {
        written
            .iter()
            .find(|w| w.1 == revision)
            .map(|w| seen - w.0)
            .with_context(|| format!("compact revision {compact_revision} is not one written"))
    };
    let read_at = |revision: i64| {
        let mut kv = c.kv.clone();
        async move {
            kv.range(RangeRequest {
                key: KEY.into(),
                revision,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| s.code())
        }
    };
    Ok(Observed {
        refusal,
        first_revision: first.context("nothing written")?,
        compact_revision,
        compacted_written_ago: written_at(compact_revision)?,
        next_written_ago: written_at(compact_revision + 1)?,
        at_compact: read_at(compact_revision).await,
        below_compact: read_at(compact_revision - 1).await,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_retention_compacts_like_etcd() -> Result<()> {
    let args = [
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        RETENTION_ARG,
    ];
    let (etcd, ballast) = tokio::try_join!(
        Server::start_with_args(Kind::Etcd, &args),
        Server::start_with_args(Kind::Ballast, &args),
    )?;
    let (e, b) = tokio::join!(scenario(&etcd), scenario(&ballast));
    let (e, b) = (e?, b?);
    eprintln!("etcd: {e:?}\nballast: {b:?}");
    for (side, o) in [("etcd", &e), ("ballast", &b)] {
        assert_eq!(
            o.refusal,
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".to_owned()
            ),
            "{side}"
        );
        assert!(o.compact_revision > o.first_revision, "{side}: {o:?}");
        assert!(
            o.compacted_written_ago + Duration::from_millis(100) >= RETENTION,
            "{side} compacted history younger than the retention: {o:?}"
        );
        assert!(
            o.next_written_ago <= KEPT_AT_MOST,
            "{side} kept more history than etcd's schedule keeps: {o:?}"
        );
        assert_eq!(o.at_compact, Ok(()), "{side}: {o:?}");
        assert_eq!(
            o.below_compact,
            Err(tonic::Code::OutOfRange),
            "{side}: {o:?}"
        );
    }
    let log = ballast.log_tail();
    assert!(
        log.contains("completed auto periodic compaction"),
        "ballast logs its compactions as etcd does:\n{log}"
    );
    Ok(())
}

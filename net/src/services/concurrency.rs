//! The primitives etcd's Lock and Election services are built from, run inside the server over
//! the shard (etcd builds them from its client library's `concurrency` package):
//! a key per participant under a prefix, ownership by lowest create revision, and waiting for
//! the deletion of every key created before one's own.

use ballast_consensus::{Request, Response, WatchCreate, WatchMessage};
use ballast_engine::watch::WatchFilter;
use ballast_engine::{EventKind, KeyValue, RangeRequest, Revision, SortOrder, SortTarget};
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use crate::context::Context;
use crate::services::watch::next_stream_id;
use crate::status::{self, unexpected_reply};

/// etcd serves Lock and Election through its own client library, which turns a KV error into a
/// Go error; gRPC then reports it with code Unknown and the same message. So do we.
pub fn as_client_error(status: Status) -> Status {
    if status.code() == tonic::Code::Unknown {
        return status;
    }
    Status::unknown(status.message().to_owned())
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

async fn range(ctx: &Context, req: RangeRequest) -> Result<(Vec<KeyValue>, Revision), Status> {
    let reply = ctx.call(Request::Range(req)).await?;
    match reply.response {
        Response::Range(r) => Ok((r.kvs, reply.revision)),
        _ => Err(unexpected_reply("Range")),
    }
}

/// The key under `prefix` with the lowest create revision: the owner.
pub async fn first_created(
    ctx: &Context,
    prefix: &Bytes,
) -> Result<(Option<KeyValue>, Revision), Status> {
    let (kvs, revision) = range(
        ctx,
        RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Ascend,
            sort_target: SortTarget::Create,
            ..Default::default()
        },
    )
    .await?;
    Ok((kvs.into_iter().next(), revision))
}

/// The newest key under `prefix` created at or before `max_create_revision`.
async fn last_created_before(
    ctx: &Context,
    prefix: &Bytes,
    max_create_revision: Revision,
) -> Result<(Option<KeyValue>, Revision), Status> {
    let (kvs, revision) = range(
        ctx,
        RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Create,
            max_create_revision,
            ..Default::default()
        },
    )
    .await?;
    Ok((kvs.into_iter().next(), revision))
}

/// A server-side watch on one key or range; the watcher is dropped with it.
pub struct ServerWatch {
    ctx: Context,
    shard: usize,
    stream: u64,
    rx: mpsc::Receiver<WatchMessage>,
}

/// Messages buffered for one server-side watch.
const SERVER_WATCH_MESSAGES_MAX: usize = 64;

impl ServerWatch {
    pub async fn start(
        ctx: &Context,
        key: Bytes,
        range_end: Bytes,
        start_revision: Revision,
    ) -> Result<ServerWatch, Status> {
        let (tx, rx) = mpsc::channel(SERVER_WATCH_MESSAGES_MAX);
        let stream = next_stream_id();
        let Some(shard) = ctx.router.shards_of_range(&key, &range_end).single() else {
            return Err(Status::failed_precondition(
                "ballast: a server-side watch over several shards is not built yet",
            ));
        };
        ctx.router
            .shard(shard)
            .watch_create(WatchCreate {
                stream,
                watch_id: 0,
                filter: WatchFilter {
                    key,
                    range_end,
                    ..Default::default()
                },
                start_revision,
                progress_notify: false,
                sender: tx,
            })
            .await
            .map_err(|_| status::shard_stopped())?;
        Ok(ServerWatch {
            ctx: ctx.clone(),
            shard,
            stream,
            rx,
        })
    }

    /// The next batch of events; an error when the watch was canceled (compacted history) or
    /// the shard stopped.
    pub async fn next(&mut self) -> Result<Vec<ballast_engine::Event>, Status> {
        loop {
            match self.rx.recv().await {
                Some(WatchMessage::Events { events, .. }) => return Ok(events),
                Some(WatchMessage::Canceled { .. }) => {
                    return Err(Status::unavailable("ballast: server-side watch canceled"))
                }
                Some(WatchMessage::Created { .. } | WatchMessage::Progress { .. }) => {}
                None => return Err(status::shard_stopped()),
            }
        }
    }
}

impl Drop for ServerWatch {
    fn drop(&mut self) {
        self.ctx.router.shard(self.shard).stream_closed(self.stream);
    }
}

/// Waits until `key` is deleted, watching from `from_revision`.
async fn wait_delete(ctx: &Context, key: Bytes, from_revision: Revision) -> Result<(), Status> {
    let mut watch = ServerWatch::start(ctx, key, Bytes::new(), from_revision).await?;
    loop {
        let events = watch.next().await?;
        if events.iter().any(|e| e.kind == EventKind::Delete) {
            return Ok(());
        }
    }
}

/// Waits until every key under `prefix` created at or before `max_create_revision` is gone;
/// returns the revision at which that was observed.
pub async fn wait_deletes(
    ctx: &Context,
    prefix: &Bytes,
    max_create_revision: Revision,
) -> Result<Revision, Status> {
    loop {
        let (kv, revision) = last_created_before(ctx, prefix, max_create_revision).await?;
        let Some(kv) = kv else { return Ok(revision) };
        wait_delete(ctx, kv.key, revision + 1).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(&prefix_end(b"abc")[..], b"abd");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff\xff")[..], b"\0");
    }
}

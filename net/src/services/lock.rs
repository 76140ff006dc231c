//! `v3lockpb.Lock`: a distributed mutex, as etcd serves it. Locking `name` with lease L
//! creates `name/<L in hex>` (attached to L) unless it exists, and the caller owns the lock once
//! every key under `name/` created before its own is deleted. Unlock deletes the key.

use ballast_consensus::{Request, Response};
use ballast_engine::{
    Compare, CompareResult, CompareTarget, CompareValue, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
};
use ballast_proto::v3lockpb as pb;
use bytes::Bytes;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::context::Context;
use crate::services::concurrency::{as_client_error, prefix_end, wait_deletes};
use crate::status::unexpected_reply;

pub struct LockService {
    ctx: Context,
}

impl LockService {
    pub fn new(ctx: Context) -> Self {
        LockService { ctx }
    }
}

/// `prefix` + the lease id in lower-case hex, as etcd's concurrency package names keys.
pub fn participant_key(prefix: &[u8], lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Bytes::from(key)
}

/// The owner query: the key under `prefix` with the lowest create revision.
pub fn first_created_op(prefix: &Bytes) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..Default::default()
    })
}

/// What joining a lock or election found.
pub struct Joined {
    /// Create revision of the caller's key.
    pub my_revision: i64,
    /// Create revision of the owner's key (the lowest under the prefix), if any.
    pub owner: Option<i64>,
    /// Header revision of the join.
    pub revision: i64,
    /// The key was created now (false: it existed already).
    pub created: bool,
}

/// Creates `key` with `value` on `lease` unless it exists.
pub async fn join(
    ctx: &Context,
    prefix: &Bytes,
    key: &Bytes,
    value: Bytes,
    lease: i64,
) -> Result<Joined, Status> {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create,
            key: key.clone(),
            range_end: Bytes::new(),
            target_union: Some(CompareValue::CreateRevision(0)),
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: key.clone(),
                value,
                lease,
                ..Default::default()
            }),
            first_created_op(prefix),
        ],
        failure: vec![
            RequestOp::Range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
            first_created_op(prefix),
        ],
    };
    let reply = ctx.call(Request::Txn(txn)).await?;
    let Response::Txn(resp) = reply.response else {
        return Err(unexpected_reply("Txn"));
    };
    let owner_of = |op: Option<&ResponseOp>| match op {
        Some(ResponseOp::Range(r)) => Ok(r.kvs.first().map(|kv| kv.create_revision)),
        _ => Err(unexpected_reply("Txn")),
    };
    let my_revision = if resp.succeeded {
        reply.revision
    } else {
        match resp.responses.first() {
            Some(ResponseOp::Range(r)) => r
                .kvs
                .first()
                .map_or(reply.revision, |kv| kv.create_revision),
            _ => return Err(unexpected_reply("Txn")),
        }
    };
    let owner = owner_of(resp.responses.get(1))?;
    Ok(Joined {
        my_revision,
        owner,
        revision: reply.revision,
        created: resp.succeeded,
    })
}

pub async fn delete_key(ctx: &Context, key: Bytes) -> Result<i64, Status> {
    let reply = ctx
        .call(Request::DeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        }))
        .await?;
    Ok(reply.revision)
}

/// Deletes a participant key when dropped while armed (a waiter that gave up).
pub struct KeyGuard {
    ctx: Option<Context>,
    key: Bytes,
}

impl KeyGuard {
    pub fn new(ctx: &Context, key: Bytes) -> KeyGuard {
        KeyGuard {
            ctx: Some(ctx.clone()),
            key,
        }
    }

    pub fn disarm(mut self) {
        self.ctx = None;
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            let key = self.key.clone();
            tokio::spawn(async move {
                let _ = delete_key(&ctx, key).await;
            });
        }
    }
}

#[tonic::async_trait]
impl pb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: GrpcRequest<pb::LockRequest>,
    ) -> Result<GrpcResponse<pb::LockResponse>, Status> {
        async move {
            let caller = self.ctx.caller(request.metadata()).await?;
            let req = request.into_inner();
            let mut prefix = req.name.to_vec();
            prefix.push(b'/');
            let prefix = Bytes::from(prefix);
            let key = participant_key(&prefix, req.lease);
            let end = crate::services::concurrency::prefix_end(&prefix);
            self.ctx
                .auth
                .check_concurrency(&caller, Some((&prefix, &end)), Some(&key))?;
            let Joined {
                my_revision,
                owner,
                revision,
                ..
            } = join(&self.ctx, &prefix, &key, Bytes::new(), req.lease).await?;
            // If the client goes away (or the wait fails) before the lock is held, its key is
            // removed, so it does not block the waiters behind it.
            let guard = KeyGuard::new(&self.ctx, key.clone());
            let revision = if owner.is_none() || owner == Some(my_revision) {
                revision
            } else {
                wait_deletes(&self.ctx, &prefix, my_revision - 1).await?
            };
            guard.disarm();
            Ok(GrpcResponse::new(pb::LockResponse {
                header: Some(self.ctx.header(revision)),
                key,
            }))
        }
        .await
        .map_err(as_client_error)
    }

    async fn unlock(
        &self,
        request: GrpcRequest<pb::UnlockRequest>,
    ) -> Result<GrpcResponse<pb::UnlockResponse>, Status> {
        async move {
            let caller = self.ctx.caller(request.metadata()).await?;
            let key = request.into_inner().key;
            self.ctx.auth.check_concurrency(&caller, None, Some(&key))?;
            let revision = delete_key(&self.ctx, key).await?;
            Ok(GrpcResponse::new(pb::UnlockResponse {
                header: Some(self.ctx.header(revision)),
            }))
        }
        .await
        .map_err(as_client_error)
    }
}

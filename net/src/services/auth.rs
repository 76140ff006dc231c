//! `etcdserverpb.Auth`: enabling auth, users, roles, permissions and Authenticate, as etcd
//! 3.4.23 answers them. Changes go through shard 0's log (`ballast_consensus::auth`); the
//! reads (UserGet/List, RoleGet/List, AuthStatus) are answered from this node's copy after a
//! linearizable read of shard 0, so they see every change committed before they started.
//!
//! Passwords are hashed here with bcrypt (`--bcrypt-cost`) on a blocking thread, and only the
//! hash enters the log. Authenticate checks the password against this node's copy, then
//! proposes the authentication with 16 random letters; applying it completes the token with
//! the entry's index on every member (etcd 3.4's simple token). When the auth revision moved
//! meanwhile (the password may have changed) it starts over, as etcd does. With
//! `--auth-token jwt` the same entry is proposed (it rechecks the user where auth changes are
//! ordered), and once it applied at the revision the password was checked at, this member
//! signs a JWT carrying that revision (`jwt.rs`); a member with only the public key answers
//! etcd's verify-only error once the password checked out.

use ballast_consensus::auth::{PermType, Permission};
use ballast_consensus::{AuthAnswer, AuthCommand, AuthError, Request, Response};
use ballast_engine::RangeRequest;
use ballast_proto::{authpb, etcdserverpb as pb};
use bytes::Bytes;
use rand::Rng;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use crate::auth::{unix_now_ms, Caller, Tokens};
use crate::context::{route_error, Context};
use crate::jwt::MintError;
use crate::status;

/// Letters of a simple token's random part (etcd's alphabet and length).
const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const TOKEN_PREFIX_LEN: usize = 16;
/// Authenticate starts over at most this often when the auth revision keeps moving.
const AUTHENTICATE_TRIES: usize = 16;

pub struct AuthService {
    ctx: Context,
}

impl AuthService {
    pub fn new(ctx: Context) -> Self {
        AuthService { ctx }
    }
}

/// Proposes an auth command for `caller`; answers the header's revision and the answer.
pub async fn propose(
    ctx: &Context,
    caller: &Caller,
    cmd: AuthCommand,
) -> Result<(i64, AuthAnswer), Status> {
    let reply = ctx
        .call(Request::Auth {
            by: caller.name(),
            cmd,
        })
        .await?;
    match reply.response {
        // The header's revision is the key space's (etcd's), the highest any shard has.
        Response::Auth(Ok(answer)) => Ok((reply.revision.max(ctx.router.max_revision()), answer)),
        Response::Auth(Err(e)) => Err(status::auth(e)),
        _ => Err(status::unexpected_reply("Auth")),
    }
}

/// A linearizable read of shard 0: once it answers, this node's copy of the auth state holds
/// every change committed before the call. Answers the key space's revision.
pub async fn barrier(ctx: &Context) -> Result<i64, Status> {
    let probe = RangeRequest {
        key: Bytes::from_static(b"\0"),
        count_only: true,
        serializable: false,
        ..RangeRequest::default()
    };
    let reply = ctx
        .router
        .call_shard(0, Request::Range(probe))
        .await
        .map_err(route_error)?;
    Ok(reply.revision.max(ctx.router.max_revision()))
}

/// bcrypt's hash of `password` at the configured cost, on a blocking thread.
pub async fn hash_password(ctx: &Context, password: String) -> Result<Bytes, Status> {
    let cost = ctx.auth.bcrypt_cost;
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| Status::internal(format!("hashing the password: {e}")))?
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("hashing the password: {e}")))
}

/// Whether `password` matches the bcrypt `hash`, on a blocking thread.
async fn verify_password(password: String, hash: Bytes) -> bool {
    tokio::task::spawn_blocking(move || {
        let hash = String::from_utf8_lossy(&hash).into_owned();
        bcrypt::verify(password, &hash).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

fn token_prefix() -> String {
    let mut rng = rand::thread_rng();
    (0..TOKEN_PREFIX_LEN)
        .map(|_| TOKEN_LETTERS[rng.gen_range(0..TOKEN_LETTERS.len())] as char)
        .collect()
}

/// The authentication etcd's `Authenticate` does (module comment).
pub async fn authenticate(
    ctx: &Context,
    name: &str,
    password: &str,
) -> Result<(i64, String), Status> {
    barrier(ctx).await?;
    for _ in 0..AUTHENTICATE_TRIES {
        let view = ctx.auth.view();
        if !view.enabled {
            return Err(status::auth(AuthError::AuthNotEnabled));
        }
        let user = match view.users.get(name) {
            Some(u) if u.no_password => return Err(status::no_password_user()),
            Some(u) => u.clone(),
            None => return Err(status::auth(AuthError::AuthFailed)),
        };
        let checked_revision = view.revision;
        if !verify_password(password.to_owned(), user.password_hash.clone()).await {
            tracing::info!(user = name, "invalid password");
            return Err(status::auth(AuthError::AuthFailed));
        }
        if let Tokens::Jwt(jwt) = &ctx.auth.tokens {
            if !jwt.can_sign() {
                return Err(status::jwt_mint(&MintError::VerifyOnly));
            }
        }
        let cmd = AuthCommand::Authenticate {
            name: name.to_owned(),
            token_prefix: token_prefix(),
        };
        let (revision, answer) = propose(ctx, &Caller::default(), cmd).await?;
        let AuthAnswer::Token(token) = answer else {
            return Err(status::unexpected_reply("Authenticate"));
        };
        if ctx.auth.view().revision == checked_revision {
            let token = match &ctx.auth.tokens {
                Tokens::Simple => token,
                Tokens::Jwt(jwt) => jwt
                    .mint(name, checked_revision, unix_now_ms())
                    .map_err(|e| status::jwt_mint(&e))?,
            };
            return Ok((revision, token));
        }
    }
    Err(status::request_timeout())
}

fn perm_from_pb(p: Option<authpb::Permission>) -> Permission {
    let p = p.unwrap_or_default();
    Permission {
        perm_type: PermType(p.perm_type),
        key: p.key,
        range_end: p.range_end,
    }
}

pub fn perm_to_pb(p: &Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: p.perm_type.0,
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

impl AuthService {
    async fn caller<T>(&self, request: &GrpcRequest<T>) -> Result<Caller, Status> {
        self.ctx.auth.caller(request.metadata()).await
    }

    async fn change<T>(
        &self,
        request: &GrpcRequest<T>,
        cmd: AuthCommand,
    ) -> Result<pb::ResponseHeader, Status> {
        let caller = self.caller(request).await?;
        let (revision, _) = propose(&self.ctx, &caller, cmd).await?;
        Ok(self.ctx.header(revision))
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: GrpcRequest<pb::AuthEnableRequest>,
    ) -> Result<GrpcResponse<pb::AuthEnableResponse>, Status> {
        let header = self.change(&request, AuthCommand::Enable).await?;
        Ok(GrpcResponse::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        request: GrpcRequest<pb::AuthDisableRequest>,
    ) -> Result<GrpcResponse<pb::AuthDisableResponse>, Status> {
        let header = self.change(&request, AuthCommand::Disable).await?;
        Ok(GrpcResponse::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    /// etcd 3.5's AuthStatus (3.4 has none): whether auth is enabled, and the auth revision.
    async fn auth_status(
        &self,
        _request: GrpcRequest<pb::AuthStatusRequest>,
    ) -> Result<GrpcResponse<pb::AuthStatusResponse>, Status> {
        let revision = barrier(&self.ctx).await?;
        let view = self.ctx.auth.view();
        Ok(GrpcResponse::new(pb::AuthStatusResponse {
            header: Some(self.ctx.header(revision)),
            enabled: view.enabled,
            auth_revision: view.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: GrpcRequest<pb::AuthenticateRequest>,
    ) -> Result<GrpcResponse<pb::AuthenticateResponse>, Status> {
        let r = request.into_inner();
        let (revision, token) = authenticate(&self.ctx, &r.name, &r.password).await?;
        Ok(GrpcResponse::new(pb::AuthenticateResponse {
            header: Some(self.ctx.header(revision)),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: GrpcRequest<pb::AuthUserAddRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserAddResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            Bytes::new()
        } else {
            hash_password(&self.ctx, r.password).await?
        };
        let cmd = AuthCommand::UserAdd {
            name: r.name,
            password_hash,
            no_password,
        };
        let (revision, _) = propose(&self.ctx, &caller, cmd).await?;
        Ok(GrpcResponse::new(pb::AuthUserAddResponse {
            header: Some(self.ctx.header(revision)),
        }))
    }

    async fn user_get(
        &self,
        request: GrpcRequest<pb::AuthUserGetRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserGetResponse>, Status> {
        let caller = self.caller(&request).await?;
        let name = request.into_inner().name;
        let revision = barrier(&self.ctx).await?;
        let view = self.ctx.auth.view();
        if let Err(e) = view.check_admin(&caller.name()) {
            if caller.user.as_deref() != Some(name.as_str()) {
                return Err(status::auth(e));
            }
        }
        let user = view
            .users
            .get(&name)
            .ok_or_else(|| status::auth(AuthError::UserNotFound))?;
        Ok(GrpcResponse::new(pb::AuthUserGetResponse {
            header: Some(self.ctx.header(revision)),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: GrpcRequest<pb::AuthUserListRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserListResponse>, Status> {
        let caller = self.caller(&request).await?;
        let revision = barrier(&self.ctx).await?;
        let view = self.ctx.auth.view();
        view.check_admin(&caller.name()).map_err(status::auth)?;
        Ok(GrpcResponse::new(pb::AuthUserListResponse {
            header: Some(self.ctx.header(revision)),
            users: view.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: GrpcRequest<pb::AuthUserDeleteRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserDeleteResponse>, Status> {
        let name = request.get_ref().name.clone();
        let header = self
            .change(&request, AuthCommand::UserDelete { name })
            .await?;
        Ok(GrpcResponse::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        request: GrpcRequest<pb::AuthUserChangePasswordRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let password_hash = hash_password(&self.ctx, r.password).await?;
        let cmd = AuthCommand::UserChangePassword {
            name: r.name,
            password_hash,
        };
        let (revision, _) = propose(&self.ctx, &caller, cmd).await?;
        Ok(GrpcResponse::new(pb::AuthUserChangePasswordResponse {
            header: Some(self.ctx.header(revision)),
        }))
    }

    async fn user_grant_role(
        &self,
        request: GrpcRequest<pb::AuthUserGrantRoleRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref().clone();
        let cmd = AuthCommand::UserGrantRole {
            user: r.user,
            role: r.role,
        };
        let header = self.change(&request, cmd).await?;
        Ok(GrpcResponse::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: GrpcRequest<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref().clone();
        let cmd = AuthCommand::UserRevokeRole {
            name: r.name,
            role: r.role,
        };
        let header = self.change(&request, cmd).await?;
        Ok(GrpcResponse::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        request: GrpcRequest<pb::AuthRoleAddRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleAddResponse>, Status> {
        let name = request.get_ref().name.clone();
        let header = self.change(&request, AuthCommand::RoleAdd { name }).await?;
        Ok(GrpcResponse::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        request: GrpcRequest<pb::AuthRoleGetRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleGetResponse>, Status> {
        let caller = self.caller(&request).await?;
        let role = request.into_inner().role;
        let revision = barrier(&self.ctx).await?;
        let view = self.ctx.auth.view();
        if let Err(e) = view.check_admin(&caller.name()) {
            if !crate::auth::has_role(&view, caller.user.as_deref(), &role) {
                return Err(status::auth(e));
            }
        }
        let found = view
            .roles
            .get(&role)
            .ok_or_else(|| status::auth(AuthError::RoleNotFound))?;
        Ok(GrpcResponse::new(pb::AuthRoleGetResponse {
            header: Some(self.ctx.header(revision)),
            perm: found.permissions.iter().map(perm_to_pb).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: GrpcRequest<pb::AuthRoleListRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleListResponse>, Status> {
        let caller = self.caller(&request).await?;
        let revision = barrier(&self.ctx).await?;
        let view = self.ctx.auth.view();
        view.check_admin(&caller.name()).map_err(status::auth)?;
        Ok(GrpcResponse::new(pb::AuthRoleListResponse {
            header: Some(self.ctx.header(revision)),
            roles: view.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: GrpcRequest<pb::AuthRoleDeleteRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleDeleteResponse>, Status> {
        let name = request.get_ref().role.clone();
        let header = self
            .change(&request, AuthCommand::RoleDelete { name })
            .await?;
        Ok(GrpcResponse::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: GrpcRequest<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref().clone();
        let cmd = AuthCommand::RoleGrantPermission {
            name: r.name,
            permission: perm_from_pb(r.perm),
        };
        let header = self.change(&request, cmd).await?;
        Ok(GrpcResponse::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: GrpcRequest<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref().clone();
        let cmd = AuthCommand::RoleRevokePermission {
            name: r.role,
            key: r.key,
            range_end: r.range_end,
        };
        let header = self.change(&request, cmd).await?;
        Ok(GrpcResponse::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}

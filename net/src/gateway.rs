//! etcd's JSON gateway on the client port: `POST /v3/kv/range` and the rest of etcd 3.4's
//! HTTP mapping of its gRPC API, under `/v3/` and `/v3beta/` alike.
//!
//! A handler decodes the JSON body into the request message (the `pbjson` impls of
//! `ballast-proto`: proto field names, 64-bit integers as strings, bytes as base64), calls the
//! gRPC service in process, and writes the answer as JSON, or the `tonic::Status` as etcd's
//! error body `{"error":m,"message":m,"code":c}` with the HTTP status grpc-gateway v1 gives
//! that code. No service logic lives here.
//!
//! Streams: the answers of `watch`, `lease/keepalive`, `maintenance/snapshot` and
//! `election/observe` go out one `{"result":{...}}` line per message; response headers go out
//! with the first message, as etcd's do. The body of `watch` and `lease/keepalive` is read as
//! a sequence of JSON requests as they arrive. A first request that does not decode answers
//! 500 with code 2 (etcd's gateway does the same); a later one ends the request side, as the
//! end of the body does (the watch stream stays open, a keep-alive stream ends).
//!
//! Known differences from etcd: JSON syntax errors carry serde's message where etcd's carry
//! Go's (except a cut-off body: both say `unexpected EOF`); base64 without padding or in the
//! URL-safe alphabet is accepted where etcd refuses it.
//!
//! Auth: `/v3/auth/*` call the Auth service; the token `auth/authenticate` answers goes in
//! the `Authorization` header of later requests (passed on as metadata `authorization`).

use std::convert::Infallible;
use std::future::Future;

use axum::body::{Body, BodyDataStream};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post, MethodRouter};
use axum::Router;
use ballast_proto::etcdserverpb::auth_server::Auth as _;
use ballast_proto::etcdserverpb::cluster_server::Cluster as _;
use ballast_proto::etcdserverpb::kv_server::Kv as _;
use ballast_proto::etcdserverpb::lease_server::Lease as _;
use ballast_proto::etcdserverpb::maintenance_server::Maintenance as _;
use ballast_proto::etcdserverpb::watch_server::Watch as _;
use ballast_proto::v3electionpb::election_server::Election as _;
use ballast_proto::v3lockpb::lock_server::Lock as _;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::codec::Codec;
use tonic::{Code, Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use crate::context::Context;
use crate::services::auth::AuthService;
use crate::services::cluster::ClusterService;
use crate::services::election::ElectionService;
use crate::services::kv::KvService;
use crate::services::lease::LeaseService;
use crate::services::lock::LockService;
use crate::services::maintenance::MaintenanceService;
use crate::services::watch::WatchService;
use crate::status;

#[cfg(test)]
mod tests;

/// etcd 3.4 serves the same gateway under both prefixes.
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// Slack over `--max-request-bytes` for one JSON request: base64 makes bytes a third longer,
/// and field names and quotes add more. The services check the decoded request's size.
const JSON_BYTES_PER_REQUEST_BYTE: usize = 2;
const JSON_OVERHEAD_BYTES: usize = 64 * 1024;

/// The gateway's routes, to be merged into the client port's router.
pub fn router(ctx: Context) -> Router {
    let mut routes = Router::new();
    for prefix in PREFIXES {
        let path = |p: &str| format!("{prefix}/{p}");
        routes = routes
            .route(
                &path("kv/range"),
                unary(|ctx, req| async move { KvService::new(ctx).range(req).await }),
            )
            .route(
                &path("kv/put"),
                unary(|ctx, req| async move { KvService::new(ctx).put(req).await }),
            )
            .route(
                &path("kv/deleterange"),
                unary(|ctx, req| async move { KvService::new(ctx).delete_range(req).await }),
            )
            .route(
                &path("kv/txn"),
                unary(|ctx, req| async move { KvService::new(ctx).txn(req).await }),
            )
            .route(
                &path("kv/compaction"),
                unary(|ctx, req| async move { KvService::new(ctx).compact(req).await }),
            )
            .route(
                &path("watch"),
                bidi(|ctx, reqs| async move { WatchService::new(ctx).watch(reqs).await }),
            )
            .route(
                &path("lease/grant"),
                unary(|ctx, req| async move { LeaseService::new(ctx).lease_grant(req).await }),
            )
            .route(
                &path("lease/keepalive"),
                bidi(
                    |ctx, reqs| async move { LeaseService::new(ctx).lease_keep_alive(reqs).await },
                ),
            );
        for lease_prefix in ["lease", "kv/lease"] {
            let lease_path = |p: &str| path(&format!("{lease_prefix}/{p}"));
            routes = routes
                .route(
                    &lease_path("revoke"),
                    unary(|ctx, req| async move { LeaseService::new(ctx).lease_revoke(req).await }),
                )
                .route(
                    &lease_path("timetolive"),
                    unary(|ctx, req| async move {
                        LeaseService::new(ctx).lease_time_to_live(req).await
                    }),
                )
                .route(
                    &lease_path("leases"),
                    unary(|ctx, req| async move { LeaseService::new(ctx).lease_leases(req).await }),
                );
        }
        routes = routes
            .route(
                &path("cluster/member/list"),
                unary(|ctx, req| async move { ClusterService::new(ctx).member_list(req).await }),
            )
            .route(
                &path("cluster/member/add"),
                unary(|ctx, req| async move { ClusterService::new(ctx).member_add(req).await }),
            )
            .route(
                &path("cluster/member/remove"),
                unary(|ctx, req| async move { ClusterService::new(ctx).member_remove(req).await }),
            )
            .route(
                &path("cluster/member/update"),
                unary(|ctx, req| async move { ClusterService::new(ctx).member_update(req).await }),
            )
            .route(
                &path("cluster/member/promote"),
                unary(|ctx, req| async move { ClusterService::new(ctx).member_promote(req).await }),
            )
            .route(
                &path("maintenance/status"),
                unary(|ctx, req| async move { MaintenanceService::new(ctx).status(req).await }),
            )
            .route(
                &path("maintenance/alarm"),
                unary(|ctx, req| async move { MaintenanceService::new(ctx).alarm(req).await }),
            )
            .route(
                &path("maintenance/defragment"),
                unary(|ctx, req| async move { MaintenanceService::new(ctx).defragment(req).await }),
            )
            .route(
                &path("maintenance/hash"),
                unary(|ctx, req| async move { MaintenanceService::new(ctx).hash(req).await }),
            )
            .route(
                &path("maintenance/snapshot"),
                server_streaming(|ctx, req| async move {
                    MaintenanceService::new(ctx).snapshot(req).await
                }),
            )
            .route(
                &path("maintenance/transfer-leadership"),
                unary(
                    |ctx, req| async move { MaintenanceService::new(ctx).move_leader(req).await },
                ),
            )
            .route(
                &path("lock/lock"),
                unary(|ctx, req| async move { LockService::new(ctx).lock(req).await }),
            )
            .route(
                &path("lock/unlock"),
                unary(|ctx, req| async move { LockService::new(ctx).unlock(req).await }),
            )
            .route(
                &path("election/campaign"),
                unary(|ctx, req| async move { ElectionService::new(ctx).campaign(req).await }),
            )
            .route(
                &path("election/proclaim"),
                unary(|ctx, req| async move { ElectionService::new(ctx).proclaim(req).await }),
            )
            .route(
                &path("election/leader"),
                unary(|ctx, req| async move { ElectionService::new(ctx).leader(req).await }),
            )
            .route(
                &path("election/observe"),
                server_streaming(
                    |ctx, req| async move { ElectionService::new(ctx).observe(req).await },
                ),
            )
            .route(
                &path("election/resign"),
                unary(|ctx, req| async move { ElectionService::new(ctx).resign(req).await }),
            );
        routes =
            routes
                .route(
                    &path("auth/enable"),
                    unary(|ctx, req| async move { AuthService::new(ctx).auth_enable(req).await }),
                )
                .route(
                    &path("auth/disable"),
                    unary(|ctx, req| async move { AuthService::new(ctx).auth_disable(req).await }),
                )
                .route(
                    &path("auth/authenticate"),
                    unary(|ctx, req| async move { AuthService::new(ctx).authenticate(req).await }),
                )
                .route(
                    &path("auth/user/add"),
                    unary(|ctx, req| async move { AuthService::new(ctx).user_add(req).await }),
                )
                .route(
                    &path("auth/user/get"),
                    unary(|ctx, req| async move { AuthService::new(ctx).user_get(req).await }),
                )
                .route(
                    &path("auth/user/list"),
                    unary(|ctx, req| async move { AuthService::new(ctx).user_list(req).await }),
                )
                .route(
                    &path("auth/user/delete"),
                    unary(|ctx, req| async move { AuthService::new(ctx).user_delete(req).await }),
                )
                .route(
                    &path("auth/user/changepw"),
                    unary(|ctx, req| async move {
                        AuthService::new(ctx).user_change_password(req).await
                    }),
                )
                .route(
                    &path("auth/user/grant"),
                    unary(
                        |ctx, req| async move { AuthService::new(ctx).user_grant_role(req).await },
                    ),
                )
                .route(
                    &path("auth/user/revoke"),
                    unary(
                        |ctx, req| async move { AuthService::new(ctx).user_revoke_role(req).await },
                    ),
                )
                .route(
                    &path("auth/role/add"),
                    unary(|ctx, req| async move { AuthService::new(ctx).role_add(req).await }),
                )
                .route(
                    &path("auth/role/get"),
                    unary(|ctx, req| async move { AuthService::new(ctx).role_get(req).await }),
                )
                .route(
                    &path("auth/role/list"),
                    unary(|ctx, req| async move { AuthService::new(ctx).role_list(req).await }),
                )
                .route(
                    &path("auth/role/delete"),
                    unary(|ctx, req| async move { AuthService::new(ctx).role_delete(req).await }),
                )
                .route(
                    &path("auth/role/grant"),
                    unary(|ctx, req| async move {
                        AuthService::new(ctx).role_grant_permission(req).await
                    }),
                )
                .route(
                    &path("auth/role/revoke"),
                    unary(|ctx, req| async move {
                        AuthService::new(ctx).role_revoke_permission(req).await
                    }),
                );
        routes = routes.route(&path("{*rest}"), any(not_found));
    }
    routes.layer(middleware::from_fn(cors)).with_state(ctx)
}

/// The gRPC request a gateway call makes: the message, and the token of the HTTP
/// `Authorization` header as metadata `authorization`, as etcd's gateway forwards it.
fn grpc<T>(message: T, headers: &HeaderMap) -> GrpcRequest<T> {
    let mut request = GrpcRequest::new(message);
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok())
    {
        request.metadata_mut().insert("authorization", token);
    }
    request
}

/// A unary method: one JSON request, one JSON answer.
fn unary<Req, Resp, F, Fut>(call: F) -> MethodRouter<Context>
where
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: FnOnce(Context, GrpcRequest<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<GrpcResponse<Resp>, Status>> + Send + 'static,
{
    post(
        move |State(ctx): State<Context>, headers: HeaderMap, body: Body| async move {
            let req = match read_request::<Req>(&ctx, body).await {
                Ok(req) => req,
                Err(response) => return response,
            };
            match call(ctx, grpc(req, &headers)).await {
                Ok(resp) => json_response(resp.get_ref()),
                Err(status) => error_response(&status),
            }
        },
    )
    .fallback(method_not_allowed)
}

/// A server-streaming method: one JSON request, a line per answer.
fn server_streaming<Req, Resp, S, F, Fut>(call: F) -> MethodRouter<Context>
where
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    F: FnOnce(Context, GrpcRequest<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<GrpcResponse<S>, Status>> + Send + 'static,
{
    post(
        move |State(ctx): State<Context>, headers: HeaderMap, body: Body| async move {
            let req = match read_request::<Req>(&ctx, body).await {
                Ok(req) => req,
                Err(response) => return response,
            };
            match call(ctx, grpc(req, &headers)).await {
                Ok(resp) => forward_stream(resp.into_inner()).await,
                Err(status) => error_response(&status),
            }
        },
    )
    .fallback(method_not_allowed)
}

/// A bidirectional method: requests read from the body as they arrive, a line per answer.
fn bidi<Req, Resp, S, F, Fut>(call: F) -> MethodRouter<Context>
where
    Req: DeserializeOwned + prost::Message + Default + Send + 'static,
    Resp: prost::Message + Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    F: FnOnce(Context, GrpcRequest<Streaming<Req>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<GrpcResponse<S>, Status>> + Send + 'static,
{
    post(
        move |State(ctx): State<Context>, headers: HeaderMap, body: Body| async move {
            let mut reader = JsonReader::new(body.into_data_stream(), body_limit(&ctx));
            // As etcd's gateway: a first request that does not decode fails the call (code 2);
            // an empty body opens the stream with no request.
            let first = match reader.next::<Req>().await {
                Ok(first) => first,
                Err(status) => return error_response(&status),
            };
            let rest = futures::stream::unfold(reader, |mut reader| async move {
                // A later request that does not decode ends the request side.
                match reader.next::<Req>().await {
                    Ok(Some(req)) => Some((req, reader)),
                    Ok(None) | Err(_) => None,
                }
            });
            let frames = futures::stream::iter(first)
                .chain(rest)
                .map(|req| Ok::<_, Infallible>(grpc_frame(&req)));
            let decoder = tonic_prost::ProstCodec::<Resp, Req>::default().decoder();
            let requests = Streaming::new_request(decoder, Body::from_stream(frames), None, None);
            match call(ctx, grpc(requests, &headers)).await {
                Ok(resp) => forward_stream(resp.into_inner()).await,
                Err(status) => error_response(&status),
            }
        },
    )
    .fallback(method_not_allowed)
}

/// The largest JSON body read for one request.
fn body_limit(ctx: &Context) -> usize {
    ctx.limits
        .max_request_bytes
        .saturating_mul(JSON_BYTES_PER_REQUEST_BYTE)
        .saturating_add(JSON_OVERHEAD_BYTES)
}

/// One request from a unary call's body: its first JSON value (what follows it is not read,
/// as etcd's gateway does not), or the default request for an empty body.
async fn read_request<Req: DeserializeOwned + Default>(
    ctx: &Context,
    body: Body,
) -> Result<Req, Response> {
    let bytes = axum::body::to_bytes(body, body_limit(ctx))
        .await
        .map_err(|_| error_response(&status::request_too_large()))?;
    let decoded = match next_value(&bytes) {
        Parsed::Value(value, _) => to_request(value),
        Parsed::Incomplete if is_blank(&bytes) => Ok(Req::default()),
        Parsed::Incomplete => Err(UNEXPECTED_EOF.to_owned()),
        Parsed::Invalid(err) => Err(decode_message(&err)),
    };
    decoded.map_err(|message| error_response(&Status::invalid_argument(message)))
}

/// What the start of a buffer holds.
#[derive(Debug)]
enum Parsed {
    /// A whole JSON value, and the bytes it took (trailing whitespace not included).
    Value(serde_json::Value, usize),
    /// Only whitespace, or the start of a value.
    Incomplete,
    /// Something that is not JSON.
    Invalid(serde_json::Error),
}

fn next_value(buf: &[u8]) -> Parsed {
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    match values.next() {
        Some(Ok(value)) => Parsed::Value(value, values.byte_offset()),
        None => Parsed::Incomplete,
        Some(Err(err)) if err.is_eof() => Parsed::Incomplete,
        Some(Err(err)) => Parsed::Invalid(err),
    }
}

/// A JSON value as a request. A `null` field counts as absent (`{"key":null}` is a request
/// without a key), and a `null` request as the default one, as in etcd's gateway.
fn to_request<T: DeserializeOwned + Default>(mut value: serde_json::Value) -> Result<T, String> {
    if value.is_null() {
        return Ok(T::default());
    }
    drop_null_fields(&mut value);
    T::deserialize(value).map_err(|err| err.to_string())
}

fn drop_null_fields(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            fields.retain(|_, field| !field.is_null());
            fields.values_mut().for_each(drop_null_fields);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_fields),
        _ => {}
    }
}

/// JSON's whitespace only (or nothing).
fn is_blank(buf: &[u8]) -> bool {
    buf.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Go's text for a body cut off inside a value, which etcd's gateway answers with.
const UNEXPECTED_EOF: &str = "unexpected EOF";

fn decode_message(err: &serde_json::Error) -> String {
    if err.is_eof() {
        UNEXPECTED_EOF.to_owned()
    } else {
        err.to_string()
    }
}

/// Reads a stream's requests from a body as they arrive: a sequence of JSON values, with or
/// without whitespace between them. Holds at most `limit` bytes of an unfinished value.
struct JsonReader {
    body: BodyDataStream,
    buf: Vec<u8>,
    ended: bool,
    limit: usize,
}

impl JsonReader {
    fn new(body: BodyDataStream, limit: usize) -> JsonReader {
        JsonReader {
            body,
            buf: Vec::new(),
            ended: false,
            limit,
        }
    }

    /// The next request; `None` at the end of the body. Errors carry code 2 (Unknown), as
    /// etcd's gateway answers a stream's undecodable first request.
    async fn next<T: DeserializeOwned + Default>(&mut self) -> Result<Option<T>, Status> {
        loop {
            match next_value(&self.buf) {
                Parsed::Value(value, used) => {
                    self.buf.drain(..used);
                    return to_request(value).map(Some).map_err(Status::unknown);
                }
                Parsed::Invalid(err) => return Err(Status::unknown(decode_message(&err))),
                Parsed::Incomplete => {}
            }
            if self.ended {
                return if is_blank(&self.buf) {
                    Ok(None)
                } else {
                    Err(Status::unknown(UNEXPECTED_EOF))
                };
            }
            if self.buf.len() > self.limit {
                return Err(status::request_too_large());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(err)) => return Err(Status::unknown(err.to_string())),
                None => self.ended = true,
            }
        }
    }
}

/// A message as one gRPC frame (uncompressed), for the service's `Streaming` decoder.
fn grpc_frame<M: prost::Message>(message: &M) -> bytes::Bytes {
    let len = message.encoded_len();
    let mut frame = Vec::with_capacity(5 + len);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message
        .encode(&mut frame)
        .expect("a Vec grows to hold the message");
    frame.into()
}

/// Writes a stream of answers, one `{"result":...}` line each. Nothing is written, headers
/// included, before the first answer; a first error is answered like a unary call's, a later
/// one as grpc-gateway's stream error line, which ends the stream.
async fn forward_stream<Resp, S>(mut stream: S) -> Response
where
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
{
    let first = match stream.next().await {
        None => return stream_response(Body::empty()),
        Some(Err(status)) => return error_response(&status),
        Some(Ok(first)) => first,
    };
    let lines = futures::stream::iter([Ok(first)]).chain(stream).scan(
        false,
        |ended, item: Result<Resp, Status>| {
            if *ended {
                return futures::future::ready(None);
            }
            let line = match item {
                Ok(message) => result_line(&message),
                Err(status) => {
                    *ended = true;
                    stream_error_line(&status)
                }
            };
            futures::future::ready(Some(Ok::<_, Infallible>(line)))
        },
    );
    stream_response(Body::from_stream(lines))
}

fn stream_response(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, JSON),
            (GRPC_METADATA_CONTENT_TYPE, GRPC_CONTENT_TYPE),
        ],
        body,
    )
        .into_response()
}

fn result_line<T: Serialize>(message: &T) -> bytes::Bytes {
    match serde_json::to_vec(message) {
        Ok(json) => {
            let mut line = Vec::with_capacity(json.len() + 12);
            line.extend_from_slice(b"{\"result\":");
            line.extend_from_slice(&json);
            line.extend_from_slice(b"}\n");
            line.into()
        }
        Err(err) => stream_error_line(&Status::internal(err.to_string())),
    }
}

/// grpc-gateway v1's form of an error met while streaming.
fn stream_error_line(status: &Status) -> bytes::Bytes {
    let http = http_status(status.code());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
        status.code() as i32,
        http.as_u16(),
        json_string(status.message()),
        json_string(http.canonical_reason().unwrap_or_default()),
    )
    .into()
}

const JSON: &str = "application/json";
const GRPC_METADATA_CONTENT_TYPE: HeaderName =
    HeaderName::from_static("grpc-metadata-content-type");
const GRPC_CONTENT_TYPE: &str = "application/grpc";

fn json_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, JSON),
                (GRPC_METADATA_CONTENT_TYPE, GRPC_CONTENT_TYPE),
            ],
            json,
        )
            .into_response(),
        Err(err) => error_response(&Status::internal(err.to_string())),
    }
}

/// etcd's gateway error: the status message twice and the gRPC code, with the HTTP status
/// that code maps to.
pub fn error_response(status: &Status) -> Response {
    let message = json_string(status.message());
    let body = format!(
        "{{\"error\":{message},\"message\":{message},\"code\":{}}}",
        status.code() as i32
    );
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, JSON)],
        body,
    )
        .into_response()
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The HTTP status grpc-gateway v1 (etcd 3.4's) answers a gRPC code with.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// A path under a gateway prefix that maps to no method.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, PLAIN_TEXT),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "Not Found\n",
    )
        .into_response()
}

/// A method's path asked with another HTTP method than POST.
async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [
            (header::CONTENT_TYPE, PLAIN_TEXT),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "Method Not Allowed\n",
    )
        .into_response()
}

/// etcd answers every gateway path with permissive CORS headers, and a preflight OPTIONS with
/// 200 and nothing else.
async fn cors(request: axum::extract::Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    response
}

//! etcd's gRPC code and message for the calls the transport refuses before a service sees
//! them. tonic words these refusals its own way, and for an oversized message gives another
//! code than grpc-go, which etcd runs on; a client on any stack must see etcd's answer:
//!
//! | refusal | tonic | etcd (grpc-go) |
//! | --- | --- | --- |
//! | a request message over the size limit | OutOfRange "Error, decoded message length too large: found N bytes, the limit is: M bytes" | ResourceExhausted "grpc: received message larger than max (N vs. M)" |
//! | a request compressed with an encoding the server lacks (etcd 3.4 has none) | Unimplemented "Content is compressed with \`gzip\` which isn't supported" | Unimplemented "grpc: Decompressor is not installed for grpc-encoding \"gzip\"" |
//!
//! [`layer`] rewrites them in a trailers-only answer (the status in the response headers, as
//! tonic sends a unary or server-streaming call refused while decoding its request). A
//! bidirectional stream (Watch, LeaseKeepAlive) meets them while reading a later request: its
//! handler ends the stream with [`etcd_refusal`]'s status, as etcd's stream ends with the
//! receive error. Nothing else changes: any other status passes through as it is.
//!
//! Invariant: only statuses carrying exactly tonic's wording are rewritten (a service's own
//! OutOfRange, such as "mvcc: required revision has been compacted", never matches).

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tonic::{Code, Status};

/// The layer over the gRPC routes (`axum::middleware::from_fn`).
pub async fn layer(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    reword(response.headers_mut());
    response
}

/// Replaces a trailers-only status in `headers` by etcd's, when it is one of tonic's transport
/// refusals.
fn reword(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(etcds) = etcd_status(&status) else {
        return;
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    // A message of printable ASCII always makes a header.
    let _ = etcds.add_header(headers);
}

/// etcd's status for a request a stream's handler could not read, when it is one of the
/// transport refusals etcd reports (`None` for any other error, such as the client going away).
pub fn etcd_refusal(status: &Status) -> Option<Status> {
    etcd_status(status)
}

/// etcd's status for a tonic transport refusal, `None` for any other status.
fn etcd_status(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::OutOfRange => {
            let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
            let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
            let limit = rest.strip_suffix(" bytes")?;
            let (found, limit) = (found.parse::<u64>().ok()?, limit.parse::<u64>().ok()?);
            Some(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({found} vs. {limit})"
            )))
        }
        Code::Unimplemented => {
            let encoding = message
                .strip_prefix("Content is compressed with `")?
                .strip_suffix("` which isn't supported")?;
            Some(Status::unimplemented(format!(
                "grpc: Decompressor is not installed for grpc-encoding {encoding:?}"
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(status: &Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        status.add_header(&mut headers).expect("a header");
        headers
    }

    fn reworded(status: Status) -> (Code, String, HeaderMap) {
        let mut headers = headers_of(&status);
        reword(&mut headers);
        let after = Status::from_header_map(&headers).expect("a status");
        (after.code(), after.message().to_owned(), headers)
    }

    #[test]
    fn an_oversized_message_gets_grpc_gos_code_and_message() {
        let (code, message, headers) = reworded(Status::out_of_range(
            "Error, decoded message length too large: found 2097166 bytes, the limit is: \
             2097152 bytes",
        ));
        assert_eq!(code, Code::ResourceExhausted);
        assert_eq!(
            message,
            "grpc: received message larger than max (2097166 vs. 2097152)"
        );
        assert_eq!(headers["grpc-status"], "8");
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers.get_all("grpc-message").iter().count(), 1);
    }

    #[test]
    fn an_unknown_compression_gets_grpc_gos_message() {
        for encoding in ["gzip", "deflate", "snappy"] {
            let (code, message, _) = reworded(Status::unimplemented(format!(
                "Content is compressed with `{encoding}` which isn't supported"
            )));
            assert_eq!(code, Code::Unimplemented);
            assert_eq!(
                message,
                format!("grpc: Decompressor is not installed for grpc-encoding \"{encoding}\"")
            );
        }
    }

    #[test]
    fn every_other_status_passes_unchanged() {
        for status in [
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
            Status::out_of_range("Error, decoded message length too large: found x bytes"),
            Status::unimplemented("unknown service etcdserverpb.Nope"),
            Status::invalid_argument("etcdserver: request is too large"),
            Status::resource_exhausted("etcdserver: mvcc: database space exceeded"),
        ] {
            let before = headers_of(&status);
            let mut after = before.clone();
            reword(&mut after);
            assert_eq!(after, before, "{status:?}");
        }
        let mut none = HeaderMap::new();
        reword(&mut none);
        assert!(none.is_empty(), "a response without a status stays so");
    }
}

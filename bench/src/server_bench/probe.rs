//! Readiness probes timed from a process start: the first successful linearizable Range, and
//! the first `/health` answering `"health":"true"` (HTTP/1.1 on the client URL, where etcd and
//! Ballast both serve it).
//!
//! Invariants: a probe starts a new attempt every `POLL` while fewer than `IN_FLIGHT_MAX` are
//! pending, so a request a server holds (e.g. waiting for a leader) neither hides the moment
//! it becomes ready nor lets attempts pile up; every attempt is bounded by `ATTEMPT_TIMEOUT`;
//! the reported instant is when the first successful answer arrived.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Result};
use ballast_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::transport::Endpoint;

/// Time between two attempts.
const POLL: Duration = Duration::from_millis(5);
/// Attempts pending at once.
const IN_FLIGHT_MAX: usize = 16;
/// One attempt's bound.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A `/health` answer larger than this is not one.
const HEALTH_BYTES_MAX: usize = 64 * 1024;

/// Runs `attempt` every `POLL` (at most `IN_FLIGHT_MAX` pending) until one returns true;
/// returns the instant it did, or `None` at `deadline`.
async fn first_success<F, Fut>(deadline: Instant, attempt: F) -> Option<Instant>
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut pending = FuturesUnordered::new();
    let mut next = Instant::now();
    loop {
        if Instant::now() >= deadline {
            return None;
        }
        if pending.len() < IN_FLIGHT_MAX && Instant::now() >= next {
            pending.push(tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()));
            next = Instant::now() + POLL;
        }
        let wake = next.min(deadline);
        tokio::select! {
            Some(r) = pending.next(), if !pending.is_empty() => {
                if matches!(r, Ok(true)) {
                    return Some(Instant::now());
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The instant a linearizable Range of `key` at `client_url` first succeeds.
pub async fn first_linearizable_range(
    client_url: &str,
    key: Bytes,
    deadline: Instant,
) -> Result<Instant> {
    let endpoint = Endpoint::from_shared(client_url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(ATTEMPT_TIMEOUT);
    // A connection made once the port listens is shared by the attempts after it; until then
    // every attempt dials anew.
    let channel = tokio::sync::OnceCell::new();
    let attempt = || {
        let (endpoint, channel, key) = (&endpoint, &channel, key.clone());
        async move {
            let ch = match channel
                .get_or_try_init(|| async { endpoint.connect().await })
                .await
            {
                Ok(ch) => ch.clone(),
                Err(_) => return false,
            };
            let req = RangeRequest {
                key,
                serializable: false,
                ..Default::default()
            };
            KvClient::new(ch).range(req).await.is_ok()
        }
    };
    first_success(deadline, attempt)
        .await
        .ok_or_else(|| anyhow!("no linearizable Range succeeded at {client_url} in time"))
}

/// The instant `GET /health` at `client_url` first answers `"health":"true"`.
pub async fn health_true(client_url: &str, deadline: Instant) -> Result<Instant> {
    let addr = client_url
        .split("://")
        .nth(1)
        .unwrap_or(client_url)
        .trim_end_matches('/')
        .to_string();
    first_success(deadline, || health_once(&addr))
        .await
        .ok_or_else(|| anyhow!("/health at {client_url} was never true in time"))
}

/// One `GET /health` over a fresh connection: true when the answer is 200 with
/// `"health":"true"` in the body.
pub async fn health_once(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request =
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > HEALTH_BYTES_MAX {
                    return false;
                }
            }
            Err(_) => break,
        }
    }
    health_answer_is_true(&answer)
}

/// True for an HTTP 200 answer whose body holds `"health":"true"` (spaces allowed).
pub fn health_answer_is_true(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some(status_line) = text.lines().next() else {
        return false;
    };
    if status_line.split_whitespace().nth(1) != Some("200") {
        return false;
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"health\":\"true\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"health\":\"true\"}";
        assert!(health_answer_is_true(ok));
        let spaced = b"HTTP/1.1 200 OK\r\n\r\n{\"health\": \"true\", \"reason\": \"\"}";
        assert!(health_answer_is_true(spaced));
        let down = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}";
        assert!(!health_answer_is_true(down));
        let false_200 = b"HTTP/1.1 200 OK\r\n\r\n{\"health\":\"false\"}";
        assert!(!health_answer_is_true(false_200));
        assert!(!health_answer_is_true(b""));
    }

    #[tokio::test]
    async fn nothing_listening_times_out() {
        let port = crate::local_server::free_port().unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let url = format!("http://127.0.0.1:{port}");
        assert!(health_true(&url, deadline).await.is_err());
        assert!(
            first_linearizable_range(&url, Bytes::from_static(b"k"), deadline)
                .await
                .is_err()
        );
    }
}

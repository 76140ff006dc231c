//! The JSON gateway (`POST /v3/...` on the client port), side by side with the reference etcd:
//! the same HTTP requests go to both, one at a time, and each answer must have the same HTTP
//! status, content type and body.
//!
//! Normalized, each for a stated reason: `cluster_id`, `member_id` and `raft_term` in headers
//! and member ids (they name a cluster, not a result); a member's name and URLs (each server
//! has its own); a lease's remaining TTL (read on two clocks: within 2 s of the granted TTL on
//! both); the order of `leases` (etcd lists a Go map); Maintenance.Status values (versions,
//! sizes and raft indexes are the server's own: only the field names are compared). Where
//! etcd's text for malformed JSON is Go's decoder's own wording, only the status and the code
//! are compared (see `net/src/gateway.rs` for the known differences).
//!
//! HTTP here is a small HTTP/1.1 client on a TCP stream, every request bounded by a timeout.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use ballast_conformance::{Pair, Server};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bound for one request and its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for one line of a stream to arrive.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// The head of an HTTP answer.
#[derive(Debug)]
struct Head {
    status: u16,
    content_type: String,
    chunked: bool,
    content_length: Option<usize>,
}

async fn send_request(port: u16, method: &str, path: &str, body: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Head> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line: {line:?}"))?;
    let mut head = Head {
        status,
        content_type: String::new(),
        chunked: false,
        content_length: None,
    };
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(head);
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => head.content_type = value.to_owned(),
            "transfer-encoding" => head.chunked = value.eq_ignore_ascii_case("chunked"),
            "content-length" => head.content_length = value.parse().ok(),
            _ => {}
        }
    }
}

/// The next piece of a chunked body; `None` at its end.
async fn read_chunk(reader: &mut BufReader<TcpStream>) -> Result<Option<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let size = line.trim_end().split(';').next().unwrap_or_default();
    let size =
        usize::from_str_radix(size, 16).with_context(|| format!("not a chunk size: {line:?}"))?;
    if size == 0 {
        // Trailers, then an empty line.
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                return Ok(None);
            }
        }
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).await?;
    chunk.truncate(size);
    Ok(Some(chunk))
}

/// A whole answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

async fn post_to(port: u16, method: &str, path: &str, body: &str) -> Result<Reply> {
    let exchange = async {
        let stream = send_request(port, method, path, body).await?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader).await?;
        let mut raw = Vec::new();
        if head.chunked {
            while let Some(chunk) = read_chunk(&mut reader).await? {
                raw.extend_from_slice(&chunk);
            }
        } else if let Some(len) = head.content_length {
            raw.resize(len, 0);
            reader.read_exact(&mut raw).await?;
        } else {
            reader.read_to_end(&mut raw).await?;
        }
        Ok::<_, anyhow::Error>(Reply {
            status: head.status,
            content_type: head.content_type,
            body: String::from_utf8(raw).context("a UTF-8 body")?,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {path} on port {port}"))
}

/// A streaming answer, read a line at a time.
struct Lines {
    status: u16,
    reader: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Lines {
    async fn open(server: &Server, path: &str, body: &str) -> Result<Lines> {
        let opening = async {
            let stream = send_request(server.client_port(), "POST", path, body).await?;
            let mut reader = BufReader::new(stream);
            let head = read_head(&mut reader).await?;
            ensure!(
                head.chunked || head.status != 200,
                "a stream's answer is chunked: {head:?}"
            );
            Ok(Lines {
                status: head.status,
                reader,
                pending: Vec::new(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, opening)
            .await
            .map_err(|_| anyhow!("POST {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// The next line, or `None` when the stream ended.
    async fn next_line(&mut self) -> Result<Option<String>> {
        let reading = async {
            loop {
                if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=end).collect();
                    return Ok(Some(String::from_utf8(line)?.trim_end().to_owned()));
                }
                match read_chunk(&mut self.reader).await? {
                    Some(chunk) => self.pending.extend_from_slice(&chunk),
                    None if self.pending.is_empty() => return Ok(None),
                    None => {
                        let rest = std::mem::take(&mut self.pending);
                        return Ok(Some(String::from_utf8(rest)?));
                    }
                }
            }
        };
        tokio::time::timeout(LINE_TIMEOUT, reading)
            .await
            .map_err(|_| anyhow!("no stream line within {LINE_TIMEOUT:?}"))?
    }
}

/// Standard base64 with padding, as etcd's JSON carries bytes.
fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in text.as_bytes().chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How much of two answers must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Compare {
    /// Status, content type and (normalized) body.
    Whole,
    /// Status, content type and the error's code; both carry their message twice. For
    /// malformed JSON, whose wording is Go's decoder's on etcd's side.
    StatusAndCode,
    /// Status, content type and the body's field names only (Maintenance.Status).
    FieldNames,
}

/// What is compared of one answer, as text (so a mismatch prints both sides readably).
fn normalized(server: &Server, reply: &Reply, compare: Compare) -> Result<String> {
    let head = format!("{} {}", reply.status, reply.content_type);
    if !reply.content_type.starts_with("application/json") {
        return Ok(format!("{head}\n{}", reply.body));
    }
    let mut body: Value = serde_json::from_str(&reply.body)
        .with_context(|| format!("a JSON body: {:?}", reply.body))?;
    match compare {
        Compare::Whole => normalize(server, &mut body),
        Compare::StatusAndCode => {
            ensure!(
                body["error"] == body["message"] && body["error"].is_string(),
                "an error body carries its message twice: {body}"
            );
            body = serde_json::json!({ "code": body["code"] });
        }
        Compare::FieldNames => {
            normalize(server, &mut body);
            if let Some(fields) = body.as_object_mut() {
                // etcd 3.4's StatusResponse has no dbSizeQuota (3.5 added it); Ballast fills it
                // with its quota, as 3.5 does (the figure of the quota gauge tests/quota.rs checks).
                fields.remove("dbSizeQuota");
                for (name, value) in fields.iter_mut() {
                    if name != "header" {
                        *value = Value::from("?");
                    }
                }
            }
        }
    }
    Ok(format!("{head}\n{body}"))
}

/// The normalizations the module's doc lists.
fn normalize(server: &Server, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            // A whole header (not a txn's nested one, which holds only a revision). Ballast's
            // raft_term is 0, so left out, until its first term is known just after start.
            if let Some(Value::Object(header)) = fields.get_mut("header") {
                if header.contains_key("cluster_id") {
                    for name in ["cluster_id", "member_id", "raft_term"] {
                        header.insert(name.to_owned(), Value::from("N"));
                    }
                }
            }
            if let Some(Value::Array(members)) = fields.get_mut("members") {
                for member in members.iter_mut().filter_map(Value::as_object_mut) {
                    member.insert("ID".to_owned(), Value::from("N"));
                    if member.get("name").and_then(Value::as_str) == Some(server.name()) {
                        member.insert("name".to_owned(), Value::from("NAME"));
                    }
                    for (urls, own) in [
                        ("peerURLs", server.peer_url()),
                        ("clientURLs", server.client_url()),
                    ] {
                        if member.get(urls) == Some(&serde_json::json!([own])) {
                            member.insert(urls.to_owned(), Value::from("OWN"));
                        }
                    }
                }
            }
            if let Some(Value::Array(leases)) = fields.get_mut("leases") {
                leases.sort_by_key(|lease| lease["ID"].as_str().unwrap_or_default().to_owned());
            }
            let granted = fields
                .get("grantedTTL")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<i64>().ok());
            if let (Some(granted), Some(ttl)) = (
                granted,
                fields
                    .get("TTL")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<i64>().ok()),
            ) {
                let within = (granted - 2..=granted).contains(&ttl);
                fields.insert("TTL".to_owned(), Value::from(within));
            }
            fields.values_mut().for_each(|v| normalize(server, v));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize(server, v)),
        _ => {}
    }
}

/// Sends one request to both servers, etcd first, and requires the same answer.
async fn same(pair: &Pair, method: &str, path: &str, body: &str, compare: Compare) -> Result<()> {
    let mut answers = Vec::new();
    for server in pair.both() {
        let reply = post_to(server.client_port(), method, path, body).await?;
        answers.push(
            normalized(server, &reply, compare)
                .with_context(|| format!("{} {method} {path} {body}", server.kind().label()))?,
        );
    }
    if answers[0] != answers[1] {
        bail!(
            "{method} {path} {body}\n  etcd:    {}\n  ballast: {}",
            answers[0],
            answers[1]
        );
    }
    Ok(())
}

async fn post(pair: &Pair, path: &str, body: &str) -> Result<()> {
    same(pair, "POST", path, body, Compare::Whole).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_requests_and_their_errors_answer_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let (foo, fop, bar) = (b64("foo"), b64("fop"), b64("bar"));
    post(
        &pair,
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
    )
    .await?;
    post(
        &pair,
        "/v3/kv/put",
        &format!(
            r#"{{"key":"{foo}","value":"{}","prev_kv":true}}"#,
            b64("bar2")
        ),
    )
    .await?;
    for (key, value) in [("foo/a", "1"), ("foo/b", "22"), ("fo", "3"), ("fop", "4")] {
        post(
            &pair,
            "/v3/kv/put",
            &format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value)),
        )
        .await?;
    }
    let after_puts = 7;
    for range in [
        format!(r#"{{"key":"{foo}"}}"#),
        format!(r#"{{"key":"{foo}","range_end":"{fop}"}}"#),
        format!(r#"{{"key":"{foo}","range_end":"{fop}","limit":"1"}}"#),
        format!(r#"{{"key":"{foo}","range_end":"{fop}","count_only":true}}"#),
        format!(r#"{{"key":"{foo}","range_end":"{fop}","keys_only":true}}"#),
        format!(
            r#"{{"key":"{foo}","range_end":"{fop}","sort_order":"DESCEND","sort_target":"MOD"}}"#
        ),
        format!(r#"{{"key":"{foo}","range_end":"{fop}","sort_order":2,"limit":2}}"#),
        format!(r#"{{"key":"{foo}","revision":"2"}}"#),
        format!(r#"{{"key":"{foo}","serializable":true}}"#),
        // Every key, across shards when there are several.
        r#"{"key":"AA==","range_end":"AA==","keys_only":true}"#.to_owned(),
        format!(r#"{{"key":"{}"}}"#, b64("missing")),
        // The camelCase name is accepted too; a field etcd does not know is skipped.
        format!(r#"{{"key":"{foo}","rangeEnd":"{fop}","count_only":true,"bogus":1}}"#),
        // A null field is an absent one.
        format!(r#"{{"key":"{foo}","range_end":null}}"#),
    ] {
        post(&pair, "/v3/kv/range", &range).await?;
        post(&pair, "/v3beta/kv/range", &range).await?;
    }
    post(
        &pair,
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"key":"{foo}","result":"EQUAL","target":"VALUE","value":"{}"}}],
                "success":[{{"request_put":{{"key":"{}","value":"{bar}"}}}},
                           {{"request_range":{{"key":"{foo}"}}}}],
                "failure":[{{"request_delete_range":{{"key":"{foo}"}}}}]}}"#,
            b64("bar2"),
            b64("t")
        ),
    )
    .await?;
    post(
        &pair,
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"key":"{foo}","result":"GREATER","target":"VERSION","version":"9"}}],
                "failure":[{{"request_delete_range":{{"key":"{}","prev_kv":true}}}}]}}"#,
            b64("t")
        ),
    )
    .await?;
    post(
        &pair,
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{}","prev_kv":true}}"#, b64("fo")),
    )
    .await?;
    post(
        &pair,
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{foo}","range_end":"{fop}"}}"#),
    )
    .await?;
    post(
        &pair,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{after_puts}","physical":true}}"#),
    )
    .await?;

    // Errors: etcd's message, code and HTTP status.
    for (path, body) in [
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","revision":"3"}"#.to_owned(),
        ),
        (
            "/v3/kv/compaction",
            format!(r#"{{"revision":"{after_puts}"}}"#),
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","revision":"1000"}"#.to_owned(),
        ),
        ("/v3/kv/put", format!(r#"{{"key":"","value":"{bar}"}}"#)),
        ("/v3/kv/put", format!(r#"{{"value":"{bar}"}}"#)),
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{foo}","lease":"12345"}}"#),
        ),
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{}","ignore_value":true}}"#, b64("none")),
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"eA=="}},{"request_put":{"key":"eA=="}}]}"#
                .to_owned(),
        ),
        ("/v3/kv/deleterange", "{}".to_owned()),
        ("/v3/kv/range", String::new()),
        ("/v3/kv/range", r#"{"key":null}"#.to_owned()),
        // Cut off: both say "unexpected EOF".
        ("/v3/kv/range", r#"{"key":"Zm9v""#.to_owned()),
    ] {
        post(&pair, path, &body).await?;
    }
    for body in [
        "notjson",
        r#"{"key":"Zm9v!"}"#,
        r#"{"key":123}"#,
        r#"{"limit":1.5}"#,
        "[]",
        r#"{"key":"Zm9v","sort_order":"SIDEWAYS"}"#,
    ] {
        same(&pair, "POST", "/v3/kv/range", body, Compare::StatusAndCode).await?;
    }

    // Paths and methods that map to nothing.
    for path in [
        "/v3/kv/nope",
        "/v3/nope",
        "/v3beta/kv/nope",
        "/v3/maintenance/hashkv",
    ] {
        post(&pair, path, "{}").await?;
    }
    for method in ["GET", "PUT", "DELETE", "OPTIONS"] {
        same(&pair, method, "/v3/kv/range", "", Compare::Whole).await?;
    }
    // Paths outside the gateway (etcd's plain 404).
    for (method, path) in [("GET", "/nope"), ("POST", "/v2/keys/a"), ("GET", "/")] {
        same(&pair, method, path, "", Compare::Whole).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_cluster_maintenance_lock_and_election_answer_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    for (path, body) in [
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"1000"}"#),
        ("/v3/lease/grant", r#"{"TTL":60,"ID":"1001"}"#),
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"1000"}"#),
        (
            "/v3/kv/put",
            r#"{"key":"bA==","value":"MQ==","lease":"1000"}"#,
        ),
        ("/v3/lease/timetolive", r#"{"ID":"1000","keys":true}"#),
        ("/v3/kv/lease/timetolive", r#"{"ID":"1001"}"#),
        ("/v3/lease/timetolive", r#"{"ID":"999"}"#),
        ("/v3/lease/leases", "{}"),
        ("/v3/kv/lease/leases", "{}"),
        ("/v3beta/lease/leases", "{}"),
        ("/v3/lease/revoke", r#"{"ID":"1000"}"#),
        ("/v3/kv/lease/revoke", r#"{"ID":"1000"}"#),
        ("/v3/kv/range", r#"{"key":"bA=="}"#),
        ("/v3/lease/revoke", r#"{"ID":"999"}"#),
        ("/v3/cluster/member/list", "{}"),
        ("/v3/lock/lock", r#"{"name":"bG9jaw==","lease":"1001"}"#),
        ("/v3/lock/lock", r#"{"name":"bG9jaw==","lease":"999"}"#),
        ("/v3/lock/unlock", r#"{"key":"bG9jay8zZTk="}"#),
        (
            "/v3/election/campaign",
            r#"{"name":"ZWw=","lease":"1001","value":"djE="}"#,
        ),
        ("/v3/election/leader", r#"{"name":"ZWw="}"#),
        ("/v3/election/leader", r#"{"name":"bm9uZQ=="}"#),
        (
            "/v3/election/proclaim",
            r#"{"leader":{"name":"ZWw=","key":"ZWwvM2U5","rev":"1","lease":"1001"},"value":"djI="}"#,
        ),
        (
            "/v3/election/resign",
            r#"{"leader":{"name":"ZWw=","key":"ZWwvM2U5","rev":"1","lease":"1001"}}"#,
        ),
    ] {
        post(&pair, path, body).await?;
    }
    same(
        &pair,
        "POST",
        "/v3/maintenance/status",
        "{}",
        Compare::FieldNames,
    )
    .await?;
    Ok(())
}

/// Reads a stream's next line from both servers and requires them equal (normalized).
async fn same_line(pair: &Pair, streams: &mut [Lines; 2], what: &str) -> Result<()> {
    let mut lines = Vec::new();
    for (server, stream) in pair.both().into_iter().zip(streams.iter_mut()) {
        let line = stream
            .next_line()
            .await
            .with_context(|| format!("{}: {what}", server.kind().label()))?;
        let text = match line {
            Some(line) => {
                let mut value: Value = serde_json::from_str(&line)
                    .with_context(|| format!("a JSON line: {line:?}"))?;
                normalize(server, &mut value);
                value.to_string()
            }
            None => "(end of stream)".to_owned(),
        };
        lines.push(text);
    }
    ensure!(
        lines[0] == lines[1],
        "{what}\n  etcd:    {}\n  ballast: {}",
        lines[0],
        lines[1]
    );
    Ok(())
}

async fn open_both(pair: &Pair, path: &str, body: &str) -> Result<[Lines; 2]> {
    let etcd = Lines::open(&pair.etcd, path, body).await?;
    let ballast = Lines::open(&pair.ballast, path, body).await?;
    ensure!(
        etcd.status == ballast.status,
        "POST {path} {body}: status etcd {} ballast {}",
        etcd.status,
        ballast.status
    );
    Ok([etcd, ballast])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_watch_and_keepalive_answer_like_etcd() -> Result<()> {
    let pair = Pair::start().await?;
    let (w, h, one, two) = (b64("w"), b64("h"), b64("1"), b64("2"));
    post(
        &pair,
        "/v3/kv/put",
        &format!(r#"{{"key":"{w}","value":"{one}"}}"#),
    )
    .await?;
    post(
        &pair,
        "/v3/kv/put",
        &format!(r#"{{"key":"{h}","value":"{one}"}}"#),
    )
    .await?;

    // A watch from now on: created, then each change as it happens.
    let mut live = open_both(
        &pair,
        "/v3/watch",
        &format!(r#"{{"create_request":{{"key":"{w}","prev_kv":true}}}}"#),
    )
    .await?;
    same_line(&pair, &mut live, "watch created").await?;
    post(
        &pair,
        "/v3/kv/put",
        &format!(r#"{{"key":"{w}","value":"{two}"}}"#),
    )
    .await?;
    same_line(&pair, &mut live, "the put's event").await?;
    post(&pair, "/v3/kv/deleterange", &format!(r#"{{"key":"{w}"}}"#)).await?;
    same_line(&pair, &mut live, "the delete's event").await?;

    // A watch from history, with a chosen id: its one past event comes after it is created.
    let mut history = open_both(
        &pair,
        "/v3beta/watch",
        &format!(r#"{{"create_request":{{"key":"{h}","start_revision":"1","watch_id":"7"}}}}"#),
    )
    .await?;
    same_line(&pair, &mut history, "history watch created").await?;
    same_line(&pair, &mut history, "history watch's event").await?;

    // A watch whose range is empty is refused on its stream.
    let mut empty = open_both(
        &pair,
        "/v3/watch",
        &format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{w}"}}}}"#,
            b64("x")
        ),
    )
    .await?;
    same_line(&pair, &mut empty, "empty range refused").await?;

    // A first request that does not decode fails the call.
    same(&pair, "POST", "/v3/watch", r#"{"create_re"#, Compare::Whole).await?;

    // Keep-alives: one answer per request, then the stream ends with the body.
    post(&pair, "/v3/lease/grant", r#"{"TTL":"30","ID":"77"}"#).await?;
    let mut keepalive = open_both(
        &pair,
        "/v3/lease/keepalive",
        r#"{"ID":"77"} {"ID":"77"}{"ID":"78"}"#,
    )
    .await?;
    for what in ["keep-alive 1", "keep-alive 2", "unknown lease", "end"] {
        same_line(&pair, &mut keepalive, what).await?;
    }
    Ok(())
}

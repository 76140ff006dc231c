//! The test harness shared by the shard tests: a shard started through its public handle and
//! stopped by dropping it (the executor thread is joined, with a bound on the wait).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ballast_consensus::{
    Reply, Request, Response, ShardConfig, ShardError, ShardHandle, ShardStatus,
};
use ballast_engine::{PutRequest, RangeRequest};
use bytes::Bytes;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Shard {
    handle: Option<ShardHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shard {
    pub fn start(config: ShardConfig) -> Shard {
        // `RUST_LOG=debug cargo test ...` shows the shard's and openraft's logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (handle, thread) = ShardHandle::spawn("test-shard", config).expect("shard starts");
        Shard {
            handle: Some(handle),
            thread: Some(thread),
        }
    }

    pub fn h(&self) -> &ShardHandle {
        self.handle.as_ref().expect("running")
    }

    pub async fn call(&self, request: Request) -> Result<Reply, ShardError> {
        tokio::time::timeout(WAIT, self.h().call(request))
            .await
            .expect("shard answers in time")
    }

    pub async fn status(&self) -> ShardStatus {
        match self.call(Request::Status).await.expect("status").response {
            Response::Status(s) => s,
            other => panic!("status answered {other:?}"),
        }
    }

    pub fn stop(&mut self) {
        drop(self.handle.take());
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + WAIT;
            while !thread.is_finished() {
                assert!(Instant::now() < deadline, "shard thread did not stop");
                std::thread::sleep(Duration::from_millis(5));
            }
            thread.join().expect("shard thread ends without panic");
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: b(key),
        value: b(value),
        ..PutRequest::default()
    })
}

pub fn get(key: &str, serializable: bool) -> Request {
    Request::Range(RangeRequest {
        key: b(key),
        serializable,
        ..RangeRequest::default()
    })
}

pub fn range_values(reply: Reply) -> Vec<Bytes> {
    match reply.response {
        Response::Range(r) => r.kvs.into_iter().map(|kv| kv.value).collect(),
        other => panic!("range answered {other:?}"),
    }
}

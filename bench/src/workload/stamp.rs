//! Send-time stamps carried in values, so a watcher can measure put-to-event latency.
//!
//! Invariant: a stamp is the first 8 bytes of the value, big-endian nanoseconds since a
//! process-wide monotonic epoch; writer and watcher run in one process, so clocks agree.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes a stamp takes.
pub const STAMP_BYTES: usize = 8;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A value of `size` bytes (at least [`STAMP_BYTES`]) stamped with now, padded from `filler`.
pub fn stamped_value(size: usize, filler: &[u8]) -> Bytes {
    let size = size.max(STAMP_BYTES);
    let mut v = BytesMut::with_capacity(size);
    v.put_u64(epoch().elapsed().as_nanos() as u64);
    let pad = size - STAMP_BYTES;
    for chunk in filler.iter().cycle().take(pad) {
        v.put_u8(*chunk);
    }
    if filler.is_empty() {
        v.put_bytes(0, pad);
    }
    v.freeze()
}

/// Time since the stamp in `value`; `None` when the value is too short.
pub fn age(value: &[u8]) -> Option<Duration> {
    let raw: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    let sent = Duration::from_nanos(u64::from_be_bytes(raw));
    Some(epoch().elapsed().saturating_sub(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        let v = stamped_value(32, b"ab");
        assert_eq!(v.len(), 32);
        assert_eq!(&v[8..12], b"abab");
        std::thread::sleep(Duration::from_millis(5));
        let a = age(&v).expect("stamped");
        assert!(
            a >= Duration::from_millis(5) && a < Duration::from_secs(5),
            "{a:?}"
        );
        assert_eq!(stamped_value(2, b"").len(), STAMP_BYTES);
        assert!(age(b"short").is_none());
    }
}

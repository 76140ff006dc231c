//! Paginated prefix listing the way Kubernetes lists: pages of `limit` keys, every page after
//! the first read at the first page's revision and starting just after the last key seen.
//!
//! Invariants: pages never overlap (the next page starts at `last_key + "\0"`); all pages are
//! read at one revision, so a concurrent write cannot make a key appear twice or be skipped;
//! the loop ends when the server says `more == false` or a page comes back empty.

use ballast_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use bytes::{BufMut, Bytes, BytesMut};
use tonic::transport::Channel;
use tonic::Status;

/// What one full listing returned.
#[derive(Debug, Default)]
pub struct Listing {
    /// Range requests made.
    pub pages: u64,
    /// Every key returned, in the order returned.
    pub keys: Vec<Bytes>,
    /// The revision all pages were read at.
    pub revision: i64,
}

/// Lists `[key, range_end)` in pages of `limit`.
pub async fn list_all(
    kv: &mut KvClient<Channel>,
    key: Bytes,
    range_end: Bytes,
    limit: i64,
    serializable: bool,
) -> Result<Listing, Status> {
    let mut listing = Listing::default();
    let mut start = key;
    loop {
        let resp = kv
            .range(RangeRequest {
                key: start.clone(),
                range_end: range_end.clone(),
                limit,
                revision: listing.revision,
                serializable,
                ..Default::default()
            })
            .await?
            .into_inner();
        listing.pages += 1;
        if listing.revision == 0 {
            listing.revision = resp.header.as_ref().map_or(0, |h| h.revision);
        }
        let Some(last) = resp.kvs.last().map(|kv| kv.key.clone()) else {
            return Ok(listing);
        };
        listing.keys.extend(resp.kvs.into_iter().map(|kv| kv.key));
        if !resp.more {
            return Ok(listing);
        }
        let mut next = BytesMut::with_capacity(last.len() + 1);
        next.put_slice(&last);
        next.put_u8(0);
        start = next.freeze();
    }
}

/// Whether `keys` is strictly increasing (so no key was returned twice).
pub fn strictly_increasing(keys: &[Bytes]) -> bool {
    keys.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increasing_check() {
        let k = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(strictly_increasing(&[k("a"), k("b"), k("c")]));
        assert!(!strictly_increasing(&[k("a"), k("b"), k("b")]));
        assert!(!strictly_increasing(&[k("b"), k("a")]));
        assert!(strictly_increasing(&[]));
    }
}

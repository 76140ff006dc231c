//! Key and value generation: fixed-size keys under a prefix over a bounded key space, picked
//! sequentially or uniformly at random, and one shared random value per size.
//!
//! Invariants: `key(n)` is a pure function of `n`, at least `key_size` bytes long (longer only
//! when the prefix plus the digits do not fit), and distinct for distinct `n < key_space`;
//! keys of one generator sort in the order of `n`.

use bytes::Bytes;
use rand::{Rng, RngCore};

/// Generates the keys of a workload.
#[derive(Clone, Debug)]
pub struct KeyGen {
    pub prefix: String,
    pub key_size: usize,
    pub key_space: u64,
    pub sequential: bool,
}

impl KeyGen {
    /// The `n`-th key: the prefix, then `n` zero-padded to fill `key_size`.
    pub fn key(&self, n: u64) -> Bytes {
        let digits = self.key_space.max(1).saturating_sub(1).to_string().len();
        let width = self.key_size.saturating_sub(self.prefix.len()).max(digits);
        Bytes::from(format!("{}{:0width$}", self.prefix, n, width = width))
    }

    /// The key for operation number `seq`: `seq mod key_space` when sequential, else random.
    pub fn pick(&self, seq: u64, rng: &mut impl Rng) -> Bytes {
        let space = self.key_space.max(1);
        let n = if self.sequential {
            seq % space
        } else {
            rng.gen_range(0..space)
        };
        self.key(n)
    }

    /// The `[key, range_end)` covering every key of this generator's prefix.
    pub fn prefix_range(&self) -> (Bytes, Bytes) {
        prefix_range(self.prefix.as_bytes())
    }
}

/// `[prefix, range_end)` for an etcd prefix query: the prefix with its last byte below 0xff
/// incremented and the rest dropped; `\0` (every key) when the prefix is all 0xff or empty.
pub fn prefix_range(prefix: &[u8]) -> (Bytes, Bytes) {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") += 1;
            return (Bytes::copy_from_slice(prefix), Bytes::from(end));
        }
        end.pop();
    }
    (Bytes::copy_from_slice(prefix), Bytes::from_static(b"\0"))
}

/// `size` random bytes.
pub fn random_value(size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut v);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_distinct_and_ordered() {
        let g = KeyGen {
            prefix: "/b/".into(),
            key_size: 12,
            key_space: 1000,
            sequential: true,
        };
        assert_eq!(&g.key(7)[..], b"/b/000000007");
        assert!(g.key(7) < g.key(10));
        let mut rng = rand::thread_rng();
        assert_eq!(g.pick(1003, &mut rng), g.key(3));
        let small = KeyGen {
            prefix: "/long-prefix/".into(),
            key_size: 4,
            key_space: 100,
            sequential: false,
        };
        assert_eq!(&small.key(5)[..], b"/long-prefix/05");
        for _ in 0..100 {
            assert!(small.pick(0, &mut rng) <= small.key(99));
        }
    }

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range(b"/a/").1, Bytes::from_static(b"/a0"));
        assert_eq!(prefix_range(b"a\xff").1, Bytes::from_static(b"b"));
        assert_eq!(prefix_range(b"\xff").1, Bytes::from_static(b"\0"));
    }
}

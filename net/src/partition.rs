//! The partition map: which shard owns which key. Pure logic, no I/O; the router asks it where
//! a request's keys live.
//!
//! Placement, most specific rule first:
//! 1. A pin (`--partition PREFIX=SHARD`): a key that starts with a pinned prefix lives in that
//!    pin's shard; when several pinned prefixes match, the longest wins.
//! 2. The Kubernetes preset: a key `/registry/<resource>/<anything>` with a non-empty
//!    `<resource>` lives in shard `fnv1a64(<resource>) % shards`.
//! 3. Every other key lives in shard 0: `/registry/` itself, `/registry/<resource>` without the
//!    trailing slash, `/registry//...` (an empty resource), and every key outside `/registry/`.
//!
//! The resource is the first path segment after `/registry/`, whatever Kubernetes puts there.
//! Most built-in types have their plural there (`/registry/pods/<ns>/<name>`,
//! `/registry/events/<ns>/<name>`, `/registry/masterleases/<ip>`, `/registry/ranges/serviceips`),
//! but aggregated APIs and custom resources put their API group first
//! (`/registry/apiregistration.k8s.io/apiservices/<name>`, `/registry/<group>/<plural>/...`), so
//! every resource of one group shares a shard. That is the price of a rule that never guesses
//! which segments are groups: every prefix Kubernetes lists or watches (`/registry/pods/`,
//! `/registry/pods/<ns>/`, `/registry/<group>/<plural>/`) lies inside one first segment, so
//! every Kubernetes read is single-shard. A pin on `/registry/<group>/<plural>/` separates one
//! custom resource when that matters.
//!
//! Invariants:
//! - The assignment is a pure function of the shard count, the pins and the key bytes. The hash
//!   is FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3), written out here and
//!   never std's randomized hasher, so every process, restart and node agrees; the stability
//!   tests pin the shard of real keys so a change of hash fails them.
//! - A `PartitionMap` that exists has 1..=[`MAX_SHARDS`] shards and pins with non-empty,
//!   distinct prefixes that each name an existing shard.
//! - `shards_of_range` is safe: every key the range may contain maps to a shard in the answer.
//!   It is exact when the range stays inside one resource's prefix or one pinned prefix; a range
//!   crossing from one resource to another may contain infinitely many resource names between
//!   them, so it answers every shard.

use ballast_engine::{Compare, RequestOp, TxnRequest};
use ballast_tuning::settings::{PartitionRule, Settings};

/// Most shards one map can place keys on (the tuning limit on `shards`).
pub const MAX_SHARDS: usize = ballast_tuning::settings::MAX_SHARDS as usize;
const WORDS: usize = MAX_SHARDS / 64;
const _: () = assert!(MAX_SHARDS.is_multiple_of(64) && WORDS > 0);

/// The Kubernetes key prefix the preset spreads over the shards.
pub const REGISTRY_PREFIX: &[u8] = b"/registry/";
/// The first key after every `/registry/` key (`'/' + 1 == '0'`).
const REGISTRY_END: &[u8] = b"/registry0";

/// FNV-1a, 64 bits: the one hash the preset uses. Changing it moves keys between shards on
/// existing data, so it is a format decision, not an implementation detail.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// A set of shard indexes below [`MAX_SHARDS`], as a fixed bitset: `Copy`, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShardSet {
    bits: [u64; WORDS],
}

impl ShardSet {
    pub const fn new() -> ShardSet {
        ShardSet { bits: [0; WORDS] }
    }

    /// The set holding `shard` alone.
    pub fn one(shard: usize) -> ShardSet {
        let mut s = ShardSet::new();
        s.insert(shard);
        s
    }

    /// Shards `0..shards`.
    pub fn all(shards: usize) -> ShardSet {
        assert!(shards <= MAX_SHARDS, "{shards} shards > {MAX_SHARDS}");
        let mut s = ShardSet::new();
        for (i, word) in s.bits.iter_mut().enumerate() {
            let below = shards.saturating_sub(i * 64).min(64);
            *word = if below == 64 {
                u64::MAX
            } else {
                (1u64 << below) - 1
            };
        }
        s
    }

    pub fn insert(&mut self, shard: usize) {
        assert!(shard < MAX_SHARDS, "shard {shard} >= {MAX_SHARDS}");
        self.bits[shard / 64] |= 1 << (shard % 64);
    }

    pub fn contains(&self, shard: usize) -> bool {
        shard < MAX_SHARDS && self.bits[shard / 64] & (1 << (shard % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The shard, when the set holds exactly one: the request runs there.
    pub fn single(&self) -> Option<usize> {
        (self.len() == 1).then(|| self.iter().next()).flatten()
    }

    /// Adds every shard of `other`.
    pub fn union_with(&mut self, other: &ShardSet) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
    }

    /// The shards in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_SHARDS).filter(|&s| self.contains(s))
    }
}

impl FromIterator<usize> for ShardSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> ShardSet {
        let mut s = ShardSet::new();
        for shard in iter {
            s.insert(shard);
        }
        s
    }
}

impl std::fmt::Debug for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// `0, 3, 5`: the form an error message naming the shards uses.
impl std::fmt::Display for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, shard) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{shard}")?;
        }
        Ok(())
    }
}

/// One pin: keys starting with `prefix` live in `shard`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub prefix: Vec<u8>,
    pub shard: usize,
}

impl Pin {
    pub fn new(prefix: impl Into<Vec<u8>>, shard: usize) -> Pin {
        Pin {
            prefix: prefix.into(),
            shard,
        }
    }
}

impl From<&PartitionRule> for Pin {
    fn from(rule: &PartitionRule) -> Pin {
        Pin::new(rule.prefix.as_bytes(), rule.shard as usize)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionError {
    #[error("the partition map needs at least one shard")]
    NoShards,
    #[error("{shards} shards is more than the maximum of {max}")]
    TooManyShards { shards: usize, max: usize },
    #[error("a pin to shard {shard} has an empty prefix; pin a prefix such as /registry/events/")]
    EmptyPrefix { shard: usize },
    #[error(
        "prefix {prefix:?} is pinned to shard {shard}, but there are {shards} shards \
         (numbered 0 to {})",
        shards - 1
    )]
    ShardOutOfRange {
        prefix: String,
        shard: usize,
        shards: usize,
    },
    #[error("prefix {prefix:?} is pinned twice (to shard {first} and to shard {second})")]
    DuplicatePrefix {
        prefix: String,
        first: usize,
        second: usize,
    },
}

/// Which shard owns which key; see the module comment for the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMap {
    shards: usize,
    /// Longest prefix first, so the first match is the longest.
    pins: Vec<Pin>,
    /// Where pins start and end (each prefix and the first key after its keys), sorted and
    /// distinct: between two neighbours, the set of matching pins is constant.
    pin_bounds: Vec<Vec<u8>>,
}

impl PartitionMap {
    /// The preset over `shards` shards, overridden by `pins`.
    pub fn new(shards: usize, pins: Vec<Pin>) -> Result<PartitionMap, PartitionError> {
        if shards == 0 {
            return Err(PartitionError::NoShards);
        }
        if shards > MAX_SHARDS {
            return Err(PartitionError::TooManyShards {
                shards,
                max: MAX_SHARDS,
            });
        }
        for (i, pin) in pins.iter().enumerate() {
            if pin.prefix.is_empty() {
                return Err(PartitionError::EmptyPrefix { shard: pin.shard });
            }
            if pin.shard >= shards {
                return Err(PartitionError::ShardOutOfRange {
                    prefix: String::from_utf8_lossy(&pin.prefix).into_owned(),
                    shard: pin.shard,
                    shards,
                });
            }
            if let Some(first) = pins[..i].iter().find(|p| p.prefix == pin.prefix) {
                return Err(PartitionError::DuplicatePrefix {
                    prefix: String::from_utf8_lossy(&pin.prefix).into_owned(),
                    first: first.shard,
                    second: pin.shard,
                });
            }
        }
        let mut pins = pins;
        pins.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        let mut pin_bounds: Vec<Vec<u8>> = pins
            .iter()
            .flat_map(|p| [Some(p.prefix.clone()), prefix_end(&p.prefix)])
            .flatten()
            .collect();
        pin_bounds.sort();
        pin_bounds.dedup();
        Ok(PartitionMap {
            shards,
            pins,
            pin_bounds,
        })
    }

    /// The map the resolved settings describe on a machine with `cores` cores (`shards: 0`
    /// means one per core, capped at [`MAX_SHARDS`]).
    pub fn from_settings(settings: &Settings, cores: u32) -> Result<PartitionMap, PartitionError> {
        let shards = (settings.effective_shards(cores) as usize).min(MAX_SHARDS);
        PartitionMap::new(shards, settings.partition.iter().map(Pin::from).collect())
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The pins, longest prefix first.
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        match self.pin_of(key) {
            Some(pin) => pin.shard,
            None => self.preset_shard_of(key),
        }
    }

    /// The shards a range may touch, with etcd's reading of `range_end`: empty means the one
    /// key `key`; `"\0"` means every key >= `key`; otherwise `[key, range_end)`, which is empty
    /// when `range_end <= key`.
    pub fn shards_of_range(&self, key: &[u8], range_end: &[u8]) -> ShardSet {
        if range_end.is_empty() {
            return ShardSet::one(self.shard_of(key));
        }
        let end = if range_end == b"\0" {
            None
        } else if range_end <= key {
            return ShardSet::new();
        } else {
            Some(range_end)
        };
        let mut set = ShardSet::new();
        // Cut [key, end) where a pin starts or stops applying; inside each piece one rule holds.
        let first = self.pin_bounds.partition_point(|b| b.as_slice() <= key);
        let mut lo = key;
        let inner = self.pin_bounds[first..]
            .iter()
            .map(Vec::as_slice)
            .take_while(|&b| end.is_none_or(|e| b < e));
        for hi in inner.map(Some).chain(std::iter::once(end)) {
            self.add_piece(lo, hi, &mut set);
            if set.len() == self.shards {
                break;
            }
            lo = hi.unwrap_or_default();
        }
        set
    }

    /// Every shard a txn may touch: its compares and the ops of both branches, nested txns
    /// included (which branch runs is known only once the compares are evaluated).
    pub fn shards_of_txn(&self, txn: &TxnRequest) -> ShardSet {
        let mut set = ShardSet::new();
        for Compare { key, range_end, .. } in &txn.compare {
            set.union_with(&self.shards_of_range(key, range_end));
        }
        for op in txn.success.iter().chain(&txn.failure) {
            set.union_with(&self.shards_of_op(op));
        }
        set
    }

    /// The shards one txn operation may touch.
    pub fn shards_of_op(&self, op: &RequestOp) -> ShardSet {
        match op {
            RequestOp::Range(r) => self.shards_of_range(&r.key, &r.range_end),
            RequestOp::Put(p) => ShardSet::one(self.shard_of(&p.key)),
            RequestOp::DeleteRange(d) => self.shards_of_range(&d.key, &d.range_end),
            RequestOp::Txn(t) => self.shards_of_txn(t),
        }
    }

    /// The longest pin whose prefix starts `key`.
    fn pin_of(&self, key: &[u8]) -> Option<&Pin> {
        self.pins.iter().find(|p| key.starts_with(&p.prefix))
    }

    fn preset_shard_of(&self, key: &[u8]) -> usize {
        match resource_of(key) {
            Some(resource) => self.resource_shard(resource),
            None => 0,
        }
    }

    /// The preset's shard for the keys of `/registry/<resource>/`.
    fn resource_shard(&self, resource: &[u8]) -> usize {
        if resource.is_empty() {
            return 0;
        }
        // `shards` <= MAX_SHARDS, so the remainder fits any usize.
        (fnv1a64(resource) % self.shards as u64) as usize
    }

    /// Adds the shards of the non-empty piece `[lo, hi)` (`None`: unbounded), inside which no
    /// pin starts or stops: either one pin holds for all of it, or none does.
    fn add_piece(&self, lo: &[u8], hi: Option<&[u8]>, set: &mut ShardSet) {
        debug_assert!(hi.is_none_or(|h| lo < h));
        // A pin's prefix is a prefix of every key of the piece iff it is one of `lo`'s.
        if let Some(pin) = self.pin_of(lo) {
            set.insert(pin.shard);
            return;
        }
        // Keys before `/registry/` ...
        if lo < REGISTRY_PREFIX {
            set.insert(0);
        }
        // ... and after every `/registry/` key live in shard 0.
        if hi.is_none_or(|h| lo.max(REGISTRY_END) < h) {
            set.insert(0);
        }
        let l = lo.max(REGISTRY_PREFIX);
        let h = hi.map_or(REGISTRY_END, |h| h.min(REGISTRY_END));
        if l < h {
            self.add_registry_piece(l, h, set);
        }
    }

    /// Adds the shards of `[l, h)`, where `/registry/ <= l < h <= /registry0`.
    ///
    /// Example, 4 shards: `[/registry/pods/a, /registry/pods/b)` holds pods only, one shard.
    /// `[/registry/pods/, /registry/services/)` runs past the pods (whose keys end before
    /// `/registry/pods0`) into `/registry/pods0`, `/registry/pods0-x/...`, `/registry/pods1/...`:
    /// unboundedly many resource names, so every shard.
    fn add_registry_piece(&self, l: &[u8], h: &[u8], set: &mut ShardSet) {
        let after = &l[REGISTRY_PREFIX.len()..];
        let resource_end;
        let mut l = l;
        if let Some(slash) = after.iter().position(|&b| b == b'/') {
            let resource = &after[..slash];
            set.insert(self.resource_shard(resource));
            // The resource's keys end before `/registry/<resource>0`.
            resource_end = [REGISTRY_PREFIX, resource, b"0"].concat();
            if h <= resource_end.as_slice() {
                return;
            }
            l = &resource_end;
        }
        // `l` is `/registry/<name>` without a further slash: a shard-0 key, in the range.
        set.insert(0);
        // Its successor `l + "\0"` and everything after it up to `h` may hold any resource.
        let successor = [l, b"\0"].concat();
        if successor.as_slice() < h {
            set.union_with(&ShardSet::all(self.shards));
        }
    }
}

/// The resource of a `/registry/<resource>/...` key (possibly empty, for `/registry//...`);
/// `None` for every other key.
fn resource_of(key: &[u8]) -> Option<&[u8]> {
    let after = key.strip_prefix(REGISTRY_PREFIX)?;
    let slash = after.iter().position(|&b| b == b'/')?;
    Some(&after[..slash])
}

/// The first key after every key starting with `prefix` (etcd's prefix range end); `None`
/// when there is none (the prefix is all 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

#[cfg(test)]
mod tests;

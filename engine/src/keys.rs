//! How etcd reads a `(key, range_end)` pair, in one place for ranges, deletes, compares and
//! watches:
//!
//! - `range_end` empty: the single key `key`;
//! - `range_end == "\0"`: every key `>= key` (so `key = "\0", range_end = "\0"` is every key);
//! - otherwise the half-open interval `[key, range_end)`, empty when `range_end <= key`.
//!
//! Invariant: `KeyRange::contains` and `KeyRange::bounds` describe the same set of keys.

use std::ops::Bound;

/// Lower and upper bound of a key scan.
pub(crate) type ScanBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// Exactly one key.
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` means unbounded above.
    Interval {
        start: &'a [u8],
        end: Option<&'a [u8]>,
    },
}

impl<'a> KeyRange<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Interval {
                start: key,
                end: None,
            },
            end => KeyRange::Interval {
                start: key,
                end: Some(end),
            },
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => key == k,
            KeyRange::Interval { start, end } => start <= k && end.is_none_or(|e| k < e),
        }
    }

    /// Bounds for a `BTreeMap` range scan, or `None` when the set is empty (an inverted
    /// interval, which `BTreeMap::range` would reject with a panic).
    pub(crate) fn bounds(&self) -> Option<ScanBounds<'a>> {
        match *self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::Interval { start, end: None } => {
                Some((Bound::Included(start), Bound::Unbounded))
            }
            KeyRange::Interval {
                start,
                end: Some(end),
            } => (start < end).then_some((Bound::Included(start), Bound::Excluded(end))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_interval_from_key_and_all() {
        let single = KeyRange::new(b"b", b"");
        assert!(single.contains(b"b") && !single.contains(b"ba") && !single.contains(b"a"));

        let iv = KeyRange::new(b"b", b"d");
        assert!(
            iv.contains(b"b") && iv.contains(b"cz") && !iv.contains(b"d") && !iv.contains(b"a")
        );

        let from = KeyRange::new(b"b", b"\0");
        assert!(from.contains(b"b") && from.contains(b"zzz") && !from.contains(b"a"));
        assert_eq!(
            from.bounds(),
            Some((Bound::Included(&b"b"[..]), Bound::Unbounded))
        );

        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"a") && all.contains(b"\xff\xff"));
    }

    #[test]
    fn inverted_and_empty_intervals_hold_nothing() {
        let inv = KeyRange::new(b"d", b"b");
        assert!(!inv.contains(b"c") && !inv.contains(b"d") && !inv.contains(b"b"));
        assert_eq!(inv.bounds(), None);
        let same = KeyRange::new(b"d", b"d");
        assert!(!same.contains(b"d"));
        assert_eq!(same.bounds(), None);
    }
}

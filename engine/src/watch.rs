//! Sans-I/O matching of events against one watcher's filter. The watcher registry, ids and
//! streams live in `consensus`; this only answers "does this watcher see this event, and in
//! what shape".
//!
//! Invariant: `shape` never returns an event `matches_key` rejects, and strips `prev_kv`
//! unless the watcher asked for it.

use bytes::Bytes;

use crate::keys::KeyRange;
use crate::types::{Event, EventKind};

/// What one watch asked for: keys `[key, range_end)` by etcd's range rules (empty `range_end`
/// = the single key, `"\0"` = every key `>= key`) and etcd's NOPUT / NODELETE filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    pub key: Bytes,
    pub range_end: Bytes,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl WatchFilter {
    pub fn matches_key(&self, key: &[u8]) -> bool {
        KeyRange::new(&self.key, &self.range_end).contains(key)
    }

    /// The event as this watcher receives it, or `None` when the key is outside the watch or
    /// its kind is filtered out.
    pub fn shape(&self, ev: &Event) -> Option<Event> {
        if !self.matches_key(&ev.kv.key) {
            return None;
        }
        match ev.kind {
            EventKind::Put if self.no_put => return None,
            EventKind::Delete if self.no_delete => return None,
            _ => {}
        }
        let mut out = ev.clone();
        // etcd never attaches a previous value to a create event (a put whose create revision
        // is its mod revision), even when a txn deleted the key earlier in the same revision.
        let create = ev.kind == EventKind::Put && ev.kv.create_revision == ev.kv.mod_revision;
        if !self.prev_kv || create {
            out.prev_kv = None;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::KeyValue;

    #[test]
    fn create_events_carry_no_prev_kv_even_after_a_delete_in_the_same_txn() {
        // Revision 42 of a txn that deleted "b/1" (last put at 41) and put it again: the put
        // creates a new generation, so etcd sends it without prev_kv.
        let prev = KeyValue {
            key: Bytes::from_static(b"b/1"),
            create_revision: 35,
            mod_revision: 41,
            version: 3,
            ..Default::default()
        };
        let create = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: Bytes::from_static(b"b/1"),
                create_revision: 42,
                mod_revision: 42,
                version: 1,
                ..Default::default()
            },
            prev_kv: Some(prev.clone()),
        };
        let filter = WatchFilter {
            key: Bytes::from_static(b"b/"),
            range_end: Bytes::from_static(b"b0"),
            prev_kv: true,
            ..Default::default()
        };
        assert_eq!(filter.shape(&create).unwrap().prev_kv, None);
        let update = Event {
            kv: KeyValue {
                create_revision: 35,
                version: 4,
                ..create.kv.clone()
            },
            ..create
        };
        assert_eq!(filter.shape(&update).unwrap().prev_kv, Some(prev));
    }

    fn ev(kind: EventKind, key: &'static [u8]) -> Event {
        let kv = KeyValue {
            key: Bytes::from_static(key),
            mod_revision: 5,
            ..KeyValue::default()
        };
        let prev = KeyValue {
            key: Bytes::from_static(key),
            mod_revision: 4,
            version: 1,
            ..KeyValue::default()
        };
        Event {
            kind,
            kv,
            prev_kv: Some(prev),
        }
    }

    fn filter(key: &'static [u8], range_end: &'static [u8]) -> WatchFilter {
        WatchFilter {
            key: Bytes::from_static(key),
            range_end: Bytes::from_static(range_end),
            ..WatchFilter::default()
        }
    }

    #[test]
    fn key_matching_follows_range_rules() {
        assert!(filter(b"a", b"").matches_key(b"a"));
        assert!(!filter(b"a", b"").matches_key(b"ab"));
        assert!(filter(b"a", b"b").matches_key(b"ab"));
        assert!(!filter(b"a", b"b").matches_key(b"b"));
        assert!(filter(b"m", b"\0").matches_key(b"zz"));
        assert!(!filter(b"m", b"\0").matches_key(b"l"));
        assert!(filter(b"\0", b"\0").matches_key(b"anything"));
    }

    #[test]
    fn shape_filters_kinds_and_strips_prev_kv() {
        let f = filter(b"a", b"c");
        let put = f.shape(&ev(EventKind::Put, b"b")).expect("matches");
        assert_eq!(put.prev_kv, None);
        assert_eq!(put.kv.mod_revision, 5);
        assert_eq!(f.shape(&ev(EventKind::Put, b"c")), None);

        let with_prev = WatchFilter {
            prev_kv: true,
            ..f.clone()
        };
        assert_eq!(
            with_prev.shape(&ev(EventKind::Delete, b"a")),
            Some(ev(EventKind::Delete, b"a"))
        );

        let no_put = WatchFilter {
            no_put: true,
            ..f.clone()
        };
        assert_eq!(no_put.shape(&ev(EventKind::Put, b"b")), None);
        assert!(no_put.shape(&ev(EventKind::Delete, b"b")).is_some());

        let no_delete = WatchFilter {
            no_delete: true,
            ..f
        };
        assert_eq!(no_delete.shape(&ev(EventKind::Delete, b"b")), None);
        assert!(no_delete.shape(&ev(EventKind::Put, b"b")).is_some());
    }
}

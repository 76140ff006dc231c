//! The etcd KV model the checker runs operations against: one global revision counter and, per
//! key, the live version (value, `create_revision`, `mod_revision`, `version`).
//!
//! etcd's rules, exactly as the checker needs them:
//! - A request that changes something (a put; a delete that deletes a key; a txn whose taken
//!   branch does either) takes revision `current + 1`; every key it writes gets that
//!   `mod_revision`. A delete of an absent key and a read-only txn change nothing and leave the
//!   revision alone; their header revision is the current one.
//! - A put of a live key keeps its `create_revision` and adds one to `version`; a put of an
//!   absent key starts a new generation: `create_revision = mod_revision`, `version = 1`.
//! - A compare on an absent key: `VALUE` is false whatever the result asked for; the other
//!   targets compare the operand with 0.
//! - Ops of a txn run in order and see the writes of earlier ops of the same txn.
//!
//! Invariant: [`State::apply`] either changes nothing (and says so) or changes the keys it
//! reports in its [`Undo`]; [`State::undo`] puts them back exactly, so the checker can walk a
//! search tree on one state. The state's fingerprint (a 128-bit hash of the key set, kept up
//! to date on every change) stands for the key map in the checker's memo.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use super::history::{Call, CompareResult, CompareTarget, Kv, OpResult, Outcome, TxnOp};

/// The model store.
#[derive(Debug, Clone)]
pub struct State {
    revision: i64,
    keys: HashMap<Bytes, Kv>,
    fingerprint: (u64, u64),
}

/// What [`State::apply`] changed, to put back.
#[derive(Debug)]
pub struct Undo {
    revision: i64,
    fingerprint: (u64, u64),
    /// Each key changed, with its version before (first change wins).
    keys: Vec<(Bytes, Option<Kv>)>,
}

/// Hash of one live key, salted so the two halves are independent.
fn entry_hash(key: &[u8], kv: &Kv) -> (u64, u64) {
    let half = |salt: u64| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        kv.hash(&mut h);
        h.finish()
    };
    (half(0x6c69_6e65_6172), half(0x697a_6162_6c65))
}

impl State {
    /// An empty store at `revision`.
    pub fn new(revision: i64) -> State {
        State {
            revision,
            keys: HashMap::new(),
            fingerprint: (0, 0),
        }
    }

    /// A store at `revision` holding `keys`.
    pub fn with_keys(revision: i64, keys: &[(Bytes, Kv)]) -> State {
        let mut state = State::new(revision);
        for (key, kv) in keys {
            state.toggle(key, kv);
            state.keys.insert(key.clone(), kv.clone());
        }
        state
    }

    /// The live keys, sorted.
    pub fn keys_sorted(&self) -> Vec<(Bytes, Kv)> {
        let mut keys: Vec<_> = self
            .keys
            .iter()
            .map(|(k, kv)| (k.clone(), kv.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Stands for the key map: equal maps have equal fingerprints.
    pub fn fingerprint(&self) -> (u64, u64) {
        self.fingerprint
    }

    pub fn get(&self, key: &[u8]) -> Option<&Kv> {
        self.keys.get(key)
    }

    fn toggle(&mut self, key: &[u8], kv: &Kv) {
        let (a, b) = entry_hash(key, kv);
        self.fingerprint.0 ^= a;
        self.fingerprint.1 ^= b;
    }

    /// Sets `key` to `kv` (or removes it), remembering the old version in `undo`.
    fn set(&mut self, key: &Bytes, kv: Option<Kv>, undo: &mut Undo) {
        let old = match kv {
            Some(kv) => {
                self.toggle(key, &kv);
                self.keys.insert(key.clone(), kv)
            }
            None => self.keys.remove(key),
        };
        if let Some(old) = &old {
            self.toggle(key, old);
        }
        if !undo.keys.iter().any(|(k, _)| k == key) {
            undo.keys.push((key.clone(), old));
        }
    }

    fn compare_holds(&self, key: &[u8], target: &CompareTarget, result: CompareResult) -> bool {
        let live = self.keys.get(key);
        let ord = match (target, live) {
            // etcd: a value compare on an absent key is false, whatever the result.
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_ref().cmp(v.as_ref()),
            (CompareTarget::Version(n), _) => live.map_or(0, |kv| kv.version).cmp(n),
            (CompareTarget::CreateRevision(n), _) => live.map_or(0, |kv| kv.create_revision).cmp(n),
            (CompareTarget::ModRevision(n), _) => live.map_or(0, |kv| kv.mod_revision).cmp(n),
        };
        match result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
            CompareResult::NotEqual => ord.is_ne(),
        }
    }

    fn put(&mut self, key: &Bytes, value: &Bytes, at: i64, undo: &mut Undo) -> Option<Kv> {
        let prev = self.keys.get(key).cloned();
        let kv = match &prev {
            Some(p) => Kv {
                value: value.clone(),
                create_revision: p.create_revision,
                mod_revision: at,
                version: p.version + 1,
            },
            None => Kv {
                value: value.clone(),
                create_revision: at,
                mod_revision: at,
                version: 1,
            },
        };
        self.set(key, Some(kv), undo);
        prev
    }

    fn delete(&mut self, key: &Bytes, undo: &mut Undo) -> i64 {
        if self.keys.contains_key(key) {
            self.set(key, None, undo);
            1
        } else {
            0
        }
    }

    /// Runs `call` on the store as etcd would. Writes are stamped `current + 1`; when the
    /// call changes something the revision becomes that, else it stays. Returns the outcome
    /// etcd would answer and what to undo.
    pub fn apply(&mut self, call: &Call) -> (Outcome, Undo) {
        let mut undo = Undo {
            revision: self.revision,
            fingerprint: self.fingerprint,
            keys: Vec::new(),
        };
        let at = self.revision + 1;
        let mut changed = false;
        let mut outcome = match call {
            Call::Put {
                key,
                value,
                prev_kv,
            } => {
                let prev = self.put(key, value, at, &mut undo);
                changed = true;
                Outcome::Put {
                    revision: 0,
                    prev_kv: if *prev_kv { prev } else { None },
                }
            }
            Call::Get { key } => Outcome::Get {
                revision: 0,
                kv: self.keys.get(key).cloned(),
            },
            Call::Delete { key } => {
                let deleted = self.delete(key, &mut undo);
                changed = deleted > 0;
                Outcome::Delete {
                    revision: 0,
                    deleted,
                }
            }
            Call::Txn {
                compares,
                success,
                failure,
            } => {
                let succeeded = compares
                    .iter()
                    .all(|c| self.compare_holds(&c.key, &c.target, c.result));
                let branch = if succeeded { success } else { failure };
                let mut results = Vec::with_capacity(branch.len());
                for op in branch {
                    results.push(match op {
                        TxnOp::Put { key, value } => {
                            self.put(key, value, at, &mut undo);
                            changed = true;
                            OpResult::Put
                        }
                        TxnOp::Get { key } => OpResult::Get(self.keys.get(key).cloned()),
                        TxnOp::Delete { key } => {
                            let deleted = self.delete(key, &mut undo);
                            changed |= deleted > 0;
                            OpResult::Delete { deleted }
                        }
                    });
                }
                Outcome::Txn {
                    revision: 0,
                    succeeded,
                    results,
                }
            }
        };
        if changed {
            self.revision = at;
        }
        match &mut outcome {
            Outcome::Put { revision, .. }
            | Outcome::Get { revision, .. }
            | Outcome::Delete { revision, .. }
            | Outcome::Txn { revision, .. } => *revision = self.revision,
            Outcome::Unknown => unreachable!("the model always answers"),
        }
        (outcome, undo)
    }

    /// Moves the revision forward to `to` without changing a key: writes left out of a
    /// shrunk history (see the checker's gap-tolerant mode). Undone like an apply.
    pub fn skip_to(&mut self, to: i64) -> Undo {
        assert!(to >= self.revision, "the revision never goes back");
        let undo = Undo {
            revision: self.revision,
            fingerprint: self.fingerprint,
            keys: Vec::new(),
        };
        self.revision = to;
        undo
    }

    /// Puts back what one [`State::apply`] or [`State::skip_to`] changed. Undos must be
    /// applied in reverse order of the changes.
    pub fn undo(&mut self, undo: Undo) {
        for (key, old) in undo.keys.into_iter().rev() {
            match old {
                Some(kv) => self.keys.insert(key, kv),
                None => self.keys.remove(&key),
            };
        }
        self.revision = undo.revision;
        self.fingerprint = undo.fingerprint;
    }
}

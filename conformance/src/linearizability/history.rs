//! A recorded client history of the etcd KV API: what each client asked (a [`Call`]), when it
//! asked and when it was answered, and what it was told (an [`Outcome`]).
//!
//! Invariants (checked by [`History::validate`], which the checker runs first):
//! - An operation with a known outcome has a return time at or after its invoke time, and its
//!   outcome is of the same kind as its call (a put is answered by a put response, a txn by a
//!   txn response; the per-op results inside are the server's and are checked by the model).
//! - An operation whose outcome is unknown ([`Outcome::Unknown`]: timeout, `Unavailable`, lost
//!   connection) has no return time: it may have taken effect at any point after its invoke, or
//!   never. A request that definitely did nothing (an error etcd returns before applying) is not
//!   in the history at all.
//! - Times are nanoseconds from one common instant, so operations of different clients compare.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;

/// Which client (one connection issuing one request at a time) an operation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// Nanoseconds since the recorder's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

/// One version of a key, as a Range returns it (lease ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kv {
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// What a txn compare looks at, with the operand (etcd's `target` and `target_union`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompareTarget {
    Value(Bytes),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
}

/// etcd's `CompareResult`: the key's field compared to the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One compare of a txn, on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compare {
    pub key: Bytes,
    pub target: CompareTarget,
    pub result: CompareResult,
}

/// One op of a txn branch, on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxnOp {
    Put { key: Bytes, value: Bytes },
    Get { key: Bytes },
    Delete { key: Bytes },
}

/// A request a client sent. Every key is a single key (no `range_end`); Get is a linearizable
/// (not serializable) Range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    Put {
        key: Bytes,
        value: Bytes,
        prev_kv: bool,
    },
    Get {
        key: Bytes,
    },
    Delete {
        key: Bytes,
    },
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
}

/// The answer to one op of a txn. A put inside a txn answers nothing the checker uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpResult {
    Put,
    Get(Option<Kv>),
    Delete { deleted: i64 },
}

/// What a client was told. `revision` is the response header's revision: the new revision for
/// a request that changed something, the current one otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `prev_kv` is `None` when it was not asked for, or when the key was absent.
    Put {
        revision: i64,
        prev_kv: Option<Kv>,
    },
    Get {
        revision: i64,
        kv: Option<Kv>,
    },
    Delete {
        revision: i64,
        deleted: i64,
    },
    Txn {
        revision: i64,
        succeeded: bool,
        results: Vec<OpResult>,
    },
    /// No answer: the request may or may not have taken effect.
    Unknown,
}

impl Outcome {
    /// The header revision, for a known outcome.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Outcome::Put { revision, .. }
            | Outcome::Get { revision, .. }
            | Outcome::Delete { revision, .. }
            | Outcome::Txn { revision, .. } => Some(*revision),
            Outcome::Unknown => None,
        }
    }

    /// Whether this (known) outcome reports a change to the store, which takes a new revision:
    /// a put, a delete that deleted something, a txn whose taken branch put or deleted
    /// something. Unknown outcomes report nothing.
    pub fn changed(&self) -> bool {
        match self {
            Outcome::Put { .. } => true,
            Outcome::Delete { deleted, .. } => *deleted > 0,
            Outcome::Txn { results, .. } => results.iter().any(|r| match r {
                OpResult::Put => true,
                OpResult::Delete { deleted } => *deleted > 0,
                OpResult::Get(_) => false,
            }),
            Outcome::Get { .. } | Outcome::Unknown => false,
        }
    }
}

impl Call {
    /// Whether this call could change the store in some state (a Get or a txn without puts
    /// or deletes never does).
    pub fn may_write(&self) -> bool {
        match self {
            Call::Put { .. } | Call::Delete { .. } => true,
            Call::Get { .. } => false,
            Call::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .any(|op| !matches!(op, TxnOp::Get { .. })),
        }
    }
}

impl Call {
    /// Every key the call reads, compares or writes.
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Call::Put { key, .. } | Call::Get { key } | Call::Delete { key } => vec![key],
            Call::Txn {
                compares,
                success,
                failure,
            } => compares
                .iter()
                .map(|c| &c.key)
                .chain(success.iter().chain(failure).map(|op| match op {
                    TxnOp::Put { key, .. } | TxnOp::Get { key } | TxnOp::Delete { key } => key,
                }))
                .collect(),
        }
    }
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: ClientId,
    pub invoke: Nanos,
    /// `None` exactly when `outcome` is [`Outcome::Unknown`] (it returns at +infinity).
    pub ret: Option<Nanos>,
    pub call: Call,
    pub outcome: Outcome,
}

impl Operation {
    /// An operation that was answered.
    pub fn known(client: u32, invoke: u64, ret: u64, call: Call, outcome: Outcome) -> Operation {
        Operation {
            client: ClientId(client),
            invoke: Nanos(invoke),
            ret: Some(Nanos(ret)),
            call,
            outcome,
        }
    }

    /// An operation whose outcome is unknown.
    pub fn unknown(client: u32, invoke: u64, call: Call) -> Operation {
        Operation {
            client: ClientId(client),
            invoke: Nanos(invoke),
            ret: None,
            call,
            outcome: Outcome::Unknown,
        }
    }
}

/// A history: the store when recording began (its revision, and the keys the history touches
/// that were live then: none for a recorded history, whose keys start absent; a shrunk core
/// may start from a later state) and the operations, in any order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub initial_revision: i64,
    /// Live keys at the start, sorted by key.
    pub initial_keys: Vec<(Bytes, Kv)>,
    pub ops: Vec<Operation>,
}

/// One change of one key by an op with a known outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub op: usize,
    /// The value put, or `None` for a delete that deleted the key.
    pub value: Option<Bytes>,
}

/// Why a history cannot be checked: the recorder broke one of this module's invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedOp {
    pub op: usize,
    pub why: &'static str,
}

impl fmt::Display for MalformedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation #{} is malformed: {}", self.op, self.why)
    }
}

impl std::error::Error for MalformedOp {}

impl History {
    /// A history that starts with every key absent.
    pub fn new(initial_revision: i64, ops: Vec<Operation>) -> History {
        History {
            initial_revision,
            initial_keys: Vec::new(),
            ops,
        }
    }

    /// Checks the invariants in the module comment.
    pub fn validate(&self) -> Result<(), MalformedOp> {
        for (i, op) in self.ops.iter().enumerate() {
            let bad = |why| Err(MalformedOp { op: i, why });
            match (&op.ret, &op.outcome) {
                (None, Outcome::Unknown) => continue,
                (None, _) => return bad("a known outcome without a return time"),
                (Some(_), Outcome::Unknown) => return bad("an unknown outcome with a return time"),
                (Some(ret), _) if *ret < op.invoke => return bad("returned before it was invoked"),
                _ => {}
            }
            // Only the kind: a txn's per-op results come from the server, and a wrong count or
            // kind there is the server's fault, which the model reports as a mismatch.
            let kinds_match = matches!(
                (&op.call, &op.outcome),
                (Call::Put { .. }, Outcome::Put { .. })
                    | (Call::Get { .. }, Outcome::Get { .. })
                    | (Call::Delete { .. }, Outcome::Delete { .. })
                    | (Call::Txn { .. }, Outcome::Txn { .. })
            );
            if !kinds_match {
                return bad("the outcome does not answer the call");
            }
        }
        Ok(())
    }

    /// The changes the ops `among` made to each key, by revision, as their known outcomes
    /// report them (a txn's by the branch it says it took). They hold in every
    /// linearization, whatever the unknown-outcome ops did.
    pub fn known_changes(&self, among: &[usize]) -> HashMap<Bytes, Vec<Change>> {
        let mut changes: HashMap<Bytes, Vec<Change>> = HashMap::new();
        for &i in among {
            let op = &self.ops[i];
            let Some(revision) = op.outcome.revision() else {
                continue;
            };
            if !op.outcome.changed() {
                continue;
            }
            let mut note = |key: &Bytes, value: Option<&Bytes>| {
                changes.entry(key.clone()).or_default().push(Change {
                    revision,
                    op: i,
                    value: value.cloned(),
                });
            };
            match (&op.call, &op.outcome) {
                (Call::Put { key, value, .. }, _) => note(key, Some(value)),
                (Call::Delete { key }, _) => note(key, None),
                (
                    Call::Txn {
                        success, failure, ..
                    },
                    Outcome::Txn {
                        succeeded, results, ..
                    },
                ) => {
                    let branch = if *succeeded { success } else { failure };
                    for (op, result) in branch.iter().zip(results) {
                        match (op, result) {
                            (TxnOp::Put { key, value }, _) => note(key, Some(value)),
                            (TxnOp::Delete { key }, OpResult::Delete { deleted })
                                if *deleted > 0 =>
                            {
                                note(key, None)
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        for list in changes.values_mut() {
            list.sort_by_key(|c| (c.revision, c.op));
        }
        changes
    }

    /// The history as readable lines, one per operation, in invoke order, each labelled
    /// `#<index>`.
    pub fn render(&self) -> String {
        self.render_labeled(&|i| format!("#{i}"))
    }

    /// [`History::render`] with each operation labelled by `label(index)`.
    pub fn render_labeled(&self, label: &dyn Fn(usize) -> String) -> String {
        let mut order: Vec<usize> = (0..self.ops.len()).collect();
        order.sort_by_key(|&i| (self.ops[i].invoke, i));
        let mut out = format!("  initial revision {}", self.initial_revision);
        if self.initial_keys.is_empty() {
            out.push('\n');
        } else {
            out.push_str(", live keys:\n");
            for (key, kv) in &self.initial_keys {
                out.push_str(&format!("    {} = {kv}\n", Show(key)));
            }
        }
        for i in order {
            out.push_str(&format!("  {:<6} {}\n", label(i), self.ops[i]));
        }
        out
    }
}

/// Bytes shown as text when printable, else as hex.
pub struct Show<'a>(pub &'a [u8]);

impl fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "{:?}", String::from_utf8_lossy(self.0))
        } else {
            write!(f, "0x")?;
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}ms", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (create {}, mod {}, version {})",
            Show(&self.value),
            self.create_revision,
            self.mod_revision,
            self.version
        )
    }
}

fn fmt_kv(f: &mut fmt::Formatter<'_>, kv: &Option<Kv>) -> fmt::Result {
    match kv {
        Some(kv) => write!(f, "{kv}"),
        None => write!(f, "absent"),
    }
}

impl fmt::Display for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOp::Put { key, value } => write!(f, "put {}={}", Show(key), Show(value)),
            TxnOp::Get { key } => write!(f, "get {}", Show(key)),
            TxnOp::Delete { key } => write!(f, "delete {}", Show(key)),
        }
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.result {
            CompareResult::Equal => "==",
            CompareResult::Greater => ">",
            CompareResult::Less => "<",
            CompareResult::NotEqual => "!=",
        };
        match &self.target {
            CompareTarget::Value(v) => write!(f, "value({}) {op} {}", Show(&self.key), Show(v)),
            CompareTarget::Version(n) => write!(f, "version({}) {op} {n}", Show(&self.key)),
            CompareTarget::CreateRevision(n) => write!(f, "create({}) {op} {n}", Show(&self.key)),
            CompareTarget::ModRevision(n) => write!(f, "mod({}) {op} {n}", Show(&self.key)),
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Put {
                key,
                value,
                prev_kv,
            } => {
                write!(f, "put {}={}", Show(key), Show(value))?;
                if *prev_kv {
                    write!(f, " prev_kv")?;
                }
                Ok(())
            }
            Call::Get { key } => write!(f, "get {}", Show(key)),
            Call::Delete { key } => write!(f, "delete {}", Show(key)),
            Call::Txn {
                compares,
                success,
                failure,
            } => write!(
                f,
                "txn if [{}] then [{}] else [{}]",
                join(compares),
                join(success),
                join(failure)
            ),
        }
    }
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Put => write!(f, "put"),
            OpResult::Get(kv) => fmt_kv(f, kv),
            OpResult::Delete { deleted } => write!(f, "deleted {deleted}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Put { revision, prev_kv } => {
                write!(f, "rev {revision}")?;
                if let Some(prev) = prev_kv {
                    write!(f, ", prev {prev}")?;
                }
                Ok(())
            }
            Outcome::Get { revision, kv } => {
                write!(f, "rev {revision}, ")?;
                fmt_kv(f, kv)
            }
            Outcome::Delete { revision, deleted } => {
                write!(f, "rev {revision}, deleted {deleted}")
            }
            Outcome::Txn {
                revision,
                succeeded,
                results,
            } => write!(
                f,
                "rev {revision}, {} [{}]",
                if *succeeded { "succeeded" } else { "failed" },
                join(results)
            ),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {:<3} [{} .. ", self.client.0, self.invoke)?;
        match self.ret {
            Some(ret) => write!(f, "{ret}]")?,
            None => write!(f, "?]")?,
        }
        write!(f, " {} -> {}", self.call, self.outcome)
    }
}

//! The history: every operation the workload ran, with when it was invoked, when it
//! completed and what came of it.
//!
//! Outcomes are three-valued, as a client sees them: `Ok` (the server answered and
//! the answer is definite), `Failed` (certainly did not happen: the connection was
//! refused before the request was sent, or the server refused it with a 4xx that
//! leaves the data untouched), `Unknown` (a timeout, a lost connection or a 5xx after
//! the request was sent: it may or may not have happened, possibly later).
//!
//! Times are nanoseconds since the run started, from one monotonic clock shared by
//! every client, so real-time order between operations is meaningful.

use serde::Serialize;
use std::sync::Mutex;
use std::time::Instant;

/// A register value: every write writes a value never written before, so a read
/// tells exactly which write it observed.
pub type Value = u64;

/// What an operation on one register key asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// A linearizable read.
    Read,
    /// An unconditional write of a fresh value.
    Write { value: Value },
    /// A write of `value` only if the register holds `expected` (`None`: absent),
    /// sent as `If-Match` with the revision the client read `expected` at (or
    /// `If-None-Match: *`).
    CompareAndSet {
        expected: Option<Value>,
        value: Value,
    },
}

/// What a definite answer said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// A read saw this value (`None`: the key was absent) at this revision.
    Read {
        value: Option<Value>,
        revision: Option<u64>,
    },
    /// A write or compare-and-set took effect at this revision.
    Written { revision: u64 },
    /// A compare-and-set was refused: the register did not hold `expected`.
    Refused,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Answer),
    /// Certainly did not take effect.
    Failed,
    /// May have taken effect, at any time after it was invoked.
    Unknown,
}

/// One operation on one register key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// The client that ran it (each client runs one operation at a time).
    pub client: u32,
    /// The id of the node whose gateway it was sent to (for post-mortems).
    pub node: u64,
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    pub invoked_ns: u64,
    /// When the answer arrived; for `Unknown`, when the client gave up.
    pub completed_ns: u64,
}

/// One create-only write of a fresh key (an append to the set of keys under the
/// workload's append prefix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Append {
    pub client: u32,
    /// The id of the node whose gateway it was sent to.
    pub node: u64,
    pub key: String,
    pub value: Value,
    pub outcome: Outcome,
}

/// Everything the workload did, appended to by every client.
pub struct History {
    started: Instant,
    operations: Mutex<Vec<Operation>>,
    appends: Mutex<Vec<Append>>,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            started: Instant::now(),
            operations: Mutex::new(Vec::new()),
            appends: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the history started.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn record(&self, operation: Operation) {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(operation);
    }

    pub fn record_append(&self, append: Append) {
        self.appends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(append);
    }

    /// Every register operation so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every append so far.
    pub fn appends(&self) -> Vec<Append> {
        self.appends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

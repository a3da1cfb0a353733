//! The history checker: turns what the workload recorded and what the cluster holds
//! at the end into a verdict.
//!
//! Checks:
//! - every register key's history is linearizable (`linearizability`), the final
//!   linearizable reads included, so an acknowledged write that vanished fails here;
//! - revisions are consistent: a value is seen at one revision only, and a revision
//!   of a key carries one value only;
//! - every acknowledged append is present at the end with its value, and no append
//!   that certainly failed is;
//! - every shard's replicas converged: equal applied indexes and equal checksums.

use crate::history::{Answer, Append, Operation, Outcome, Value};
use crate::linearizability::{check_register, Verdict, SEARCH_STEPS_MAX};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One replica's content checksum as the admin protocol reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaChecksum {
    pub node: u64,
    pub applied_index: u64,
    pub checksum: u64,
}

/// Operations by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

impl OutcomeCounts {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

/// Everything the checks found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub register_operations: OutcomeCounts,
    pub appends: OutcomeCounts,
    pub keys_checked: u64,
    /// Keys whose history no order explains, with the operation that got stuck.
    pub not_linearizable: Vec<String>,
    /// Keys the search gave up on.
    pub inconclusive: Vec<String>,
    /// A value seen at two revisions, or a revision with two values.
    pub revision_conflicts: Vec<String>,
    /// Acknowledged appends missing (or changed) at the end.
    pub lost_appends: Vec<String>,
    /// Appends that certainly failed but are present at the end.
    pub phantom_appends: Vec<String>,
    /// Shards whose replicas hold different content at the same applied index.
    pub divergent_shards: Vec<String>,
    /// Shards whose replicas never reached the same applied index.
    pub unconverged_shards: Vec<String>,
}

impl CheckReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.not_linearizable.is_empty()
            && self.inconclusive.is_empty()
            && self.revision_conflicts.is_empty()
            && self.lost_appends.is_empty()
            && self.phantom_appends.is_empty()
            && self.divergent_shards.is_empty()
            && self.unconverged_shards.is_empty()
    }

    /// The linearizability verdict in one word.
    pub fn linearizability(&self) -> &'static str {
        if !self.not_linearizable.is_empty() {
            "violated"
        } else if !self.inconclusive.is_empty() {
            "inconclusive"
        } else {
            "linearizable"
        }
    }
}

/// What the cluster held at the end.
pub struct FinalState {
    /// Every append key read at the end (acknowledged, unknown and failed ones),
    /// with the value found (`None`: absent).
    pub appends: HashMap<String, Option<Value>>,
    /// Per shard, every placed replica's checksum, read after the faults healed.
    pub replicas: BTreeMap<u32, Vec<ReplicaChecksum>>,
}

/// Runs every check.
pub fn check(operations: &[Operation], appends: &[Append], end: &FinalState) -> CheckReport {
    let mut report = CheckReport::default();
    for operation in operations {
        report.register_operations.count(&operation.outcome);
    }
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for operation in operations {
        by_key
            .entry(&operation.key)
            .or_default()
            .push(operation.clone());
    }
    for (key, history) in &by_key {
        report.keys_checked += 1;
        match check_register(history, SEARCH_STEPS_MAX) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable {
                stuck,
                placed,
                state,
            } => {
                let operation = history.get(stuck);
                report.not_linearizable.push(format!(
                    "{key}: after {placed} operations (register {state:?}) none explains {operation:?}"
                ));
            }
            Verdict::Inconclusive { steps } => report
                .inconclusive
                .push(format!("{key}: gave up after {steps} steps")),
        }
        report
            .revision_conflicts
            .extend(revision_conflicts(key, history));
    }
    for append in appends {
        report.appends.count(&append.outcome);
        let found = end.appends.get(&append.key).copied().flatten();
        match append.outcome {
            Outcome::Ok(_) if found != Some(append.value) => report.lost_appends.push(format!(
                "{}: acknowledged {} but found {found:?}",
                append.key, append.value
            )),
            Outcome::Failed if found.is_some() => report
                .phantom_appends
                .push(format!("{}: failed but found {found:?}", append.key)),
            _ => {}
        }
    }
    for (shard, replicas) in &end.replicas {
        let Some(first) = replicas.first() else {
            continue;
        };
        if replicas
            .iter()
            .any(|replica| replica.applied_index != first.applied_index)
        {
            report
                .unconverged_shards
                .push(format!("shard {shard}: {replicas:?}"));
        } else if replicas
            .iter()
            .any(|replica| replica.checksum != first.checksum)
        {
            report
                .divergent_shards
                .push(format!("shard {shard}: {replicas:?}"));
        }
    }
    report
}

/// Values seen at more than one revision, and revisions seen with more than one
/// value, in one key's history.
fn revision_conflicts(key: &str, history: &[Operation]) -> Vec<String> {
    let mut revision_of: HashMap<Value, u64> = HashMap::new();
    let mut value_of: HashMap<u64, Value> = HashMap::new();
    let mut conflicts = Vec::new();
    let mut note = |value: Value, revision: u64| {
        if let Some(known) = revision_of.insert(value, revision) {
            if known != revision {
                conflicts.push(format!(
                    "{key}: value {value} at revisions {known} and {revision}"
                ));
            }
        }
        if let Some(known) = value_of.insert(revision, value) {
            if known != value {
                conflicts.push(format!(
                    "{key}: revision {revision} holds {known} and {value}"
                ));
            }
        }
    };
    for operation in history {
        let written = match operation.call {
            crate::history::Call::Write { value }
            | crate::history::Call::CompareAndSet { value, .. } => Some(value),
            crate::history::Call::Read => None,
        };
        match (operation.outcome, written) {
            (
                Outcome::Ok(Answer::Read {
                    value: Some(value),
                    revision: Some(revision),
                }),
                _,
            ) => note(value, revision),
            (Outcome::Ok(Answer::Written { revision }), Some(value)) => note(value, revision),
            _ => {}
        }
    }
    conflicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;

    fn operation(call: Call, outcome: Outcome, invoked_ns: u64, completed_ns: u64) -> Operation {
        Operation {
            node: 1,
            client: 1,
            key: "register-1".into(),
            call,
            outcome,
            invoked_ns,
            completed_ns,
        }
    }

    fn clean_end() -> FinalState {
        FinalState {
            appends: HashMap::new(),
            replicas: BTreeMap::new(),
        }
    }

    fn replica(node: u64, applied_index: u64, checksum: u64) -> ReplicaChecksum {
        ReplicaChecksum {
            node,
            applied_index,
            checksum,
        }
    }

    /// Proves a clean history with converged replicas passes every check.
    #[test]
    fn a_clean_history_passes() {
        let operations = [
            operation(
                Call::Write { value: 7 },
                Outcome::Ok(Answer::Written { revision: 3 }),
                0,
                5,
            ),
            operation(
                Call::Read,
                Outcome::Ok(Answer::Read {
                    value: Some(7),
                    revision: Some(3),
                }),
                6,
                8,
            ),
        ];
        let appends = [Append {
            node: 1,
            client: 1,
            key: "append-1".into(),
            value: 9,
            outcome: Outcome::Ok(Answer::Written { revision: 4 }),
        }];
        let mut end = clean_end();
        end.appends.insert("append-1".into(), Some(9));
        end.replicas
            .insert(0, vec![replica(1, 10, 0xab), replica(2, 10, 0xab)]);
        let report = check(&operations, &appends, &end);
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.register_operations.ok, 2);
        assert_eq!(report.linearizability(), "linearizable");
    }

    /// Proves a non-linearizable history is reported: a read that sees a value
    /// overwritten before it began.
    #[test]
    fn a_non_linearizable_history_is_reported() {
        let written = |revision| Outcome::Ok(Answer::Written { revision });
        let operations = [
            operation(Call::Write { value: 1 }, written(3), 0, 1),
            operation(Call::Write { value: 2 }, written(4), 2, 3),
            operation(
                Call::Read,
                Outcome::Ok(Answer::Read {
                    value: Some(1),
                    revision: Some(3),
                }),
                4,
                5,
            ),
        ];
        let report = check(&operations, &[], &clean_end());
        assert!(!report.passed());
        assert_eq!(report.linearizability(), "violated");
        assert_eq!(report.not_linearizable.len(), 1);
        assert!(report.not_linearizable[0].starts_with("register-1"));
    }

    /// Proves a lost acknowledged append and an append that failed yet exists are
    /// reported; an unknown append may be either.
    #[test]
    fn lost_and_phantom_appends_are_reported() {
        let append = |key: &str, outcome| Append {
            node: 1,
            client: 2,
            key: key.into(),
            value: 5,
            outcome,
        };
        let appends = [
            append("lost", Outcome::Ok(Answer::Written { revision: 8 })),
            append("phantom", Outcome::Failed),
            append("maybe", Outcome::Unknown),
        ];
        let mut end = clean_end();
        end.appends.insert("lost".into(), None);
        end.appends.insert("phantom".into(), Some(5));
        end.appends.insert("maybe".into(), Some(5));
        let report = check(&[], &appends, &end);
        assert!(!report.passed());
        assert_eq!(report.lost_appends.len(), 1, "{report:?}");
        assert!(report.lost_appends[0].starts_with("lost"));
        assert_eq!(report.phantom_appends.len(), 1);
        assert_eq!(report.appends.unknown, 1);
    }

    /// Proves diverged replicas (same applied index, other content) and replicas
    /// that never caught up are reported.
    #[test]
    fn diverged_and_unconverged_replicas_are_reported() {
        let mut end = clean_end();
        end.replicas
            .insert(3, vec![replica(1, 50, 0x11), replica(2, 50, 0x12)]);
        end.replicas
            .insert(4, vec![replica(1, 50, 0x11), replica(3, 49, 0x11)]);
        end.replicas
            .insert(5, vec![replica(1, 7, 0x1), replica(2, 7, 0x1)]);
        let report = check(&[], &[], &end);
        assert!(!report.passed());
        assert_eq!(report.divergent_shards.len(), 1);
        assert!(report.divergent_shards[0].starts_with("shard 3"));
        assert_eq!(report.unconverged_shards.len(), 1);
        assert!(report.unconverged_shards[0].starts_with("shard 4"));
    }

    /// Proves a value acknowledged at one revision and read at another is a
    /// conflict even when the order of values is explainable.
    #[test]
    fn revision_conflicts_are_reported() {
        let operations = [
            operation(
                Call::Write { value: 1 },
                Outcome::Ok(Answer::Written { revision: 3 }),
                0,
                1,
            ),
            operation(
                Call::Read,
                Outcome::Ok(Answer::Read {
                    value: Some(1),
                    revision: Some(9),
                }),
                2,
                3,
            ),
        ];
        let report = check(&operations, &[], &clean_end());
        assert_eq!(report.revision_conflicts.len(), 1, "{report:?}");
        assert!(!report.passed());
    }
}

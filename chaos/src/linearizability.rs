//! Linearizability of one register's history: the Wing–Gong–Lowe search with the
//! memoization of Lowe's "just-in-time linearizability" (as in Porcupine).
//!
//! The history becomes a time-ordered list of call and return events. The search
//! walks it, linearizing at each step some operation whose call came before every
//! return still in the list: it applies the operation to the model state; if the
//! model accepts it and the pair (set of linearized operations, state) is new, the
//! operation's events leave the list and the search starts over at the front. When a
//! return is reached, its operation could not be placed anywhere earlier, so the last
//! choice is undone. The history is linearizable when every definite operation is
//! placed; operations whose outcome is unknown have their return at infinity, so
//! they may be placed anywhere after their call, or never (placed after everything,
//! an unknown write changes nothing that was observed).
//!
//! The model: a register that holds a value or nothing. Reads must see the state;
//! writes set it; a compare-and-set applies only when the state equals its
//! expectation and is refused only when it does not. Failed operations and reads
//! with an unknown outcome constrain nothing and are left out.

use crate::history::{Answer, Call, Operation, Outcome, Value};
use std::collections::HashSet;

/// How many search steps one key may take before the verdict is "inconclusive".
pub const SEARCH_STEPS_MAX: u64 = 20_000_000;

/// The state of the register model: `None` while the key is absent.
type State = Option<Value>;

/// An operation as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelOp {
    Read {
        observed: State,
    },
    Write {
        value: Value,
    },
    CompareAndSet {
        expected: State,
        value: Value,
    },
    Refused {
        expected: State,
    },
    /// A compare-and-set that may have happened: applies if it can.
    CompareAndSetMaybe {
        expected: State,
        value: Value,
    },
}

impl ModelOp {
    fn of(operation: &Operation) -> Option<ModelOp> {
        match (operation.call, operation.outcome) {
            (_, Outcome::Failed) | (Call::Read, Outcome::Unknown) => None,
            (Call::Read, Outcome::Ok(Answer::Read { value, .. })) => {
                Some(ModelOp::Read { observed: value })
            }
            (Call::Write { value }, Outcome::Ok(_) | Outcome::Unknown) => {
                Some(ModelOp::Write { value })
            }
            (Call::CompareAndSet { expected, value }, Outcome::Ok(Answer::Written { .. })) => {
                Some(ModelOp::CompareAndSet { expected, value })
            }
            (Call::CompareAndSet { expected, .. }, Outcome::Ok(Answer::Refused)) => {
                Some(ModelOp::Refused { expected })
            }
            (Call::CompareAndSet { expected, value }, Outcome::Unknown) => {
                Some(ModelOp::CompareAndSetMaybe { expected, value })
            }
            // A read answered like a write (or the reverse) is a workload bug; it is
            // kept as an impossible read so the verdict fails loudly.
            (Call::Read, Outcome::Ok(_)) => Some(ModelOp::Read {
                observed: Some(Value::MAX),
            }),
            // A compare-and-set answered like a read: the same, as a possible write.
            (Call::CompareAndSet { expected, value }, Outcome::Ok(Answer::Read { .. })) => {
                Some(ModelOp::CompareAndSetMaybe { expected, value })
            }
        }
    }

    /// The state after this operation, or `None` when the model refuses it here.
    fn step(self, state: State) -> Option<State> {
        match self {
            ModelOp::Read { observed } => (observed == state).then_some(state),
            ModelOp::Write { value } => Some(Some(value)),
            ModelOp::CompareAndSet { expected, value } => {
                (state == expected).then_some(Some(value))
            }
            ModelOp::Refused { expected } => (state != expected).then_some(state),
            ModelOp::CompareAndSetMaybe { expected, value } => Some(if state == expected {
                Some(value)
            } else {
                state
            }),
        }
    }
}

/// The answer for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history. `stuck` is the operation the longest partial
    /// linearization could not place (its index in the input), `placed` how many
    /// operations that linearization held and `state` the register there.
    NotLinearizable {
        stuck: usize,
        placed: usize,
        state: Option<Value>,
    },
    /// The search ran out of steps.
    Inconclusive {
        steps: u64,
    },
}

/// Events of the doubly linked list: a call or a return of one operation.
#[derive(Clone, Copy, Debug)]
struct Event {
    operation: usize,
    is_call: bool,
    /// The index (in the node arrays) of the other event of the same operation.
    partner: usize,
}

/// A doubly linked list over fixed nodes; node 0 is the head, node 1 the tail.
struct EventList {
    events: Vec<Event>,
    next: Vec<usize>,
    previous: Vec<usize>,
}

const HEAD: usize = 0;
const TAIL: usize = 1;

impl EventList {
    fn unlink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        self.previous[next] = previous;
    }

    fn relink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        self.previous[next] = node;
    }

    /// Takes an operation's call (at `node`) and its return out of the list.
    fn lift(&mut self, node: usize) {
        self.unlink(node);
        self.unlink(self.events[node].partner);
    }

    /// Undoes the `lift` of `node`; lifts must be undone in reverse order.
    fn unlift(&mut self, node: usize) {
        self.relink(self.events[node].partner);
        self.relink(node);
    }
}

/// Checks one key's operations (all of the same key) from the empty register.
///
/// Unknown writes whose value nobody observed (no read saw it, no compare-and-set
/// expected it) make the search exponential, since each may or may not have
/// happened. They are left out first: if the rest is linearizable, so is the whole
/// (each left-out write goes last, where it changes nothing observed). Only when
/// the rest is not does the search run again with them, since an unobserved write
/// can still explain a refused compare-and-set.
pub fn check_register(operations: &[Operation], steps_max: u64) -> Verdict {
    let mut observed = HashSet::new();
    for operation in operations {
        match (operation.call, operation.outcome) {
            (
                Call::Read,
                Outcome::Ok(Answer::Read {
                    value: Some(value), ..
                }),
            ) => {
                observed.insert(value);
            }
            (
                Call::CompareAndSet {
                    expected: Some(expected),
                    ..
                },
                _,
            ) => {
                observed.insert(expected);
            }
            _ => {}
        }
    }
    let unobserved: HashSet<usize> = operations
        .iter()
        .enumerate()
        .filter(|(_, operation)| operation.outcome == Outcome::Unknown)
        .filter(|(_, operation)| match operation.call {
            Call::Write { value } | Call::CompareAndSet { value, .. } => !observed.contains(&value),
            Call::Read => false,
        })
        .map(|(index, _)| index)
        .collect();
    if unobserved.is_empty() {
        return search(operations, &unobserved, steps_max);
    }
    match search(operations, &unobserved, steps_max) {
        Verdict::Linearizable => Verdict::Linearizable,
        _ => search(operations, &HashSet::new(), steps_max),
    }
}

/// The search itself, over every operation except those in `left_out`.
fn search(operations: &[Operation], left_out: &HashSet<usize>, steps_max: u64) -> Verdict {
    // (input index, model op, call time, return time or infinity)
    let mut kept = Vec::new();
    for (index, operation) in operations.iter().enumerate() {
        if left_out.contains(&index) {
            continue;
        }
        if let Some(model) = ModelOp::of(operation) {
            let returned = match operation.outcome {
                Outcome::Unknown => u64::MAX,
                _ => operation.completed_ns,
            };
            kept.push((index, model, operation.invoked_ns, returned));
        }
    }
    // Events sorted by time; at equal times calls first, which treats the two
    // operations as concurrent (never a false alarm from clock granularity).
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(kept.len() * 2);
    for (position, (_, _, called, returned)) in kept.iter().enumerate() {
        order.push((*called, false, position));
        order.push((*returned, true, position));
    }
    order.sort();
    let node_count = order.len() + 2;
    let mut call_node = vec![0; kept.len()];
    let mut return_node = vec![0; kept.len()];
    for (offset, (_, is_return, position)) in order.iter().enumerate() {
        if *is_return {
            return_node[*position] = offset + 2;
        } else {
            call_node[*position] = offset + 2;
        }
    }
    let mut events = vec![
        Event {
            operation: usize::MAX,
            is_call: false,
            partner: 0,
        };
        node_count
    ];
    for (offset, (_, is_return, position)) in order.iter().enumerate() {
        events[offset + 2] = Event {
            operation: *position,
            is_call: !is_return,
            partner: if *is_return {
                call_node[*position]
            } else {
                return_node[*position]
            },
        };
    }
    let mut next: Vec<usize> = (0..node_count).map(|node| node + 1).collect();
    let mut previous: Vec<usize> = (0..node_count).map(|node| node.saturating_sub(1)).collect();
    // head → events in order → tail
    if order.is_empty() {
        next[HEAD] = TAIL;
        previous[TAIL] = HEAD;
    } else {
        next[HEAD] = 2;
        previous[2] = HEAD;
        next[node_count - 1] = TAIL;
        previous[TAIL] = node_count - 1;
    }
    let mut list = EventList {
        events,
        next,
        previous,
    };

    let definite = |position: usize| kept[position].3 != u64::MAX;
    let mut definite_left = (0..kept.len()).filter(|&p| definite(p)).count();
    let mut placed = vec![0u64; kept.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut deepest: (usize, usize, State) = (0, usize::MAX, None);
    let mut entry = list.next[HEAD];
    let mut steps = 0u64;
    loop {
        if definite_left == 0 {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > steps_max {
            return Verdict::Inconclusive { steps };
        }
        let event = list.events[entry];
        if entry != TAIL && event.is_call {
            let position = event.operation;
            if let Some(after) = kept[position].1.step(state) {
                placed[position / 64] |= 1 << (position % 64);
                if seen.insert((placed.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    list.lift(entry);
                    if definite(position) {
                        definite_left -= 1;
                    }
                    entry = list.next[HEAD];
                    continue;
                }
                placed[position / 64] &= !(1 << (position % 64));
            }
            entry = list.next[entry];
            continue;
        }
        // A return (or the end): its operation fits nowhere before it.
        if entry != TAIL && stack.len() >= deepest.0 {
            deepest = (stack.len(), event.operation, state);
        }
        let Some((call, before)) = stack.pop() else {
            let (placed, stuck, state) = deepest;
            let stuck = kept.get(stuck).map_or(usize::MAX, |kept| kept.0);
            return Verdict::NotLinearizable {
                stuck,
                placed,
                state,
            };
        };
        let position = list.events[call].operation;
        state = before;
        placed[position / 64] &= !(1 << (position % 64));
        list.unlift(call);
        if definite(position) {
            definite_left += 1;
        }
        entry = list.next[call];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(call: Call, outcome: Outcome, invoked_ns: u64, completed_ns: u64) -> Operation {
        Operation {
            node: 1,
            client: 0,
            key: "k".into(),
            call,
            outcome,
            invoked_ns,
            completed_ns,
        }
    }

    fn read(value: Option<Value>, from: u64, to: u64) -> Operation {
        operation(
            Call::Read,
            Outcome::Ok(Answer::Read {
                value,
                revision: None,
            }),
            from,
            to,
        )
    }

    fn write(value: Value, outcome: Outcome, from: u64, to: u64) -> Operation {
        operation(Call::Write { value }, outcome, from, to)
    }

    const WRITTEN: Outcome = Outcome::Ok(Answer::Written { revision: 1 });

    /// Proves sequential and overlapping histories that a register explains pass.
    #[test]
    fn explainable_histories_pass() {
        let sequential = [
            read(None, 0, 1),
            write(1, WRITTEN, 2, 3),
            read(Some(1), 4, 5),
        ];
        assert_eq!(check_register(&sequential, 1_000), Verdict::Linearizable);
        // The read overlaps the write, so it may see either.
        let overlapping = [
            write(1, WRITTEN, 0, 10),
            read(None, 1, 2),
            read(Some(1), 3, 4),
        ];
        assert_eq!(check_register(&overlapping, 1_000), Verdict::Linearizable);
    }

    /// Proves a stale read (a value overwritten before the read began) fails, and
    /// names the read.
    #[test]
    fn a_stale_read_fails() {
        let history = [
            write(1, WRITTEN, 0, 1),
            write(2, WRITTEN, 2, 3),
            read(Some(1), 4, 5),
        ];
        match check_register(&history, 1_000) {
            Verdict::NotLinearizable { stuck, .. } => assert_eq!(stuck, 2),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    /// Proves a lost acknowledged write fails: the final read sees the older value.
    #[test]
    fn a_lost_acknowledged_write_fails() {
        let history = [
            write(1, WRITTEN, 0, 1),
            write(2, WRITTEN, 2, 3),
            read(Some(1), 10, 11),
        ];
        assert!(matches!(
            check_register(&history, 1_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    /// Proves unknown writes may take effect late, or never, but not before they
    /// were invoked; failed writes never.
    #[test]
    fn unknown_writes_may_happen_late_or_never() {
        let late = [
            write(1, Outcome::Unknown, 0, 1),
            read(None, 2, 3),
            read(Some(1), 4, 5),
        ];
        assert_eq!(check_register(&late, 1_000), Verdict::Linearizable);
        let never = [write(1, Outcome::Unknown, 0, 1), read(None, 2, 3)];
        assert_eq!(check_register(&never, 1_000), Verdict::Linearizable);
        let before_invoked = [read(Some(1), 0, 1), write(1, Outcome::Unknown, 2, 3)];
        assert!(matches!(
            check_register(&before_invoked, 1_000),
            Verdict::NotLinearizable { .. }
        ));
        let failed = [write(1, Outcome::Failed, 0, 1), read(Some(1), 2, 3)];
        assert!(matches!(
            check_register(&failed, 1_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    /// Proves compare-and-set: applied only from its expectation, refused only
    /// when the register differs; two applied from the same value cannot both be.
    #[test]
    fn compare_and_set_follows_the_register() {
        let cas = |expected, value, outcome, from, to| {
            operation(Call::CompareAndSet { expected, value }, outcome, from, to)
        };
        let good = [
            write(1, WRITTEN, 0, 1),
            cas(Some(1), 2, WRITTEN, 2, 3),
            cas(Some(1), 3, Outcome::Ok(Answer::Refused), 4, 5),
            read(Some(2), 6, 7),
        ];
        assert_eq!(check_register(&good, 1_000), Verdict::Linearizable);
        let double = [
            write(1, WRITTEN, 0, 1),
            cas(Some(1), 2, WRITTEN, 2, 5),
            cas(Some(1), 3, WRITTEN, 2, 5),
        ];
        assert!(matches!(
            check_register(&double, 1_000),
            Verdict::NotLinearizable { .. }
        ));
        let wrongly_refused = [
            write(1, WRITTEN, 0, 1),
            cas(Some(1), 2, Outcome::Ok(Answer::Refused), 2, 3),
        ];
        assert!(matches!(
            check_register(&wrongly_refused, 1_000),
            Verdict::NotLinearizable { .. }
        ));
        let create = [cas(None, 5, WRITTEN, 0, 1), read(Some(5), 2, 3)];
        assert_eq!(check_register(&create, 1_000), Verdict::Linearizable);
    }

    /// Proves many unknown writes that nobody observed do not blow the search up,
    /// and that the step bound gives "inconclusive", not a verdict, when the
    /// search must consider them all.
    #[test]
    fn the_search_is_bounded() {
        let many: Vec<Operation> = (0..40)
            .map(|value| write(value, Outcome::Unknown, value, value + 1))
            .chain(std::iter::once(read(Some(3), 100, 101)))
            .collect();
        assert_eq!(check_register(&many, 10_000), Verdict::Linearizable);
        // A read of a value never written fails the pruned search, so the full
        // one runs, and it cannot finish 2^40 subsets.
        let impossible: Vec<Operation> = many
            .iter()
            .cloned()
            .chain(std::iter::once(read(Some(99), 200, 201)))
            .collect();
        assert!(matches!(
            check_register(&impossible, 10_000),
            Verdict::Inconclusive { .. }
        ));
    }

    /// Proves an unobserved unknown write is still considered when only it
    /// explains a refused compare-and-set.
    #[test]
    fn an_unobserved_write_can_explain_a_refusal() {
        let history = [
            write(1, WRITTEN, 0, 1),
            write(2, Outcome::Unknown, 2, 3),
            operation(
                Call::CompareAndSet {
                    expected: Some(1),
                    value: 3,
                },
                Outcome::Ok(Answer::Refused),
                4,
                5,
            ),
        ];
        assert_eq!(check_register(&history, 1_000), Verdict::Linearizable);
    }
}

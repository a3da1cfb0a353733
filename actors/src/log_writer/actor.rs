//! The LogWriter actor shell: queues writes and runs group commit as a two-stage
//! pipeline on the blocking pool.
//!
//! Stage one (one at a time, in order): encode a batch and write it to the segment
//! file. Stage two (up to `SYNCS_IN_FLIGHT_MAX` at once): `fdatasync`. While batch N
//! waits for its sync, batch N+1 is already being written and may start its own sync,
//! so the disk's flush latency is overlapped instead of paid back to back.
//!
//! Completion order is preserved: an `fdatasync` that started after batch N was
//! written covers batch N too, so when any sync finishes, every batch written before
//! it started is acknowledged, in batch order.

use super::writer::WalWriter;
use crate::ids::GroupId;
use crate::kv::WalStats;
use crate::storage::raft_log::GroupLog;
use crate::storage::wal::SyncHandle;
use crate::storage::wal_record::GroupWrite;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// Called once the write is durable (`Ok`) or can never be (`Err`).
pub type DurableCallback = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Writes per batch at most; the rest waits for the next batch.
const BATCH_WRITES_MAX: usize = 8_192;
/// Entry payload bytes per batch at most.
const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// `fdatasync` calls in flight at once.
const SYNCS_IN_FLIGHT_MAX: usize = 3;

pub enum LogWriterMsg {
    /// Make `write` durable, then call `on_durable`.
    Append {
        write: GroupWrite,
        on_durable: DurableCallback,
    },
    /// Rebuild one group's log from the files, after every write queued before this
    /// message is durable (a restarting replica recovers from disk this way).
    ReplayGroup {
        group: GroupId,
        reply: oneshot::Sender<Result<GroupLog, String>>,
    },
    /// Answer once every write queued before this message is durable.
    Flush { reply: oneshot::Sender<()> },
    /// Counters.
    Stats { reply: oneshot::Sender<WalStats> },
    /// Stage one finished (sent by the actor to itself).
    Written {
        writer: Box<WalWriter>,
        batch: u64,
        result: Result<Option<SyncHandle>, String>,
    },
    /// Stage two finished (sent by the actor to itself).
    Synced {
        batch: u64,
        result: Result<(), String>,
    },
    /// A replay finished (sent by the actor to itself).
    ReplayDone { writer: Box<WalWriter> },
}

impl ractor::Message for LogWriterMsg {}

pub struct LogWriterArgs {
    pub writer: WalWriter,
}

/// Requests that must wait until everything queued before them is durable.
enum Waiting {
    Replay {
        group: GroupId,
        reply: oneshot::Sender<Result<GroupLog, String>>,
    },
    Flush(oneshot::Sender<()>),
}

pub struct LogWriterState {
    /// `None` while stage one or a replay runs on the blocking pool.
    writer: Option<Box<WalWriter>>,
    /// Writes waiting for the next batch.
    queued: Vec<(GroupWrite, DurableCallback)>,
    /// Replays and flushes, each with the number of queued writes ahead of it.
    waiting: Vec<(usize, Waiting)>,
    /// Batches written (or being written) whose sync has not covered them yet.
    unacknowledged: VecDeque<(u64, Vec<DurableCallback>)>,
    next_batch: u64,
    syncs_in_flight: usize,
    /// Set after a failed write or sync: nothing more can be made durable.
    failed: Option<String>,
    /// Last known counters of the writer (answered while a batch runs).
    stats: WalStats,
    /// `fdatasync` calls made through sync handles (the writer counts its own).
    pipelined_fsyncs_total: u64,
}

pub struct LogWriterActor;

impl Actor for LogWriterActor {
    type Msg = LogWriterMsg;
    type State = LogWriterState;
    type Arguments = LogWriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stats = args.writer.stats();
        Ok(LogWriterState {
            writer: Some(Box::new(args.writer)),
            queued: Vec::new(),
            waiting: Vec::new(),
            unacknowledged: VecDeque::new(),
            next_batch: 0,
            syncs_in_flight: 0,
            failed: None,
            stats,
            pipelined_fsyncs_total: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LogWriterMsg::Append { write, on_durable } => {
                if let Some(reason) = &state.failed {
                    on_durable(Err(reason.clone()));
                } else {
                    state.queued.push((write, on_durable));
                }
            }
            LogWriterMsg::ReplayGroup { group, reply } => {
                let position = state.queued.len();
                state
                    .waiting
                    .push((position, Waiting::Replay { group, reply }));
            }
            LogWriterMsg::Flush { reply } => {
                let position = state.queued.len();
                state.waiting.push((position, Waiting::Flush(reply)));
            }
            LogWriterMsg::Stats { reply } => {
                let mut stats = state.stats.clone();
                stats.fsyncs_total += state.pipelined_fsyncs_total;
                let _ = reply.send(stats);
            }
            LogWriterMsg::Written {
                writer,
                batch,
                result,
            } => {
                state.stats = writer.stats();
                state.writer = Some(writer);
                match result {
                    Err(reason) => fail(state, reason),
                    Ok(None) => acknowledge_through(state, batch, Ok(())),
                    Ok(Some(handle)) => {
                        state.syncs_in_flight += 1;
                        let myself = myself.clone();
                        tokio::task::spawn_blocking(move || {
                            let result = handle.sync().map_err(|error| error.to_string());
                            let _ = myself.send_message(LogWriterMsg::Synced { batch, result });
                        });
                    }
                }
            }
            LogWriterMsg::Synced { batch, result } => {
                state.syncs_in_flight -= 1;
                state.pipelined_fsyncs_total += 1;
                match result {
                    Ok(()) => acknowledge_through(state, batch, Ok(())),
                    Err(reason) => fail(state, reason),
                }
            }
            LogWriterMsg::ReplayDone { writer } => {
                state.writer = Some(writer);
            }
        }
        start_next(&myself, state);
        Ok(())
    }
}

/// Calls the completions of every batch up to `batch`, in order.
fn acknowledge_through(state: &mut LogWriterState, batch: u64, result: Result<(), String>) {
    while state
        .unacknowledged
        .front()
        .is_some_and(|(number, _)| *number <= batch)
    {
        if let Some((_, callbacks)) = state.unacknowledged.pop_front() {
            for callback in callbacks {
                callback(result.clone());
            }
        }
    }
}

/// After a failed write or sync nothing since the last good sync can be trusted
/// (the kernel may have dropped the dirty pages): every pending write fails, and so
/// does every later one.
fn fail(state: &mut LogWriterState, reason: String) {
    tracing::error!(error = %reason, "WAL write failed; refusing further writes");
    state.failed = Some(reason.clone());
    acknowledge_through(state, u64::MAX, Err(reason.clone()));
    for (_, callback) in state.queued.drain(..) {
        callback(Err(reason.clone()));
    }
}

/// Starts the next write batch, replay or flush when the stages allow it.
fn start_next(myself: &ActorRef<LogWriterMsg>, state: &mut LogWriterState) {
    if state.writer.is_none() {
        return;
    }
    // A waiter whose preceding writes are all durable runs before later writes.
    let all_durable = state.unacknowledged.is_empty() && state.syncs_in_flight == 0;
    if let Some(index) = state
        .waiting
        .iter()
        .position(|(position, _)| *position == 0)
    {
        if !all_durable {
            return;
        }
        let (_, waiting) = state.waiting.remove(index);
        match waiting {
            Waiting::Flush(reply) => {
                let _ = reply.send(());
                start_next(myself, state);
            }
            Waiting::Replay { group, reply } => {
                let Some(writer) = state.writer.take() else {
                    return;
                };
                let myself = myself.clone();
                tokio::task::spawn_blocking(move || {
                    let result = writer
                        .replay_group(group)
                        .map_err(|error| error.to_string());
                    let _ = reply.send(result);
                    let _ = myself.send_message(LogWriterMsg::ReplayDone { writer });
                });
            }
        }
        return;
    }
    if state.queued.is_empty() || state.syncs_in_flight >= SYNCS_IN_FLIGHT_MAX {
        return;
    }
    let mut count = 0;
    let mut bytes = 0;
    for (write, _) in &state.queued {
        if count > 0 && (count >= BATCH_WRITES_MAX || bytes >= BATCH_BYTES_MAX) {
            break;
        }
        count += 1;
        bytes += write.payload_bytes();
    }
    let (writes, callbacks): (Vec<GroupWrite>, Vec<DurableCallback>) =
        state.queued.drain(..count).unzip();
    for (position, _) in &mut state.waiting {
        *position = position.saturating_sub(count);
    }
    let Some(mut writer) = state.writer.take() else {
        return;
    };
    state.next_batch += 1;
    let batch = state.next_batch;
    state.unacknowledged.push_back((batch, callbacks));
    let myself = myself.clone();
    tokio::task::spawn_blocking(move || {
        let result = writer
            .write_batch(&writes)
            .map_err(|error| error.to_string());
        let _ = myself.send_message(LogWriterMsg::Written {
            writer,
            batch,
            result,
        });
    });
}

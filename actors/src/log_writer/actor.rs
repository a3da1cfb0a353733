//! The LogWriter actor shell: queues writes, runs one batch at a time on the blocking
//! pool, calls completions in order.

use super::writer::{WalWriter, WriterError};
use crate::ids::GroupId;
use crate::kv::WalStats;
use crate::storage::raft_log::GroupLog;
use crate::storage::wal_record::GroupWrite;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

/// Called once the write is durable (`Ok`) or can never be (`Err`).
pub type DurableCallback = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Writes queued per batch at most; the rest waits for the next batch.
const BATCH_WRITES_MAX: usize = 8_192;
/// Entry payload bytes per batch at most.
const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;

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
    /// A batch finished on the blocking pool (sent by the actor to itself).
    BatchDone {
        writer: Box<WalWriter>,
        result: Result<(), String>,
        callbacks: Vec<DurableCallback>,
    },
    /// A replay finished on the blocking pool (sent by the actor to itself).
    ReplayDone { writer: Box<WalWriter> },
}

impl ractor::Message for LogWriterMsg {}

pub struct LogWriterArgs {
    pub writer: WalWriter,
}

/// Requests that must wait until the writer is idle, in arrival order.
enum Waiting {
    Replay {
        group: GroupId,
        reply: oneshot::Sender<Result<GroupLog, String>>,
    },
    Flush(oneshot::Sender<()>),
}

pub struct LogWriterState {
    /// `None` while a batch or replay runs on the blocking pool.
    writer: Option<Box<WalWriter>>,
    /// Writes waiting for the next batch.
    queued: Vec<(GroupWrite, DurableCallback)>,
    /// Replays and flushes waiting for the queued writes before them.
    waiting: Vec<(usize, Waiting)>,
    /// Set after a failed sync: nothing more can be made durable.
    failed: Option<String>,
    /// Last known counters, answered while a batch runs.
    stats: WalStats,
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
            failed: None,
            stats,
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
                let _ = reply.send(state.stats.clone());
            }
            LogWriterMsg::BatchDone {
                writer,
                result,
                callbacks,
            } => {
                state.stats = writer.stats();
                state.writer = Some(writer);
                if let Err(reason) = &result {
                    tracing::error!(error = %reason, "WAL write failed; refusing further writes");
                    state.failed = Some(reason.clone());
                }
                for callback in callbacks {
                    callback(result.clone());
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

/// Starts the next batch or replay when the writer is idle.
fn start_next(myself: &ActorRef<LogWriterMsg>, state: &mut LogWriterState) {
    if state.writer.is_none() {
        return;
    }
    // A waiter whose preceding writes are all written runs before later writes.
    if let Some(index) = state.waiting.iter().position(|(position, _)| *position == 0) {
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
                    let result = writer.replay_group(group).map_err(|error| error.to_string());
                    let _ = reply.send(result);
                    let _ = myself.send_message(LogWriterMsg::ReplayDone { writer });
                });
            }
        }
        return;
    }
    if state.queued.is_empty() {
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
    let batch: Vec<(GroupWrite, DurableCallback)> = state.queued.drain(..count).collect();
    for (position, _) in &mut state.waiting {
        *position = position.saturating_sub(count);
    }
    let Some(mut writer) = state.writer.take() else {
        return;
    };
    let myself = myself.clone();
    tokio::task::spawn_blocking(move || {
        let (writes, callbacks): (Vec<GroupWrite>, Vec<DurableCallback>) =
            batch.into_iter().unzip();
        let result = writer
            .write_batch(&writes)
            .map_err(|error: WriterError| error.to_string());
        let _ = myself.send_message(LogWriterMsg::BatchDone {
            writer,
            result,
            callbacks,
        });
    });
}

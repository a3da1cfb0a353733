//! The LogWriter's thread: classic group commit. It blocks for the first job, takes
//! every job that queued up meanwhile, writes all the group writes among them with
//! one `fdatasync`, calls their completions, and goes back for more. While one sync
//! runs, the next batch gathers by itself, so the batch grows with the load.
//!
//! Jobs run in arrival order: a flush, replay or stats request waits for the writes
//! queued before it to be durable (the pending writes are committed first).
//!
//! After a failed write or sync nothing since the last good sync can be trusted (the
//! kernel may have dropped the dirty pages), so every later write fails too.

use super::writer::WalWriter;
use crate::ids::GroupId;
use crate::kv::WalStats;
use crate::storage::raft_log::GroupLog;
use crate::storage::wal_record::GroupWrite;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Called once the write is durable (`Ok`) or can never be (`Err`).
pub type DurableCallback = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Group writes per batch at most; the rest goes into the next batch.
const BATCH_WRITES_MAX: usize = 8_192;
/// Entry payload bytes per batch at most.
const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// What the thread is asked to do.
pub enum WalJob {
    Write {
        write: GroupWrite,
        on_durable: DurableCallback,
    },
    Replay {
        group: GroupId,
        reply: oneshot::Sender<Result<GroupLog, String>>,
    },
    Flush(oneshot::Sender<()>),
    Stats(oneshot::Sender<WalStats>),
}

/// Runs until every sender of `jobs` is gone. Sets `failed` when a write or sync
/// fails, so health checks can report the node as not serving.
pub fn run(mut writer: WalWriter, jobs: Receiver<WalJob>, wal_failed: Arc<AtomicBool>) {
    let mut failed: Option<String> = None;
    let mut writes: Vec<GroupWrite> = Vec::new();
    let mut callbacks: Vec<DurableCallback> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        let mut bytes = 0u64;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None if writes.len() >= BATCH_WRITES_MAX || bytes >= BATCH_BYTES_MAX => break,
                None => match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            match job {
                WalJob::Write { write, on_durable } => {
                    bytes += write.payload_bytes();
                    writes.push(write);
                    callbacks.push(on_durable);
                }
                other => {
                    commit(&mut writer, &mut writes, &mut callbacks, &mut failed);
                    wal_failed.store(failed.is_some(), Ordering::Release);
                    bytes = 0;
                    match other {
                        WalJob::Flush(reply) => {
                            let _ = reply.send(());
                        }
                        WalJob::Stats(reply) => {
                            let _ = reply.send(writer.stats());
                        }
                        WalJob::Replay { group, reply } => {
                            let result = writer
                                .replay_group(group)
                                .map_err(|error| error.to_string());
                            let _ = reply.send(result);
                        }
                        WalJob::Write { .. } => {}
                    }
                }
            }
        }
        commit(&mut writer, &mut writes, &mut callbacks, &mut failed);
        wal_failed.store(failed.is_some(), Ordering::Release);
    }
}

/// Makes the gathered writes durable and calls their completions in order.
fn commit(
    writer: &mut WalWriter,
    writes: &mut Vec<GroupWrite>,
    callbacks: &mut Vec<DurableCallback>,
    failed: &mut Option<String>,
) {
    if writes.is_empty() {
        return;
    }
    let result = match failed {
        Some(reason) => Err(reason.clone()),
        None => writer
            .write_batch(writes)
            .map_err(|error| error.to_string()),
    };
    if let Err(reason) = &result {
        if failed.is_none() {
            tracing::error!(error = %reason, "WAL write failed; refusing further writes");
            *failed = Some(reason.clone());
        }
    }
    writes.clear();
    for callback in callbacks.drain(..) {
        callback(result.clone());
    }
}

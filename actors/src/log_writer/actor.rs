//! The LogWriter actor: the supervised face of group commit. It owns the writer
//! thread (`thread.rs`) and hands it every job in arrival order; the thread does the
//! batching and the I/O, so no tokio worker ever waits for the disk.

use super::thread::{self, DurableCallback, WalJob};
use super::writer::WalWriter;
use crate::ids::GroupId;
use crate::kv::WalStats;
use crate::storage::raft_log::GroupLog;
use crate::storage::wal_record::GroupWrite;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

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
}

impl ractor::Message for LogWriterMsg {}

pub struct LogWriterArgs {
    pub writer: WalWriter,
    /// The receiving end of the job queue. Shard replicas hold senders of it
    /// ([`LogWriterHandle`]) and queue their writes without a mailbox hop.
    pub jobs: Receiver<WalJob>,
    /// A sender of the same queue, for the messages this actor forwards.
    pub sender: Sender<WalJob>,
    /// Set by the thread once a write or sync failed.
    pub wal_failed: Arc<AtomicBool>,
    /// How long the thread may wait before a batch under load (zero: never).
    pub gather_wait: Duration,
}

/// What a shard replica holds to queue WAL jobs directly on the writer thread.
#[derive(Clone)]
pub struct LogWriterHandle {
    jobs: Sender<WalJob>,
}

impl LogWriterHandle {
    /// Queues a job; fails when the writer thread is gone.
    pub fn send(&self, job: WalJob) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "the WAL writer thread is gone".to_string())
    }
}

/// A new job queue: the handle for the replicas, and the arguments of the actor
/// that owns the thread.
pub fn job_queue(
    writer: WalWriter,
    wal_failed: Arc<AtomicBool>,
    gather_wait: Duration,
) -> (LogWriterHandle, LogWriterArgs) {
    let (sender, jobs) = std::sync::mpsc::channel();
    (
        LogWriterHandle {
            jobs: sender.clone(),
        },
        LogWriterArgs {
            writer,
            jobs,
            sender,
            wal_failed,
            gather_wait,
        },
    )
}

pub struct LogWriterState {
    /// `None` once stopped. The thread exits once this and every replica's handle
    /// are dropped, after finishing its last batch.
    jobs: Option<Sender<WalJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        let writer = args.writer;
        let receiver = args.jobs;
        let wal_failed = args.wal_failed;
        let gather = thread::Gather::new(args.gather_wait, Instant::now());
        let thread = std::thread::Builder::new()
            .name("mimori-wal".into())
            .spawn(move || thread::run(writer, receiver, wal_failed, gather))?;
        Ok(LogWriterState {
            jobs: Some(args.sender),
            thread: Some(thread),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.jobs = None;
        if let Some(thread) = state.thread.take() {
            // The thread finishes the batch it holds; wait without blocking a worker.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let job = match message {
            LogWriterMsg::Append { write, on_durable } => WalJob::Write { write, on_durable },
            LogWriterMsg::ReplayGroup { group, reply } => WalJob::Replay { group, reply },
            LogWriterMsg::Flush { reply } => WalJob::Flush(reply),
            LogWriterMsg::Stats { reply } => WalJob::Stats(reply),
        };
        let Some(jobs) = &state.jobs else {
            return Err("the LogWriter is stopped".into());
        };
        if jobs.send(job).is_err() {
            return Err("the WAL writer thread is gone".into());
        }
        Ok(())
    }
}

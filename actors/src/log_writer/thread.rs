//! The LogWriter's thread: classic group commit. It blocks for the first job, takes
//! every job that queued up meanwhile, writes all the group writes among them with
//! one `fdatasync`, calls their completions, and goes back for more. While one sync
//! runs, the next batch gathers by itself, so the batch grows with the load.
//!
//! When configured to (`wal_gather_us`, off by default), the thread also waits a
//! little under load before taking a batch (see [`Gather`]): a sync costs the same
//! for one write as for fifty, and on a node short of CPU the CPU a sync takes (the
//! system call, the block layer, the device's completion) is better spent on the
//! writes. Where the CPU is not short, the wait only adds latency.
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
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Called once the write is durable (`Ok`) or can never be (`Err`).
pub type DurableCallback = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Group writes per batch at most; the rest goes into the next batch.
const BATCH_WRITES_MAX: usize = 8_192;
/// Entry payload bytes per batch at most.
const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The thread waits before a batch only when at least this many group writes are
/// expected to arrive during the wait.
const GATHER_WRITES_MIN: f64 = 4.0;
/// Weight of the newest batch in the smoothed arrival rate.
const GATHER_RATE_WEIGHT: f64 = 0.25;

/// When to wait before taking a batch, so that more writes share its sync.
///
/// Waiting adds its length to the latency of every write in the batch, which pays
/// only when enough writes come meanwhile. So the thread keeps a smoothed rate of
/// group writes arriving (writes taken per time between batches) and waits the
/// configured time only when that rate fills the wait with at least
/// [`GATHER_WRITES_MIN`] writes. A single client never waits: its next write comes
/// only after the last one was answered. A wait of zero turns gathering off.
#[derive(Debug)]
pub struct Gather {
    wait: Duration,
    /// Group writes per second.
    rate: f64,
    last_batch: Instant,
}

impl Gather {
    pub fn new(wait: Duration, now: Instant) -> Gather {
        Gather {
            wait,
            rate: 0.0,
            last_batch: now,
        }
    }

    /// How long to wait before taking the batch whose first job just arrived.
    pub fn wait_before_batch(&self) -> Duration {
        if self.wait.is_zero() || self.rate * self.wait.as_secs_f64() < GATHER_WRITES_MIN {
            Duration::ZERO
        } else {
            self.wait
        }
    }

    /// Records a batch of `writes` group writes taken at `now`.
    pub fn taken(&mut self, writes: usize, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_batch)
            .as_secs_f64()
            .max(1e-6);
        let sample = writes as f64 / elapsed;
        self.rate += GATHER_RATE_WEIGHT * (sample - self.rate);
        self.last_batch = now;
    }
}

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
pub fn run(
    mut writer: WalWriter,
    jobs: Receiver<WalJob>,
    wal_failed: Arc<AtomicBool>,
    mut gather: Gather,
) {
    let mut failed: Option<String> = None;
    let mut writes: Vec<GroupWrite> = Vec::new();
    let mut callbacks: Vec<DurableCallback> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let wait = gather.wait_before_batch();
        if !wait.is_zero() && matches!(first, WalJob::Write { .. }) {
            std::thread::sleep(wait);
        }
        let mut taken = 0;
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
                    taken += 1;
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
        gather.taken(taken, Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(gather: &mut Gather, start: Instant, batches: u32, writes: usize, every: Duration) {
        for batch in 1..=batches {
            gather.taken(writes, start + every * batch);
        }
    }

    #[test]
    fn waits_only_while_writes_come_fast_enough_to_fill_the_wait() {
        let start = Instant::now();
        let mut gather = Gather::new(Duration::from_millis(1), start);
        assert_eq!(gather.wait_before_batch(), Duration::ZERO, "no history");
        // 3 writes every 200 us: 15,000 a second, 15 per wait.
        feed(&mut gather, start, 20, 3, Duration::from_micros(200));
        assert_eq!(gather.wait_before_batch(), Duration::from_millis(1));
        // One write every millisecond (a single client): 1 per wait.
        let later = start + Duration::from_millis(4);
        feed(&mut gather, later, 20, 1, Duration::from_millis(1));
        assert_eq!(gather.wait_before_batch(), Duration::ZERO);
    }

    #[test]
    fn a_zero_wait_never_waits() {
        let start = Instant::now();
        let mut gather = Gather::new(Duration::ZERO, start);
        feed(&mut gather, start, 20, 50, Duration::from_micros(100));
        assert_eq!(gather.wait_before_batch(), Duration::ZERO);
    }

    #[test]
    fn an_idle_pause_ends_the_waiting_within_a_few_batches() {
        let start = Instant::now();
        let mut gather = Gather::new(Duration::from_millis(1), start);
        feed(&mut gather, start, 20, 5, Duration::from_micros(500));
        assert_eq!(gather.wait_before_batch(), Duration::from_millis(1));
        let mut now = start + Duration::from_millis(10);
        let mut waited = 0;
        for _ in 0..10 {
            now += Duration::from_millis(100);
            gather.taken(1, now);
            if !gather.wait_before_batch().is_zero() {
                waited += 1;
            }
        }
        assert!(waited <= 4, "waited before {waited} of 10 lone writes");
    }
}

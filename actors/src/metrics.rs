//! `NodeMetrics`: what the kernel records as it happens for the edge's `/metrics`,
//! the figures no status struct carries: distributions (a histogram must be fed at
//! the source) and byte counts of snapshot streams. Everything else `/metrics` shows
//! is read at scrape time from what the kernel keeps anyway (`NodeStatus`, the shard
//! gauges), so the hot paths pay for nothing twice.
//!
//! One per node, shared through the [`ShardRegistry`](crate::node::registry::ShardRegistry);
//! the LogWriter thread and the replicas record into it without locks. Names follow
//! `mimori_<subsystem>_<name>_<unit>`; histograms have explicit buckets.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, Opts};

/// Buckets of the WAL's `fdatasync` latency, in seconds: 50 µs to 2.5 s.
pub const FSYNC_SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];
/// Buckets of group writes made durable by one WAL batch (one `fdatasync`).
pub const BATCH_WRITES_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// The node's recorded figures.
pub struct NodeMetrics {
    /// Latency of each group-commit `fdatasync`.
    pub wal_fsync_duration_seconds: Histogram,
    /// Group writes (one per Raft group with something to persist) per batch.
    pub wal_batch_writes: Histogram,
    /// Key and value bytes of snapshot chunks acknowledged by their receivers.
    pub snapshot_sent_bytes_total: IntCounter,
    /// Key and value bytes of snapshot chunks received by local replicas.
    pub snapshot_received_bytes_total: IntCounter,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        NodeMetrics {
            wal_fsync_duration_seconds: histogram(
                "mimori_wal_fsync_duration_seconds",
                "Latency of the WAL's group-commit fdatasync",
                FSYNC_SECONDS_BUCKETS,
            ),
            wal_batch_writes: histogram(
                "mimori_wal_batch_writes",
                "Raft group writes made durable by one WAL fdatasync",
                BATCH_WRITES_BUCKETS,
            ),
            snapshot_sent_bytes_total: counter(
                "mimori_snapshot_sent_bytes_total",
                "Key and value bytes of snapshot chunks sent and acknowledged",
            ),
            snapshot_received_bytes_total: counter(
                "mimori_snapshot_received_bytes_total",
                "Key and value bytes of snapshot chunks received by local replicas",
            ),
        }
    }

    /// Every recorded metric, to register with a scrape's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.wal_fsync_duration_seconds.clone()),
            Box::new(self.wal_batch_writes.clone()),
            Box::new(self.snapshot_sent_bytes_total.clone()),
            Box::new(self.snapshot_received_bytes_total.clone()),
        ]
    }
}

/// A histogram from constant options: construction fails only on an invalid name
/// or unsorted buckets, which the unit test below rules out for every one.
fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let options = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    Histogram::with_opts(options).expect("constant histogram options are valid")
}

/// A counter from constant options (see [`histogram`]).
fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("constant counter options are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every recorded metric can be created (the constants are valid) and
    /// records what it is given.
    #[test]
    fn metrics_are_created_and_record() {
        let metrics = NodeMetrics::new();
        metrics.wal_fsync_duration_seconds.observe(0.003);
        metrics.wal_batch_writes.observe(5.0);
        metrics.snapshot_sent_bytes_total.inc_by(10);
        let names: Vec<String> = metrics
            .collectors()
            .iter()
            .flat_map(|collector| collector.collect())
            .map(|family| family.get_name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "mimori_wal_fsync_duration_seconds",
                "mimori_wal_batch_writes",
                "mimori_snapshot_sent_bytes_total",
                "mimori_snapshot_received_bytes_total"
            ]
        );
        assert_eq!(metrics.wal_fsync_duration_seconds.get_sample_count(), 1);
        assert_eq!(metrics.wal_batch_writes.get_sample_sum(), 5.0);
        assert_eq!(metrics.snapshot_sent_bytes_total.get(), 10);
    }
}

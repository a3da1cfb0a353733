//! Live figures of one shard replica, written by its actor and read lock-free by the
//! router, health checks and the cluster view.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

/// Atomics the replica updates after every Ready.
#[derive(Debug, Default)]
pub struct ShardGauges {
    /// Raft id of the known leader, 0 when none.
    leader: AtomicU64,
    /// Current term.
    term: AtomicU64,
    /// Highest index applied to the state machine.
    applied_index: AtomicU64,
    /// Highest index known committed.
    commit_index: AtomicU64,
    /// Highest index compacted out of the in-memory log.
    compacted_index: AtomicU64,
    /// Whether a linearizable read may be served from the local state machine
    /// without a ReadIndex round: see [`ShardGauges::local_reads_allowed`].
    local_reads: AtomicBool,
    /// Voters and learners as the replica last applied them.
    membership: RwLock<(Vec<u64>, Vec<u64>)>,
    /// On a leader: how many entries the furthest-behind member lacks (refreshed
    /// every few ticks).
    replication_lag: AtomicU64,
    /// Cumulative counters of this shard's replica on this node (for `/metrics`).
    pub counters: ShardCounters,
}

/// What a replica counts as it runs, since the node started. Its slot outlives
/// replica restarts, so the counts only grow.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Proposals this replica handed to Raft (a follower's go on to its leader).
    pub proposals_total: AtomicU64,
    /// Committed entries handed to the state machine.
    pub entries_committed_total: AtomicU64,
    /// Entries appended to the local log (to be made durable), and their bytes.
    pub log_entries_appended_total: AtomicU64,
    pub log_bytes_appended_total: AtomicU64,
    /// Times the known leader changed.
    pub leader_changes_total: AtomicU64,
}

impl ShardCounters {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl ShardGauges {
    pub fn leader(&self) -> Option<u64> {
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            leader => Some(leader),
        }
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Relaxed)
    }

    pub fn commit_index(&self) -> u64 {
        self.commit_index.load(Ordering::Relaxed)
    }

    pub fn compacted_index(&self) -> u64 {
        self.compacted_index.load(Ordering::Relaxed)
    }

    /// True when this replica is the group's only voter, leads it, and has applied
    /// an entry of its current term. Then no other replica can commit anything, every
    /// acknowledged write (acknowledged only after apply) is in the local state
    /// machine, and everything from earlier terms (including writes acknowledged
    /// before a restart) has been re-applied; a read of the local state is
    /// linearizable. This is raft-rs's own single-voter ReadIndex answer, minus a
    /// mailbox round trip.
    pub fn local_reads_allowed(&self) -> bool {
        self.local_reads.load(Ordering::Acquire)
    }

    pub(crate) fn set_local_reads(&self, allowed: bool) {
        self.local_reads.store(allowed, Ordering::Release);
    }

    pub(crate) fn set_leader(&self, leader: u64, term: u64) {
        self.leader.store(leader, Ordering::Relaxed);
        self.term.store(term, Ordering::Relaxed);
    }

    pub(crate) fn set_applied_index(&self, index: u64) {
        self.applied_index.store(index, Ordering::Relaxed);
    }

    pub(crate) fn set_commit_index(&self, index: u64) {
        self.commit_index.store(index, Ordering::Relaxed);
    }

    /// Voters and learners of the group as the local replica knows them.
    pub fn membership(&self) -> (Vec<u64>, Vec<u64>) {
        self.membership
            .read()
            .map(|membership| membership.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_membership(&self, voters: &[u64], learners: &[u64]) {
        if let Ok(mut membership) = self.membership.write() {
            *membership = (voters.to_vec(), learners.to_vec());
        }
    }

    /// Entries the furthest-behind member lacks, as this replica last saw it while
    /// leading.
    pub fn replication_lag(&self) -> u64 {
        self.replication_lag.load(Ordering::Relaxed)
    }

    pub(crate) fn set_replication_lag(&self, entries: u64) {
        self.replication_lag.store(entries, Ordering::Relaxed);
    }

    pub(crate) fn set_compacted_index(&self, index: u64) {
        self.compacted_index.store(index, Ordering::Relaxed);
    }
}

//! `ShardReplica`: one shard's Raft group member and state machine, without async or
//! I/O of its own. The actor feeds it inputs (propose, read, tick, persisted) and
//! performs the [`Effect`]s it returns.
//!
//! The Ready loop (raft-rs asynchronous persistence):
//! 1. `drive` takes a Ready: committed entries are applied to the shard's sled tree in
//!    one batch with the applied index, and their proposers answered; new entries and
//!    hard state go into the in-memory [`GroupLog`] (raft-rs must be able to read them
//!    at once) and out as an [`Effect::Persist`] to the LogWriter.
//! 2. When the LogWriter reports the write durable, `on_persisted` tells raft-rs, which
//!    may then commit (a single voter commits its own durable entries) and produce
//!    the next Ready.
//!
//! Linearizable reads use ReadIndex, batched: every read that arrives before the next
//! Ready shares one ReadIndex request, and is released once the applied index reaches
//! the read index.

use crate::command::Command;
use crate::ids::GroupId;
use crate::ids::{NodeId, Revision, ShardId};
use crate::kv::KvError;
use crate::shard::gauges::ShardGauges;
use crate::storage::raft_log::GroupLog;
use crate::storage::state_machine::{ShardStore, StoreError};
use crate::storage::wal_record::{CompactionRecord, ConfStateRecord, GroupWrite, HardStateRecord};
use raft::eraftpb::{ConfState, EntryType, Message};
use raft::{RawNode, StateRole};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Where a proposer waits for the outcome of its write.
pub type ProposalReply = oneshot::Sender<Result<Revision, KvError>>;
/// Where a linearizable reader waits until it may read the local state machine.
pub type ReadReply = oneshot::Sender<Result<(), KvError>>;

/// Bytes of a proposal context: the replica instance, then a sequence number.
const PROPOSAL_CONTEXT_BYTES: usize = 16;
/// A ReadIndex request unanswered for this many ticks is sent again (raft-rs drops
/// them silently while a new leader has not yet committed in its term).
const READ_RETRY_TICKS: u64 = 2;
/// Proposals and reads older than this many ticks are given up.
const WAITER_EXPIRY_TICKS: u64 = 300;

/// Fatal failures: the actor stops and its supervisor restarts it from disk.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft log: {0}")]
    Log(#[from] raft::StorageError),
    #[error("state machine: {0}")]
    Store(#[from] StoreError),
    #[error("shard {shard}: entry {index} cannot be applied: {reason}")]
    BadEntry {
        shard: ShardId,
        index: u64,
        reason: String,
    },
}

/// What the actor must do after an input.
#[derive(Debug)]
pub enum Effect {
    /// Make `write` durable, then call `on_persisted(ready_number)` (when given).
    Persist {
        write: GroupWrite,
        ready_number: Option<u64>,
    },
    /// Raft messages for other replicas. Sent at once by a leader; by a follower only
    /// after the Ready they belong to is durable (they are returned from `on_persisted`).
    Send(Vec<Message>),
}

/// Tunables of one replica.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaOptions {
    pub election_ticks: u64,
    pub heartbeat_ticks: u64,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            election_ticks: 10,
            heartbeat_ticks: 1,
        }
    }
}

struct Waiting<T> {
    reply: T,
    since_tick: u64,
}

/// One shard replica: raft-rs node plus state machine plus the clients waiting on them.
pub struct ShardReplica {
    shard: ShardId,
    raw: RawNode<GroupLog>,
    store: ShardStore,
    gauges: Arc<ShardGauges>,
    /// Random per start, so a restarted replica never answers a proposal of its
    /// previous life that commits later.
    instance: u64,
    next_proposal: u64,
    proposals: HashMap<u64, Waiting<ProposalReply>>,
    /// Reads that arrived since the last ReadIndex request.
    read_batch: Vec<ReadReply>,
    next_read: u64,
    /// ReadIndex requests not answered yet: context → (waiters, tick sent).
    reads_in_flight: HashMap<u64, (Vec<ReadReply>, u64)>,
    /// Reads whose read index is known, waiting for apply to reach it.
    reads_ready: Vec<(u64, Vec<ReadReply>)>,
    /// Messages of Readies not yet durable, released by `on_persisted`.
    messages_after_persist: Vec<(u64, Vec<Message>)>,
    /// Numbers of Readies sent to the LogWriter and not yet durable, in order.
    persisting: VecDeque<u64>,
    /// Highest number of a Ready that needed no write but came after a Ready still
    /// being persisted. raft-rs takes `on_persist_ready(n)` to mean "every Ready up to
    /// n is durable", so it may only be reported once the earlier writes are.
    settled_behind_write: Option<u64>,
    /// Configuration to include in the next durable write (set at bootstrap).
    pending_conf_state: Option<ConfStateRecord>,
    applied_index: u64,
    /// Term of the last applied entry.
    applied_term: u64,
    /// Whether this replica is the group's only voter (fixed until configuration
    /// changes arrive with replication).
    sole_voter: bool,
    ticks: u64,
    was_leader: bool,
}

impl ShardReplica {
    /// Builds the replica from its recovered log and state machine. A blank log is
    /// bootstrapped as a single-voter group of `node_id` (replication adds peers).
    pub fn new(
        shard: ShardId,
        node_id: NodeId,
        mut log: GroupLog,
        store: ShardStore,
        gauges: Arc<ShardGauges>,
        options: ReplicaOptions,
        instance: u64,
    ) -> Result<ShardReplica, ReplicaError> {
        let mut pending_conf_state = None;
        if log.is_blank() {
            let conf_state = ConfState {
                voters: vec![node_id.0],
                ..Default::default()
            };
            pending_conf_state = Some(ConfStateRecord::from(&conf_state));
            log.set_conf_state(conf_state);
        }
        // Replay starts at the last checkpoint: everything up to the log's compaction
        // point was made durable before the log was compacted, and applying is
        // idempotent, so whatever sled kept beyond it is simply confirmed.
        let applied_index = log.truncated().index;
        // Entries up to what was applied were committed, whether or not a hard state
        // carrying that commit index reached the WAL (commit-only changes are not
        // written; see `drive`).
        let applied_before = store.applied_index()?.min(log.last_index());
        let commit = log
            .hard_state()
            .commit
            .max(applied_index)
            .max(applied_before);
        if log.hard_state().commit < commit {
            let mut hard_state = log.hard_state().clone();
            hard_state.commit = commit;
            log.set_hard_state(hard_state);
        }
        let single_voter =
            log.conf_state().voters == [node_id.0] && log.conf_state().learners.is_empty();
        let config = raft::Config {
            id: node_id.0,
            election_tick: options.election_ticks as usize,
            heartbeat_tick: options.heartbeat_ticks as usize,
            applied: applied_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&config, log, &logger)?;
        if single_voter {
            // No one else can be elected; do not wait an election timeout.
            raw.campaign()?;
        }
        gauges.set_local_reads(false);
        gauges.set_applied_index(applied_index);
        gauges.set_compacted_index(raw.store().truncated().index);
        Ok(ShardReplica {
            shard,
            raw,
            store,
            gauges,
            instance,
            next_proposal: 0,
            proposals: HashMap::new(),
            read_batch: Vec::new(),
            next_read: 0,
            reads_in_flight: HashMap::new(),
            reads_ready: Vec::new(),
            messages_after_persist: Vec::new(),
            persisting: VecDeque::new(),
            settled_behind_write: None,
            pending_conf_state,
            applied_index,
            applied_term: 0,
            sole_voter: single_voter,
            ticks: 0,
            was_leader: false,
        })
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Whether `drive` has work: a Ready, or reads waiting for a ReadIndex request.
    pub fn has_ready(&self) -> bool {
        !self.read_batch.is_empty() || self.raw.has_ready()
    }

    fn not_leader(&self) -> KvError {
        let leader = self.raw.raft.leader_id;
        KvError::NotLeader {
            shard: self.shard,
            hint: (leader != 0 && leader != self.raw.raft.id).then_some(NodeId(leader)),
        }
    }

    /// Proposes a write; `reply` gets its revision once applied.
    pub fn propose(&mut self, command: &Command, reply: ProposalReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.next_proposal += 1;
        let mut context = Vec::with_capacity(PROPOSAL_CONTEXT_BYTES);
        context.extend_from_slice(&self.instance.to_be_bytes());
        context.extend_from_slice(&self.next_proposal.to_be_bytes());
        match self.raw.propose(context, command.encode()) {
            Ok(()) => {
                self.proposals.insert(
                    self.next_proposal,
                    Waiting {
                        reply,
                        since_tick: self.ticks,
                    },
                );
            }
            Err(error) => {
                let _ = reply.send(Err(KvError::Unavailable {
                    shard: self.shard,
                    reason: format!("proposal dropped: {error}"),
                    retry_after_ms: 100,
                }));
            }
        }
    }

    /// Queues a linearizable read; `reply` is answered when the local state machine
    /// reflects every write committed before the read arrived.
    pub fn read(&mut self, reply: ReadReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.read_batch.push(reply);
    }

    /// Advances Raft's clock by one tick; retries and expires waiters.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        let ticks = self.ticks;
        let mut retry = Vec::new();
        self.reads_in_flight.retain(|context, (waiters, since)| {
            if ticks.saturating_sub(*since) > WAITER_EXPIRY_TICKS {
                return false;
            }
            waiters.retain(|waiter| !waiter.is_closed());
            if waiters.is_empty() {
                return false;
            }
            if ticks.saturating_sub(*since) % READ_RETRY_TICKS == 0 {
                retry.push(*context);
            }
            true
        });
        if self.raw.raft.state == StateRole::Leader {
            for context in retry {
                self.raw.read_index(context.to_be_bytes().to_vec());
            }
        }
        self.proposals.retain(|_, waiting| {
            ticks.saturating_sub(waiting.since_tick) <= WAITER_EXPIRY_TICKS
                && !waiting.reply.is_closed()
        });
    }

    /// The Ready numbered `ready_number` (and every earlier one) is durable.
    pub fn on_persisted(&mut self, ready_number: u64) -> Vec<Effect> {
        while self
            .persisting
            .front()
            .is_some_and(|number| *number <= ready_number)
        {
            self.persisting.pop_front();
        }
        let mut settled = ready_number;
        if let Some(behind) = self.settled_behind_write {
            let before_next_write = self.persisting.front().is_none_or(|next| behind < *next);
            if before_next_write {
                settled = settled.max(behind);
                self.settled_behind_write = None;
            }
        }
        self.raw.on_persist_ready(settled);
        self.release_messages(settled)
    }

    /// Messages of Readies up to `settled` may now be sent.
    fn release_messages(&mut self, settled: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        while self
            .messages_after_persist
            .first()
            .is_some_and(|(number, _)| *number <= settled)
        {
            let (_, messages) = self.messages_after_persist.remove(0);
            effects.push(Effect::Send(messages));
        }
        effects
    }

    /// Compacts the in-memory log up to `index` (never past the applied index). The
    /// caller guarantees the state machine is durable up to `index`.
    pub fn compact(&mut self, index: u64) -> Result<Vec<Effect>, ReplicaError> {
        let index = index.min(self.applied_index);
        if index <= self.raw.store().truncated().index {
            return Ok(Vec::new());
        }
        self.raw.mut_store().compact(index)?;
        let truncated = self.raw.store().truncated();
        // Replay will never start at or below the compaction point again.
        self.store.purge_tombstones(truncated.index)?;
        self.gauges.set_compacted_index(truncated.index);
        let mut write = GroupWrite::new(GroupId::shard(self.shard));
        write.compacted = Some(CompactionRecord {
            index: truncated.index,
            term: truncated.term,
        });
        Ok(vec![Effect::Persist {
            write,
            ready_number: None,
        }])
    }

    /// Handles everything raft-rs has ready.
    pub fn drive(&mut self) -> Result<Vec<Effect>, ReplicaError> {
        let mut effects = Vec::new();
        if !self.read_batch.is_empty() {
            self.next_read += 1;
            let waiters = std::mem::take(&mut self.read_batch);
            self.reads_in_flight
                .insert(self.next_read, (waiters, self.ticks));
            self.raw.read_index(self.next_read.to_be_bytes().to_vec());
        }
        if !self.raw.has_ready() {
            self.release_reads();
            return Ok(effects);
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            effects.push(Effect::Send(ready.take_messages()));
        }
        if let Some(soft_state) = ready.ss() {
            self.gauges
                .set_leader(soft_state.leader_id, self.raw.raft.term);
            let is_leader = soft_state.raft_state == StateRole::Leader;
            if self.was_leader && !is_leader {
                self.fail_waiters_on_leadership_loss();
            }
            self.was_leader = is_leader;
            if !is_leader {
                self.gauges.set_local_reads(false);
            }
        }
        if !ready.snapshot().is_empty() {
            // TODO(#3): install a snapshot streamed from the leader.
            return Err(ReplicaError::BadEntry {
                shard: self.shard,
                index: ready.snapshot().get_metadata().index,
                reason: "snapshots arrive with replication, which this build lacks".into(),
            });
        }
        let committed = ready.take_committed_entries();
        self.apply(committed)?;

        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        let ready_number = ready.number();
        // Term and vote must be durable before anything depends on them; a new commit
        // index alone need not be (recovery takes it from the applied index), so such
        // a Ready writes nothing and waits for nothing.
        let must_sync = ready.must_sync();
        for read_state in ready.take_read_states() {
            let context: [u8; 8] = match read_state.request_ctx.as_slice().try_into() {
                Ok(context) => context,
                Err(_) => continue,
            };
            if let Some((waiters, _)) = self.reads_in_flight.remove(&u64::from_be_bytes(context)) {
                self.reads_ready.push((read_state.index, waiters));
            }
        }
        let persisted_messages = ready.take_persisted_messages();

        let mut write = GroupWrite::new(GroupId::shard(self.shard));
        write.conf_state = self.pending_conf_state.take();
        if !entries.is_empty() {
            self.raw.mut_store().append(&entries)?;
            write.entries = entries.iter().map(Into::into).collect();
        }
        if let Some(hard_state) = &hard_state {
            self.raw.mut_store().set_hard_state(hard_state.clone());
            self.gauges.set_commit_index(hard_state.commit);
            if must_sync || !write.is_empty() {
                write.hard_state = Some(HardStateRecord::from(hard_state));
            }
        }
        self.raw.advance_append_async(ready);
        if !persisted_messages.is_empty() {
            self.messages_after_persist
                .push((ready_number, persisted_messages));
        }
        if write.is_empty() {
            if self.persisting.is_empty() {
                // Nothing to make durable and nothing before it pending.
                self.raw.on_persist_ready(ready_number);
                effects.extend(self.release_messages(ready_number));
            } else {
                self.settled_behind_write = Some(ready_number);
            }
        } else {
            self.persisting.push_back(ready_number);
            effects.push(Effect::Persist {
                write,
                ready_number: Some(ready_number),
            });
        }
        self.raw.advance_apply_to(self.applied_index);
        self.release_reads();
        Ok(effects)
    }

    /// Applies committed entries in one state-machine batch and answers proposers.
    fn apply(&mut self, entries: Vec<raft::eraftpb::Entry>) -> Result<(), ReplicaError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let last_index = last.index;
        let mut commands = Vec::with_capacity(entries.len());
        for entry in &entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    commands.push((entry.index, None));
                }
                EntryType::EntryNormal => {
                    let command =
                        Command::decode(&entry.data).map_err(|error| ReplicaError::BadEntry {
                            shard: self.shard,
                            index: entry.index,
                            reason: error.to_string(),
                        })?;
                    commands.push((entry.index, Some(command)));
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    // TODO(#3): membership changes of shard groups.
                    return Err(ReplicaError::BadEntry {
                        shard: self.shard,
                        index: entry.index,
                        reason: "configuration changes arrive with replication".into(),
                    });
                }
            }
        }
        let outcomes = self.store.apply(&commands)?;
        for (entry, outcome) in entries.iter().zip(outcomes) {
            let Some(outcome) = outcome else { continue };
            let Some(sequence) = self.own_proposal(&entry.context) else {
                continue;
            };
            if let Some(waiting) = self.proposals.remove(&sequence) {
                let _ = waiting.reply.send(outcome);
            }
        }
        self.applied_index = last_index;
        self.applied_term = entries.last().map_or(self.applied_term, |entry| entry.term);
        self.gauges.set_applied_index(last_index);
        self.gauges.set_local_reads(
            self.sole_voter
                && self.raw.raft.state == StateRole::Leader
                && self.applied_term == self.raw.raft.term,
        );
        Ok(())
    }

    /// The sequence number of a proposal made by this instance, from its context.
    fn own_proposal(&self, context: &[u8]) -> Option<u64> {
        if context.len() != PROPOSAL_CONTEXT_BYTES {
            return None;
        }
        let (instance, sequence) = context.split_at(8);
        let instance = u64::from_be_bytes(instance.try_into().ok()?);
        if instance != self.instance {
            return None;
        }
        Some(u64::from_be_bytes(sequence.try_into().ok()?))
    }

    /// Releases reads whose read index has been applied.
    fn release_reads(&mut self) {
        let applied = self.applied_index;
        self.reads_ready.retain_mut(|(index, waiters)| {
            if *index > applied {
                return true;
            }
            for waiter in waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
            false
        });
    }

    /// A deposed leader cannot know whether its pending proposals will commit; their
    /// clients are told the outcome is unknown. Pending reads fail and may retry.
    fn fail_waiters_on_leadership_loss(&mut self) {
        let unknown = KvError::Unavailable {
            shard: self.shard,
            reason: "leadership changed while the request was pending; a write may or may not have been applied".into(),
            retry_after_ms: 100,
        };
        for (_, waiting) in self.proposals.drain() {
            let _ = waiting.reply.send(Err(unknown.clone()));
        }
        let not_leader = self.not_leader();
        let waiters = self
            .read_batch
            .drain(..)
            .chain(
                self.reads_in_flight
                    .drain()
                    .flat_map(|(_, (waiters, _))| waiters),
            )
            .chain(self.reads_ready.drain(..).flat_map(|(_, waiters)| waiters));
        for waiter in waiters {
            let _ = waiter.send(Err(not_leader.clone()));
        }
    }
}

//! `ShardReplica`: one shard's Raft group member and state machine, without async or
//! I/O of its own beyond the shard's sled tree. The actor (or a deterministic test)
//! feeds it inputs (propose, read, step, tick, persisted, snapshot chunks) and
//! performs the [`Effect`]s it returns.
//!
//! The Ready loop (raft-rs asynchronous persistence):
//! 1. `drive` takes a Ready: a snapshot it carries is installed, committed entries
//!    are applied to the shard's sled tree and their proposers answered; new entries
//!    and hard state go into the in-memory [`GroupLog`] (raft-rs must be able to read
//!    them at once) and out as an [`Effect::Persist`] to the LogWriter.
//! 2. When the LogWriter reports the write durable, `on_persisted` tells raft-rs,
//!    which may then commit and produce the next Ready. Messages a follower may only
//!    send after persisting (votes, append responses) are released then.
//!
//! Reads: linearizable reads use ReadIndex, batched: every read that arrives before
//! the next Ready shares one request, on the leader or (forwarded by raft-rs) from a
//! follower that knows its leader, and is released once the local applied index
//! reaches the read index.
//!
//! Membership: the leader compares the group's configuration with the placement
//! table's replicas every few ticks and proposes one change at a time
//! (`shard::membership`). Configuration changes take effect when applied; the
//! configuration is recorded with the index of the entry that produced it, so replay
//! after a restart never applies an old change on top of a newer configuration.
//!
//! Snapshots: raft-rs asks for one when a follower needs compacted entries. The
//! `MsgSnapshot` it produces is not sent as is: [`Effect::StreamSnapshot`] tells the
//! actor to stream the shard's tree to the follower in chunks (`storage::snapshot`),
//! the last chunk carrying the message. The follower stages the chunks into a fresh
//! generation, and only when the last one is durable steps the message into raft-rs;
//! if raft-rs accepts it, the next Ready installs the staged generation.

use super::membership::{self, GroupView, MemberProgress, MembershipChange};
use crate::command::Command;
use crate::ids::{GroupId, NodeId, Revision, ShardId};
use crate::kv::KvError;
use crate::shard::gauges::{ShardCounters, ShardGauges};
use crate::storage::raft_log::{GroupLog, LogPosition};
use crate::storage::snapshot::{
    SnapshotPair, SnapshotPosition, SnapshotSource, SnapshotStaging, StagedSnapshot,
};
use crate::storage::state_machine::{ShardStore, StoreError};
use crate::storage::wal_record::{CompactionRecord, ConfStateRecord, GroupWrite, HardStateRecord};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Where a proposer waits for the outcome of its write.
pub type ProposalReply = oneshot::Sender<Result<Revision, KvError>>;
/// Where a linearizable reader waits until it may read the local state machine.
pub type ReadReply = oneshot::Sender<Result<(), KvError>>;
/// Where a leadership transfer waits for the new leader.
pub type TransferReply = oneshot::Sender<Result<(), KvError>>;

/// Bytes of a proposal or ReadIndex context: the replica instance, then a sequence
/// number.
const PROPOSAL_CONTEXT_BYTES: usize = 16;
/// A ReadIndex request unanswered for this many ticks is sent again (raft-rs drops
/// them silently while a new leader has not yet committed in its term, or while a
/// follower's leader is unknown).
const READ_RETRY_TICKS: u64 = 2;
/// Proposals and reads older than this many ticks are given up.
const WAITER_EXPIRY_TICKS: u64 = 300;
/// The leader looks at its configuration against the placement this often.
const RECONCILE_TICKS: u64 = 3;
/// A leadership transfer not done after this many ticks is reported failed.
const TRANSFER_TICKS_MAX: u64 = 50;
/// The state machine records its applied index once every this many entries.
const APPLIED_RECORD_ENTRIES: u64 = 256;
/// Where a new group's log starts (see `ShardReplica::new`).
const BOOTSTRAP_POSITION: LogPosition = LogPosition { index: 5, term: 5 };
/// A proposal a follower forwards carries one command: at most a value and a key
/// plus its envelope.
const PROPOSAL_FORWARDED_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Configuration-change payloads are flat protobuf messages of a few bytes; anything
/// larger is refused before it reaches the parser.
const CONF_CHANGE_BYTES_MAX: usize = 4 * 1024;

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
    #[error("shard {shard}: snapshot at index {index}: {reason}")]
    BadSnapshot {
        shard: ShardId,
        index: u64,
        reason: String,
    },
}

/// One piece of a snapshot stream between the replicas of a group. The last piece
/// carries raft-rs's `MsgSnapshot`, whose metadata labels the whole stream.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotChunk {
    /// Chosen by the sender, unique per stream.
    pub stream: u64,
    /// 0, 1, 2, ... in order; a gap aborts the stream.
    pub sequence: u32,
    pub pairs: Vec<SnapshotPair>,
    pub done: Option<Message>,
}

/// The receiver's answer to one chunk; `accepted: false` aborts the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotAck {
    pub stream: u64,
    pub sequence: u32,
    pub accepted: bool,
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
    /// Stream the shard's tree to `to`, then send `message` (a `MsgSnapshot`) as the
    /// last chunk's payload; report the outcome with `on_snapshot_sent`.
    StreamSnapshot {
        to: NodeId,
        stream: u64,
        message: Box<Message>,
        source: SnapshotSource,
    },
    /// Answer a chunk of an incoming snapshot stream.
    AckSnapshotChunk { to: NodeId, ack: SnapshotAck },
    /// The shard's current tree is now `store` (a snapshot was installed); readers
    /// must switch to it.
    StoreReplaced(ShardStore),
    /// Linearizable reads whose ReadIndex is applied: answer them. Always after any
    /// `StoreReplaced` of the same batch, so that a read released by the Ready that
    /// installed a snapshot reads the installed tree, not the one it replaced (the
    /// reader reads the shard's published store as soon as it is answered).
    ReleaseReads(Vec<ReadReply>),
}

/// Tunables of one replica.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaOptions {
    pub election_ticks: u64,
    pub heartbeat_ticks: u64,
    /// A leader compacts no further than its slowest recently active follower, but
    /// never keeps more than this many applied entries for it; a follower further
    /// behind catches up from a snapshot.
    pub log_retain_entries_max: u64,
    /// Randomize each election timeout in [election_ticks, 2 × election_ticks), as
    /// Raft requires to avoid split votes. raft-rs draws the randomness from the
    /// thread's generator, so deterministic tests turn it off and vary timing
    /// through their own seeded choices instead.
    pub randomized_elections: bool,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            election_ticks: 10,
            heartbeat_ticks: 1,
            log_retain_entries_max: 5_000,
            randomized_elections: true,
        }
    }
}

/// How a replica with a blank log starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Create the group with these voters (a new cluster's first node: itself).
    Voters(Vec<NodeId>),
    /// Wait for the group's leader to add this replica and send it the log or a
    /// snapshot.
    Join,
}

struct Waiting<T> {
    reply: T,
    since_tick: u64,
}

/// A snapshot stream being received.
struct IncomingSnapshot {
    from: NodeId,
    stream: u64,
    next_sequence: u32,
    staging: SnapshotStaging,
}

/// Everything a replica is built from.
pub struct ReplicaParts {
    pub shard: ShardId,
    pub node_id: NodeId,
    pub log: GroupLog,
    pub store: ShardStore,
    pub gauges: Arc<ShardGauges>,
    pub options: ReplicaOptions,
    /// Random per start, so a restarted replica never answers a proposal of its
    /// previous life that commits later.
    pub instance: u64,
    pub bootstrap: Bootstrap,
    /// The placement table's replicas for the shard.
    pub placement: Vec<NodeId>,
}

/// One shard replica: raft-rs node plus state machine plus the clients waiting on them.
pub struct ShardReplica {
    shard: ShardId,
    node_id: NodeId,
    raw: RawNode<GroupLog>,
    store: ShardStore,
    gauges: Arc<ShardGauges>,
    options: ReplicaOptions,
    instance: u64,
    next_proposal: u64,
    proposals: HashMap<u64, Waiting<ProposalReply>>,
    /// Reads that arrived since the last ReadIndex request.
    read_batch: Vec<ReadReply>,
    next_read: u64,
    /// ReadIndex requests not answered yet: context → (waiters, tick sent).
    reads_in_flight: BTreeMap<u64, (Vec<ReadReply>, u64)>,
    /// Reads whose read index is known, waiting for apply to reach it.
    reads_ready: Vec<(u64, Vec<ReadReply>)>,
    /// Messages of Readies not yet durable, released by `on_persisted`.
    messages_after_persist: Vec<(u64, Vec<Message>)>,
    /// The highest term handed to the LogWriter so far.
    term_queued: u64,
    /// Until the Ready with this number is durable (it carries a new term), every
    /// message waits in `messages_after_persist`.
    messages_held_until: Option<u64>,
    /// Numbers of Readies sent to the LogWriter and not yet durable, in order.
    persisting: VecDeque<u64>,
    /// Highest number of a Ready that needed no write but came after a Ready still
    /// being persisted. raft-rs takes `on_persist_ready(n)` to mean "every Ready up to
    /// n is durable", so it may only be reported once the earlier writes are.
    settled_behind_write: Option<u64>,
    /// Configuration to include in the next durable write.
    pending_conf_state: Option<Box<ConfStateRecord>>,
    /// Compaction point to include in the next durable write (a snapshot adopted at
    /// start whose install the WAL never recorded).
    pending_compaction: Option<CompactionRecord>,
    applied_index: u64,
    /// Term of the last applied entry.
    applied_term: u64,
    /// No key in the tree carries a revision above this; entries after it are
    /// applied without idempotency reads where the command allows.
    seen_until: u64,
    /// The applied index last recorded in the state machine.
    applied_recorded: u64,
    /// Whether this replica is the group's only voter (recomputed on every
    /// configuration change).
    sole_voter: bool,
    ticks: u64,
    was_leader: bool,
    /// The leader named by the last soft state (0: none).
    leader_seen: u64,
    /// The placement table's replicas for this shard.
    placement: Vec<NodeId>,
    /// Tick of the last membership reconciliation.
    reconciled_at_tick: u64,
    /// Leadership transfers waiting for the new leader: target, waiter.
    transfers: Vec<(NodeId, Waiting<TransferReply>)>,
    next_stream: u64,
    incoming: Option<IncomingSnapshot>,
    /// A complete, durable incoming snapshot stepped into raft-rs, waiting for the
    /// Ready that installs it.
    staged: Option<StagedSnapshot>,
}

impl ShardReplica {
    /// Builds the replica from its recovered log and state machine.
    pub fn new(parts: ReplicaParts) -> Result<ShardReplica, ReplicaError> {
        let ReplicaParts {
            shard,
            node_id,
            mut log,
            store,
            gauges,
            options,
            instance,
            bootstrap,
            placement,
        } = parts;
        let mut pending_conf_state = None;
        let mut pending_compaction = None;
        let generation_snapshot = store.generation_record()?.snapshot;
        if log.is_blank() {
            if let Bootstrap::Voters(voters) = &bootstrap {
                // The group starts as if from a snapshot at BOOTSTRAP_POSITION holding
                // its first configuration. No entry carries that configuration, so
                // a replica added later must never be sent the log from its start:
                // everything up to here counts as compacted, and it gets a snapshot.
                let conf_state = ConfState {
                    voters: voters.iter().map(|node| node.0).collect(),
                    ..Default::default()
                };
                let start = BOOTSTRAP_POSITION;
                pending_conf_state = Some(Box::new(ConfStateRecord::at(&conf_state, start.index)));
                pending_compaction = Some(CompactionRecord {
                    index: start.index,
                    term: start.term,
                });
                log.reset_to(start, conf_state, start.index);
            }
        }
        // A snapshot installed into the state machine whose WAL record was lost in a
        // crash: the tree holds the state at its index, so the log starts there.
        if let Some(position) = &generation_snapshot {
            if position.index > log.truncated().index {
                let start = LogPosition {
                    index: position.index,
                    term: position.term,
                };
                log.reset_to(start, position.conf_state.to_conf_state(), position.index);
                pending_conf_state = Some(Box::new(position.conf_state.clone()));
                pending_compaction = Some(CompactionRecord {
                    index: position.index,
                    term: position.term,
                });
            }
        }
        // Replay starts at the last checkpoint: everything up to the log's compaction
        // point was made durable before the log was compacted, and applying is
        // idempotent, so whatever sled kept beyond it is simply confirmed.
        let applied = log.truncated();
        log.set_applied(applied);
        // Entries up to what was applied were committed, whether or not a hard state
        // carrying that commit index reached the WAL (commit-only changes are not
        // written; see `drive`).
        let applied_before = store.applied_index()?.min(log.last_index());
        // No key can carry a revision above the log's last entry (entries are
        // applied only once durable in it) or what an installed snapshot brought.
        let seen_until = log.last_index().max(
            generation_snapshot
                .as_ref()
                .map_or(0, |snapshot| snapshot.revision_max),
        );
        let commit = log
            .hard_state()
            .commit
            .max(applied.index)
            .max(applied_before);
        let mut hard_state = log.hard_state().clone();
        hard_state.commit = commit;
        hard_state.term = hard_state.term.max(applied.term);
        log.set_hard_state(hard_state);
        let config = raft::Config {
            id: node_id.0,
            election_tick: options.election_ticks as usize,
            heartbeat_tick: options.heartbeat_ticks as usize,
            applied: applied.index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let config = if options.randomized_elections {
            config
        } else {
            raft::Config {
                min_election_tick: options.election_ticks as usize,
                max_election_tick: options.election_ticks as usize + 1,
                ..config
            }
        };
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let term_durable = log.hard_state().term;
        let raw = RawNode::new(&config, log, &logger)?;
        gauges.set_local_reads(false);
        gauges.set_applied_index(applied.index);
        gauges.set_compacted_index(raw.store().truncated().index);
        let mut replica = ShardReplica {
            shard,
            node_id,
            raw,
            store,
            gauges,
            options,
            instance,
            next_proposal: 0,
            proposals: HashMap::new(),
            read_batch: Vec::new(),
            next_read: 0,
            reads_in_flight: BTreeMap::new(),
            reads_ready: Vec::new(),
            messages_after_persist: Vec::new(),
            term_queued: term_durable,
            messages_held_until: None,
            persisting: VecDeque::new(),
            settled_behind_write: None,
            pending_conf_state,
            pending_compaction,
            applied_index: applied.index,
            applied_term: applied.term,
            seen_until,
            applied_recorded: applied.index,
            sole_voter: false,
            ticks: 0,
            was_leader: false,
            leader_seen: 0,
            placement,
            reconciled_at_tick: 0,
            transfers: Vec::new(),
            next_stream: 0,
            incoming: None,
            staged: None,
        };
        replica.sole_voter = replica.is_sole_voter();
        replica.publish_membership();
        if replica.sole_voter {
            // No one else can be elected; do not wait an election timeout.
            replica.raw.campaign()?;
        }
        Ok(replica)
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The term of the last applied entry.
    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    /// The shard's current tree.
    pub fn store(&self) -> &ShardStore {
        &self.store
    }

    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this replica knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        let leader = self.raw.raft.leader_id;
        (leader != 0).then_some(NodeId(leader))
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader's view of each member's replication, for diagnostics: member,
    /// matched index, next index, and the raft-rs progress state.
    pub fn progress(&self) -> Vec<(u64, u64, u64, String)> {
        let mut progress: Vec<(u64, u64, u64, String)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, progress)| {
                (
                    *id,
                    progress.matched,
                    progress.next_idx,
                    format!(
                        "{:?} paused={} pending_snapshot={}",
                        progress.state,
                        progress.is_paused(),
                        progress.pending_snapshot
                    ),
                )
            })
            .collect();
        progress.sort();
        progress
    }

    /// Voters and learners as of the applied index.
    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// Whether `drive` has work: a Ready, or reads waiting for a ReadIndex request.
    pub fn has_ready(&self) -> bool {
        !self.read_batch.is_empty() || self.raw.has_ready()
    }

    fn group(&self) -> GroupId {
        GroupId::shard(self.shard)
    }

    fn publish_membership(&self) {
        let conf_state = self.raw.store().conf_state();
        self.gauges
            .set_membership(&conf_state.voters, &conf_state.learners);
    }

    fn is_sole_voter(&self) -> bool {
        let conf_state = self.raw.store().conf_state();
        conf_state.voters == [self.node_id.0] && conf_state.voters_outgoing.is_empty()
    }

    fn not_leader(&self) -> KvError {
        KvError::NotLeader {
            shard: self.shard,
            hint: self.leader().filter(|leader| *leader != self.node_id),
        }
    }

    /// Proposes a write; `reply` gets its revision once applied here.
    ///
    /// A follower that knows its leader proposes too: raft-rs forwards the entry to
    /// the leader inside its own messages, and the follower answers its client when
    /// it applies the entry (recognised by the context: this replica's instance and
    /// the proposal's number). If the leader changes first, the client is told the
    /// outcome is unknown: the forwarded entry may or may not have been appended.
    pub fn propose(&mut self, command: &Command, reply: ProposalReply) {
        if !self.is_leader() && self.leader().is_none() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.next_proposal += 1;
        let mut context = Vec::with_capacity(PROPOSAL_CONTEXT_BYTES);
        context.extend_from_slice(&self.instance.to_be_bytes());
        context.extend_from_slice(&self.next_proposal.to_be_bytes());
        match self.raw.propose(context, command.encode()) {
            Ok(()) => {
                ShardCounters::add(&self.gauges.counters.proposals_total, 1);
                self.proposals.insert(
                    self.next_proposal,
                    Waiting {
                        reply,
                        since_tick: self.ticks,
                    },
                );
            }
            // raft-rs drops proposals while leadership is being handed over: the
            // write certainly did not happen, so the Router may try again.
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(KvError::NotLeader {
                    shard: self.shard,
                    hint: None,
                }));
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
    /// reflects every write committed before the read arrived. A follower forwards
    /// the request to its leader; without a known leader the read is refused at once.
    pub fn read(&mut self, reply: ReadReply) {
        if !self.is_leader() && self.leader().is_none() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.read_batch.push(reply);
    }

    /// Hands a message from another replica of the group to raft-rs. Snapshots only
    /// arrive through [`ShardReplica::receive_snapshot_chunk`].
    pub fn step(&mut self, message: Message) {
        if message.to != self.node_id.0 || message.get_msg_type() == MessageType::MsgSnapshot {
            return;
        }
        if message.get_msg_type() == MessageType::MsgPropose
            && message.entries.iter().any(|entry| {
                entry.get_entry_type() != EntryType::EntryNormal
                    || entry.data.len() > PROPOSAL_FORWARDED_BYTES_MAX
            })
        {
            // Followers forward only normal writes; a configuration change arriving
            // as a proposal from a peer would make raft-rs parse its protobuf payload
            // (and only a leader may change the group).
            return;
        }
        if message.get_msg_type() == MessageType::MsgTimeoutNow && self.snapshot_persisting() {
            // A campaign now would trip over the snapshot (see `tick`); the leader
            // transfer simply fails and may be retried.
            return;
        }
        if let Err(error) = self.raw.step(message) {
            // Messages from peers no longer in the group, or stale ones; raft-rs
            // recovers from losing them.
            tracing::trace!(shard = self.shard.0, %error, "raft message ignored");
        }
    }

    /// Sets the placement table's replicas for this shard.
    pub fn set_placement(&mut self, replicas: Vec<NodeId>) {
        self.placement = replicas;
    }

    /// Moves leadership to `to`; `reply` is answered once `to` leads, or with an
    /// error when that does not happen in time.
    pub fn transfer_leader(&mut self, to: NodeId, reply: TransferReply) {
        if self.leader() == Some(to) {
            let _ = reply.send(Ok(()));
            return;
        }
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if !self.raw.store().conf_state().voters.contains(&to.0) {
            let _ = reply.send(Err(KvError::InvalidInput(format!(
                "node {to} is not a voter of shard {}",
                self.shard
            ))));
            return;
        }
        self.raw.transfer_leader(to.0);
        self.transfers.push((
            to,
            Waiting {
                reply,
                since_tick: self.ticks,
            },
        ));
    }

    /// Advances Raft's clock by one tick; retries and expires waiters, and lets the
    /// leader move the configuration towards the placement.
    pub fn tick(&mut self) {
        // Between installing a snapshot and its Ready being durable raft-rs must not
        // campaign: it would look for unapplied entries the snapshot replaced.
        if !self.snapshot_persisting() {
            self.raw.tick();
        }
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
        if self.is_leader() || self.leader().is_some() {
            for context in retry {
                self.raw.read_index(self.read_context(context));
            }
        }
        self.proposals.retain(|_, waiting| {
            ticks.saturating_sub(waiting.since_tick) <= WAITER_EXPIRY_TICKS
                && !waiting.reply.is_closed()
        });
        let (expired, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
            .into_iter()
            .partition(|(_, waiting)| {
                ticks.saturating_sub(waiting.since_tick) > TRANSFER_TICKS_MAX
            });
        self.transfers = pending;
        for (to, waiting) in expired {
            let _ = waiting.reply.send(Err(KvError::Unavailable {
                shard: self.shard,
                reason: format!("node {to} did not take over leadership in time"),
                retry_after_ms: 1_000,
            }));
        }
        if self.is_leader() && ticks.saturating_sub(self.reconciled_at_tick) >= RECONCILE_TICKS {
            self.reconciled_at_tick = ticks;
            let last_index = self.raw.raft.raft_log.last_index();
            let lag = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, progress)| last_index.saturating_sub(progress.matched))
                .max()
                .unwrap_or(0);
            self.gauges.set_replication_lag(lag);
            self.reconcile_membership();
        }
    }

    /// Proposes the next configuration step towards the placement, if one is due.
    fn reconcile_membership(&mut self) {
        // A new leader must first commit in its term, and only one change may be in
        // flight (raft-rs refuses a second one anyway). A group created before logs
        // started at BOOTSTRAP_POSITION keeps its first configuration in no entry;
        // it adds replicas only once its log is compacted, so they get a snapshot.
        if self.applied_term != self.raw.raft.term
            || self.raw.raft.has_pending_conf()
            || self.raw.store().truncated().index == 0
        {
            return;
        }
        let conf_state = self.raw.store().conf_state().clone();
        let view = GroupView {
            leader: self.node_id,
            voters: &conf_state.voters,
            learners: &conf_state.learners,
            placed: &self.placement,
            last_index: self.raw.raft.raft_log.last_index(),
        };
        let prs = self.raw.raft.prs();
        let change = membership::next_change(&view, |node| {
            prs.get(node.0).map(|progress| MemberProgress {
                matched: progress.matched,
                recent_active: progress.recent_active,
            })
        });
        let Some(change) = change else { return };
        let (change_type, node) = match change {
            MembershipChange::AddLearner(node) => (ConfChangeType::AddLearnerNode, node),
            MembershipChange::Promote(node) => (ConfChangeType::AddNode, node),
            MembershipChange::Remove(node) => (ConfChangeType::RemoveNode, node),
            MembershipChange::TransferLeader(node) => {
                if self.raw.raft.lead_transferee != Some(node.0) {
                    tracing::info!(
                        shard = self.shard.0,
                        to = node.0,
                        "not placed here any more; handing leadership over"
                    );
                    self.raw.transfer_leader(node.0);
                }
                return;
            }
        };
        let conf_change = ConfChange {
            change_type,
            node_id: node.0,
            ..Default::default()
        };
        tracing::info!(
            shard = self.shard.0,
            ?change,
            "proposing a membership change"
        );
        if let Err(error) = self.raw.propose_conf_change(Vec::new(), conf_change) {
            tracing::debug!(shard = self.shard.0, %error, "membership change not proposed");
        }
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
        self.report_applied();
        self.release_messages(settled)
    }

    /// Messages of Readies up to `settled` may now be sent.
    fn release_messages(&mut self, settled: u64) -> Vec<Effect> {
        if self
            .messages_held_until
            .is_some_and(|until| until <= settled)
        {
            self.messages_held_until = None;
        }
        let mut effects = Vec::new();
        while self
            .messages_after_persist
            .first()
            .is_some_and(|(number, _)| *number <= settled)
        {
            let (_, messages) = self.messages_after_persist.remove(0);
            self.outgoing(messages, &mut effects);
        }
        effects
    }

    /// Turns raft-rs messages into effects: snapshots become streams.
    fn outgoing(&mut self, messages: Vec<Message>, effects: &mut Vec<Effect>) {
        let mut plain = Vec::with_capacity(messages.len());
        for message in messages {
            if message.get_msg_type() != MessageType::MsgSnapshot {
                plain.push(message);
                continue;
            }
            let index = message.get_snapshot().get_metadata().index;
            self.next_stream += 1;
            let stream = self.instance.rotate_left(17) ^ self.next_stream;
            tracing::info!(
                shard = self.shard.0,
                to = message.to,
                index,
                "streaming a snapshot to a lagging replica"
            );
            effects.push(Effect::StreamSnapshot {
                to: NodeId(message.to),
                stream,
                source: self.store.snapshot_source(index),
                message: Box::new(message),
            });
        }
        if !plain.is_empty() {
            effects.push(Effect::Send(plain));
        }
    }

    /// The outcome of a snapshot stream to `to`.
    pub fn on_snapshot_sent(&mut self, to: NodeId, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to.0, status);
    }

    /// Takes one chunk of a snapshot stream from `from`. The last chunk, once its
    /// data is durable in the staged generation, steps the snapshot into raft-rs.
    pub fn receive_snapshot_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
    ) -> Result<Vec<Effect>, ReplicaError> {
        let ack = |accepted| Effect::AckSnapshotChunk {
            to: from,
            ack: SnapshotAck {
                stream: chunk.stream,
                sequence: chunk.sequence,
                accepted,
            },
        };
        if chunk.sequence == 0 {
            self.incoming = Some(IncomingSnapshot {
                from,
                stream: chunk.stream,
                next_sequence: 0,
                staging: self.store.stage_snapshot()?,
            });
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return Ok(vec![ack(false)]);
        };
        if incoming.from != from
            || incoming.stream != chunk.stream
            || incoming.next_sequence != chunk.sequence
        {
            return Ok(vec![ack(false)]);
        }
        if let Err(error) = incoming.staging.write(&chunk.pairs) {
            tracing::warn!(shard = self.shard.0, %error, "snapshot chunk refused");
            self.incoming = None;
            return Ok(vec![ack(false)]);
        }
        incoming.next_sequence += 1;
        let Some(message) = chunk.done.clone() else {
            return Ok(vec![ack(true)]);
        };
        let Some(incoming) = self.incoming.take() else {
            return Ok(vec![ack(false)]);
        };
        let metadata = message.get_snapshot().get_metadata();
        if message.get_msg_type() != MessageType::MsgSnapshot
            || message.to != self.node_id.0
            || message.from != from.0
            || metadata.index == 0
        {
            return Ok(vec![ack(false)]);
        }
        self.staged = Some(incoming.staging.finish(metadata.index)?);
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(shard = self.shard.0, %error, "snapshot not accepted");
        }
        if self.raw.raft.raft_log.unstable_snapshot().is_none() {
            // raft-rs declined it (stale, or the log already matched): nothing to
            // install; the staged trees are dropped by the next stage or start.
            self.staged = None;
        }
        Ok(vec![ack(true)])
    }

    /// Compacts the in-memory log up to `index` (the state machine is durable there).
    /// A leader keeps what its recently active followers still need, within
    /// `log_retain_entries_max`.
    pub fn compact(&mut self, index: u64) -> Result<Vec<Effect>, ReplicaError> {
        let mut index = index.min(self.raw.raft.raft_log.applied);
        if self.is_leader() {
            let me = self.node_id.0;
            let slowest = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, progress)| **id != me && progress.recent_active)
                .map(|(_, progress)| progress.matched)
                .min();
            if let Some(slowest) = slowest {
                let floor = index.saturating_sub(self.options.log_retain_entries_max);
                index = index.min(slowest.max(floor));
            }
        }
        if index <= self.raw.store().truncated().index {
            return Ok(Vec::new());
        }
        self.raw.mut_store().compact(index)?;
        let truncated = self.raw.store().truncated();
        // Replay will never start at or below the compaction point again.
        self.store.purge_tombstones(truncated.index)?;
        self.gauges.set_compacted_index(truncated.index);
        let mut write = GroupWrite::new(self.group());
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
            self.raw.read_index(self.read_context(self.next_read));
        }
        if !self.raw.has_ready() {
            self.release_reads(&mut effects);
            if self.pending_compaction.is_some() {
                // A snapshot adopted at start: record it even if raft-rs is idle.
                let mut write = GroupWrite::new(self.group());
                write.conf_state = self.pending_conf_state.take();
                write.compacted = self.pending_compaction.take();
                write.hard_state = Some(HardStateRecord::from(self.raw.store().hard_state()));
                effects.push(Effect::Persist {
                    write,
                    ready_number: None,
                });
            }
            return Ok(effects);
        }
        let mut ready = self.raw.ready();
        // A leader may send its messages before its own write is durable, but not
        // before the term it sends them in is: a sole voter becomes leader without
        // asking anyone, and if it crashed before persisting the new term it could
        // lead the same term again with different entries. So messages wait behind
        // the first durable write of every new term.
        let ready_number = ready.number();
        if let Some(hard_state) = ready.hs() {
            if hard_state.term > self.term_queued {
                self.term_queued = hard_state.term;
                self.messages_held_until = Some(ready_number);
            }
        }
        let messages = ready.take_messages();
        if !messages.is_empty() {
            if self.messages_held_until.is_some() {
                self.messages_after_persist.push((ready_number, messages));
            } else {
                self.outgoing(messages, &mut effects);
            }
        }
        if let Some(soft_state) = ready.ss() {
            self.gauges
                .set_leader(soft_state.leader_id, self.raw.raft.term);
            let is_leader = soft_state.raft_state == StateRole::Leader;
            let leader_changed = soft_state.leader_id != self.leader_seen;
            if leader_changed {
                ShardCounters::add(&self.gauges.counters.leader_changes_total, 1);
            }
            self.leader_seen = soft_state.leader_id;
            if self.was_leader && !is_leader {
                self.fail_waiters_on_leadership_loss();
            } else if leader_changed && !is_leader {
                self.fail_proposals(self.outcome_unknown());
            }
            self.was_leader = is_leader;
            if !is_leader {
                self.gauges.set_local_reads(false);
            }
            self.resolve_transfers(soft_state.leader_id);
        }

        let mut write = GroupWrite::new(self.group());
        if !ready.snapshot().is_empty() {
            let metadata = ready.snapshot().get_metadata().clone();
            self.install_snapshot(&metadata, &mut effects)?;
            write.compacted = Some(CompactionRecord {
                index: metadata.index,
                term: metadata.term,
            });
        }
        let committed = ready.take_committed_entries();
        let counters = &self.gauges.counters;
        ShardCounters::add(&counters.entries_committed_total, committed.len() as u64);
        self.apply(committed)?;

        let entries = ready.take_entries();
        let counters = &self.gauges.counters;
        ShardCounters::add(&counters.log_entries_appended_total, entries.len() as u64);
        let bytes: usize = entries
            .iter()
            .map(|entry| entry.get_data().len() + entry.get_context().len())
            .sum();
        ShardCounters::add(&counters.log_bytes_appended_total, bytes as u64);
        let hard_state = ready.hs().cloned();
        // Term and vote must be durable before anything depends on them; a new commit
        // index alone need not be (recovery takes it from the applied index), so such
        // a Ready writes nothing and waits for nothing.
        let must_sync = ready.must_sync();
        for read_state in ready.take_read_states() {
            // Answers to requests of an earlier life of this replica carry another
            // instance and match nothing: their index says nothing about reads that
            // started after the restart.
            let Some(sequence) = self.own_context(&read_state.request_ctx) else {
                continue;
            };
            if let Some((waiters, _)) = self.reads_in_flight.remove(&sequence) {
                self.reads_ready.push((read_state.index, waiters));
            }
        }
        let persisted_messages = ready.take_persisted_messages();

        write.conf_state = self.pending_conf_state.take();
        if write.compacted.is_none() {
            write.compacted = self.pending_compaction.take();
        }
        if !entries.is_empty() {
            self.raw.mut_store().append(&entries)?;
            write.entries = entries.iter().map(Into::into).collect();
        }
        if let Some(hard_state) = &hard_state {
            self.raw.mut_store().set_hard_state(hard_state.clone());
            self.gauges.set_commit_index(hard_state.commit);
        }
        if must_sync || !write.is_empty() {
            write.hard_state = Some(HardStateRecord::from(self.raw.store().hard_state()));
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
        self.report_applied();
        self.release_reads(&mut effects);
        Ok(effects)
    }

    /// Whether an installed snapshot's Ready is not durable yet.
    fn snapshot_persisting(&self) -> bool {
        self.raw.raft.raft_log.applied < self.applied_index
    }

    /// Tells raft-rs how far the state machine has applied. An installed snapshot
    /// counts only once its Ready is durable (raft-rs refuses an applied index past
    /// what it knows to be persisted).
    fn report_applied(&mut self) {
        let raft_log = &self.raw.raft.raft_log;
        let reportable = self
            .applied_index
            .min(raft_log.persisted)
            .min(raft_log.committed);
        if reportable > raft_log.applied {
            self.raw.advance_apply_to(reportable);
        }
    }

    /// Makes the staged snapshot the shard's state and the log start at it.
    fn install_snapshot(
        &mut self,
        metadata: &raft::eraftpb::SnapshotMetadata,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ReplicaError> {
        let bad = |reason: &str| ReplicaError::BadSnapshot {
            shard: self.shard,
            index: metadata.index,
            reason: reason.to_string(),
        };
        let staged = self
            .staged
            .take()
            .ok_or_else(|| bad("raft-rs accepted a snapshot that was never staged"))?;
        if staged.index() != metadata.index {
            return Err(bad("the staged snapshot has another index"));
        }
        let revision_max = staged.revision_max();
        self.seen_until = revision_max;
        let conf_state = metadata.get_conf_state().clone();
        let conf_record = ConfStateRecord::at(&conf_state, metadata.index);
        let store = staged.install(SnapshotPosition {
            index: metadata.index,
            term: metadata.term,
            conf_state: conf_record.clone(),
            revision_max,
        })?;
        let position = LogPosition {
            index: metadata.index,
            term: metadata.term,
        };
        self.raw
            .mut_store()
            .reset_to(position, conf_state, metadata.index);
        self.raw.mut_store().set_applied(position);
        self.store = store.clone();
        self.applied_index = metadata.index;
        self.applied_term = metadata.term;
        self.pending_conf_state = Some(Box::new(conf_record));
        self.sole_voter = self.is_sole_voter();
        self.publish_membership();
        self.gauges.set_applied_index(metadata.index);
        self.gauges.set_compacted_index(metadata.index);
        effects.push(Effect::StoreReplaced(store));
        tracing::info!(
            shard = self.shard.0,
            index = metadata.index,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Applies committed entries (data in one state-machine batch, then configuration
    /// changes in order) and answers proposers.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), ReplicaError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let last = LogPosition {
            index: last.index,
            term: last.term,
        };
        let mut commands = Vec::with_capacity(entries.len());
        let mut conf_changes = Vec::new();
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
                    commands.push((entry.index, None));
                    conf_changes.push(entry);
                }
            }
        }
        let record_applied = last.index >= self.applied_recorded + APPLIED_RECORD_ENTRIES;
        if record_applied {
            self.applied_recorded = last.index;
        }
        let outcomes = self
            .store
            .apply_after(&commands, self.seen_until, record_applied)?;
        for (entry, outcome) in entries.iter().zip(outcomes) {
            let Some(outcome) = outcome else { continue };
            let Some(sequence) = self.own_context(&entry.context) else {
                continue;
            };
            if let Some(waiting) = self.proposals.remove(&sequence) {
                let _ = waiting.reply.send(outcome);
            }
        }
        for entry in conf_changes {
            self.apply_conf_change(entry)?;
        }
        self.applied_index = last.index;
        self.applied_term = last.term;
        self.raw.mut_store().set_applied(last);
        self.gauges.set_applied_index(last.index);
        self.gauges.set_local_reads(
            self.sole_voter && self.is_leader() && self.applied_term == self.raw.raft.term,
        );
        Ok(())
    }

    /// Applies one configuration-change entry, unless replay meets one whose effect
    /// the recorded configuration already holds.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), ReplicaError> {
        if entry.index <= self.raw.store().conf_index() {
            return Ok(());
        }
        let bad = |reason: String| ReplicaError::BadEntry {
            shard: self.shard,
            index: entry.index,
            reason,
        };
        if entry.data.len() > CONF_CHANGE_BYTES_MAX {
            return Err(bad(format!(
                "configuration change of {} bytes",
                entry.data.len()
            )));
        }
        // Clear local reads before the configuration changes: a new voter ends the
        // single-voter shortcut at once.
        self.gauges.set_local_reads(false);
        let conf_state = if entry.get_entry_type() == EntryType::EntryConfChange {
            let change = ConfChange::parse_from_bytes(&entry.data)
                .map_err(|error| bad(error.to_string()))?;
            self.raw.apply_conf_change(&change)?
        } else {
            let change = ConfChangeV2::parse_from_bytes(&entry.data)
                .map_err(|error| bad(error.to_string()))?;
            self.raw.apply_conf_change(&change)?
        };
        tracing::info!(
            shard = self.shard.0,
            node = self.node_id.0,
            index = entry.index,
            voters = ?conf_state.voters,
            learners = ?conf_state.learners,
            "membership changed"
        );
        self.pending_conf_state = Some(Box::new(ConfStateRecord::at(&conf_state, entry.index)));
        self.raw.mut_store().set_conf_state(conf_state, entry.index);
        self.sole_voter = self.is_sole_voter();
        self.publish_membership();
        Ok(())
    }

    /// The context of this instance's ReadIndex request number `sequence`.
    fn read_context(&self, sequence: u64) -> Vec<u8> {
        let mut context = Vec::with_capacity(PROPOSAL_CONTEXT_BYTES);
        context.extend_from_slice(&self.instance.to_be_bytes());
        context.extend_from_slice(&sequence.to_be_bytes());
        context
    }

    /// The sequence number of a proposal or ReadIndex request made by this
    /// instance, from its context.
    fn own_context(&self, context: &[u8]) -> Option<u64> {
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
    fn release_reads(&mut self, effects: &mut Vec<Effect>) {
        let applied = self.applied_index;
        let mut released = Vec::new();
        self.reads_ready.retain_mut(|(index, waiters)| {
            if *index > applied {
                return true;
            }
            released.append(waiters);
            false
        });
        if !released.is_empty() {
            effects.push(Effect::ReleaseReads(released));
        }
    }

    /// Answers leadership transfers that reached `leader`.
    fn resolve_transfers(&mut self, leader: u64) {
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
            .into_iter()
            .partition(|(to, _)| to.0 == leader);
        self.transfers = pending;
        for (_, waiting) in done {
            let _ = waiting.reply.send(Ok(()));
        }
    }

    fn outcome_unknown(&self) -> KvError {
        KvError::Unavailable {
            shard: self.shard,
            reason: "leadership changed while the request was pending; a write may or may not have been applied".into(),
            retry_after_ms: 100,
        }
    }

    fn fail_proposals(&mut self, error: KvError) {
        for (_, waiting) in self.proposals.drain() {
            let _ = waiting.reply.send(Err(error.clone()));
        }
    }

    /// A deposed leader cannot know whether its pending proposals will commit; their
    /// clients are told the outcome is unknown. Pending reads fail and may retry.
    fn fail_waiters_on_leadership_loss(&mut self) {
        self.fail_proposals(self.outcome_unknown());
        let not_leader = self.not_leader();
        let waiters = self
            .read_batch
            .drain(..)
            .chain(
                std::mem::take(&mut self.reads_in_flight)
                    .into_values()
                    .flat_map(|(waiters, _)| waiters),
            )
            .chain(self.reads_ready.drain(..).flat_map(|(_, waiters)| waiters));
        for waiter in waiters {
            let _ = waiter.send(Err(not_leader.clone()));
        }
    }
}

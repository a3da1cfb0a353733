//! Deterministic in-process tests of shard Raft groups: three `ShardReplica`s (the
//! pure core, no actors, no clock) over an in-memory network that loses, duplicates
//! and reorders messages and partitions nodes, with a simulated LogWriter that makes
//! writes durable late, crashes that lose everything not yet durable, compaction,
//! snapshots, and membership grown from one voter to three by the leader.
//!
//! Every run is driven by one seed, printed when it fails; `MIMORI_SIM_SEED=N`
//! replays one, `MIMORI_SIM_SEEDS=K` runs K seeds (default 12) from
//! `MIMORI_SIM_SEED_BASE`, and `MIMORI_SIM_TRACE=1` prints what happens.
//!
//! What is checked, during the run and after the faults heal:
//! - at most one leader per term;
//! - every acknowledged write is in every replica's state machine with the revision
//!   it was acknowledged with, and a deleted key is gone (writes whose outcome was
//!   unknown may be either way);
//! - no two acknowledged writes share a revision;
//! - a linearizable read (ReadIndex, on the leader or a follower) issued after a
//!   write was acknowledged sees it;
//! - all replicas end with the same applied index and the same content checksum.

use bytes::Bytes;
use mimori_actors::command::Command;
use mimori_actors::ids::{NodeId, Revision, ShardId};
use mimori_actors::kv::{Condition, KvError, Namespace};
use mimori_actors::shard::replica::{Effect, SnapshotChunk};
use mimori_actors::shard::{Bootstrap, ReplicaOptions, ReplicaParts, ShardGauges, ShardReplica};
use mimori_actors::storage::raft_log::GroupLog;
use mimori_actors::storage::state_machine::{ShardStore, StateMachineDb};
use mimori_actors::storage::wal_record::{apply_group_write, GroupWrite};
use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;

const SHARD: ShardId = ShardId(0);
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

/// The crash profile of `t51` (and of the seed `t90` replays).
const CRASH_FAULTS: Faults = Faults {
    loss: 5,
    duplicate: 2,
    crash: 40,
    partition: 20,
};

/// Fault rates of one run, in percent per event.
#[derive(Clone, Copy, Debug)]
struct Faults {
    loss: u32,
    duplicate: u32,
    crash: u32,
    partition: u32,
}

struct SimNode {
    id: NodeId,
    _dir: tempfile::TempDir,
    db: StateMachineDb,
    replica: Option<ShardReplica>,
    /// The store readers see, as the node's shard slot publishes it: the one the
    /// replica started with, replaced only when its `StoreReplaced` effect is
    /// performed. Released reads are checked against this, not the replica's own.
    published: Option<ShardStore>,
    /// The simulated WAL: writes made durable, in order.
    durable: Vec<GroupWrite>,
    /// Writes handed to the simulated LogWriter and not yet durable.
    persisting: VecDeque<(GroupWrite, Option<u64>)>,
    instance: u64,
}

/// What a client is waiting for.
enum Pending {
    Write {
        key: String,
        delete: bool,
        reply: oneshot::Receiver<Result<Revision, KvError>>,
    },
    Read {
        node: NodeId,
        key: String,
        /// The revision acknowledged before the read was issued.
        expected: Revision,
        reply: oneshot::Receiver<Result<(), KvError>>,
    },
}

/// What the checker knows of a key.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Present(Revision, String),
    Deleted,
    /// A write whose outcome is unknown touched it.
    Unknown,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    faults: Faults,
    nodes: Vec<SimNode>,
    network: Vec<(NodeId, NodeId, Message)>,
    /// Node pairs that cannot talk (both directions).
    cut: Vec<(NodeId, NodeId)>,
    pending: Vec<Pending>,
    known: BTreeMap<String, Known>,
    revisions: HashMap<Revision, String>,
    leaders: HashMap<u64, NodeId>,
    next_key: u64,
    snapshots_installed: u64,
    reads_checked: u64,
}

macro_rules! trace {
    ($($message:tt)*) => {
        if std::env::var_os("MIMORI_SIM_TRACE").is_some() {
            eprintln!($($message)*);
        }
    };
}

macro_rules! check {
    ($sim:expr, $condition:expr, $($message:tt)*) => {
        if !$condition {
            panic!("seed {}: {}", $sim.seed, format!($($message)*));
        }
    };
}

fn options() -> ReplicaOptions {
    ReplicaOptions {
        election_ticks: 10,
        heartbeat_ticks: 1,
        log_retain_entries_max: 20,
        randomized_elections: false,
    }
}

impl Sim {
    fn new(seed: u64, faults: Faults) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = NODES
            .iter()
            .map(|id| {
                let dir = tempfile::tempdir().expect("temporary directory");
                let db = StateMachineDb::open(dir.path(), 1 << 20).expect("sled opens");
                SimNode {
                    id: *id,
                    _dir: dir,
                    db,
                    replica: None,
                    published: None,
                    durable: Vec::new(),
                    persisting: VecDeque::new(),
                    instance: rng.gen(),
                }
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            faults,
            nodes,
            network: Vec::new(),
            cut: Vec::new(),
            pending: Vec::new(),
            known: BTreeMap::new(),
            revisions: HashMap::new(),
            leaders: HashMap::new(),
            next_key: 0,
            snapshots_installed: 0,
            reads_checked: 0,
        };
        for index in 0..NODES.len() {
            sim.start(index);
        }
        sim
    }

    /// Starts (or restarts) a node's replica from its durable writes.
    fn start(&mut self, index: usize) {
        trace!(
            "start node {} from {} durable writes",
            self.nodes[index].id,
            self.nodes[index].durable.len()
        );
        let node = &mut self.nodes[index];
        let mut log = GroupLog::default();
        for write in &node.durable {
            apply_group_write(&mut log, write).expect("the simulated WAL replays");
        }
        trace!(
            "  log of node {}: truncated {:?}, last {}, conf {:?}/{:?} at {}",
            node.id,
            log.truncated(),
            log.last_index(),
            log.conf_state().voters,
            log.conf_state().learners,
            log.conf_index()
        );
        let (store, _) = node.db.shard(SHARD).expect("shard store opens");
        node.published = Some(store.clone());
        node.instance = node.instance.wrapping_add(1);
        let bootstrap = if node.id == NODES[0] {
            Bootstrap::Voters(vec![NODES[0]])
        } else {
            Bootstrap::Join
        };
        let replica = ShardReplica::new(ReplicaParts {
            shard: SHARD,
            node_id: node.id,
            log,
            store,
            gauges: Arc::new(ShardGauges::default()),
            options: options(),
            instance: node.instance,
            bootstrap,
            placement: NODES.to_vec(),
        });
        node.replica = Some(replica.unwrap_or_else(|error| {
            panic!(
                "seed {}: replica {} does not start: {error}",
                self.seed, node.id
            )
        }));
    }

    fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.cut.contains(&(a, b)) || self.cut.contains(&(b, a))
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.gen_range(0..100) < percent
    }

    /// Performs a replica's effects.
    fn perform(&mut self, index: usize, effects: Vec<Effect>) {
        let from = self.nodes[index].id;
        for effect in effects {
            match effect {
                Effect::Persist {
                    write,
                    ready_number,
                } => self.nodes[index]
                    .persisting
                    .push_back((write, ready_number)),
                Effect::Send(messages) => {
                    for message in messages {
                        self.network.push((from, NodeId(message.to), message));
                    }
                }
                Effect::StreamSnapshot {
                    to,
                    stream,
                    message,
                    mut source,
                } => {
                    let delivered = self.stream_snapshot(from, to, stream, *message, &mut source);
                    if let Some(replica) = self.nodes[index].replica.as_mut() {
                        replica.on_snapshot_sent(to, delivered);
                    }
                }
                Effect::StoreReplaced(store) => self.nodes[index].published = Some(store),
                Effect::ReleaseReads(waiters) => {
                    for waiter in waiters {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Effect::AckSnapshotChunk { .. } => {}
            }
        }
    }

    /// Delivers a whole snapshot stream at once (chunks in order), unless the
    /// receiver is down or cut off.
    fn stream_snapshot(
        &mut self,
        from: NodeId,
        to: NodeId,
        stream: u64,
        message: Message,
        source: &mut mimori_actors::storage::snapshot::SnapshotSource,
    ) -> bool {
        let Some(target) = self.nodes.iter().position(|node| node.id == to) else {
            return false;
        };
        if self.is_cut(from, to) || self.nodes[target].replica.is_none() {
            return false;
        }
        let mut sequence = 0;
        loop {
            let pairs = source.next_chunk(64).expect("snapshot reads");
            let last = pairs.is_none() || source.is_finished();
            let chunk = SnapshotChunk {
                stream,
                sequence,
                pairs: pairs.unwrap_or_default(),
                done: last.then(|| message.clone()),
            };
            let Some(replica) = self.nodes[target].replica.as_mut() else {
                return false;
            };
            let effects = replica
                .receive_snapshot_chunk(from, chunk)
                .unwrap_or_else(|error| panic!("seed {}: snapshot chunk: {error}", self.seed));
            let accepted = effects.iter().all(|effect| match effect {
                Effect::AckSnapshotChunk { ack, .. } => ack.accepted,
                _ => true,
            });
            if !accepted {
                return false;
            }
            if last {
                trace!(
                    "snapshot {from} -> {to} at {}@{}",
                    message.get_snapshot().get_metadata().index,
                    message.get_snapshot().get_metadata().term
                );
                self.snapshots_installed += 1;
                self.drive(target);
                return true;
            }
            sequence += 1;
        }
    }

    /// Drives a replica until it has nothing ready.
    fn drive(&mut self, index: usize) {
        let before = self.nodes[index]
            .replica
            .as_ref()
            .map(|replica| replica.applied_index());
        self.drive_inner(index);
        if let Some(replica) = self.nodes[index].replica.as_ref() {
            if Some(replica.applied_index()) != before {
                trace!(
                    "node {} applied up to {}@{} (term {})",
                    self.nodes[index].id,
                    replica.applied_index(),
                    replica.applied_term(),
                    replica.term()
                );
            }
        }
    }

    fn drive_inner(&mut self, index: usize) {
        for _ in 0..64 {
            let Some(replica) = self.nodes[index].replica.as_mut() else {
                return;
            };
            if !replica.has_ready() {
                break;
            }
            let effects = replica
                .drive()
                .unwrap_or_else(|error| panic!("seed {}: drive: {error}", self.seed));
            // A router reads the moment its read is answered, before the replica's
            // actor has performed the effects of the same Ready.
            self.collect_replies();
            self.perform(index, effects);
        }
        self.observe_leader(index);
    }

    fn observe_leader(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let Some(replica) = self.nodes[index].replica.as_ref() else {
            return;
        };
        if replica.is_leader() {
            let term = replica.term();
            let previous = *self.leaders.entry(term).or_insert(id);
            check!(
                self,
                previous == id,
                "two leaders in term {term}: {previous} and {id}"
            );
        }
    }

    fn deliver_one(&mut self) {
        if self.network.is_empty() {
            return;
        }
        let position = self.rng.gen_range(0..self.network.len());
        let duplicate = self.chance(self.faults.duplicate);
        let lost = self.chance(self.faults.loss);
        let (from, to, message) = if duplicate {
            self.network[position].clone()
        } else {
            self.network.swap_remove(position)
        };
        if lost || self.is_cut(from, to) {
            return;
        }
        let Some(index) = self.nodes.iter().position(|node| node.id == to) else {
            return;
        };
        if self.faults.crash == 0 && self.faults.loss == 0 {
            trace!("deliver {from} -> {to}: {:?} term {} index {} log_term {} reject {} commit {} entries {}", message.get_msg_type(), message.term, message.index, message.log_term, message.reject, message.commit, message.entries.len());
        }
        if let Some(replica) = self.nodes[index].replica.as_mut() {
            replica.step(message);
            self.drive(index);
        }
    }

    fn persist_one(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some((write, ready_number)) = node.persisting.pop_front() else {
            return;
        };
        trace!(
            "  durable on node {}: entries {:?}, compacted {:?}, conf {:?}, hard state {:?}",
            node.id,
            write.entries.first().map(|first| first.index)
                ..write.entries.last().map(|last| last.index + 1),
            write.compacted.map(|compacted| compacted.index),
            write.conf_state.as_ref().map(|conf| (
                conf.voters.clone(),
                conf.learners.clone(),
                conf.conf_index
            )),
            write.hard_state
        );
        node.durable.push(write);
        if let (Some(ready_number), Some(replica)) = (ready_number, node.replica.as_mut()) {
            let effects = replica.on_persisted(ready_number);
            self.perform(index, effects);
            self.drive(index);
        }
    }

    fn crash(&mut self, index: usize) {
        trace!("crash node {}", self.nodes[index].id);
        let node = &mut self.nodes[index];
        // Everything not yet durable is lost with the process.
        node.replica = None;
        node.persisting.clear();
        let id = node.id;
        self.network.retain(|(_, to, _)| *to != id);
    }

    /// Ticks every live replica, each skipping a tick now and then: clocks drift, and
    /// the drift is what breaks ties between candidates here (election timeouts are
    /// not randomized, see `options`).
    fn tick_all(&mut self) {
        for index in 0..self.nodes.len() {
            if self.chance(15) {
                continue;
            }
            if let Some(replica) = self.nodes[index].replica.as_mut() {
                replica.tick();
                self.drive(index);
            }
        }
    }

    fn leader_index(&self) -> Option<usize> {
        self.nodes.iter().position(|node| {
            node.replica
                .as_ref()
                .is_some_and(|replica| replica.is_leader())
        })
    }

    fn propose(&mut self) {
        let Some(index) = self.leader_index() else {
            return;
        };
        let deletable: Vec<String> = self
            .known
            .iter()
            .filter(|(_, known)| matches!(known, Known::Present(..)))
            .map(|(key, _)| key.clone())
            .collect();
        let delete = !deletable.is_empty() && self.chance(20);
        let key = if delete {
            deletable[self.rng.gen_range(0..deletable.len())].clone()
        } else {
            self.next_key += 1;
            format!("k{:06}", self.next_key)
        };
        let command = if delete {
            Command::Delete {
                namespace: Namespace::Kv,
                key: key.as_bytes().to_vec(),
                condition: Condition::Always,
            }
        } else {
            Command::Put {
                namespace: Namespace::Kv,
                key: key.as_bytes().to_vec(),
                value: Bytes::from(format!("value of {key}")),
                condition: Condition::Absent,
            }
        };
        let (reply, receiver) = oneshot::channel();
        if let Some(replica) = self.nodes[index].replica.as_mut() {
            replica.propose(&command, reply);
        }
        self.known.entry(key.clone()).or_insert(Known::Unknown);
        if delete {
            self.known.insert(key.clone(), Known::Unknown);
        }
        self.pending.push(Pending::Write {
            key,
            delete,
            reply: receiver,
        });
        self.drive(index);
    }

    fn read(&mut self) {
        let acknowledged: Vec<(String, Revision)> = self
            .known
            .iter()
            .filter_map(|(key, known)| match known {
                Known::Present(revision, _) => Some((key.clone(), *revision)),
                _ => None,
            })
            .collect();
        if acknowledged.is_empty() {
            return;
        }
        let (key, expected) = acknowledged[self.rng.gen_range(0..acknowledged.len())].clone();
        let index = self.rng.gen_range(0..self.nodes.len());
        let node = self.nodes[index].id;
        let Some(replica) = self.nodes[index].replica.as_mut() else {
            return;
        };
        let (reply, receiver) = oneshot::channel();
        replica.read(reply);
        self.pending.push(Pending::Read {
            node,
            key,
            expected,
            reply: receiver,
        });
        self.drive(index);
    }

    /// Settles client requests whose answers arrived.
    fn collect_replies(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for request in pending {
            match request {
                Pending::Write {
                    key,
                    delete,
                    mut reply,
                } => match reply.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.pending.push(Pending::Write { key, delete, reply })
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {
                        self.known.insert(key, Known::Unknown);
                    }
                    Ok(Ok(revision)) => {
                        trace!(
                            "acknowledged {} {key} at {revision}",
                            if delete { "delete" } else { "put" }
                        );
                        let previous = self.revisions.insert(revision, key.clone());
                        check!(
                            self,
                            previous.is_none(),
                            "revision {revision} acknowledged for {key} and {previous:?}"
                        );
                        let known = if delete {
                            Known::Deleted
                        } else {
                            Known::Present(revision, format!("value of {key}"))
                        };
                        self.known.insert(key, known);
                    }
                    Ok(Err(KvError::ConditionFailed { .. } | KvError::NotFound)) => {
                        // A create of a fresh key or a delete whose earlier attempt
                        // applied: leave what is known.
                    }
                    Ok(Err(_)) => {
                        self.known.insert(key, Known::Unknown);
                    }
                },
                Pending::Read {
                    node,
                    key,
                    expected,
                    mut reply,
                } => match reply.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => self.pending.push(Pending::Read {
                        node,
                        key,
                        expected,
                        reply,
                    }),
                    Ok(Ok(())) => self.check_read(node, &key, expected),
                    _ => {}
                },
            }
        }
    }

    /// A read released by ReadIndex must see what was acknowledged before it began.
    fn check_read(&mut self, node: NodeId, key: &str, expected: Revision) {
        let Some(index) = self.nodes.iter().position(|candidate| candidate.id == node) else {
            return;
        };
        let Some(replica) = self.nodes[index].replica.as_ref() else {
            return;
        };
        let Some(published) = self.nodes[index].published.as_ref() else {
            return;
        };
        let value = published
            .get(Namespace::Kv, key.as_bytes())
            .expect("store reads");
        trace!(
            "read of {key} on {node} released at applied {} (store applied {:?}, generation {}): {:?}",
            replica.applied_index(),
            replica.store().applied_index(),
            replica.store().generation(),
            value.as_ref().map(|value| value.revision)
        );
        let still_expected =
            self.known.get(key) == Some(&Known::Present(expected, format!("value of {key}")));
        if still_expected {
            check!(
                self,
                value.as_ref().map(|value| value.revision) == Some(expected),
                "stale read of {key} on node {node}: {value:?}, acknowledged at {expected}"
            );
            self.reads_checked += 1;
        }
    }

    fn step(&mut self, step: u64) {
        if step % 5 == 0 {
            self.tick_all();
        }
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=44 => self.deliver_one(),
            45..=64 => {
                let index = self.rng.gen_range(0..self.nodes.len());
                self.persist_one(index);
            }
            65..=79 => self.propose(),
            80..=86 => self.read(),
            87..=89 => {
                let index = self.rng.gen_range(0..self.nodes.len());
                if let Some(replica) = self.nodes[index].replica.as_mut() {
                    let applied = replica.applied_index();
                    let effects = replica
                        .compact(applied)
                        .unwrap_or_else(|error| panic!("seed {}: compact: {error}", self.seed));
                    self.perform(index, effects);
                }
            }
            90..=94 => {
                let crash = self.faults.crash;
                if self.chance(crash) {
                    let index = self.rng.gen_range(0..self.nodes.len());
                    if self.nodes[index].replica.is_some() {
                        self.crash(index);
                    } else {
                        self.start(index);
                    }
                } else if let Some(index) =
                    self.nodes.iter().position(|node| node.replica.is_none())
                {
                    self.start(index);
                }
            }
            _ => {
                let partition = self.faults.partition;
                if self.chance(partition) {
                    let a = NODES[self.rng.gen_range(0..NODES.len())];
                    let b = NODES[self.rng.gen_range(0..NODES.len())];
                    if a != b {
                        self.cut.push((a, b));
                    }
                } else {
                    self.cut.clear();
                }
            }
        }
        self.collect_replies();
    }

    /// Heals every fault and runs until the replicas agree (or gives up).
    fn settle(&mut self) {
        self.cut.clear();
        self.faults = Faults {
            loss: 0,
            duplicate: 0,
            crash: 0,
            partition: 0,
        };
        for index in 0..self.nodes.len() {
            if self.nodes[index].replica.is_none() {
                self.start(index);
            }
        }
        for round in 0..20_000u64 {
            if round % 5 == 0 {
                self.tick_all();
            }
            while !self.network.is_empty() {
                self.deliver_one();
            }
            for index in 0..self.nodes.len() {
                while !self.nodes[index].persisting.is_empty() {
                    self.persist_one(index);
                }
            }
            self.collect_replies();
            if round % 50 == 49 && self.agreed() {
                return;
            }
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|node| match node.replica.as_ref() {
                None => format!("node {}: down", node.id),
                Some(replica) => format!(
                    "node {}: applied {}, term {}, leader {:?}, voters {:?}, learners {:?}, progress {:?}",
                    node.id,
                    replica.applied_index(),
                    replica.term(),
                    replica.leader(),
                    replica.conf_state().voters,
                    replica.conf_state().learners,
                    if replica.is_leader() { replica.progress() } else { Vec::new() }
                ),
            })
            .collect();
        panic!(
            "seed {}: replicas did not converge after healing ({} requests pending): {}",
            self.seed,
            self.pending.len(),
            states.join("; ")
        );
    }

    fn agreed(&self) -> bool {
        let Some(leader) = self.leader_index() else {
            return false;
        };
        let replicas: Vec<&ShardReplica> = self
            .nodes
            .iter()
            .filter_map(|node| node.replica.as_ref())
            .collect();
        let voters = replicas[0].conf_state().voters.len();
        let applied = self.nodes[leader]
            .replica
            .as_ref()
            .map_or(0, ShardReplica::applied_index);
        voters == NODES.len()
            && self.pending.is_empty()
            && replicas.iter().all(|replica| {
                replica.applied_index() == applied && replica.conf_state().voters.len() == voters
            })
    }

    fn check_final_state(&self) {
        let checksums: Vec<u64> = self
            .nodes
            .iter()
            .map(|node| {
                node.replica
                    .as_ref()
                    .map(|replica| replica.store().checksum().expect("checksum"))
                    .unwrap_or(0)
            })
            .collect();
        if !checksums.iter().all(|checksum| *checksum == checksums[0]) {
            let contents: Vec<BTreeMap<Vec<u8>, u64>> = self
                .nodes
                .iter()
                .map(|node| {
                    let replica = node.replica.as_ref().expect("every replica runs");
                    replica
                        .store()
                        .scan(Namespace::Kv, b"", None, 1_000_000)
                        .expect("scan")
                        .into_iter()
                        .map(|item| (item.key, item.revision.0))
                        .collect()
                })
                .collect();
            let mut differences = Vec::new();
            for key in contents.iter().flat_map(|content| content.keys()) {
                let versions: Vec<Option<u64>> = contents
                    .iter()
                    .map(|content| content.get(key).copied())
                    .collect();
                if versions.iter().any(|version| *version != versions[0]) {
                    differences.push((String::from_utf8_lossy(key).to_string(), versions));
                }
            }
            differences.dedup();
            panic!(
                "seed {}: replicas diverged: checksums {checksums:?}, keys {differences:?}",
                self.seed
            );
        }
        for node in &self.nodes {
            let replica = node.replica.as_ref().expect("every replica runs");
            for (key, known) in &self.known {
                let value = replica
                    .store()
                    .get(Namespace::Kv, key.as_bytes())
                    .expect("store reads");
                match known {
                    Known::Present(revision, text) => check!(
                        self,
                        value
                            .as_ref()
                            .map(|value| (value.revision, value.value.as_ref()))
                            == Some((*revision, text.as_bytes())),
                        "node {}: acknowledged {key}@{revision} is {value:?}",
                        node.id
                    ),
                    Known::Deleted => check!(
                        self,
                        value.is_none(),
                        "node {}: deleted {key} is {value:?}",
                        node.id
                    ),
                    Known::Unknown => {}
                }
            }
        }
    }
}

fn run(seed: u64, faults: Faults, steps: u64) -> (u64, u64, u64) {
    if std::env::var_os("MIMORI_SIM_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .without_time()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
    }
    let mut sim = Sim::new(seed, faults);
    for step in 0..steps {
        sim.step(step);
    }
    sim.settle();
    sim.check_final_state();
    let acknowledged = sim
        .known
        .values()
        .filter(|known| !matches!(known, Known::Unknown))
        .count() as u64;
    (acknowledged, sim.snapshots_installed, sim.reads_checked)
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("MIMORI_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("MIMORI_SIM_SEEDS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(12u64);
    let base = std::env::var("MIMORI_SIM_SEED_BASE")
        .ok()
        .and_then(|base| base.parse().ok())
        .unwrap_or(0x5eed_0000u64);
    (0..count).map(|index| base + index).collect()
}

fn run_seeds(name: &str, faults: Faults, steps: u64) {
    let mut totals = (0, 0, 0);
    for seed in seeds() {
        let outcome = std::panic::catch_unwind(|| run(seed, faults, steps));
        match outcome {
            Ok((acknowledged, snapshots, reads)) => {
                totals.0 += acknowledged;
                totals.1 += snapshots;
                totals.2 += reads;
            }
            Err(panic) => {
                eprintln!("{name}: failing seed {seed} (rerun with MIMORI_SIM_SEED={seed})");
                std::panic::resume_unwind(panic);
            }
        }
    }
    println!(
        "{name}: {} writes acknowledged and checked, {} snapshots installed, {} linearizable reads checked",
        totals.0, totals.1, totals.2
    );
    assert!(
        totals.0 > 0,
        "no write was ever acknowledged: the test proves nothing"
    );
}

/// Proves the groups stay safe and converge with message loss, duplication and
/// reordering, late durability and partitions, but no crashes.
#[test]
fn t50_loss_duplication_reordering_partitions() {
    run_seeds(
        "network faults",
        Faults {
            loss: 10,
            duplicate: 5,
            crash: 0,
            partition: 30,
        },
        4_000,
    );
}

/// Proves the same with crashes that lose whatever was not yet durable, and
/// aggressive compaction, so lagging and restarted replicas catch up by snapshot.
#[test]
fn t51_crashes_and_snapshots() {
    run_seeds("crashes", CRASH_FAULTS, 4_000);
}

/// Regression test for a bug the chaos runner found (seed 404, 5 nodes): a
/// linearizable read through a node answered "not found" for a key whose write had
/// been acknowledged before the read began, while a read through the same node at
/// the same moment saw the write.
///
/// How it happened: the node's replica of the shard was catching up (a learner
/// just added in a node replacement) and installed a snapshot in the same Ready
/// that applied up to the read's ReadIndex. The replica answered the waiting read
/// at once, inside that Ready, but the shard's published store (what the router
/// reads as soon as it is answered) was switched to the installed tree only when
/// the actor performed the Ready's `StoreReplaced` effect, a moment later: the
/// router read the old tree. The fix: reads are released by an effect that comes
/// after `StoreReplaced`.
///
/// The simulation models that window: it checks every read the moment it is
/// answered, before the effects of the same Ready are performed, against the store
/// as published by `StoreReplaced`. Without the fix, seed 0x5eed0008 of the crash
/// profile fails with a stale read of a key on a replica that just installed a
/// snapshot.
#[test]
fn t90_a_read_released_with_a_snapshot_install_reads_the_installed_store() {
    let seed = 0x5eed_0008;
    let (acknowledged, snapshots, reads) = run(seed, CRASH_FAULTS, 4_000);
    println!("seed {seed}: {acknowledged} writes, {snapshots} snapshots, {reads} reads checked");
    assert!(
        snapshots > 0 && reads > 0,
        "the seed no longer exercises the case"
    );
}

/// Proves a configuration change sent by a peer as a proposal is dropped before
/// raft-rs sees it: only the leader's own membership logic changes the group.
#[test]
fn t52_peer_proposals_cannot_change_the_group() {
    use protobuf::Message as _;
    use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, MessageType};

    let quiet = Faults {
        loss: 0,
        duplicate: 0,
        crash: 0,
        partition: 0,
    };
    let mut sim = Sim::new(52, quiet);
    sim.settle();
    let leader = sim.leader_index().expect("a leader after settling");
    let follower = (leader + 1) % NODES.len();
    let applied_before = sim.nodes[leader]
        .replica
        .as_ref()
        .map(ShardReplica::applied_index)
        .expect("the leader runs");

    let mut change = ConfChange::default();
    change.set_change_type(ConfChangeType::RemoveNode);
    change.node_id = NODES[follower].0;
    let mut entry = Entry::default();
    entry.set_entry_type(EntryType::EntryConfChange);
    entry.data = change.write_to_bytes().expect("encodes").into();
    let mut proposal = Message::default();
    proposal.set_msg_type(MessageType::MsgPropose);
    proposal.from = NODES[follower].0;
    proposal.to = NODES[leader].0;
    proposal.entries = vec![entry].into();
    sim.nodes[leader]
        .replica
        .as_mut()
        .expect("the leader runs")
        .step(proposal);
    sim.drive(leader);
    sim.settle();

    let replica = sim.nodes[leader].replica.as_ref().expect("the leader runs");
    assert_eq!(
        replica.applied_index(),
        applied_before,
        "nothing was appended"
    );
    assert_eq!(
        replica.conf_state().voters.len(),
        NODES.len(),
        "the group keeps every voter: {:?}",
        replica.conf_state().voters
    );
    assert!(replica.conf_state().voters.contains(&NODES[follower].0));
}

//! The data-plane vocabulary the edges speak to the kernel: namespaces, conditions,
//! consistency levels, results and the errors they can meet.
//!
//! The gateway and the admin server translate their requests into these types and
//! call the [`crate::router::Router`]; nothing here knows about HTTP or frames.

use crate::ids::{NodeId, Revision, ShardId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which key space a key lives in. Plain keys and documents never collide because
/// the namespace is the first byte of the stored key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Namespace {
    /// `/v1/kv/{key}` and dbctl keys.
    Kv,
    /// `/v1/docs/{collection}/{id}`; the key is `collection/id`.
    Doc,
    /// A collection's index list on one shard (`docs::collection::ShardIndexes`);
    /// the key is the collection name. Written only by the shard's own commands.
    Collection,
}

/// A precondition on the current revision of a key, checked when the write is applied
/// (so it is atomic with the write).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Write unconditionally.
    Always,
    /// Write only if the key exists with exactly this revision (`If-Match: "N"`).
    RevisionIs(Revision),
    /// Write only if the key does not exist (`If-None-Match: *`).
    Absent,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (ReadIndex).
    #[default]
    Linearizable,
    /// Serves the local replica as it is; may miss recent writes on a lagging replica.
    Stale,
}

/// A value with the revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Bytes,
    pub revision: Revision,
}

/// One key of a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanItem {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub value: Bytes,
    pub revision: Revision,
}

/// One page of a scan, in key order. `next` is the last key returned when more keys
/// may follow; pass it as `after` to continue.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScanPage {
    pub items: Vec<ScanItem>,
    pub next: Option<Vec<u8>>,
}

/// Size limits applied to every request, whichever edge it came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest key (or `collection/id`), in bytes.
    pub key_bytes_max: u32,
    /// Largest value or document, in bytes.
    pub value_bytes_max: u32,
    /// Most items one scan page may return.
    pub scan_limit_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 4 * 1024,
            value_bytes_max: 1024 * 1024,
            scan_limit_max: 10_000,
        }
    }
}

/// Errors of a data-plane request. Expected outcomes (not found, condition failed,
/// unavailable) are separate from fatal ones (corruption, storage failure). They
/// travel between nodes when a request is forwarded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    #[error("key not found")]
    NotFound,
    #[error("precondition failed: current revision is {}", current.map(|r| r.0.to_string()).unwrap_or_else(|| "none (key absent)".into()))]
    ConditionFailed { current: Option<Revision> },
    #[error("invalid request: {0}")]
    InvalidInput(String),
    #[error("key is {actual} bytes; the limit is {limit}")]
    KeyTooLarge { actual: u64, limit: u32 },
    #[error("value is {actual} bytes; the limit is {limit}")]
    ValueTooLarge { actual: u64, limit: u32 },
    #[error("shard {shard} is unavailable: {reason}")]
    Unavailable {
        shard: ShardId,
        reason: String,
        retry_after_ms: u32,
    },
    #[error("not the leader of shard {shard}")]
    NotLeader {
        shard: ShardId,
        hint: Option<NodeId>,
    },
    #[error("request timed out after {timeout_ms} ms; the write may or may not have happened")]
    Timeout { timeout_ms: u32 },
    #[error("data corruption detected: {0}")]
    Corrupted(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("query too broad: {0}")]
    QueryTooBroad(String),
}

/// A failure without a more precise kind is a storage failure (metadata writes).
impl From<String> for KvError {
    fn from(error: String) -> Self {
        KvError::Storage(error)
    }
}

impl KvError {
    /// The stable snake_case code of this error, shared by every edge.
    pub fn code(&self) -> &'static str {
        match self {
            KvError::NotFound => "not_found",
            KvError::ConditionFailed { .. } => "condition_failed",
            KvError::InvalidInput(_) => "invalid_input",
            KvError::KeyTooLarge { .. } => "key_too_large",
            KvError::ValueTooLarge { .. } => "value_too_large",
            KvError::Unavailable { .. } => "unavailable",
            KvError::NotLeader { .. } => "not_leader",
            KvError::Timeout { .. } => "timeout",
            KvError::Corrupted(_) => "corrupted",
            KvError::QueryTooBroad(_) => "query_too_broad",
            KvError::Storage(_) => "storage_error",
            KvError::ShuttingDown => "shutting_down",
        }
    }
}

/// Addresses a node advertises to clients and peers, as `host:port` strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeAddresses {
    pub http: String,
    pub admin: String,
    pub cluster: String,
    pub gossip: String,
}

/// One node as the cluster view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// joining | active | draining | dead | removed
    pub state: String,
    pub http: String,
    pub admin: String,
    pub cluster: String,
    pub gossip: String,
    /// Shard replicas hosted on the node.
    pub replicas: u32,
    /// Shards whose leader is the node.
    pub leaders: u32,
    /// Whether the node answering has a live connection to this node (always true
    /// for itself).
    pub reachable: bool,
    /// What gossip says of the node, as the answering node sees it:
    /// alive | suspect | down | unknown (not heard of yet).
    pub gossip_state: String,
    /// The node's gossip incarnation (grows with every restart and every rejoin
    /// after being declared down); 0 when not heard of yet.
    pub incarnation: u64,
    /// Seconds since the node started, from its incarnation; `None` unless gossip
    /// counts it alive.
    pub uptime_seconds: Option<u64>,
}

/// One shard as the cluster view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    /// Placement epoch; grows each time the shard's replica set changes.
    pub epoch: u64,
    /// Highest Raft index applied to the state machine on this node.
    pub applied_index: u64,
    /// Highest index compacted out of this node's log of the shard: a replica
    /// further behind catches up from a snapshot.
    pub compacted_index: u64,
    /// The group's voters as this node's replica knows them (empty when the node
    /// hosts no replica of the shard).
    pub voters: Vec<NodeId>,
    /// The group's learners (replicas still catching up), likewise.
    pub learners: Vec<NodeId>,
    /// Entries the furthest-behind replica lacks, as the shard's leader reports
    /// it; `None` when no live node reported leading the shard.
    pub lag_entries: Option<u64>,
}

/// One local replica's content fingerprint (`dbctl shard checksums`): equal
/// checksums at equal applied indexes mean equal content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardChecksum {
    pub shard: ShardId,
    pub applied_index: u64,
    pub checksum: u64,
    pub leader: Option<NodeId>,
}

/// The cluster as this node sees it (`GET /v1/cluster`, `dbctl cluster info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub shard_count: u32,
    pub replication_factor: u32,
    pub nodes: Vec<NodeInfo>,
    pub shards: Vec<ShardInfo>,
    /// The metadata group (its `id` is `shard_count`), like a shard.
    pub metadata_group: Option<ShardInfo>,
}

/// WAL counters, cumulative since the node started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WalStats {
    /// Segment files on disk.
    pub segments: u64,
    /// Bytes in all segment files.
    pub bytes: u64,
    /// `fdatasync` calls made by group commit.
    pub fsyncs_total: u64,
    /// Records appended.
    pub records_total: u64,
    /// Raft entries made durable.
    pub entries_total: u64,
    /// Segments deleted after checkpoints.
    pub segments_deleted_total: u64,
    /// Checkpoints (state machine made durable, logs compacted) completed.
    pub checkpoints_total: u64,
}

/// This node's health and counters (`dbctl status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub shard_count: u32,
    /// Shards this node holds a replica of.
    pub shards_hosted: u32,
    /// Shards with a live replica actor on this node.
    pub shards_serving: u32,
    /// Shards this node leads.
    pub shards_leading: u32,
    /// Shard actors restarted by the supervisor since start.
    pub shard_restarts_total: u64,
    /// Snapshot streams this node completed to lagging replicas.
    pub snapshots_sent_total: u64,
    /// Snapshots this node's replicas installed.
    pub snapshots_installed_total: u64,
    pub wal: WalStats,
    pub transport: TransportStats,
    pub gossip: GossipStats,
}

/// Gossip (SWIM) counters and member counts, cumulative since the node started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GossipStats {
    /// This node's own incarnation.
    pub incarnation: u64,
    /// Other members by state.
    pub members_alive: u32,
    pub members_suspect: u32,
    pub members_down: u32,
    pub packets_sent_total: u64,
    pub packets_received_total: u64,
    /// Packets dropped before parsing: wrong HMAC, version or size.
    pub packets_rejected_total: u64,
    /// Authentic packets the gossip protocol could not use.
    pub packets_invalid_total: u64,
}

/// Node-to-node traffic counters, cumulative since the node started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TransportStats {
    /// Other nodes known to this one.
    pub peers: u32,
    /// Of those, how many have a live session and were heard from recently.
    pub peers_reachable: u32,
    pub frames_sent_total: u64,
    pub frames_received_total: u64,
    /// Frames from peers that did not decode.
    pub frames_rejected_total: u64,
    /// Messages dropped because a peer could not take them (Raft retransmits).
    pub items_dropped_total: u64,
    /// Requests forwarded to other nodes.
    pub calls_total: u64,
}

/// Health as `GET /health` and `dbctl health` report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// True when every shard hosted here has a replica actor running and a leader
    /// is known.
    pub serving: bool,
    pub node_id: NodeId,
    pub shards_total: u32,
    /// Shards this node holds a replica of.
    pub shards_hosted: u32,
    pub shards_without_leader: u32,
    /// Which ones, at most [`LEADERLESS_LISTED_MAX`] of them (lowest first).
    #[serde(default)]
    pub leaderless_shards: Vec<u32>,
}

/// Shards without a leader that `Health` lists by id, at most.
pub const LEADERLESS_LISTED_MAX: usize = 32;

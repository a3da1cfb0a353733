//! What travels between the Transports of two nodes: one [`PeerFrame`] per
//! ractor_cluster message, carrying a batch of [`PeerItem`]s.
//!
//! The format is rmp-serde with a version marker, and, unlike the project's disk
//! formats, positional: structs are arrays of their fields in declaration order.
//! Frames are the hottest encoding of a node (every Raft message of every group),
//! and named fields cost about a tenth of a replicated write's CPU. A positional
//! format cannot grow a field unnoticed, so any change to these types bumps
//! [`PEER_FRAME_VERSION`]. Raft messages are converted into [`RaftMessageRecord`]s
//! rather than sent as protobuf, so no frame is protobuf-decoded; the only protobuf
//! a peer's bytes reach is a configuration-change entry's payload, parsed when a
//! replica applies it, after a size check (`shard::replica`). The format is pinned by
//! a golden-bytes test like every other format of the project.
//!
//! Limits: a frame is decoded only from a payload that ractor_cluster already
//! bounded ([`PEER_FRAME_BYTES_MAX`]); the sender never builds a larger one (it
//! flushes a batch before it would grow past [`BATCH_BYTES_MAX`], and snapshot
//! chunks are at most [`SNAPSHOT_CHUNK_BYTES_MAX`]).

use crate::command::Command;
use crate::docs::query::{Query, ShardQueryPage};
use crate::ids::{GroupId, NodeId, Revision, ShardId};
use crate::kv::{Consistency, KvError, Namespace, ScanItem, Versioned};
use crate::metadata::{ClusterMetadata, NodeRecord};
use crate::router::metadata::MetadataChange;
use crate::shard::replica::{SnapshotAck, SnapshotChunk};
use crate::storage::wal_record::{ConfStateRecord, EntryRecord};
use bytes::Bytes;
use raft::eraftpb::{Message, MessageType, Snapshot};
use serde::{Deserialize, Serialize};

/// The version written into every frame.
pub const PEER_FRAME_VERSION: u8 = 1;
/// Largest frame a node accepts from a peer (ractor_cluster enforces it before
/// allocating); ractor_cluster's own default.
pub const PEER_FRAME_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// A batch is sent once it holds this many bytes of payload.
pub const BATCH_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Largest snapshot chunk, in bytes of stored pairs.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most items in one frame.
pub const FRAME_ITEMS_MAX: usize = 65_536;

/// One message between two Transports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerFrame {
    pub version: u8,
    /// The sending node.
    pub from: NodeId,
    /// Random per start of the sending Transport; sequences restart with it.
    pub instance: u64,
    /// 1, 2, 3, ... per (sender instance, receiver).
    pub sequence: u64,
    /// Highest sequence the sender has received from the receiver's instance
    /// `acknowledged_instance` (0: none).
    pub acknowledged: u64,
    pub acknowledged_instance: u64,
    /// The revision of the sender's cluster metadata, so a node that is behind
    /// notices and asks, and one that is ahead sends its copy.
    pub metadata_revision: u64,
    pub items: Vec<PeerItem>,
}

/// One thing a frame carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerItem {
    /// A Raft message between two replicas of a group.
    Raft {
        group: GroupId,
        message: RaftMessageRecord,
    },
    /// A piece of a snapshot stream.
    SnapshotChunk {
        group: GroupId,
        chunk: SnapshotChunkRecord,
    },
    /// The answer to a snapshot chunk.
    SnapshotAck {
        group: GroupId,
        stream: u64,
        sequence: u32,
        accepted: bool,
    },
    /// A request the receiver answers with one `Response` of the same id, within
    /// `timeout_ms` (the sender gives up after that).
    Request {
        id: u64,
        timeout_ms: u32,
        request: PeerRequest,
    },
    Response {
        id: u64,
        response: PeerResponse,
    },
    /// The sender's cluster metadata (sent when the receiver is behind).
    Metadata(Box<ClusterMetadata>),
    /// The sender is behind: send it your metadata.
    MetadataWanted,
}

/// Requests one node makes of another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A node asks to join the cluster.
    Join { node: NodeRecord },
    /// Propose a write on the receiver's replica, which should lead the shard.
    Propose { shard: ShardId, command: Command },
    /// A read of one key on the receiver's replica.
    Get {
        shard: ShardId,
        namespace: Namespace,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        consistency: Consistency,
    },
    /// A scan of one shard on the receiver's replica.
    Scan {
        shard: ShardId,
        namespace: Namespace,
        consistency: Consistency,
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        limit: u32,
    },
    /// One shard's page of a document query on the receiver's replica.
    Query {
        shard: ShardId,
        collection: String,
        query: Box<Query>,
        consistency: Consistency,
    },
    /// Move the shard's leadership to `to`.
    TransferLeader { shard: ShardId, to: NodeId },
    /// The group configuration of every shard the receiver leads (asked by the
    /// rebalancer).
    LeaderStates,
    /// A change of the cluster metadata, for the metadata group's leader.
    MetadataChange { change: MetadataChange },
}

/// One shard group as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderState {
    pub shard: ShardId,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Entries the furthest-behind member lacks.
    pub lag_entries: u64,
}

/// Answers to [`PeerRequest`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The join was registered; here is the cluster.
    Joined(Box<ClusterMetadata>),
    Written(Revision),
    Value(Option<Versioned>),
    ScanItems(Vec<ScanItem>),
    QueryPage(Box<ShardQueryPage>),
    Done,
    Failed(KvError),
    LeaderStates(Vec<LeaderState>),
    /// The cluster metadata after a change.
    Metadata(Box<ClusterMetadata>),
}

/// A snapshot chunk as it travels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChunkRecord {
    pub stream: u64,
    pub sequence: u32,
    pub pairs: Vec<PairRecord>,
    pub done: Option<RaftMessageRecord>,
}

/// One stored pair of a shard tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The snapshot part of a Raft message: its metadata (the data travels in chunks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetadataRecord {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfStateRecord,
}

/// A raft-rs `Message`, field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMessageRecord {
    pub msg_type: u8,
    pub to: u64,
    pub from: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<EntryRecord>,
    pub commit: u64,
    pub commit_term: u64,
    pub snapshot: Option<SnapshotMetadataRecord>,
    pub request_snapshot: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: Bytes,
    pub priority: i64,
}

/// Why a frame or item from a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("peer frame does not decode: {0}")]
    Decode(String),
    #[error("peer frame version {0} is not supported by this build")]
    Version(u8),
    #[error("peer frame has {0} items, more than {FRAME_ITEMS_MAX}")]
    TooManyItems(usize),
    #[error("unknown raft message type {0}")]
    MessageType(u8),
}

impl PeerFrame {
    /// Encodes the frame (positionally, see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing owned plain data into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks a frame from a peer.
    pub fn decode(bytes: &[u8]) -> Result<PeerFrame, WireError> {
        let frame: PeerFrame =
            rmp_serde::from_slice(bytes).map_err(|error| WireError::Decode(error.to_string()))?;
        if frame.version != PEER_FRAME_VERSION {
            return Err(WireError::Version(frame.version));
        }
        if frame.items.len() > FRAME_ITEMS_MAX {
            return Err(WireError::TooManyItems(frame.items.len()));
        }
        Ok(frame)
    }
}

impl PeerItem {
    /// Rough encoded size, for batch limits.
    pub fn size_bytes(&self) -> u64 {
        match self {
            PeerItem::Raft { message, .. } => 96 + entries_bytes(&message.entries),
            PeerItem::SnapshotChunk { chunk, .. } => {
                128 + chunk
                    .pairs
                    .iter()
                    .map(|pair| (pair.key.len() + pair.value.len() + 8) as u64)
                    .sum::<u64>()
            }
            PeerItem::Request { request, .. } => match request {
                PeerRequest::Propose {
                    command: Command::Put { key, value, .. },
                    ..
                } => 96 + (key.len() + value.len()) as u64,
                _ => 256,
            },
            PeerItem::Response { response, .. } => match response {
                PeerResponse::Value(Some(versioned)) => 64 + versioned.value.len() as u64,
                PeerResponse::ScanItems(items) => items
                    .iter()
                    .map(|item| (item.key.len() + item.value.len() + 16) as u64)
                    .sum::<u64>(),
                PeerResponse::QueryPage(page) => page
                    .hits
                    .iter()
                    .map(|hit| (hit.document.len() + hit.position.sort_key.len() + 64) as u64)
                    .sum::<u64>(),
                _ => 128,
            },
            PeerItem::Metadata(metadata) => {
                256 + 128 * metadata.nodes.len() as u64 + 32 * metadata.placement.len() as u64
            }
            PeerItem::SnapshotAck { .. } | PeerItem::MetadataWanted => 32,
        }
    }
}

fn entries_bytes(entries: &[EntryRecord]) -> u64 {
    entries
        .iter()
        .map(|entry| (entry.data.len() + entry.context.len()) as u64 + 48)
        .sum()
}

impl From<&Message> for RaftMessageRecord {
    fn from(message: &Message) -> RaftMessageRecord {
        let snapshot = message.snapshot.as_ref().and_then(|snapshot| {
            let metadata = snapshot.get_metadata();
            (metadata.index != 0).then(|| SnapshotMetadataRecord {
                index: metadata.index,
                term: metadata.term,
                conf_state: ConfStateRecord::at(metadata.get_conf_state(), metadata.index),
            })
        });
        RaftMessageRecord {
            msg_type: message.get_msg_type() as u8,
            to: message.to,
            from: message.from,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            entries: message.entries.iter().map(EntryRecord::from).collect(),
            commit: message.commit,
            commit_term: message.commit_term,
            snapshot,
            request_snapshot: message.request_snapshot,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: message.context.clone(),
            priority: message.priority,
        }
    }
}

impl RaftMessageRecord {
    /// The raft-rs message this record carries.
    pub fn to_message(&self) -> Result<Message, WireError> {
        let mut message = Message {
            to: self.to,
            from: self.from,
            term: self.term,
            log_term: self.log_term,
            index: self.index,
            entries: self.entries.iter().map(EntryRecord::to_entry).collect(),
            commit: self.commit,
            commit_term: self.commit_term,
            request_snapshot: self.request_snapshot,
            reject: self.reject,
            reject_hint: self.reject_hint,
            context: self.context.clone(),
            priority: self.priority,
            ..Default::default()
        };
        message.set_msg_type(message_type(self.msg_type)?);
        if let Some(record) = &self.snapshot {
            let mut snapshot = Snapshot::default();
            let metadata = snapshot.mut_metadata();
            metadata.index = record.index;
            metadata.term = record.term;
            metadata.set_conf_state(record.conf_state.to_conf_state());
            message.set_snapshot(snapshot);
        }
        Ok(message)
    }
}

/// The raft-rs message type with this number.
fn message_type(number: u8) -> Result<MessageType, WireError> {
    use MessageType::*;
    const TYPES: [MessageType; 19] = [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ];
    TYPES
        .get(number as usize)
        .copied()
        .ok_or(WireError::MessageType(number))
}

impl From<&SnapshotChunk> for SnapshotChunkRecord {
    fn from(chunk: &SnapshotChunk) -> SnapshotChunkRecord {
        SnapshotChunkRecord {
            stream: chunk.stream,
            sequence: chunk.sequence,
            pairs: chunk
                .pairs
                .iter()
                .map(|(key, value)| PairRecord {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            done: chunk.done.as_ref().map(RaftMessageRecord::from),
        }
    }
}

impl SnapshotChunkRecord {
    /// The chunk this record carries.
    pub fn into_chunk(self) -> Result<SnapshotChunk, WireError> {
        Ok(SnapshotChunk {
            stream: self.stream,
            sequence: self.sequence,
            pairs: self
                .pairs
                .into_iter()
                .map(|pair| (pair.key, pair.value))
                .collect(),
            done: self
                .done
                .as_ref()
                .map(|done| done.to_message())
                .transpose()?,
        })
    }
}

impl PeerItem {
    /// The item carrying an ack for a chunk of `group`'s stream.
    pub fn snapshot_ack(group: GroupId, ack: SnapshotAck) -> PeerItem {
        PeerItem::SnapshotAck {
            group,
            stream: ack.stream,
            sequence: ack.sequence,
            accepted: ack.accepted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, Entry, EntryType};

    fn append() -> Message {
        let mut entry = Entry {
            index: 8,
            term: 3,
            data: Bytes::from_static(b"d"),
            context: Bytes::from_static(b"c"),
            ..Default::default()
        };
        entry.set_entry_type(EntryType::EntryConfChange);
        let mut message = Message {
            to: 2,
            from: 1,
            term: 3,
            log_term: 2,
            index: 7,
            entries: vec![entry].into(),
            commit: 6,
            commit_term: 2,
            reject_hint: 4,
            context: Bytes::from_static(b"x"),
            priority: -1,
            ..Default::default()
        };
        message.set_msg_type(MessageType::MsgAppend);
        message
    }

    /// Proves every field of a raft message survives the record, and a snapshot's
    /// metadata too, while its data never travels this way.
    #[test]
    fn raft_messages_round_trip() {
        let message = append();
        let record = RaftMessageRecord::from(&message);
        assert_eq!(record.to_message().unwrap(), message);

        let mut snapshot_message = Message::default();
        snapshot_message.set_msg_type(MessageType::MsgSnapshot);
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 40;
        snapshot.mut_metadata().term = 5;
        snapshot.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            ..Default::default()
        });
        snapshot.data = Bytes::from_static(b"never sent");
        snapshot_message.set_snapshot(snapshot);
        let decoded = RaftMessageRecord::from(&snapshot_message)
            .to_message()
            .unwrap();
        let metadata = decoded.get_snapshot().get_metadata();
        assert_eq!((metadata.index, metadata.term), (40, 5));
        assert_eq!(metadata.get_conf_state().learners, vec![3]);
        assert!(decoded.get_snapshot().data.is_empty());
        for number in 0..19u8 {
            assert_eq!(message_type(number).unwrap() as u8, number);
        }
        assert!(message_type(19).is_err());
    }

    /// Pins the frame format: if this fails, nodes of this build can no longer talk
    /// to nodes of the previous one. Bump PEER_FRAME_VERSION instead.
    #[test]
    fn golden_bytes_of_a_frame() {
        let frame = PeerFrame {
            version: PEER_FRAME_VERSION,
            from: NodeId(1),
            instance: 2,
            sequence: 3,
            acknowledged: 4,
            acknowledged_instance: 5,
            metadata_revision: 6,
            items: vec![PeerItem::MetadataWanted],
        };
        let bytes = frame.encode();
        // An array of the eight fields in declaration order (the version first),
        // then the items; enum variants by name.
        let expected: &[u8] = &[
            0x98, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x91, 0xae, b'M', b'e', b't', b'a',
            b'd', b'a', b't', b'a', b'W', b'a', b'n', b't', b'e', b'd',
        ];
        assert_eq!(bytes, expected, "encoded: {bytes:02x?}");
        assert_eq!(PeerFrame::decode(&bytes).unwrap(), frame);
    }

    /// Proves garbage, a wrong version and a forged message type are refused.
    #[test]
    fn refuses_bad_frames() {
        assert!(PeerFrame::decode(&[0xc1, 0x00]).is_err());
        let mut frame = PeerFrame {
            version: 9,
            from: NodeId(1),
            instance: 0,
            sequence: 0,
            acknowledged: 0,
            acknowledged_instance: 0,
            metadata_revision: 0,
            items: Vec::new(),
        };
        assert!(matches!(
            PeerFrame::decode(&frame.encode()),
            Err(WireError::Version(9))
        ));
        frame.version = PEER_FRAME_VERSION;
        let mut record = RaftMessageRecord::from(&append());
        record.msg_type = 200;
        frame.items.push(PeerItem::Raft {
            group: GroupId(1),
            message: record,
        });
        let decoded = PeerFrame::decode(&frame.encode()).unwrap();
        let PeerItem::Raft { message, .. } = &decoded.items[0] else {
            panic!("raft item expected");
        };
        assert!(matches!(
            message.to_message(),
            Err(WireError::MessageType(200))
        ));
    }
}

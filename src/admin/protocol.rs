//! The admin TCP protocol: frames, the versioned request and response enums, and the
//! functions that read and write them.
//!
//! Who talks to it: the admin server (`super::server`) and the admin client
//! (`super::client`, used by `dbctl` and the chaos runner). Nothing else depends on the
//! byte layout, but the layout is a public contract: other languages may speak it.
//!
//! Frame layout: a `u32` big-endian payload length, then that many bytes of
//! MessagePack written by `rmp_serde::to_vec_named` (structs are maps with named
//! fields; enums are externally tagged with snake_case variant names; byte strings
//! are MessagePack `bin`).
//!
//! A session is: the client sends [`AdminRequest::Hello`]; the server answers
//! [`AdminResponse::HelloAccepted`] or an [`AdminResponse::Error`] and closes. Then
//! every request frame gets exactly one response frame, in order.
//!
//! Invariants:
//! - The length is checked against the frame size limit before any payload buffer is
//!   allocated, so a peer cannot make us allocate more than the limit.
//! - Decoding never panics on any input (proptest below), it only returns
//!   [`FrameError`].
//! - The protocol version is carried once, in `Hello`; a change to any type in this
//!   file that an old peer cannot decode must bump [`ADMIN_PROTOCOL_VERSION`].

use crate::logs::LogPage;
pub use mimori_actors::faults::ActorTarget;
use mimori_actors::ids::Revision;
use mimori_actors::kv::{ClusterInfo, Condition, Health, NodeStatus, ShardChecksum};
pub use mimori_actors::metadata::NodeAction;
use mimori_actors::router::docs::CollectionStatus;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The admin protocol version this build speaks. Both sides must agree exactly.
pub const ADMIN_PROTOCOL_VERSION: u32 = 1;

/// Default largest frame payload either side accepts: 4 MiB. A value is at most
/// 1 MiB by default, so one value always fits with room to spare.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;

/// Size of the length prefix in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A precondition on a write, as it travels on the wire. Kept separate from the
/// kernel's [`Condition`] so the kernel can evolve without changing this format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteCondition {
    /// Write unconditionally.
    Always,
    /// Write only if the key exists with exactly this revision.
    RevisionIs { revision: u64 },
    /// Write only if the key does not exist.
    Absent,
}

impl From<Condition> for WriteCondition {
    fn from(condition: Condition) -> Self {
        match condition {
            Condition::Always => WriteCondition::Always,
            Condition::RevisionIs(revision) => WriteCondition::RevisionIs {
                revision: revision.0,
            },
            Condition::Absent => WriteCondition::Absent,
        }
    }
}

impl From<WriteCondition> for Condition {
    fn from(condition: WriteCondition) -> Self {
        match condition {
            WriteCondition::Always => Condition::Always,
            WriteCondition::RevisionIs { revision } => Condition::RevisionIs(Revision(revision)),
            WriteCondition::Absent => Condition::Absent,
        }
    }
}

/// A frame sent by the client. The first one of a session must be `Hello`.
/// Keys are plain KV keys (the kernel's `Namespace::Kv`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRequest {
    /// Opens the session: agrees on the protocol version and presents the token.
    Hello {
        protocol_version: u32,
        /// Required when the server is configured with a token; ignored otherwise.
        token: Option<String>,
        /// Free-form client name for the server's logs (e.g. `dbctl 0.1.0`).
        client: String,
    },
    /// Writes `value` under `key` if `condition` holds.
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        condition: WriteCondition,
    },
    /// Reads `key`; `stale` serves the local replica without a ReadIndex round.
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        stale: bool,
    },
    /// Deletes `key` if `condition` holds.
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        condition: WriteCondition,
    },
    /// Lists keys starting with `prefix` in key order, strictly after `after`.
    Scan {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        limit: u32,
        stale: bool,
    },
    /// This node's counters.
    Status,
    /// The cluster as this node sees it.
    ClusterInfo,
    /// Whether this node serves.
    Health,
    /// Fault injection: kills the local replica actor of `shard`; its supervisor
    /// restarts it from disk. Used by tests and the chaos runner.
    KillShardReplica { shard: u32 },
    /// Moves the leadership of `shard` to node `to`; answered once `to` leads.
    TransferLeader { shard: u32, to: u64 },
    /// A content checksum and the applied index of every replica on this node.
    ShardChecksums,
    /// An operator's action on a node (drain, remove), decided by the metadata
    /// group's leader; answered once it is recorded.
    NodeAction { node: u64, action: NodeAction },
    /// Fault injection: kills one of the node's actors; its supervisor starts it
    /// again. Refused unless the node runs with `fault_injection`.
    KillActor { target: ActorTarget },
    /// Fault injection: from now on the node's Transport and gossip drop all
    /// traffic to the nodes in `drop_to` and from the nodes in `drop_from`; empty
    /// lists heal. Refused unless the node runs with `fault_injection`.
    SetNetworkFaults {
        drop_to: Vec<u64>,
        drop_from: Vec<u64>,
    },
    /// The node's recent log lines: the last `limit`, or with `after`, the first
    /// `limit` written after that sequence (to follow). `limit` is capped at 500.
    Logs { after: Option<u64>, limit: u32 },
    /// Writes JSON object `document` as document `id` of `collection` if
    /// `condition` holds (answer: `Written`).
    DocPut {
        collection: String,
        id: String,
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
        condition: WriteCondition,
    },
    /// Reads document `id` of `collection` (answer: `Value`).
    DocGet {
        collection: String,
        id: String,
        stale: bool,
    },
    /// Deletes document `id` of `collection` if `condition` holds (answer:
    /// `Deleted`).
    DocDelete {
        collection: String,
        id: String,
        condition: WriteCondition,
    },
    /// One page of a document query; `query` is the JSON body of
    /// `POST /v1/docs/{collection}/_query` (answer: `QueryPage`).
    DocQuery {
        collection: String,
        #[serde(with = "serde_bytes")]
        query: Vec<u8>,
        stale: bool,
    },
    /// Writes up to [`DOC_BATCH_ITEMS_MAX`] documents of `collection`
    /// unconditionally, concurrently (answer: `BatchWritten`, one result per item in
    /// order).
    DocPutBatch {
        collection: String,
        documents: Vec<BatchDocument>,
    },
    /// Declares `name` with secondary indexes on `indexes` (answer: `Collections`
    /// with the one collection).
    CollectionDefine { name: String, indexes: Vec<String> },
    /// Every declared collection (answer: `Collections`).
    CollectionList,
    /// Drops collection `name` with its documents (answer: `CollectionDropped`).
    CollectionDrop { name: String },
}

/// Most documents one `DocPutBatch` carries.
pub const DOC_BATCH_ITEMS_MAX: usize = 1_000;

/// One document of a `DocPutBatch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDocument {
    pub id: String,
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}

/// The outcome of one document of a batch: its revision, or the error code and
/// message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    pub revision: Option<u64>,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One document of a query page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDocument {
    pub id: String,
    pub revision: u64,
    /// The (projected) document, JSON.
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}

impl AdminRequest {
    /// A short name for logs; never includes keys, values or the token.
    pub fn kind(&self) -> &'static str {
        match self {
            AdminRequest::Hello { .. } => "hello",
            AdminRequest::Put { .. } => "put",
            AdminRequest::Get { .. } => "get",
            AdminRequest::Delete { .. } => "delete",
            AdminRequest::Scan { .. } => "scan",
            AdminRequest::Status => "status",
            AdminRequest::ClusterInfo => "cluster_info",
            AdminRequest::Health => "health",
            AdminRequest::KillShardReplica { .. } => "kill_shard_replica",
            AdminRequest::TransferLeader { .. } => "transfer_leader",
            AdminRequest::ShardChecksums => "shard_checksums",
            AdminRequest::NodeAction { .. } => "node_action",
            AdminRequest::KillActor { .. } => "kill_actor",
            AdminRequest::SetNetworkFaults { .. } => "set_network_faults",
            AdminRequest::Logs { .. } => "logs",
            AdminRequest::DocPut { .. } => "doc_put",
            AdminRequest::DocGet { .. } => "doc_get",
            AdminRequest::DocDelete { .. } => "doc_delete",
            AdminRequest::DocQuery { .. } => "doc_query",
            AdminRequest::DocPutBatch { .. } => "doc_put_batch",
            AdminRequest::CollectionDefine { .. } => "collection_define",
            AdminRequest::CollectionList => "collection_list",
            AdminRequest::CollectionDrop { .. } => "collection_drop",
        }
    }
}

/// A value with the revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub revision: u64,
}

/// One key of a scan page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub revision: u64,
}

/// A frame sent by the server: exactly one per request frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminResponse {
    /// The session is open.
    HelloAccepted {
        protocol_version: u32,
        node_id: u64,
        /// The server's crate version, for diagnostics only.
        server_version: String,
    },
    /// A put succeeded with this new revision.
    Written { revision: u64 },
    /// A delete succeeded; `revision` is the revision of the delete.
    Deleted { revision: u64 },
    /// The answer to `Get`: `None` when the key does not exist.
    Value { found: Option<StoredValue> },
    /// One page of a scan. `next` is set when more keys may follow; send it as
    /// `after` to continue.
    ScanPage {
        entries: Vec<ScanEntry>,
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
    },
    /// The answer to `Status`.
    Status { status: NodeStatus },
    /// The answer to `ClusterInfo`.
    ClusterInfo { info: ClusterInfo },
    /// The answer to `Health`.
    Health { health: Health },
    /// The shard's local replica actor was killed.
    ShardReplicaKilled { shard: u32 },
    /// The shard is now led by `leader`.
    LeaderTransferred { shard: u32, leader: u64 },
    /// The answer to `ShardChecksums`, one entry per replica on the node.
    ShardChecksums { checksums: Vec<ShardChecksum> },
    /// The action is recorded (the rebalancer carries it out).
    NodeActionApplied { node: u64, action: NodeAction },
    /// The actor was killed.
    ActorKilled { target: ActorTarget },
    /// The fault rules are in place.
    NetworkFaultsSet {
        drop_to: Vec<u64>,
        drop_from: Vec<u64>,
    },
    /// The answer to `Logs`.
    Logs { page: LogPage },
    /// The request failed. `code` is a stable code of `crate::error_code`.
    Error { code: String, message: String },
    /// The answer to `DocQuery`.
    QueryPage {
        documents: Vec<QueryDocument>,
        cursor: Option<String>,
        index: Option<String>,
        examined: u64,
    },
    /// The answer to `DocPutBatch`.
    BatchWritten { results: Vec<BatchResult> },
    /// The answer to `CollectionDefine` and `CollectionList`.
    Collections { collections: Vec<CollectionStatus> },
    /// The collection and its documents are gone.
    CollectionDropped { name: String },
}

impl AdminResponse {
    /// Builds an error response.
    pub fn error(code: &str, message: impl Into<String>) -> AdminResponse {
        AdminResponse::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the limit; nothing was allocated for it.
    #[error("frame of {length_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge { length_bytes: u64, limit_bytes: u32 },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The payload is not a valid MessagePack encoding of the expected type.
    #[error("frame payload does not decode: {0}")]
    Decode(String),
    /// The value could not be encoded (a bug, or a non-serializable value).
    #[error("frame payload does not encode: {0}")]
    Encode(String),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The stable error code to send back to the peer, when this is the peer's fault.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            FrameError::TooLarge { .. } => Some("frame_too_large"),
            FrameError::Decode(_) => Some("bad_frame"),
            FrameError::Truncated | FrameError::Encode(_) | FrameError::Io(_) => None,
        }
    }
}

/// The outcome of looking for one frame at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameSplit<'buffer> {
    /// More bytes are needed; the whole frame is `needed_bytes` long (header
    /// included) when the header is complete, or at least that long otherwise.
    Incomplete { needed_bytes: usize },
    /// A whole frame: its payload and how many buffer bytes it occupies.
    Complete {
        payload: &'buffer [u8],
        consumed_bytes: usize,
    },
}

/// Reads and checks a frame header: the payload length, rejected when above
/// `frame_bytes_max`. This is the one place the limit is enforced.
pub fn parse_header(
    header: [u8; FRAME_HEADER_BYTES],
    frame_bytes_max: u32,
) -> Result<u32, FrameError> {
    let length_bytes = u32::from_be_bytes(header);
    if length_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge {
            length_bytes: u64::from(length_bytes),
            limit_bytes: frame_bytes_max,
        });
    }
    Ok(length_bytes)
}

/// Finds the first frame in `buffer` without copying. Pure, so it can be fuzzed.
pub fn split_frame(buffer: &[u8], frame_bytes_max: u32) -> Result<FrameSplit<'_>, FrameError> {
    let Some(header) = buffer.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(FrameSplit::Incomplete {
            needed_bytes: FRAME_HEADER_BYTES,
        });
    };
    let length_bytes = parse_header(*header, frame_bytes_max)?;
    // u32 always fits in usize on the 32- and 64-bit targets we build for; the
    // conversion is checked anyway so a 16-bit target fails loudly, not silently.
    let length_bytes = usize::try_from(length_bytes).map_err(|_| FrameError::TooLarge {
        length_bytes: u64::from(length_bytes),
        limit_bytes: frame_bytes_max,
    })?;
    let frame_bytes = FRAME_HEADER_BYTES + length_bytes;
    match buffer.get(FRAME_HEADER_BYTES..frame_bytes) {
        Some(payload) => Ok(FrameSplit::Complete {
            payload,
            consumed_bytes: frame_bytes,
        }),
        None => Ok(FrameSplit::Incomplete {
            needed_bytes: frame_bytes,
        }),
    }
}

/// Encodes `value` as one frame (header and payload), refusing payloads above
/// `frame_bytes_max` so we never send what the peer must reject.
pub fn encode_frame<T: Serialize>(value: &T, frame_bytes_max: u32) -> Result<Vec<u8>, FrameError> {
    let payload =
        rmp_serde::to_vec_named(value).map_err(|error| FrameError::Encode(error.to_string()))?;
    let length_bytes = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length <= frame_bytes_max)
        .ok_or(FrameError::TooLarge {
            length_bytes: payload.len() as u64,
            limit_bytes: frame_bytes_max,
        })?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length_bytes.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes a frame payload. Never panics; any malformed input is a `Decode` error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    // `from_slice` (not `from_read`) so a length inside the MessagePack data larger
    // than the payload fails instead of allocating.
    rmp_serde::from_slice(payload).map_err(|error| FrameError::Decode(error.to_string()))
}

/// Waits for the next frame header. `Ok(None)` when the peer closed the connection
/// cleanly between frames.
pub async fn read_frame_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: u32,
) -> Result<Option<u32>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let read = reader.read(&mut header[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += read;
    }
    parse_header(header, frame_bytes_max).map(Some)
}

/// Reads a payload of `length_bytes` (already checked by [`parse_header`]).
pub async fn read_frame_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    length_bytes: u32,
) -> Result<Vec<u8>, FrameError> {
    let length_bytes = usize::try_from(length_bytes).map_err(|_| FrameError::TooLarge {
        length_bytes: u64::from(length_bytes),
        limit_bytes: u32::MAX,
    })?;
    let mut payload = vec![0u8; length_bytes];
    match reader.read_exact(&mut payload).await {
        Ok(_) => Ok(payload),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Truncated)
        }
        Err(error) => Err(FrameError::Io(error)),
    }
}

/// Reads one whole frame's payload; `Ok(None)` on a clean close between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: u32,
) -> Result<Option<Vec<u8>>, FrameError> {
    match read_frame_header(reader, frame_bytes_max).await? {
        None => Ok(None),
        Some(length_bytes) => read_frame_payload(reader, length_bytes).await.map(Some),
    }
}

/// Encodes and writes one frame, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
    frame_bytes_max: u32,
) -> Result<(), FrameError> {
    let frame = encode_frame(value, frame_bytes_max)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Proves the Hello frame's bytes are stable: a change to field names, variant
    /// names or the header layout breaks every deployed client, so it must show up
    /// here. Compares the encoded frame with bytes written down by hand.
    #[test]
    fn hello_frame_golden_bytes() {
        let hello = AdminRequest::Hello {
            protocol_version: 1,
            token: Some("t".into()),
            client: "c".into(),
        };
        let frame = encode_frame(&hello, FRAME_BYTES_MAX_DEFAULT).unwrap();
        // 81 a5 "hello"                   map(1) { "hello":
        //   83                              map(3) {
        //     b0 "protocol_version" 01        protocol_version: 1,
        //     a5 "token" a1 "t"               token: "t",
        //     a6 "client" a1 "c"              client: "c" } }
        let payload = concat!(
            "81",
            "a5",
            "68656c6c6f",
            "83",
            "b0",
            "70726f746f636f6c5f76657273696f6e",
            "01",
            "a5",
            "746f6b656e",
            "a1",
            "74",
            "a6",
            "636c69656e74",
            "a1",
            "63"
        );
        let expected = format!("{:08x}{payload}", payload.len() / 2);
        assert_eq!(hex(&frame), expected);
        let decoded: AdminRequest = decode_payload(&frame[FRAME_HEADER_BYTES..]).unwrap();
        assert_eq!(decoded, hello);
    }

    /// Proves a Put request's bytes are stable, including that byte fields are
    /// MessagePack `bin` (c4) rather than arrays of integers, and how a condition
    /// with a revision is tagged.
    #[test]
    fn put_frame_golden_bytes() {
        let put = AdminRequest::Put {
            key: b"k".to_vec(),
            value: vec![0xff],
            condition: WriteCondition::RevisionIs { revision: 7 },
        };
        let frame = encode_frame(&put, FRAME_BYTES_MAX_DEFAULT).unwrap();
        // 81 a3 "put" 83 a3 "key" c4 01 "k" a5 "value" c4 01 ff
        //   a9 "condition" 81 ab "revision_is" 81 a8 "revision" 07
        let payload = concat!(
            "81",
            "a3",
            "707574",
            "83",
            "a3",
            "6b6579",
            "c4016b",
            "a5",
            "76616c7565",
            "c401ff",
            "a9",
            "636f6e646974696f6e",
            "81",
            "ab",
            "7265766973696f6e5f6973",
            "81",
            "a8",
            "7265766973696f6e",
            "07"
        );
        let expected = format!("{:08x}{payload}", payload.len() / 2);
        assert_eq!(hex(&frame), expected);
    }

    /// Proves unit variants (no fields) encode as a bare string and an error response
    /// as a tagged map, so non-Rust clients can rely on both shapes.
    #[test]
    fn unit_request_and_error_response_golden_bytes() {
        let status = rmp_serde::to_vec_named(&AdminRequest::Status).unwrap();
        assert_eq!(hex(&status), "a6737461747573");
        let error = rmp_serde::to_vec_named(&AdminResponse::error("x", "y")).unwrap();
        // 81 a5 "error" 82 a4 "code" a1 "x" a7 "message" a1 "y"
        assert_eq!(
            hex(&error),
            "81a56572726f7282a4636f6465a178a76d657373616765a179"
        );
    }

    /// Proves the shape of a `logs` request for non-Rust clients: a tagged map with
    /// `after` (nil when absent) and `limit`.
    #[test]
    fn logs_request_golden_bytes() {
        let logs = rmp_serde::to_vec_named(&AdminRequest::Logs {
            after: None,
            limit: 5,
        })
        .unwrap();
        // 81 a4 "logs" 82 a5 "after" c0 a5 "limit" 05
        assert_eq!(hex(&logs), "81a46c6f677382a56166746572c0a56c696d697405");
    }

    /// Proves every request and response survives an encode/decode round trip.
    #[test]
    fn requests_and_responses_round_trip() {
        let requests = [
            AdminRequest::Get {
                key: b"a".to_vec(),
                stale: true,
            },
            AdminRequest::Delete {
                key: vec![0, 1, 2],
                condition: WriteCondition::Absent,
            },
            AdminRequest::Scan {
                prefix: b"user:".to_vec(),
                after: Some(b"user:1".to_vec()),
                limit: 10,
                stale: false,
            },
            AdminRequest::Scan {
                prefix: Vec::new(),
                after: None,
                limit: 1,
                stale: true,
            },
            AdminRequest::ClusterInfo,
            AdminRequest::Health,
            AdminRequest::KillShardReplica { shard: 3 },
            AdminRequest::KillActor {
                target: ActorTarget::ShardReplica {
                    shard: mimori_actors::ids::ShardId(2),
                },
            },
            AdminRequest::KillActor {
                target: ActorTarget::Membership,
            },
            AdminRequest::SetNetworkFaults {
                drop_to: vec![2, 3],
                drop_from: vec![3],
            },
            AdminRequest::Logs {
                after: None,
                limit: 100,
            },
            AdminRequest::Logs {
                after: Some(41),
                limit: 500,
            },
        ];
        for request in requests {
            let frame = encode_frame(&request, FRAME_BYTES_MAX_DEFAULT).unwrap();
            let decoded: AdminRequest = decode_payload(&frame[FRAME_HEADER_BYTES..]).unwrap();
            assert_eq!(decoded, request);
        }
        let responses = [
            AdminResponse::Written { revision: 9 },
            AdminResponse::Value { found: None },
            AdminResponse::Value {
                found: Some(StoredValue {
                    value: vec![1, 2],
                    revision: 4,
                }),
            },
            AdminResponse::ScanPage {
                entries: vec![ScanEntry {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    revision: 2,
                }],
                next: Some(b"k".to_vec()),
            },
            AdminResponse::ShardReplicaKilled { shard: 1 },
            AdminResponse::NodeActionApplied {
                node: 4,
                action: NodeAction::Drain,
            },
            AdminResponse::ActorKilled {
                target: ActorTarget::Transport,
            },
            AdminResponse::NetworkFaultsSet {
                drop_to: Vec::new(),
                drop_from: vec![1],
            },
            AdminResponse::Logs {
                page: LogPage {
                    lines: vec![crate::logs::LogLine {
                        sequence: 7,
                        text: "INFO mimorid serving".to_string(),
                    }],
                    missed: 2,
                    last: 7,
                },
            },
        ];
        for response in responses {
            let frame = encode_frame(&response, FRAME_BYTES_MAX_DEFAULT).unwrap();
            let decoded: AdminResponse = decode_payload(&frame[FRAME_HEADER_BYTES..]).unwrap();
            assert_eq!(decoded, response);
        }
    }

    /// Proves the limit is enforced on the header alone: a header announcing
    /// 0xFFFF_FFFF bytes is rejected by `split_frame` with four bytes in hand, and
    /// `encode_frame` refuses to produce a frame above the limit.
    #[test]
    fn oversized_frames_are_rejected_before_allocation() {
        let error = split_frame(&[0xff, 0xff, 0xff, 0xff], FRAME_BYTES_MAX_DEFAULT).unwrap_err();
        assert!(matches!(
            error,
            FrameError::TooLarge {
                length_bytes: 0xffff_ffff,
                ..
            }
        ));
        assert_eq!(error.code(), Some("frame_too_large"));
        let big = AdminRequest::Put {
            key: b"k".to_vec(),
            value: vec![0; 100],
            condition: WriteCondition::Always,
        };
        assert!(matches!(
            encode_frame(&big, 50),
            Err(FrameError::TooLarge { .. })
        ));
    }

    /// Proves `split_frame` reports how many bytes it still needs and then finds the
    /// exact payload, leaving any following bytes alone.
    #[test]
    fn split_frame_waits_for_whole_frame() {
        assert_eq!(
            split_frame(&[0, 0], 16).unwrap(),
            FrameSplit::Incomplete { needed_bytes: 4 }
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 3, 9], 16).unwrap(),
            FrameSplit::Incomplete { needed_bytes: 7 }
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 3, 9, 8, 7, 6], 16).unwrap(),
            FrameSplit::Complete {
                payload: &[9, 8, 7],
                consumed_bytes: 7
            }
        );
    }

    /// Proves the async reader tells a clean close (between frames) from a
    /// truncated frame, in the header and in the payload.
    #[tokio::test]
    async fn read_frame_distinguishes_clean_close_from_truncation() {
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 16).await.unwrap().is_none());
        let mut half_header: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut half_header, 16).await,
            Err(FrameError::Truncated)
        ));
        let mut half_payload: &[u8] = &[0, 0, 0, 100, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut half_payload, 1000).await,
            Err(FrameError::Truncated)
        ));
        let mut whole: &[u8] = &[0, 0, 0, 2, 5, 6];
        assert_eq!(read_frame(&mut whole, 16).await.unwrap(), Some(vec![5, 6]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Fuzzes the decoder: arbitrary bytes fed to `split_frame`, then to the
        /// request and response decoders, and to the async reader, must produce a
        /// value or an error, never a panic, and a complete frame is always within
        /// the buffer and the limit.
        #[test]
        fn frame_decoder_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            frame_bytes_max in 0u32..1024,
        ) {
            let mut rest: &[u8] = &bytes;
            loop {
                match split_frame(rest, frame_bytes_max) {
                    Ok(FrameSplit::Complete { payload, consumed_bytes }) => {
                        prop_assert!(consumed_bytes <= rest.len());
                        prop_assert!(payload.len() as u64 <= u64::from(frame_bytes_max));
                        let _ = decode_payload::<AdminRequest>(payload);
                        let _ = decode_payload::<AdminResponse>(payload);
                        rest = &rest[consumed_bytes..];
                    }
                    Ok(FrameSplit::Incomplete { needed_bytes }) => {
                        prop_assert!(needed_bytes > rest.len());
                        break;
                    }
                    Err(error) => {
                        prop_assert!(error.code().is_some());
                        break;
                    }
                }
            }
            let _ = decode_payload::<AdminRequest>(&bytes);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut reader: &[u8] = &bytes;
            let _ = runtime.block_on(read_frame(&mut reader, frame_bytes_max));
        }

        /// Fuzzes with valid MessagePack prefixes: a real request frame cut at any
        /// point or with one byte changed still decodes or fails cleanly.
        #[test]
        fn mutated_request_frames_never_panic(
            cut in 0usize..64,
            position in 0usize..64,
            replacement in any::<u8>(),
        ) {
            let request = AdminRequest::Scan {
                prefix: b"user:".to_vec(),
                after: Some(b"user:9".to_vec()),
                limit: 7,
                stale: true,
            };
            let mut frame = encode_frame(&request, FRAME_BYTES_MAX_DEFAULT).unwrap();
            if let Some(byte) = frame.get_mut(position) {
                *byte = replacement;
            }
            frame.truncate(cut.max(1));
            let _ = decode_payload::<AdminRequest>(frame.get(FRAME_HEADER_BYTES..).unwrap_or(&[]));
            let _ = split_frame(&frame, FRAME_BYTES_MAX_DEFAULT);
        }
    }
}

//! The Transport: the one remotable actor of a node, and the only code that touches
//! ractor_cluster.
//!
//! Shard replicas and everything else stay local-only (ractor_cluster mirrors every
//! remotable actor onto every peer, which would not scale to thousands of groups).
//! Cross-node traffic goes Transport → Transport as [`wire::PeerFrame`]s: Raft
//! messages of every group batched per peer, snapshot chunks, requests forwarded to
//! the node that leads a shard and their answers, and cluster metadata.
//!
//! Who talks to it: shard replicas (`SendRaft`, snapshot chunks and acks), the
//! router (`Call` to forward requests), the node (`AddPeer`, `Attach`, joining);
//! peers' Transports (`Frame`). It hands incoming traffic to an [`Inbox`] that the
//! node attaches once the kernel runs.
//!
//! Each Transport joins the process group [`group_name`]`(node id)`, which
//! ractor_cluster synchronizes across connected nodes; a peer's Transport is found
//! there. ractor_cluster does not reconnect, so the Transport dials every peer it
//! knows of (from the cluster metadata) whenever no live session exists, with
//! backoff. Queues towards a peer are bounded (`peer`): what an unreachable peer
//! cannot take is dropped and counted, and Raft retransmits.

pub mod actor;
pub mod peer;
pub mod wire;

pub use actor::{TransportActor, TransportArgs};

use crate::ids::{GroupId, NodeId};
use crate::shard::replica::{SnapshotAck, SnapshotChunk};
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use raft::eraftpb::Message;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use wire::{PeerRequest, PeerResponse};

/// The process group a node's Transport joins.
pub fn group_name(node: NodeId) -> String {
    format!("mimori/transport/{}", node.0)
}

/// The variant name of the one message that crosses the network.
const FRAME_VARIANT: &str = "frame";

/// Why a call to a peer failed without an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the peer has no live session or has been silent.
    #[error("node {0} is unreachable")]
    Unreachable(NodeId),
    /// Sent, but no answer in time: the request may or may not have been executed.
    #[error("node {0} did not answer in time")]
    Timeout(NodeId),
    /// Sent, but the peer went away (its session closed, or it fell silent) before
    /// answering: the request may or may not have been executed.
    #[error("node {0} went away before answering")]
    ConnectionLost(NodeId),
    /// The Transport is stopping.
    #[error("the transport is stopping")]
    Closed,
}

/// The answer to a [`TransportMsg::Call`].
pub type CallReply = oneshot::Sender<Result<PeerResponse, CallError>>;

/// A boxed future answering a forwarded request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = PeerResponse> + Send>>;

/// Where the Transport hands what peers send, once the kernel runs.
pub trait Inbox: Send + Sync + 'static {
    /// Raft messages for a local replica of `group`, in the order they were sent.
    fn raft(&self, from: NodeId, group: GroupId, messages: Vec<Message>);
    /// A snapshot chunk for a local replica of `group`.
    fn snapshot_chunk(&self, from: NodeId, group: GroupId, chunk: SnapshotChunk);
    /// A request to execute here (never a join: the Transport answers those).
    fn request(&self, from: NodeId, request: PeerRequest, timeout: Duration) -> ResponseFuture;
}

pub enum TransportMsg {
    /// Raft messages of one local replica, for whichever peers they are addressed to.
    SendRaft {
        group: GroupId,
        messages: Vec<Message>,
    },
    /// A chunk of a snapshot stream for `to`.
    SendSnapshotChunk {
        to: NodeId,
        group: GroupId,
        chunk: SnapshotChunk,
    },
    /// The answer to a chunk `to` sent.
    SendSnapshotAck {
        to: NodeId,
        group: GroupId,
        ack: SnapshotAck,
    },
    /// Deliver the acks of snapshot stream `stream` to `acks` until forgotten.
    WatchSnapshotStream {
        stream: u64,
        acks: mpsc::Sender<SnapshotAck>,
    },
    ForgetSnapshotStream {
        stream: u64,
    },
    /// Ask `to` to execute `request`. With `wait_for_connection` the request waits
    /// (up to `timeout`) for a session to a peer being dialed; without, it fails at
    /// once with `Unreachable` when the peer is not reachable now.
    Call {
        to: NodeId,
        request: PeerRequest,
        timeout: Duration,
        wait_for_connection: bool,
        reply: CallReply,
    },
    /// Where `node`'s cluster listener is (from a join or the metadata).
    AddPeer {
        node: NodeId,
        address: String,
    },
    /// Gossip sees `node` up (new, or back): dial it now at `address`.
    MemberUp {
        node: NodeId,
        address: String,
    },
    /// Gossip declared `node` down: stop sending to it until it is up again.
    MemberDown {
        node: NodeId,
    },
    /// Hand incoming traffic to `inbox` from now on.
    Attach(Arc<dyn Inbox>),
    /// Sends whatever is queued (the actor sends this to itself).
    Flush,
    /// Dials, keepalives, expiries (from the actor's timer).
    Tick,
    /// A dial attempt ended.
    Dialed {
        node: NodeId,
        succeeded: bool,
    },
    /// The answer to a request `to` made.
    Respond {
        to: NodeId,
        id: u64,
        response: PeerResponse,
    },
    /// A frame from a peer's Transport: the only message that crosses the network.
    Frame(Vec<u8>),
}

impl ractor::Message for TransportMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            TransportMsg::Frame(bytes) => Ok(SerializedMessage::Cast {
                variant: FRAME_VARIANT.to_string(),
                args: bytes,
                metadata: None,
            }),
            // Only frames are ever sent to a remote Transport.
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match message {
            SerializedMessage::Cast { variant, args, .. } if variant == FRAME_VARIANT => {
                Ok(TransportMsg::Frame(args))
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// One peer as status views show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub reachable: bool,
    pub frames_in_flight: u64,
    pub dropped_total: u64,
}

/// Counters and peer states the Transport publishes for the router and status.
#[derive(Debug, Default)]
pub struct TransportStatus {
    peers: RwLock<BTreeMap<NodeId, PeerStatus>>,
    pub frames_sent_total: AtomicU64,
    pub frames_received_total: AtomicU64,
    /// Frames from peers that did not decode.
    pub frames_rejected_total: AtomicU64,
    /// Items (mostly Raft messages) dropped because a peer could not take them.
    pub items_dropped_total: AtomicU64,
    /// Requests this node forwarded to others.
    pub calls_total: AtomicU64,
    /// When the status was last published.
    published: RwLock<Option<Instant>>,
}

impl TransportStatus {
    /// Whether `node` is reachable from here right now.
    pub fn is_reachable(&self, node: NodeId) -> bool {
        self.peers
            .read()
            .ok()
            .and_then(|peers| peers.get(&node).map(|peer| peer.reachable))
            .unwrap_or(false)
    }

    /// Every known peer.
    pub fn peers(&self) -> BTreeMap<NodeId, PeerStatus> {
        self.peers
            .read()
            .map(|peers| peers.clone())
            .unwrap_or_default()
    }

    pub(crate) fn publish(&self, peers: BTreeMap<NodeId, PeerStatus>) {
        if let Ok(mut current) = self.peers.write() {
            *current = peers;
        }
        if let Ok(mut published) = self.published.write() {
            *published = Some(Instant::now());
        }
    }

    pub(crate) fn count(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

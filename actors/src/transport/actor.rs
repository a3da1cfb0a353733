//! The Transport actor: batches outgoing traffic per peer, hands incoming frames to
//! the node's [`Inbox`], keeps sessions to every known peer alive (dialing them with
//! backoff), answers joins through the [`ClusterState`], and spreads newer cluster
//! metadata.
//!
//! Batching: every input that queues something schedules one `Flush` to the actor
//! itself, so everything already in the mailbox joins the same frames.

use super::peer::Peer;
use super::wire::{PeerFrame, PeerItem, PeerRequest, PeerResponse, RaftMessageRecord};
use super::{group_name, CallError, CallReply, Inbox, PeerStatus, TransportMsg, TransportStatus};
use crate::faults::NetworkFaults;
use crate::ids::{GroupId, NodeId};
use crate::kv::KvError;
use crate::node::cluster_state::ClusterState;
use crate::shard::replica::SnapshotAck;
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};
use ractor_cluster::NodeServerMessage;
use raft::eraftpb::Message;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the Transport dials, sends keepalives and expires calls.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// A peer gets at least one frame this often, so it can tell we are alive and see
/// our metadata revision.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// Metadata is offered to or asked of one peer at most this often.
const METADATA_RESEND_INTERVAL: Duration = Duration::from_secs(1);
/// Calls waiting for an answer, at most; more are refused.
const CALLS_PENDING_MAX: usize = 65_536;
/// Requests from peers being executed here at once, at most; more are refused.
const REQUESTS_RUNNING_MAX: usize = 16_384;
/// Sessions remembered as closed, at most (a close takes a moment to be processed).
const CLOSED_SESSIONS_MAX: usize = 64;

pub struct TransportArgs {
    pub node_id: NodeId,
    pub cluster: Arc<ClusterState>,
    pub node_server: ActorRef<NodeServerMessage>,
    pub status: Arc<TransportStatus>,
    /// The fault hook: peers whose traffic is dropped (tests and chaos only).
    pub faults: Arc<NetworkFaults>,
}

struct PendingCall {
    to: NodeId,
    reply: CallReply,
    deadline: Instant,
    /// Fails as soon as the peer goes away (calls that did not wait for a
    /// connection: they were sent to a live session).
    fail_fast: bool,
}

pub struct TransportState {
    node_id: NodeId,
    /// Random per start; peers restart their sequences towards us when it changes.
    instance: u64,
    cluster: Arc<ClusterState>,
    node_server: ActorRef<NodeServerMessage>,
    status: Arc<TransportStatus>,
    faults: Arc<NetworkFaults>,
    inbox: Option<Arc<dyn Inbox>>,
    peers: HashMap<NodeId, Peer>,
    /// The live reference to each peer's Transport, when a session exists.
    remotes: HashMap<NodeId, ActorRef<TransportMsg>>,
    /// ractor_cluster sessions (by their node id) closed as dead, newest last: their
    /// remote actors may look alive until the close is processed.
    closed_sessions: VecDeque<u64>,
    calls: HashMap<u64, PendingCall>,
    next_call: u64,
    /// Requests from peers being executed.
    requests_running: Arc<std::sync::atomic::AtomicUsize>,
    snapshot_streams: HashMap<u64, mpsc::Sender<SnapshotAck>>,
    flush_scheduled: bool,
    last_keepalive: Instant,
    timer: Option<tokio::task::JoinHandle<()>>,
}

pub struct TransportActor;

impl Actor for TransportActor {
    type Msg = TransportMsg;
    type State = TransportState;
    type Arguments = TransportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group_name(args.node_id), vec![myself.get_cell()]);
        let timer = myself.send_interval(TICK_INTERVAL, || TransportMsg::Tick);
        Ok(TransportState {
            node_id: args.node_id,
            instance: rand::random::<u64>() | 1,
            cluster: args.cluster,
            node_server: args.node_server,
            status: args.status,
            faults: args.faults,
            inbox: None,
            peers: HashMap::new(),
            remotes: HashMap::new(),
            closed_sessions: VecDeque::new(),
            calls: HashMap::new(),
            next_call: 0,
            requests_running: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            snapshot_streams: HashMap::new(),
            flush_scheduled: false,
            last_keepalive: Instant::now(),
            timer: Some(timer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        for (_, call) in state.calls.drain() {
            let _ = call.reply.send(Err(CallError::Closed));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TransportMsg::SendRaft { group, messages } => {
                for message in messages {
                    let to = NodeId(message.to);
                    let item = PeerItem::Raft {
                        group,
                        message: RaftMessageRecord::from(&message),
                    };
                    state.queue(to, item);
                }
            }
            TransportMsg::SendSnapshotChunk { to, group, chunk } => {
                let item = PeerItem::SnapshotChunk {
                    group,
                    chunk: (&chunk).into(),
                };
                state.queue(to, item);
            }
            TransportMsg::SendSnapshotAck { to, group, ack } => {
                state.queue(to, PeerItem::snapshot_ack(group, ack));
            }
            TransportMsg::WatchSnapshotStream { stream, acks } => {
                state.snapshot_streams.insert(stream, acks);
            }
            TransportMsg::ForgetSnapshotStream { stream } => {
                state.snapshot_streams.remove(&stream);
            }
            TransportMsg::Call {
                to,
                request,
                timeout,
                wait_for_connection,
                reply,
            } => state.call(to, request, timeout, wait_for_connection, reply),
            TransportMsg::AddPeer { node, address } => state.add_peer(node, address),
            TransportMsg::MemberUp { node, address } => {
                state.add_peer(node, address);
                if node != state.node_id {
                    let peer = state.peer(node);
                    if peer.gossip_down {
                        tracing::info!(peer = node.0, "gossip sees the peer up; sending again");
                    }
                    peer.gossip_down = false;
                    peer.dial.next_attempt = Instant::now();
                    peer.dial.backoff = super::peer::DIAL_BACKOFF_MIN;
                }
            }
            TransportMsg::MemberDown { node } => {
                if node != state.node_id {
                    let peer = state.peer(node);
                    peer.gossip_down = true;
                    let dropped = peer.drop_raft();
                    TransportStatus::count(&state.status.items_dropped_total, dropped);
                    tracing::info!(
                        peer = node.0,
                        "gossip declared the peer down; not sending to it"
                    );
                }
            }
            TransportMsg::Attach(inbox) => state.inbox = Some(inbox),
            TransportMsg::Flush => {
                state.flush_scheduled = false;
                state.flush();
            }
            TransportMsg::Tick => state.tick(&myself),
            TransportMsg::Dialed { node, succeeded } => {
                if let Some(peer) = state.peers.get_mut(&node) {
                    peer.dialed(succeeded, Instant::now());
                }
            }
            TransportMsg::Respond { to, id, response } => {
                state.queue(to, PeerItem::Response { id, response });
            }
            TransportMsg::Frame(bytes) => state.receive(&myself, &bytes),
        }
        if !state.flush_scheduled && state.peers.values().any(Peer::wants_flush) {
            state.flush_scheduled = true;
            myself.send_message(TransportMsg::Flush)?;
        }
        Ok(())
    }
}

impl TransportState {
    fn peer(&mut self, node: NodeId) -> &mut Peer {
        self.peers
            .entry(node)
            .or_insert_with(|| Peer::new(node, Instant::now()))
    }

    fn queue(&mut self, to: NodeId, item: PeerItem) {
        if to == self.node_id || to == NodeId(0) {
            return;
        }
        if self.peer(to).queue(item, Instant::now()).is_err() {
            TransportStatus::count(&self.status.items_dropped_total, 1);
        }
    }

    fn add_peer(&mut self, node: NodeId, address: String) {
        if node == self.node_id || address.is_empty() {
            return;
        }
        let peer = self.peer(node);
        if peer.address.as_deref() != Some(address.as_str()) {
            peer.address = Some(address);
            peer.dial.next_attempt = Instant::now();
        }
    }

    fn call(
        &mut self,
        to: NodeId,
        request: PeerRequest,
        timeout: Duration,
        wait_for_connection: bool,
        reply: CallReply,
    ) {
        let now = Instant::now();
        let reachable = self.remote(to).is_some() && self.peer(to).is_reachable(now);
        if (!reachable && !wait_for_connection) || self.calls.len() >= CALLS_PENDING_MAX {
            let _ = reply.send(Err(CallError::Unreachable(to)));
            return;
        }
        self.next_call += 1;
        let id = self.next_call;
        let timeout_ms = timeout.as_millis().min(u128::from(u32::MAX)) as u32;
        if self
            .peer(to)
            .queue(
                PeerItem::Request {
                    id,
                    timeout_ms,
                    request,
                },
                now,
            )
            .is_err()
        {
            let _ = reply.send(Err(CallError::Unreachable(to)));
            return;
        }
        TransportStatus::count(&self.status.calls_total, 1);
        self.calls.insert(
            id,
            PendingCall {
                to,
                reply,
                deadline: now + timeout,
                fail_fast: !wait_for_connection,
            },
        );
    }

    /// The live reference to `node`'s Transport: the cached one while it runs, else
    /// one found in the node's process group.
    fn remote(&mut self, node: NodeId) -> Option<ActorRef<TransportMsg>> {
        if let Some(remote) = self.remotes.get(&node) {
            if remote.get_status() == ActorStatus::Running {
                return Some(remote.clone());
            }
            self.remotes.remove(&node);
        }
        // The newest session first: ractor_cluster numbers sessions in order.
        let cell = ractor::pg::get_members(&group_name(node))
            .into_iter()
            .filter(|cell| {
                let id = cell.get_id();
                !id.is_local()
                    && cell.get_status() == ActorStatus::Running
                    && !self.closed_sessions.contains(&id.node())
            })
            .max_by_key(|cell| (cell.get_id().node(), cell.get_id().pid()))?;
        let remote: ActorRef<TransportMsg> = cell.into();
        tracing::debug!(peer = node.0, actor = ?remote.get_id(), "peer transport found");
        self.remotes.insert(node, remote.clone());
        self.peer(node).reset_session(Instant::now());
        Some(remote)
    }

    /// Closes sessions that carried nothing from their peer for
    /// [`SESSION_SILENCE_MAX`](super::peer::SESSION_SILENCE_MAX): a half-open
    /// connection to a peer that crashed would otherwise stay, and make
    /// ractor_cluster refuse the restarted peer's connections, until TCP gives up.
    /// Links cut by the fault hook are silent on purpose and keep their session.
    fn close_silent_sessions(&mut self, now: Instant) {
        let silent: Vec<NodeId> = self
            .remotes
            .keys()
            .copied()
            .filter(|node| {
                !self.faults.drops_from(*node)
                    && !self.faults.drops_to(*node)
                    && self
                        .peers
                        .get(node)
                        .is_some_and(|peer| peer.session_silent(now))
            })
            .collect();
        for node in silent {
            let Some(remote) = self.remotes.remove(&node) else {
                continue;
            };
            self.peer(node).session_closed(now);
            let session = remote.get_id().node();
            tracing::warn!(
                peer = node.0,
                session,
                "nothing heard from the peer on its session; closing it so the peer can reconnect"
            );
            if self.closed_sessions.len() >= CLOSED_SESSIONS_MAX {
                self.closed_sessions.pop_front();
            }
            self.closed_sessions.push_back(session);
            let node_server = self.node_server.clone();
            tokio::spawn(async move {
                let sessions = ractor::call!(node_server, NodeServerMessage::GetSessions);
                match sessions
                    .ok()
                    .and_then(|sessions| sessions.get(&session).cloned())
                {
                    Some(info) => info.actor.stop(Some("peer silent".to_string())),
                    None => tracing::debug!(session, "silent session already gone"),
                }
            });
        }
    }

    /// Sends every peer's queued items as frames.
    fn flush(&mut self) {
        let revision = self.cluster.revision();
        let now = Instant::now();
        let nodes: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.wants_flush())
            .map(|(node, _)| *node)
            .collect();
        for node in nodes {
            if self.faults.drops_to(node) {
                // A cut link: everything queued is lost on the way.
                let lost = self.peer(node).drop_all();
                TransportStatus::count(&self.status.items_dropped_total, lost);
                continue;
            }
            if self.peer(node).gossip_down {
                let dropped = self.peer(node).drop_raft();
                TransportStatus::count(&self.status.items_dropped_total, dropped);
                continue;
            }
            let Some(remote) = self.remote(node) else {
                // No session: Raft messages go (Raft retransmits), the rest waits
                // for the dial in progress, bounded by the outbox.
                let dropped = self.peer(node).drop_raft();
                TransportStatus::count(&self.status.items_dropped_total, dropped);
                continue;
            };
            let (from, instance) = (self.node_id, self.instance);
            let peer = self.peer(node);
            let dropped_before = peer.dropped_total;
            let frames = peer.take_frames(from, instance, revision, now);
            let dropped = peer.dropped_total - dropped_before;
            TransportStatus::count(&self.status.items_dropped_total, dropped);
            for frame in frames {
                if remote.send_message(TransportMsg::Frame(frame)).is_err() {
                    self.remotes.remove(&node);
                    break;
                }
                TransportStatus::count(&self.status.frames_sent_total, 1);
            }
        }
    }

    fn tick(&mut self, myself: &ActorRef<TransportMsg>) {
        let now = Instant::now();
        // Peers from the metadata, so a restarted node redials everyone it knew.
        if let Some(metadata) = self.cluster.metadata() {
            for node in &metadata.nodes {
                if node.id != self.node_id
                    && self
                        .peers
                        .get(&node.id)
                        .and_then(|peer| peer.address.as_ref())
                        != Some(&node.addresses.cluster)
                {
                    self.add_peer(node.id, node.addresses.cluster.clone());
                }
            }
        }
        self.close_silent_sessions(now);
        let nodes: Vec<NodeId> = self.peers.keys().copied().collect();
        for node in &nodes {
            let connected = self.remote(*node).is_some();
            let peer = self.peer(*node);
            if !connected
                && !peer.gossip_down
                && !peer.dial.in_progress
                && now >= peer.dial.next_attempt
            {
                if let Some(address) = peer.address.clone() {
                    peer.dial.in_progress = true;
                    let node_server = self.node_server.clone();
                    let transport = myself.clone();
                    let node = *node;
                    tokio::spawn(async move {
                        let attempt = tokio::time::timeout(
                            Duration::from_secs(2),
                            ractor_cluster::client_connect(&node_server, address.as_str()),
                        )
                        .await;
                        let succeeded = matches!(attempt, Ok(Ok(())));
                        let _ = transport.send_message(TransportMsg::Dialed { node, succeeded });
                    });
                }
            }
        }
        let keepalive = now.duration_since(self.last_keepalive) >= KEEPALIVE_INTERVAL;
        if keepalive {
            self.last_keepalive = now;
        }
        for node in &nodes {
            if self.remotes.contains_key(node) {
                let peer = self.peer(*node);
                peer.owe_pending_acks();
                if keepalive {
                    // An empty item list still carries acks and the revision.
                    peer.queue_keepalive();
                }
            }
        }
        // Calls whose peer went away fail now rather than at their deadline, so a
        // client learns at once that the outcome is unknown and can move on.
        let lost: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(node, peer)| !self.remotes.contains_key(node) || !peer.is_reachable(now))
            .map(|(node, _)| *node)
            .collect();
        let finished: Vec<(u64, CallError)> = self
            .calls
            .iter()
            .filter_map(|(id, call)| {
                if call.deadline <= now || call.reply.is_closed() {
                    Some((*id, CallError::Timeout(call.to)))
                } else if call.fail_fast && lost.contains(&call.to) {
                    Some((*id, CallError::ConnectionLost(call.to)))
                } else {
                    None
                }
            })
            .collect();
        for (id, error) in finished {
            if let Some(call) = self.calls.remove(&id) {
                let _ = call.reply.send(Err(error));
            }
        }
        self.snapshot_streams.retain(|_, acks| !acks.is_closed());
        let statuses = self
            .peers
            .iter()
            .map(|(node, peer)| {
                (
                    *node,
                    PeerStatus {
                        reachable: self.remotes.contains_key(node) && peer.is_reachable(now),
                        frames_in_flight: peer.frames_in_flight() as u64,
                        dropped_total: peer.dropped_total,
                    },
                )
            })
            .collect();
        self.status.publish(statuses);
    }

    /// Handles a frame from a peer.
    fn receive(&mut self, myself: &ActorRef<TransportMsg>, bytes: &[u8]) {
        let frame = match PeerFrame::decode(bytes) {
            Ok(frame) => frame,
            Err(error) => {
                TransportStatus::count(&self.status.frames_rejected_total, 1);
                tracing::warn!(%error, "frame from a peer refused");
                return;
            }
        };
        let from = frame.from;
        if self.faults.drops_from(from) {
            return;
        }
        TransportStatus::count(&self.status.frames_received_total, 1);
        let now = Instant::now();
        let instance = self.instance;
        let restarted = self.peer(from).received(&frame, instance, now);
        if restarted {
            // It may speak through a newer session than the one cached: look again.
            tracing::debug!(peer = from.0, "peer transport (re)started");
            self.remotes.remove(&from);
        }
        self.reconcile_metadata(from, frame.metadata_revision, now);
        // Raft messages go to each replica in one mailbox message per frame.
        let mut raft: BTreeMap<GroupId, Vec<Message>> = BTreeMap::new();
        for item in frame.items {
            match item {
                PeerItem::Raft { group, message } => match message.to_message() {
                    Ok(message) => raft.entry(group).or_default().push(message),
                    Err(error) => {
                        TransportStatus::count(&self.status.frames_rejected_total, 1);
                        tracing::warn!(peer = from.0, %error, "raft message refused");
                    }
                },
                other => self.receive_item(myself, from, other),
            }
        }
        if let Some(inbox) = &self.inbox {
            for (group, messages) in raft {
                inbox.raft(from, group, messages);
            }
        }
    }

    /// Offers our metadata to a peer that is behind, or asks a peer that is ahead.
    fn reconcile_metadata(&mut self, from: NodeId, their_revision: u64, now: Instant) {
        let ours = self.cluster.revision();
        let recently = |at: Option<Instant>| {
            at.is_some_and(|at| now.duration_since(at) < METADATA_RESEND_INTERVAL)
        };
        if their_revision > ours {
            let peer = self.peer(from);
            if !recently(peer.metadata_asked) {
                peer.metadata_asked = Some(now);
                let _ = peer.queue(PeerItem::MetadataWanted, now);
            }
        } else if their_revision < ours {
            let sent_recently = self
                .peer(from)
                .metadata_sent
                .is_some_and(|(revision, at)| revision == ours && recently(Some(at)));
            if !sent_recently {
                self.offer_metadata(from, now);
            }
        }
    }

    fn offer_metadata(&mut self, to: NodeId, now: Instant) {
        if let Some(metadata) = self.cluster.metadata() {
            let peer = self.peer(to);
            peer.metadata_sent = Some((metadata.revision, now));
            let _ = peer.queue(PeerItem::Metadata(Box::new((*metadata).clone())), now);
        }
    }

    fn receive_item(&mut self, myself: &ActorRef<TransportMsg>, from: NodeId, item: PeerItem) {
        match item {
            // Gathered per group by `receive`.
            PeerItem::Raft { .. } => {}
            PeerItem::SnapshotChunk { group, chunk } => match (chunk.into_chunk(), &self.inbox) {
                (Ok(chunk), Some(inbox)) => inbox.snapshot_chunk(from, group, chunk),
                (Ok(_), None) => {}
                (Err(error), _) => {
                    tracing::warn!(peer = from.0, %error, "snapshot chunk refused");
                }
            },
            PeerItem::SnapshotAck {
                stream,
                sequence,
                accepted,
                ..
            } => {
                if let Some(acks) = self.snapshot_streams.get(&stream) {
                    let _ = acks.try_send(SnapshotAck {
                        stream,
                        sequence,
                        accepted,
                    });
                }
            }
            PeerItem::Request {
                id,
                timeout_ms,
                request,
            } => self.execute(myself, from, id, timeout_ms, request),
            PeerItem::Response { id, response } => {
                if let Some(call) = self.calls.remove(&id) {
                    let _ = call.reply.send(Ok(response));
                }
            }
            PeerItem::Metadata(metadata) => {
                let addresses: Vec<(NodeId, String)> = metadata
                    .nodes
                    .iter()
                    .map(|node| (node.id, node.addresses.cluster.clone()))
                    .collect();
                match self.cluster.install(*metadata) {
                    Ok(true) => {
                        for (node, address) in addresses {
                            self.add_peer(node, address);
                        }
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(peer = from.0, %error, "cluster metadata refused");
                    }
                }
            }
            PeerItem::MetadataWanted => self.offer_metadata(from, Instant::now()),
        }
    }

    /// Executes a peer's request and queues the answer when it is ready.
    fn execute(
        &mut self,
        myself: &ActorRef<TransportMsg>,
        from: NodeId,
        id: u64,
        timeout_ms: u32,
        request: PeerRequest,
    ) {
        if let PeerRequest::Join { node } = &request {
            // The joiner dialed in; remember where it listens, to answer it and dial
            // it later. The Router registers it with the metadata group.
            self.add_peer(from, node.addresses.cluster.clone());
        }
        let Some(inbox) = self.inbox.clone() else {
            let response = PeerResponse::Failed(KvError::NotLeader {
                shard: crate::ids::ShardId(0),
                hint: None,
            });
            self.queue(from, PeerItem::Response { id, response });
            return;
        };
        let running = Arc::clone(&self.requests_running);
        if running.fetch_add(1, Ordering::AcqRel) >= REQUESTS_RUNNING_MAX {
            running.fetch_sub(1, Ordering::AcqRel);
            let response = PeerResponse::Failed(KvError::Unavailable {
                shard: crate::ids::ShardId(0),
                reason: "too many forwarded requests in flight on this node".into(),
                retry_after_ms: 100,
            });
            self.queue(from, PeerItem::Response { id, response });
            return;
        }
        let transport = myself.clone();
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        tokio::spawn(async move {
            let response = inbox.request(from, request, timeout).await;
            running.fetch_sub(1, Ordering::AcqRel);
            let _ = transport.send_message(TransportMsg::Respond {
                to: from,
                id,
                response,
            });
        });
    }
}

//! The Membership actor: SWIM (foca) on the node's gossip UDP socket (DESIGN §6).
//!
//! It owns the foca instance and the only writes to the socket. A receive task
//! reads datagrams: seed probes are answered on the spot (`seed_probe`), every
//! other datagram must be an authentic packet (`packet`) or it is dropped and
//! counted before any of it is parsed; authentic payloads come to the actor. foca's
//! timer events go through one ordered timer task (`timer`). After every step the
//! actor publishes the member states (`status`) and tells the Transport about
//! changes: a member that comes up is dialed at once, one declared down is hung up
//! on (its traffic is dropped and calls to it fail at once) until it is back.
//!
//! Who is announced to: every node registered in the cluster metadata that gossip
//! does not currently count as alive, every announce interval. A joined node
//! therefore finds the cluster through the metadata it got when joining, a
//! restarted node through its persisted copy, and a node that was declared down
//! (after a pause, say) is told so by the first member it talks to, renews its
//! identity with the next incarnation and rejoins (`identity`).
//!
//! On graceful shutdown the node leaves: foca tells its peers, which then see it
//! down at once instead of after the suspicion timeout.

use super::identity::MemberIdentity;
use super::packet::{PacketKey, PAYLOAD_BYTES_MAX};
use super::seed_probe;
use super::status::{GossipState, MemberView, MembershipStatus};
use super::timer::{self, TimerHandle};
use crate::faults::NetworkFaults;
use crate::ids::NodeId;
use crate::metadata::NodeState;
use crate::node::cluster_state::ClusterState;
use crate::node::registry::TransportSlot;
use crate::transport::TransportMsg;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// Failure detection timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GossipTiming {
    /// How often a random member is probed.
    pub probe_interval: Duration,
    /// How long a direct probe may take before others are asked to probe.
    pub probe_timeout: Duration,
    /// How long a suspect member has to refute before it is declared down.
    pub suspect_timeout: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self {
        GossipTiming {
            probe_interval: Duration::from_millis(1_000),
            probe_timeout: Duration::from_millis(500),
            suspect_timeout: Duration::from_millis(3_000),
        }
    }
}

impl GossipTiming {
    /// Checks the relations foca needs.
    pub fn validate(&self) -> Result<(), String> {
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return Err(
                "the gossip probe timeout must be above 0 and below the probe interval".into(),
            );
        }
        if self.suspect_timeout.is_zero() {
            return Err("the gossip suspect timeout must be above 0".into());
        }
        Ok(())
    }

    /// How long a stopped member of a small cluster stays undetected, at most: each
    /// member probes every other once per (n − 1) intervals (in a shuffled round),
    /// a probe fails one interval after it was sent, and then the suspicion must
    /// time out. Used in the docs and the tests as the bound.
    pub fn detection_bound(&self, nodes: u32) -> Duration {
        self.probe_interval * nodes.max(2) + self.suspect_timeout
    }

    fn foca_config(&self) -> foca::Config {
        let mut config = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(2));
        config.probe_period = self.probe_interval;
        config.probe_rtt = self.probe_timeout;
        config.suspect_to_down_after = self.suspect_timeout;
        config.max_packet_size = NonZeroUsize::new(PAYLOAD_BYTES_MAX).unwrap_or(NonZeroUsize::MIN);
        config.notify_down_members = true;
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: (self.probe_interval / 5).max(Duration::from_millis(20)),
            num_members: NonZeroUsize::MIN.saturating_add(2),
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.probe_interval * 10,
            num_members: NonZeroUsize::MIN.saturating_add(1),
        });
        config
    }
}

pub enum MembershipMsg {
    /// The payload of an authentic packet.
    Packet(Vec<u8>),
    /// A foca timer came due.
    Timer(Timer<MemberIdentity>),
    /// Announce to registered nodes not known to be alive.
    Announce,
    /// Leave the cluster (graceful shutdown); answers once the leave is sent.
    Leave(oneshot::Sender<()>),
}

impl ractor::Message for MembershipMsg {}

#[derive(Clone)]
pub struct MembershipArgs {
    pub identity: MemberIdentity,
    pub socket: Arc<UdpSocket>,
    pub key: PacketKey,
    pub timing: GossipTiming,
    /// What a seed probe is answered with.
    pub probe_reply: seed_probe::ProbeReply,
    pub cluster: Arc<ClusterState>,
    pub transport: TransportSlot,
    pub status: Arc<MembershipStatus>,
    /// The fault hook: peers whose gossip is dropped (tests and chaos only).
    pub faults: Arc<NetworkFaults>,
}

type Swim = Foca<MemberIdentity, PostcardCodec, foca_rand::rngs::StdRng, NoCustomBroadcast>;

pub struct MembershipState {
    foca: Swim,
    runtime: AccumulatingRuntime<MemberIdentity>,
    socket: Arc<UdpSocket>,
    key: PacketKey,
    timers: TimerHandle<Timer<MemberIdentity>>,
    cluster: Arc<ClusterState>,
    transport: TransportSlot,
    status: Arc<MembershipStatus>,
    faults: Arc<NetworkFaults>,
    members: BTreeMap<NodeId, MemberView>,
    /// Gossip addresses as parsed once.
    resolved: HashMap<String, Option<SocketAddr>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    left: bool,
}

pub struct MembershipActor;

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.timing.validate()?;
        let seed: u64 = rand::random();
        let rng = <foca_rand::rngs::StdRng as foca_rand::SeedableRng>::seed_from_u64(seed);
        let incarnation = args.identity.incarnation;
        let foca = Foca::new(args.identity, args.timing.foca_config(), rng, PostcardCodec);
        let timer_target = myself.clone();
        let (timers, timer_task) = timer::spawn(move |event| {
            timer_target
                .send_message(MembershipMsg::Timer(event))
                .is_ok()
        });
        let receiver = tokio::spawn(receive(
            Arc::clone(&args.socket),
            args.key.clone(),
            seed_probe::reply_body(&args.probe_reply),
            Arc::clone(&args.status),
            Arc::clone(&args.faults),
            myself.clone(),
        ));
        let announce_target = myself.clone();
        let announce_every = args.timing.probe_interval * 2;
        let announcer = tokio::spawn(async move {
            let mut interval = tokio::time::interval(announce_every);
            loop {
                interval.tick().await;
                if announce_target
                    .send_message(MembershipMsg::Announce)
                    .is_err()
                {
                    return;
                }
            }
        });
        args.status.publish(BTreeMap::new(), incarnation);
        Ok(MembershipState {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket: args.socket,
            key: args.key,
            timers,
            cluster: args.cluster,
            transport: args.transport,
            status: args.status,
            faults: args.faults,
            members: BTreeMap::new(),
            resolved: HashMap::new(),
            tasks: vec![timer_task, receiver, announcer],
            left: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in &state.tasks {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.left {
            if let MembershipMsg::Leave(done) = message {
                let _ = done.send(());
            }
            return Ok(());
        }
        let outcome = match message {
            MembershipMsg::Packet(payload) => {
                let outcome = state.foca.handle_data(&payload, &mut state.runtime);
                if let Err(error) = &outcome {
                    state
                        .status
                        .packets_invalid_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "gossip packet not used");
                }
                Ok(())
            }
            MembershipMsg::Timer(event) => state.foca.handle_timer(event, &mut state.runtime),
            MembershipMsg::Announce => {
                announce(state);
                Ok(())
            }
            MembershipMsg::Leave(done) => {
                let outcome = state.foca.leave_cluster(&mut state.runtime);
                state.left = true;
                drain(state);
                let _ = done.send(());
                return outcome.map_err(|error| error.to_string().into());
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "gossip step failed");
        }
        drain(state);
        Ok(())
    }
}

/// Reads the gossip socket until aborted.
async fn receive(
    socket: Arc<UdpSocket>,
    key: PacketKey,
    probe_body: Vec<u8>,
    status: Arc<MembershipStatus>,
    faults: Arc<NetworkFaults>,
    membership: ActorRef<MembershipMsg>,
) {
    // One byte more than the largest packet, so an oversized one is seen as such.
    let mut buffer = vec![0u8; super::packet::PACKET_BYTES_MAX + 1];
    loop {
        let Ok((length, from)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if faults.drops_gossip_from(from) {
            continue;
        }
        let datagram = &buffer[..length];
        if seed_probe::is_probe(datagram) {
            if let Some(answer) = seed_probe::answer(datagram, &probe_body) {
                let _ = socket.send_to(&answer, from).await;
            }
            continue;
        }
        status
            .packets_received_total
            .fetch_add(1, Ordering::Relaxed);
        match key.open(datagram) {
            Ok(payload) => {
                if membership
                    .send_message(MembershipMsg::Packet(payload.to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                status
                    .packets_rejected_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, %error, "gossip packet rejected");
            }
        }
    }
}

/// Announces to every registered node that gossip does not count as alive.
fn announce(state: &mut MembershipState) {
    let Some(metadata) = state.cluster.metadata() else {
        return;
    };
    let me = foca::Identity::addr(state.foca.identity());
    for node in &metadata.nodes {
        if node.id == me || node.state == NodeState::Removed {
            continue;
        }
        let alive = state
            .members
            .get(&node.id)
            .is_some_and(|member| member.state != GossipState::Down);
        if alive {
            continue;
        }
        // The incarnation is unknown here; foca only uses the address to send, and
        // learns the real identity from the answer.
        let target = MemberIdentity {
            node: node.id,
            addresses: node.addresses.clone(),
            incarnation: 0,
        };
        if let Err(error) = state.foca.announce(target, &mut state.runtime) {
            tracing::debug!(node = node.id.0, %error, "gossip announce failed");
        }
    }
}

/// Sends, schedules and reacts to what the last foca step produced, then publishes
/// the member states and tells the Transport what changed.
fn drain(state: &mut MembershipState) {
    while let Some((to, data)) = state.runtime.to_send() {
        send(state, &to, &data);
    }
    while let Some((after, event)) = state.runtime.to_schedule() {
        state.timers.schedule(event, after);
    }
    while let Some(notification) = state.runtime.to_notify() {
        match notification {
            OwnedNotification::Rejoin(identity) => tracing::info!(
                incarnation = identity.incarnation,
                "declared down by the cluster; rejoined with a new incarnation"
            ),
            OwnedNotification::Defunct => {
                tracing::warn!("declared down by the cluster and cannot renew the identity")
            }
            OwnedNotification::Idle => tracing::info!("no other gossip member is alive"),
            _ => {}
        }
    }
    publish(state);
}

fn send(state: &mut MembershipState, to: &MemberIdentity, data: &[u8]) {
    if state.faults.drops_to(to.node) {
        return;
    }
    let gossip = &to.addresses.gossip;
    let address = *state
        .resolved
        .entry(gossip.clone())
        .or_insert_with(|| gossip.parse().ok());
    let Some(address) = address else {
        tracing::debug!(node = to.node.0, %gossip, "no usable gossip address");
        return;
    };
    let packet = match state.key.seal(data) {
        Ok(packet) => packet,
        Err(error) => {
            tracing::warn!(%error, "gossip payload too large to send");
            return;
        }
    };
    // A full socket buffer loses the datagram, as the network might: SWIM copes.
    if state.socket.try_send_to(&packet, address).is_ok() {
        state
            .status
            .packets_sent_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

fn publish(state: &mut MembershipState) {
    let now = Instant::now();
    let mut members = BTreeMap::new();
    for member in state.foca.iter_membership_state() {
        let identity = member.id().clone();
        let gossip_state = match member.state() {
            foca::State::Alive => GossipState::Alive,
            foca::State::Suspect => GossipState::Suspect,
            foca::State::Down => GossipState::Down,
        };
        let previous = state.members.get(&identity.node);
        let unchanged = previous.is_some_and(|previous| {
            previous.state == gossip_state && previous.identity.incarnation == identity.incarnation
        });
        let since = match previous {
            Some(previous) if unchanged => previous.since,
            _ => now,
        };
        if !unchanged {
            report_change(state, previous, &identity, gossip_state);
        }
        members.insert(
            identity.node,
            MemberView {
                identity,
                state: gossip_state,
                since,
            },
        );
    }
    let incarnation = state.foca.identity().incarnation;
    if members != state.members || state.status.incarnation() != incarnation {
        state.status.publish(members.clone(), incarnation);
        state.members = members;
    }
}

fn report_change(
    state: &MembershipState,
    previous: Option<&MemberView>,
    identity: &MemberIdentity,
    now: GossipState,
) {
    let node = identity.node;
    let was_active = previous.is_some_and(|previous| previous.state != GossipState::Down);
    match now {
        GossipState::Suspect => {
            tracing::info!(node = node.0, "member suspected");
        }
        GossipState::Alive if previous.is_some_and(|p| p.state == GossipState::Suspect) => {
            tracing::info!(node = node.0, "member refuted the suspicion");
        }
        GossipState::Alive => {
            tracing::info!(
                node = node.0,
                incarnation = identity.incarnation,
                "member up"
            );
            if let Some(transport) = state.transport.get() {
                let _ = transport.send_message(TransportMsg::MemberUp {
                    node,
                    address: identity.addresses.cluster.clone(),
                });
            }
        }
        GossipState::Down => {
            if was_active || previous.is_none() {
                tracing::info!(node = node.0, "member down");
            }
            if let Some(transport) = state.transport.get() {
                let _ = transport.send_message(TransportMsg::MemberDown { node });
            }
        }
    }
}

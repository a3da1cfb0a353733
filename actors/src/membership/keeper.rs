//! Keeps the Membership actor running: if it dies (a panic, a kill), it is started
//! again on the same socket after a short delay that doubles up to 2 s, with a
//! higher incarnation, since its gossip state is gone and its peers must see a new
//! life rather than refute old news. Without this a node whose gossip stopped
//! would soon be declared down by everyone else and cut off.

use super::actor::{MembershipActor, MembershipArgs, MembershipMsg};
use crate::node::registry::ActorCellSlot;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const RESTART_DELAY_MIN: Duration = Duration::from_millis(20);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(2);
/// How long a graceful leave may take at shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The running Membership actor and what restarts it.
pub struct MembershipKeeper {
    actor: Arc<ActorCellSlot<MembershipMsg>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MembershipKeeper {
    /// Starts the actor with `args`; fails only when the first start fails.
    pub async fn start(args: MembershipArgs) -> Result<MembershipKeeper, String> {
        let (first, handle) = Actor::spawn(None, MembershipActor, args.clone())
            .await
            .map_err(|error| error.to_string())?;
        let actor = Arc::new(ActorCellSlot::default());
        actor.set(Some(first));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(keep(Arc::clone(&actor), args, handle, stopped));
        Ok(MembershipKeeper { actor, stop, task })
    }

    /// The slot holding the actor running now (empty while it restarts).
    pub fn slot(&self) -> Arc<ActorCellSlot<MembershipMsg>> {
        Arc::clone(&self.actor)
    }

    /// The actor running now, if any.
    pub fn actor(&self) -> Option<ActorRef<MembershipMsg>> {
        self.actor.get()
    }

    /// Leaves the cluster (peers see this node down at once) and stops.
    pub async fn leave_and_stop(self) {
        let _ = self.stop.send(true);
        if let Some(actor) = self.actor.get() {
            let (left, done) = oneshot::channel();
            if actor.send_message(MembershipMsg::Leave(left)).is_ok() {
                let _ = tokio::time::timeout(LEAVE_TIMEOUT, done).await;
            }
            actor.stop(None);
        }
        let _ = self.task.await;
    }
}

async fn keep(
    slot: Arc<ActorCellSlot<MembershipMsg>>,
    mut args: MembershipArgs,
    mut handle: tokio::task::JoinHandle<()>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut delay = RESTART_DELAY_MIN;
    loop {
        tokio::select! {
            _ = &mut handle => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        slot.set(None);
        tracing::warn!("the membership actor stopped; starting it again");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return,
        }
        delay = (delay * 2).min(RESTART_DELAY_MAX);
        args.identity.incarnation = args
            .identity
            .incarnation
            .saturating_add(1)
            .max(super::life_incarnation());
        match Actor::spawn(None, MembershipActor, args.clone()).await {
            Ok((actor, next)) => {
                slot.set(Some(actor));
                handle = next;
            }
            Err(error) => {
                tracing::error!(%error, "the membership actor did not start; retrying");
                handle = tokio::spawn(async {});
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::kv::NodeAddresses;
    use crate::membership::actor::GossipTiming;
    use crate::membership::identity::MemberIdentity;
    use crate::membership::packet::PacketKey;
    use crate::membership::seed_probe::ProbeReply;
    use crate::membership::status::MembershipStatus;
    use crate::node::cluster_state::ClusterState;

    /// Proves a killed Membership actor is replaced by a new one with a higher
    /// incarnation on the same socket (it still answers seed probes), and that a
    /// stop does not restart it.
    #[tokio::test]
    async fn a_killed_actor_comes_back_with_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let gossip = socket.local_addr().unwrap().to_string();
        let status = Arc::new(MembershipStatus::default());
        let args = MembershipArgs {
            identity: MemberIdentity {
                node: NodeId(1),
                addresses: NodeAddresses {
                    gossip: gossip.clone(),
                    ..Default::default()
                },
                incarnation: 5,
            },
            socket,
            key: PacketKey::new(Some("secret")),
            timing: GossipTiming::default(),
            probe_reply: ProbeReply {
                node_id: NodeId(1),
                cluster: "127.0.0.1:1".into(),
            },
            cluster: Arc::new(ClusterState::open(dir.path()).unwrap()),
            transport: Default::default(),
            status: Arc::clone(&status),
            faults: Default::default(),
        };
        let keeper = MembershipKeeper::start(args).await.unwrap();
        assert_eq!(status.stats().incarnation, 5);
        let first = keeper.actor().unwrap();
        first.kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let replaced = loop {
            if let Some(actor) = keeper.actor() {
                if actor.get_id() != first.get_id() && status.stats().incarnation > 5 {
                    break actor;
                }
            }
            assert!(std::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let probe = crate::membership::seed_probe::probe(&gossip, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(probe.node_id, NodeId(1));
        keeper.leave_and_stop().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            replaced.get_status(),
            ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping
        ));
    }
}

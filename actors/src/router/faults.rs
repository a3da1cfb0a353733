//! Fault injection through the router: killing a node's actors and cutting its links
//! to chosen peers. Served only when the node runs with fault injection enabled
//! (tests and the chaos runner); otherwise refused with `InvalidInput`.

use super::Router;
use crate::faults::{ActorTarget, FaultRules};
use crate::ids::NodeId;
use crate::kv::KvError;
use std::collections::BTreeSet;
use std::net::SocketAddr;

impl Router {
    fn require_fault_injection(&self) -> Result<(), KvError> {
        if self.context().fault_injection {
            Ok(())
        } else {
            Err(KvError::InvalidInput(
                "fault injection is disabled on this node (setting fault_injection)".into(),
            ))
        }
    }

    /// Kills one of this node's actors; whatever supervises it starts it again.
    pub fn kill_actor(&self, target: ActorTarget) -> Result<(), KvError> {
        self.require_fault_injection()?;
        match target {
            ActorTarget::ShardReplica { shard } => self.kill_shard_replica(shard),
            ActorTarget::Membership => kill(
                self.context()
                    .membership_actor
                    .get()
                    .map(|actor| actor.get_cell()),
                "the membership actor",
            ),
            ActorTarget::Transport => kill(
                self.context()
                    .registry
                    .transport()
                    .map(|actor| actor.get_cell()),
                "the transport",
            ),
        }
    }

    /// Replaces this node's fault rules: from now on nothing it sends reaches the
    /// nodes in `drop_to`, and it ignores what the nodes in `drop_from` send.
    /// Empty lists heal every cut link.
    pub fn set_network_faults(
        &self,
        drop_to: BTreeSet<NodeId>,
        drop_from: BTreeSet<NodeId>,
    ) -> Result<(), KvError> {
        self.require_fault_injection()?;
        let mut gossip_drop_from = BTreeSet::new();
        if !drop_from.is_empty() {
            let metadata = self.context().cluster.metadata().ok_or_else(|| {
                KvError::InvalidInput("this node has no cluster metadata yet".into())
            })?;
            for node in &drop_from {
                let record = metadata
                    .nodes
                    .iter()
                    .find(|record| record.id == *node)
                    .ok_or_else(|| {
                        KvError::InvalidInput(format!("no node {node} in the cluster"))
                    })?;
                let address: SocketAddr = record.addresses.gossip.parse().map_err(|_| {
                    KvError::InvalidInput(format!(
                        "node {node} has no usable gossip address ({:?})",
                        record.addresses.gossip
                    ))
                })?;
                gossip_drop_from.insert(address);
            }
        }
        tracing::warn!(?drop_to, ?drop_from, "network fault rules set");
        self.context().faults.set(FaultRules {
            drop_to,
            drop_from,
            gossip_drop_from,
        });
        Ok(())
    }
}

/// Kills `actor`, or says it is being restarted (its slot is empty meanwhile).
fn kill(actor: Option<ractor::ActorCell>, name: &str) -> Result<(), KvError> {
    let actor =
        actor.ok_or_else(|| KvError::InvalidInput(format!("{name} is restarting; try again")))?;
    actor.kill();
    Ok(())
}

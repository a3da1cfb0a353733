//! `NetworkFaults`: the fault hook that lets a test or the chaos runner cut this node
//! off from chosen peers without touching the host's network.
//!
//! The Transport drops every frame towards a node in `drop_to` and every frame
//! received from a node in `drop_from`; the Membership actor does the same with
//! gossip packets (by the peers' gossip addresses, since a datagram names only its
//! source address). Dropping both directions on both sides is a symmetric partition;
//! one direction only is a one-way partition. Nothing else changes: sessions stay
//! open, and clients still reach the node's gateway and admin port, as when a switch
//! between nodes fails.
//!
//! Who talks to it: the router sets it (the admin `SetNetworkFaults` request, only
//! when the node runs with fault injection enabled); the Transport and Membership
//! read it on every frame and packet, through one atomic load while no fault is set.

use crate::ids::{NodeId, ShardId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

/// An actor of a node that fault injection may kill; its supervisor (or, for
/// Membership, its keeper) starts it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorTarget {
    /// The local replica of a shard; it recovers from the WAL and sled.
    ShardReplica { shard: ShardId },
    /// The gossip actor; it comes back with a higher incarnation.
    Membership,
    /// The Transport; peers see a new instance and restart their sequences.
    Transport,
}

/// Which peers this node cannot reach or hear right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultRules {
    /// Peers this node's frames and gossip packets never reach.
    pub drop_to: BTreeSet<NodeId>,
    /// Peers whose frames this node discards on arrival.
    pub drop_from: BTreeSet<NodeId>,
    /// The gossip addresses of `drop_from`, resolved when the rules were set.
    pub gossip_drop_from: BTreeSet<SocketAddr>,
}

impl FaultRules {
    /// Whether no traffic is dropped.
    pub fn is_empty(&self) -> bool {
        self.drop_to.is_empty() && self.drop_from.is_empty() && self.gossip_drop_from.is_empty()
    }
}

/// The node's current fault rules and what they dropped.
#[derive(Debug, Default)]
pub struct NetworkFaults {
    /// Set while any rule is in place, so the common case costs one atomic load.
    active: AtomicBool,
    rules: RwLock<FaultRules>,
    /// Frames and packets dropped by the rules since the node started.
    pub dropped_total: AtomicU64,
}

impl NetworkFaults {
    /// Replaces the rules; empty rules heal every fault.
    pub fn set(&self, rules: FaultRules) {
        let active = !rules.is_empty();
        if let Ok(mut current) = self.rules.write() {
            *current = rules;
        }
        self.active.store(active, Ordering::SeqCst);
    }

    /// The rules in place.
    pub fn rules(&self) -> FaultRules {
        self.rules
            .read()
            .map(|rules| rules.clone())
            .unwrap_or_default()
    }

    /// Whether traffic towards `node` is dropped; counts the drop.
    pub fn drops_to(&self, node: NodeId) -> bool {
        self.check(|rules| rules.drop_to.contains(&node))
    }

    /// Whether traffic from `node` is dropped; counts the drop.
    pub fn drops_from(&self, node: NodeId) -> bool {
        self.check(|rules| rules.drop_from.contains(&node))
    }

    /// Whether a gossip packet from `address` is dropped; counts the drop.
    pub fn drops_gossip_from(&self, address: SocketAddr) -> bool {
        self.check(|rules| rules.gossip_drop_from.contains(&address))
    }

    fn check(&self, rule: impl Fn(&FaultRules) -> bool) -> bool {
        if !self.active.load(Ordering::Relaxed) {
            return false;
        }
        let dropped = self.rules.read().map(|rules| rule(&rules)).unwrap_or(false);
        if dropped {
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves rules apply per direction and per peer, count what they drop, and
    /// that setting empty rules heals everything.
    #[test]
    fn rules_drop_per_direction_and_heal() {
        let faults = NetworkFaults::default();
        assert!(!faults.drops_to(NodeId(2)));
        let gossip: SocketAddr = "127.0.0.1:7003".parse().expect("address");
        faults.set(FaultRules {
            drop_to: [NodeId(2)].into(),
            drop_from: [NodeId(3)].into(),
            gossip_drop_from: [gossip].into(),
        });
        assert!(faults.drops_to(NodeId(2)));
        assert!(!faults.drops_from(NodeId(2)));
        assert!(faults.drops_from(NodeId(3)));
        assert!(!faults.drops_to(NodeId(3)));
        assert!(faults.drops_gossip_from(gossip));
        assert_eq!(faults.dropped_total.load(Ordering::Relaxed), 3);
        faults.set(FaultRules::default());
        assert!(!faults.drops_to(NodeId(2)));
        assert!(!faults.drops_from(NodeId(3)));
        assert!(!faults.drops_gossip_from(gossip));
        assert_eq!(faults.rules(), FaultRules::default());
    }
}

//! What the Membership actor publishes for everyone else: each other member's
//! gossip state (alive, suspect, down) with the identity it was last seen with and
//! since when, and the packet counters. Readers (cluster views, the rebalancer's
//! death detection) take a copy; only the actor writes.

use super::identity::MemberIdentity;
use crate::ids::NodeId;
use crate::kv::GossipStats;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Instant;

/// A member's state as SWIM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GossipState {
    Alive,
    /// Missed a probe; still counted as active until the suspicion times out.
    Suspect,
    Down,
}

impl GossipState {
    /// The name shown in cluster views.
    pub fn as_str(self) -> &'static str {
        match self {
            GossipState::Alive => "alive",
            GossipState::Suspect => "suspect",
            GossipState::Down => "down",
        }
    }
}

/// One other member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub identity: MemberIdentity,
    pub state: GossipState,
    /// When this node saw the state (or the incarnation) change last.
    pub since: Instant,
}

/// Shared between the Membership actor and its readers.
#[derive(Debug, Default)]
pub struct MembershipStatus {
    members: RwLock<BTreeMap<NodeId, MemberView>>,
    incarnation: AtomicU64,
    pub packets_sent_total: AtomicU64,
    pub packets_received_total: AtomicU64,
    pub packets_rejected_total: AtomicU64,
    pub packets_invalid_total: AtomicU64,
}

impl MembershipStatus {
    /// Every other member this node knows of.
    pub fn members(&self) -> BTreeMap<NodeId, MemberView> {
        self.members
            .read()
            .map(|members| members.clone())
            .unwrap_or_default()
    }

    /// One member, if known.
    pub fn member(&self, node: NodeId) -> Option<MemberView> {
        self.members
            .read()
            .ok()
            .and_then(|members| members.get(&node).cloned())
    }

    /// This node's own incarnation as last published.
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Relaxed)
    }

    pub(crate) fn publish(&self, members: BTreeMap<NodeId, MemberView>, incarnation: u64) {
        if let Ok(mut current) = self.members.write() {
            *current = members;
        }
        self.incarnation.store(incarnation, Ordering::Relaxed);
    }

    /// The counters and member counts.
    pub fn stats(&self) -> GossipStats {
        let members = self.members();
        let count = |state: GossipState| {
            members
                .values()
                .filter(|member| member.state == state)
                .count() as u32
        };
        GossipStats {
            incarnation: self.incarnation.load(Ordering::Relaxed),
            members_alive: count(GossipState::Alive),
            members_suspect: count(GossipState::Suspect),
            members_down: count(GossipState::Down),
            packets_sent_total: self.packets_sent_total.load(Ordering::Relaxed),
            packets_received_total: self.packets_received_total.load(Ordering::Relaxed),
            packets_rejected_total: self.packets_rejected_total.load(Ordering::Relaxed),
            packets_invalid_total: self.packets_invalid_total.load(Ordering::Relaxed),
        }
    }
}

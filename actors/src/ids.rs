//! Identifiers and counters shared by every layer.
//!
//! Each id is a newtype over a fixed-width integer so that a shard id can never be
//! passed where a node id is expected, and so that nothing platform-sized (`usize`)
//! reaches the wire or the disk.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the cluster. Node ids are chosen by the operator and never reused.
/// Zero is reserved (raft-rs uses it for "no node").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

/// A shard: `hash(key) mod shard_count`. The shard count is fixed at bootstrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

/// A Raft group hosted by the node's WAL. Shard groups use the shard id; ids at or
/// above [`GroupId::FIRST_SYSTEM`] are reserved for system groups (the metadata group).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct GroupId(pub u64);

/// The revision of a key: the Raft index of the entry that last wrote it.
/// Revisions of one shard grow strictly; revision 0 never names a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl GroupId {
    /// The first id that does not belong to a shard.
    pub const FIRST_SYSTEM: u64 = 1 << 32;

    /// The Raft group of a shard.
    pub fn shard(shard: ShardId) -> GroupId {
        GroupId(u64::from(shard.0))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

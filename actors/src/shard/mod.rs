//! Shard replicas: one actor per shard replica hosted on the node, each owning a
//! raft-rs `RawNode` and the shard's sled tree; `membership` decides how the leader
//! moves the group towards the placement table.

pub mod actor;
pub mod gauges;
pub mod membership;
pub mod replica;

pub use actor::{ShardReplicaActor, ShardReplicaArgs, ShardReplicaMsg};
pub use gauges::ShardGauges;
pub use replica::{Bootstrap, ReplicaOptions, ReplicaParts, ShardReplica};

//! Shard replicas: one actor per shard replica hosted on the node, each owning a
//! raft-rs `RawNode` and the shard's sled tree.

pub mod actor;
pub mod gauges;
pub mod replica;

pub use actor::{ShardReplicaActor, ShardReplicaArgs, ShardReplicaMsg};
pub use gauges::ShardGauges;
pub use replica::{ReplicaOptions, ShardReplica};

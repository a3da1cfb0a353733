//! Membership: how nodes find each other. Until SWIM gossip over foca arrives
//! (TODO(#4)), the gossip socket only answers probes (`seed_probe`): a node started
//! with `--join` asks a seed's gossip address where its cluster listener is, then
//! joins over the cluster connection.

pub mod packet;
pub mod seed_probe;

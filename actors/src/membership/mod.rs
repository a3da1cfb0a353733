//! Membership: how nodes find each other. Until SWIM gossip over foca arrives
//! (TODO(#4)), the gossip socket only answers probes (`seed_probe`): a node started
//! with `--join` asks a seed's gossip address where its cluster listener is, then
//! joins over the cluster connection. The pieces SWIM will use are built and tested
//! but not wired: the identity foca gossips (`identity`) and the authenticated packet
//! around each gossip payload (`packet`).

pub mod identity;
pub mod packet;
pub mod seed_probe;

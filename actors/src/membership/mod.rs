//! Membership: how nodes find and watch each other. SWIM gossip over foca runs in
//! the Membership actor (`actor`) on the gossip UDP socket, with the identity it
//! gossips (`identity`), the authenticated packet around each payload (`packet`),
//! its ordered timer task (`timer`) and the member states it publishes (`status`).
//! The same socket answers seed probes (`seed_probe`): a node started with `--join`
//! asks a seed's gossip address where its cluster listener is, then joins over the
//! cluster connection.

pub mod actor;
pub mod identity;
pub mod packet;
pub mod seed_probe;
pub mod status;
pub mod timer;

//! Membership: how nodes find and watch each other. SWIM gossip over foca runs in
//! the Membership actor (`actor`) on the gossip UDP socket, with the identity it
//! gossips (`identity`), the authenticated packet around each payload (`packet`),
//! its ordered timer task (`timer`) and the member states it publishes (`status`);
//! `keeper` starts it again if it dies.
//! The same socket answers seed probes (`seed_probe`): a node started with `--join`
//! asks a seed's gossip address where its cluster listener is, then joins over the
//! cluster connection.

pub mod actor;
pub mod identity;
pub mod keeper;
pub mod packet;
pub mod seed_probe;
pub mod status;
pub mod timer;

/// The gossip incarnation of this life of the node: milliseconds since the Unix
/// epoch, so every restart announces a higher one than any earlier life (which
/// renewed its incarnation by one per rejoin, far fewer than a millisecond each).
pub fn life_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_millis() as u64)
        .max(1)
}

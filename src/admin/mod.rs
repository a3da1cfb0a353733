//! The admin TCP interface: a plain-TCP, length-prefixed MessagePack protocol
//! (no gRPC) for `dbctl`, the chaos runner and tests.
//!
//! - [`protocol`]: frames and the versioned request/response enums (the wire contract).
//! - [`server`]: the listener `mimorid` runs; it reaches the kernel only through the
//!   `Router`.
//! - [`client`]: a typed client for one session with one node.

pub mod client;
pub mod protocol;
pub mod server;

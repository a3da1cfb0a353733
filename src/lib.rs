//! `mimori`: the edges of a Mimori node. The HTTP gateway, the admin TCP server and
//! client, config, and the `mimorid` and `dbctl` binaries. The edges reach the
//! kernel (`mimori-actors`) only through its `Router`.

pub mod admin;
pub mod bench;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dbctl;
pub mod demo;
pub mod error_code;
pub mod gateway;
pub mod logs;
pub mod ports;

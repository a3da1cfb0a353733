//! `mimori`: the edges of a Mimori node. The HTTP gateway, the admin TCP server and
//! client, config, and the `mimorid` and `dbctl` binaries. The edges reach the
//! kernel (`mimori-actors`) only through its `Router`.

pub mod error_code;

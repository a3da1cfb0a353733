//! `mimori-actors`: Mimori's kernel.
//!
//! Everything with consistency semantics lives here: ids, wire and disk formats, the
//! Raft shard replicas and their actors, the node's write-ahead log and the sled state
//! machine. There is no HTTP, CLI, config parsing or metrics exporter here; the edges
//! in the `mimori` crate reach the kernel only through a [`router::Router`].

pub mod ids;
pub mod kv;
pub mod router;
pub mod storage;
pub mod node;

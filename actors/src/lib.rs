//! `mimori-actors`: Mimori's kernel.
//!
//! Everything with consistency semantics lives here: ids, wire and disk formats, the
//! Raft shard replicas and their actors, the node's write-ahead log and the sled state
//! machine. There is no HTTP, CLI, config parsing or metrics exporter here; the edges
//! in the `mimori` crate reach the kernel only through a [`router::Router`].
//!
//! Layering, bottom up: `ids`, `kv`, `command`, `docs`, `metadata`, `faults` → `storage` →
//! `log_writer`, `shard`, `ticker`, `transport`, `membership` → `node` (supervision
//! tree, joining, checkpointer) → `router`.

pub mod command;
pub mod docs;
pub mod faults;
pub mod ids;
pub mod kv;
pub mod log_writer;
pub mod membership;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod router;
pub mod shard;
pub mod storage;
pub mod ticker;
pub mod transport;

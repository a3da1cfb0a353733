//! The LogWriter: group commit for every Raft group of the node.
//!
//! Shard replicas send it what each Ready must make durable; its thread gathers
//! whatever arrived while the previous `fdatasync` ran into one batch, writes it and
//! syncs once (`writer::WalWriter`), then calls each write's completion. The batch
//! size grows with load on its own: the more writes arrive during one sync, the more
//! the next sync covers.

pub mod actor;
pub mod thread;
pub mod writer;

pub use actor::{job_queue, LogWriterActor, LogWriterArgs, LogWriterHandle, LogWriterMsg};
pub use thread::DurableCallback;
pub use thread::WalJob;

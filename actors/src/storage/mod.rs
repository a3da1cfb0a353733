//! Storage: the only module that touches files. The node's write-ahead log, the
//! raft-rs `Storage` over it, and the sled state machine.

pub mod wal;

//! Storage: the only module that touches files. The node's write-ahead log (`wal`),
//! what its records mean (`wal_record`), the raft-rs `Storage` of one group
//! (`raft_log`), and the sled state machine (`state_machine`).

pub mod raft_log;
pub mod state_machine;
pub mod wal;
pub mod wal_record;

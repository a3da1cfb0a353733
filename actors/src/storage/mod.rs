//! Storage: the only module that touches files. The node's write-ahead log (`wal`),
//! what its records mean (`wal_record`), the raft-rs `Storage` of one group
//! (`raft_log`), the sled state machine (`state_machine`), its document indexes
//! (`doc_index`) and its snapshots (`snapshot`), and the small JSON files of the data directory (`json_file`).

pub mod doc_index;
pub mod json_file;
pub mod raft_log;
pub mod snapshot;
pub mod state_machine;
pub mod wal;
pub mod wal_record;

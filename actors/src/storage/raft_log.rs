//! `GroupLog`: one Raft group's log as raft-rs sees it (the `raft::Storage` trait).
//!
//! The log is held in memory from the last compaction point to the last entry and is
//! rebuilt from the node's WAL when the group starts (see `wal_record::GroupRecovery`).
//! Every change made here is also sent to the LogWriter by the shard replica, which
//! makes it durable before raft-rs is told it is persisted; this struct never does I/O.
//!
//! Invariants: entries are contiguous; `truncated.index + 1 == first_index()`;
//! `term(truncated.index)` is always answerable (raft-rs matches on it);
//! `truncated.index <= applied.index` once the replica has started.
//!
//! Snapshots: [`raft::Storage::snapshot`] answers with the applied position and the
//! configuration as of it, and no data. The shard replica intercepts the resulting
//! `MsgSnapshot` and streams the shard's tree to the follower itself
//! (`storage::snapshot`), so a snapshot is never materialized in memory.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// Index and term of the last entry dropped from the front of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// One group's in-memory Raft log plus its hard state and configuration.
#[derive(Clone, Debug, Default)]
pub struct GroupLog {
    /// Term, vote and commit, as last persisted or about to be.
    hard_state: HardState,
    /// Voters and learners of the group.
    conf_state: ConfState,
    /// Index of the entry that produced `conf_state` (0 for the bootstrap
    /// configuration). Configuration-change entries at or below it are already
    /// reflected and are not applied again when the log is replayed.
    conf_index: u64,
    /// Index and term of the last entry applied to the state machine, kept here so
    /// a snapshot can be labelled with them.
    applied: LogPosition,
    /// The position just before the first retained entry.
    truncated: LogPosition,
    /// Retained entries, contiguous, starting at `truncated.index + 1`.
    entries: Vec<Entry>,
}

impl GroupLog {
    /// Whether the group has never been initialized (no configuration, no entries).
    pub fn is_blank(&self) -> bool {
        self.conf_state.voters.is_empty()
            && self.conf_state.learners.is_empty()
            && self.entries.is_empty()
            && self.truncated.index == 0
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn truncated(&self) -> LogPosition {
        self.truncated
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Index of the entry that produced the configuration.
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    /// Records the configuration produced by the entry at `index`.
    pub fn set_conf_state(&mut self, conf_state: ConfState, index: u64) {
        self.conf_state = conf_state;
        self.conf_index = index;
    }

    /// The last applied entry's position.
    pub fn applied(&self) -> LogPosition {
        self.applied
    }

    /// Records the last applied entry's position.
    pub fn set_applied(&mut self, applied: LogPosition) {
        self.applied = applied;
    }

    /// Index of the first retained entry (or where the next one will go).
    pub fn first_index(&self) -> u64 {
        self.truncated.index + 1
    }

    /// Index of the last entry, or the truncation point when none is retained.
    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.truncated.index, |entry| entry.index)
    }

    /// Number of retained entries.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `entries`, first dropping any retained entries they overwrite (a new
    /// leader may replace an uncommitted suffix). Entries entirely below the
    /// truncation point are ignored, which makes WAL replay of older records harmless.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let skip = self.first_index().saturating_sub(first.index);
        let entries = entries.get(skip as usize..).unwrap_or(&[]);
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index > self.last_index() + 1 {
            // A gap would break the contiguity raft-rs relies on.
            return Err(StorageError::Unavailable);
        }
        let keep = first.index - self.first_index();
        self.entries.truncate(keep as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Drops every entry at or below `index` (which must be retained or the current
    /// truncation point), remembering its term.
    pub fn compact(&mut self, index: u64) -> Result<(), StorageError> {
        if index <= self.truncated.index {
            return Ok(());
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        let term = self.term_of(index)?;
        let drop = index - self.truncated.index;
        self.entries.drain(..drop as usize);
        self.truncated = LogPosition { index, term };
        Ok(())
    }

    /// Replaces the whole log with the position of an installed snapshot (or the
    /// start of a log rebuilt after a hole), whose configuration is `conf_state` as
    /// of the entry at `conf_index`.
    pub fn reset_to(&mut self, position: LogPosition, conf_state: ConfState, conf_index: u64) {
        self.entries.clear();
        self.truncated = position;
        self.conf_state = conf_state;
        self.conf_index = conf_index;
        if self.applied.index < position.index {
            self.applied = position;
        }
        if self.hard_state.term < position.term {
            self.hard_state.term = position.term;
        }
        if self.hard_state.commit < position.index {
            self.hard_state.commit = position.index;
        }
    }

    /// Records the term of the truncation point when it was not known (a log whose
    /// start was rebuilt from a WAL whose older segments were deleted).
    pub fn set_truncated_term(&mut self, term: u64) {
        self.truncated.term = term;
    }

    fn term_of(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if index < self.truncated.index {
            return Err(StorageError::Compacted);
        }
        let offset = index - self.first_index();
        self.entries
            .get(offset as usize)
            .map(|entry| entry.term)
            .ok_or(StorageError::Unavailable)
    }
}

impl raft::Storage for GroupLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let start = (low - self.first_index()) as usize;
        let end = (high - self.first_index()) as usize;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut taken = Vec::with_capacity(end - start);
        let mut size = 0u64;
        for entry in &self.entries[start..end] {
            size += (entry.data.len() + entry.context.len() + 16) as u64;
            // At least one entry is always returned, as raft-rs requires.
            if !taken.is_empty() && size > max_size {
                break;
            }
            taken.push(entry.clone());
        }
        Ok(taken)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.term_of(index).map_err(raft::Error::Store)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(GroupLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(GroupLog::last_index(self))
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Until replay has passed the entry that produced the configuration, the
        // applied position and the configuration do not describe the same moment.
        if self.applied.index == 0 || self.applied.index < self.conf_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied.index;
        metadata.term = self.applied.term;
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    /// Proves append overwrites a conflicting suffix, ignores replayed entries below
    /// the truncation point and refuses gaps.
    #[test]
    fn append_overwrites_suffix_ignores_old_refuses_gaps() {
        let mut log = GroupLog::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        log.append(&[entry(2, 2)]).unwrap();
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        log.compact(1).unwrap();
        log.append(&[entry(1, 1)]).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (2, 2));
        assert_eq!(log.append(&[entry(5, 2)]), Err(StorageError::Unavailable));
    }

    /// Proves compaction keeps the term of the truncation point answerable and makes
    /// earlier entries report `Compacted`.
    #[test]
    fn compaction_keeps_boundary_term() {
        let mut log = GroupLog::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
            .unwrap();
        log.compact(2).unwrap();
        assert_eq!(log.term(2).unwrap(), 1);
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(matches!(
            log.term(1),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            log.entries(1, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let entries = log
            .entries(3, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(entries.len(), 1);
    }

    /// Proves `entries` honours max_size but always returns at least one entry.
    #[test]
    fn entries_respect_max_size() {
        let mut log = GroupLog::default();
        let mut big = entry(1, 1);
        big.data = vec![0u8; 100].into();
        log.append(&[big.clone(), entry(2, 1)]).unwrap();
        let one = log
            .entries(1, 3, Some(10), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1);
        let both = log
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(both.len(), 2);
    }
}

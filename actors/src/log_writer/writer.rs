//! `WalWriter`: the blocking half of the LogWriter. It owns the node's [`Wal`] and
//! turns a batch of group writes into records, one `fdatasync`, and (when segments
//! rolled over) the deletion of segments nothing needs any more.
//!
//! It runs on the LogWriter's own thread (see `thread.rs`), one batch at a time.
//!
//! Invariants:
//! - every segment after the first starts with a `Checkpoint` record holding every
//!   known group's metadata, so deleting older segments never loses metadata;
//! - segment `k` is deleted only when it is not the active segment, every older
//!   segment is gone, every group's entries in it are at or below the group's
//!   compaction point, and that point is recorded in a later segment (so replay,
//!   which then meets a hole in the group's log, finds the point that covers it).
//!   Compaction points are only written after the state machine data they cover is
//!   durable.

use crate::ids::GroupId;
use crate::kv::WalStats;
use crate::metrics::NodeMetrics;
use crate::storage::raft_log::GroupLog;
use crate::storage::wal::{SegmentId, Wal, WalError, RECORD_PAYLOAD_BYTES_MAX};
use crate::storage::wal_record::{
    Checkpoint, CompactionRecord, ConfStateRecord, GroupMetadata, GroupWrite, RecoveredLogs,
    WalRecord, RECORD_FORMAT_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Entries of one group go into records of at most this many payload bytes, well
/// below the WAL's record limit.
const RECORD_SPLIT_BYTES: u64 = (RECORD_PAYLOAD_BYTES_MAX as u64) / 4;

/// Why a batch or a replay failed. After a failed `fdatasync` nothing written since
/// the last good one can be trusted, so the LogWriter stops accepting writes.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("{0}")]
    Record(String),
}

/// The WAL plus what is needed to checkpoint and delete its segments.
pub struct WalWriter {
    wal: Wal,
    /// A new segment is started when the active one reaches this size.
    segment_bytes_max: u64,
    /// Latest metadata of every group, as written.
    groups: HashMap<GroupId, GroupMetadata>,
    /// Highest entry index of each group in each segment.
    segment_max_index: BTreeMap<SegmentId, HashMap<GroupId, u64>>,
    /// The segment holding each group's latest compaction point.
    compaction_segment: HashMap<GroupId, SegmentId>,
    /// Cumulative counters.
    stats: WalStats,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
    /// Where fsync latencies and batch sizes are recorded.
    metrics: Arc<NodeMetrics>,
}

impl WalWriter {
    /// Wraps an opened WAL and the logs recovered from it.
    pub fn new(
        wal: Wal,
        segment_bytes_max: u64,
        recovered: &RecoveredLogs,
        metrics: Arc<NodeMetrics>,
    ) -> WalWriter {
        let groups = recovered
            .logs
            .iter()
            .map(|(group, log)| (*group, metadata_of(*group, log)))
            .collect();
        let mut writer = WalWriter {
            wal,
            segment_bytes_max,
            groups,
            segment_max_index: recovered.segment_max_index.clone(),
            compaction_segment: recovered.compaction_segment.clone(),
            stats: WalStats::default(),
            scratch: Vec::with_capacity(1 << 20),
            metrics,
        };
        writer.refresh_file_stats();
        writer
    }

    /// Counters and file sizes.
    pub fn stats(&self) -> WalStats {
        self.stats.clone()
    }

    /// Appends every write and makes the batch durable with one `fdatasync`.
    pub fn write_batch(&mut self, writes: &[GroupWrite]) -> Result<(), WriterError> {
        if self.wal.active_segment_bytes() >= self.segment_bytes_max {
            self.roll_over()?;
        }
        let mut compacted_any = false;
        for write in writes {
            compacted_any |= write.compacted.is_some();
            self.append_write(write)?;
        }
        let sync_started = Instant::now();
        self.wal.sync()?;
        self.metrics
            .wal_fsync_duration_seconds
            .observe(sync_started.elapsed().as_secs_f64());
        self.metrics.wal_batch_writes.observe(writes.len() as f64);
        self.stats.fsyncs_total += 1;
        if compacted_any {
            self.remove_obsolete_segments()?;
        }
        self.refresh_file_stats();
        Ok(())
    }

    /// Rebuilds one group's log from the files (all earlier writes are synced).
    pub fn replay_group(&self, group: GroupId) -> Result<GroupLog, WriterError> {
        let mut recovered = RecoveredLogs::default();
        let mut failure = None;
        self.wal.replay(&mut |position, payload| {
            if let Err(error) = recovered.apply(position, payload, Some(group)) {
                failure.get_or_insert(error.to_string());
            }
            Ok(())
        })?;
        if let Some(reason) = failure {
            return Err(WriterError::Record(reason));
        }
        recovered.finish().map_err(WriterError::Record)?;
        Ok(recovered.logs.remove(&group).unwrap_or_default())
    }

    fn append_write(&mut self, write: &GroupWrite) -> Result<(), WriterError> {
        // Split very large entry lists so no record nears the WAL's limit; the hard
        // state goes with the last piece so it never runs ahead of the entries.
        let mut pieces = Vec::new();
        if write.payload_bytes() > RECORD_SPLIT_BYTES {
            let mut piece = GroupWrite::new(write.group);
            piece.conf_state = write.conf_state.clone();
            piece.compacted = write.compacted;
            let mut bytes = 0;
            for entry in &write.entries {
                let entry_bytes = (entry.data.len() + entry.context.len()) as u64 + 32;
                if bytes + entry_bytes > RECORD_SPLIT_BYTES && !piece.entries.is_empty() {
                    pieces.push(std::mem::replace(&mut piece, GroupWrite::new(write.group)));
                    bytes = 0;
                }
                bytes += entry_bytes;
                piece.entries.push(entry.clone());
            }
            piece.hard_state = write.hard_state;
            pieces.push(piece);
        }
        let pieces: Vec<&GroupWrite> = if pieces.is_empty() {
            vec![write]
        } else {
            pieces.iter().collect()
        };
        for piece in pieces {
            self.scratch.clear();
            WalRecord::GroupWrite(piece.clone()).encode(&mut self.scratch);
            self.wal.append(&self.scratch)?;
            self.stats.records_total += 1;
            self.stats.entries_total += piece.entries.len() as u64;
            if let Some(last) = piece.entries.last() {
                let max = self
                    .segment_max_index
                    .entry(self.wal.active_segment())
                    .or_default()
                    .entry(piece.group)
                    .or_default();
                *max = (*max).max(last.index);
            }
        }
        self.remember_metadata(write);
        Ok(())
    }

    fn remember_metadata(&mut self, write: &GroupWrite) {
        let metadata = self
            .groups
            .entry(write.group)
            .or_insert_with(|| GroupMetadata {
                group: write.group,
                ..Default::default()
            });
        if let Some(conf_state) = &write.conf_state {
            metadata.conf_state = (**conf_state).clone();
        }
        if let Some(compacted) = write.compacted {
            if compacted.index > metadata.compacted.index {
                metadata.compacted = compacted;
            }
            self.compaction_segment
                .insert(write.group, self.wal.active_segment());
        }
        if let Some(hard_state) = write.hard_state {
            metadata.hard_state = hard_state;
        }
    }

    fn roll_over(&mut self) -> Result<(), WriterError> {
        let segment = self.wal.rollover()?;
        let mut groups: Vec<GroupMetadata> = self.groups.values().cloned().collect();
        groups.sort_by_key(|metadata| metadata.group);
        for metadata in &groups {
            self.compaction_segment.insert(metadata.group, segment);
        }
        self.scratch.clear();
        WalRecord::Checkpoint(Checkpoint {
            version: RECORD_FORMAT_VERSION,
            groups,
        })
        .encode(&mut self.scratch);
        self.wal.append(&self.scratch)?;
        self.stats.records_total += 1;
        Ok(())
    }

    fn remove_obsolete_segments(&mut self) -> Result<(), WriterError> {
        let active = self.wal.active_segment();
        let mut first_kept = None;
        for segment in self.wal.segments() {
            if segment == active || !self.segment_is_obsolete(segment) {
                break;
            }
            first_kept = Some(segment.next());
        }
        if let Some(first_kept) = first_kept {
            let deleted = self.wal.remove_segments_before(first_kept)?;
            self.stats.segments_deleted_total += deleted;
            self.segment_max_index = self.segment_max_index.split_off(&first_kept);
        }
        Ok(())
    }

    /// A segment is obsolete when every group's entries in it are at or below the
    /// group's compaction point and that point is recorded in a later segment.
    fn segment_is_obsolete(&self, segment: SegmentId) -> bool {
        let Some(maxima) = self.segment_max_index.get(&segment) else {
            // No entries at all: only metadata, repeated by every later checkpoint
            // and compaction record.
            return self
                .compaction_segment
                .values()
                .all(|recorded| *recorded > segment);
        };
        maxima.iter().all(|(group, max_index)| {
            let compacted = self
                .groups
                .get(group)
                .map_or(0, |metadata| metadata.compacted.index);
            compacted >= *max_index
                && self
                    .compaction_segment
                    .get(group)
                    .is_some_and(|recorded| *recorded > segment)
        })
    }

    fn refresh_file_stats(&mut self) {
        self.stats.segments = self.wal.segments().len() as u64;
        self.stats.bytes = self.wal.total_bytes();
    }
}

/// The metadata of a recovered group.
fn metadata_of(group: GroupId, log: &GroupLog) -> GroupMetadata {
    GroupMetadata {
        group,
        hard_state: log.hard_state().into(),
        conf_state: ConfStateRecord::at(log.conf_state(), log.conf_index()),
        compacted: CompactionRecord {
            index: log.truncated().index,
            term: log.truncated().term,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::WalOptions;
    use crate::storage::wal_record::{EntryRecord, HardStateRecord};
    use bytes::Bytes;

    fn entry_write(group: u64, index: u64) -> GroupWrite {
        let mut write = GroupWrite::new(GroupId(group));
        write.entries = vec![EntryRecord {
            index,
            term: 1,
            entry_type: 0,
            data: Bytes::from(vec![7u8; 40]),
            context: Bytes::new(),
        }];
        write.hard_state = Some(HardStateRecord {
            term: 1,
            vote: 1,
            commit: index,
        });
        write
    }

    fn compaction_write(group: u64, index: u64) -> GroupWrite {
        let mut write = GroupWrite::new(GroupId(group));
        write.compacted = Some(CompactionRecord { index, term: 1 });
        write
    }

    /// Proves segments are reclaimed under a continuous stream of writes (each
    /// segment's last entries are newer than anything compacted when the next one
    /// opened), and that the WAL left behind still rebuilds both groups' logs exactly:
    /// the hole where deleted segments were is covered by a compaction point.
    #[test]
    fn segments_are_reclaimed_under_continuous_writes() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes_max = 1_024;
        let options = WalOptions {
            segment_bytes_max,
            preallocate: true,
        };
        let (wal, _) = Wal::open(dir.path(), options).unwrap();
        let mut writer = WalWriter::new(
            wal,
            segment_bytes_max,
            &RecoveredLogs::default(),
            Arc::default(),
        );
        for index in 1..=400u64 {
            writer
                .write_batch(&[entry_write(1, index), entry_write(2, index)])
                .unwrap();
            if index % 25 == 0 {
                // A checkpoint compacts to a little behind the newest entry.
                writer
                    .write_batch(&[
                        compaction_write(1, index - 3),
                        compaction_write(2, index - 5),
                    ])
                    .unwrap();
            }
        }
        let stats = writer.stats();
        assert!(stats.segments_deleted_total > 10, "{stats:?}");
        assert!(stats.segments <= 8, "segments pile up: {stats:?}");
        drop(writer);

        let (wal, _) = Wal::open(dir.path(), options).unwrap();
        let mut recovered = RecoveredLogs::default();
        wal.replay(&mut |position, payload| {
            recovered.apply(position, payload, None).unwrap();
            Ok(())
        })
        .unwrap();
        recovered.finish().unwrap();
        for (group, compacted) in [(1, 397), (2, 395)] {
            let log = &recovered.logs[&GroupId(group)];
            assert_eq!(log.truncated().index, compacted, "group {group}");
            assert_eq!(log.truncated().term, 1, "group {group}");
            assert_eq!(log.last_index(), 400, "group {group}");
        }
    }
}

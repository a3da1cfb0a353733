//! What the node's WAL records mean: the payload format of a record and the fold that
//! rebuilds every group's [`GroupLog`] from them.
//!
//! A payload is `kind: u8`, `group: u64 big-endian`, then an rmp-serde body with named
//! fields and a version marker. The fixed prefix lets the replay of one group skip
//! other groups' records without decoding them.
//!
//! Record kinds:
//! - `GroupWrite`: what one Ready of one group made durable: new entries (which may
//!   overwrite an uncommitted suffix), hard state, configuration, compaction point.
//! - `Checkpoint`: the metadata of every group (hard state, configuration, compaction
//!   point), written first in each new segment so older segments can be deleted
//!   without losing it.

use crate::ids::GroupId;
use crate::storage::raft_log::{GroupLog, LogPosition};
use crate::storage::wal::{RecordPosition, SegmentId};
use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Version of the record bodies below.
pub const RECORD_FORMAT_VERSION: u8 = 1;

const KIND_GROUP_WRITE: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;
const PREFIX_BYTES: usize = 9;

/// One Raft entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub index: u64,
    pub term: u64,
    /// 0 normal, 1 configuration change, 2 configuration change v2 (raft-rs values).
    pub entry_type: u8,
    pub data: Bytes,
    pub context: Bytes,
}

/// Term, vote and commit index of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HardStateRecord {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Voters and learners of a group (joint consensus fields included for later).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConfStateRecord {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
    /// Index of the configuration-change entry that produced this configuration (0
    /// for the bootstrap one). Records written before this field existed read as 0.
    #[serde(default)]
    pub conf_index: u64,
}

/// Index and term of the last entry dropped by compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CompactionRecord {
    pub index: u64,
    pub term: u64,
}

/// What one Ready of one group made durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupWrite {
    pub version: u8,
    pub group: GroupId,
    /// Boxed: rare, and large next to the rest.
    pub conf_state: Option<Box<ConfStateRecord>>,
    pub compacted: Option<CompactionRecord>,
    pub entries: Vec<EntryRecord>,
    pub hard_state: Option<HardStateRecord>,
}

/// The metadata of one group at a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupMetadata {
    pub group: GroupId,
    pub hard_state: HardStateRecord,
    pub conf_state: ConfStateRecord,
    pub compacted: CompactionRecord,
}

/// Every group's metadata, first in each segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    pub version: u8,
    pub groups: Vec<GroupMetadata>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRecord {
    GroupWrite(GroupWrite),
    Checkpoint(Checkpoint),
}

/// A record whose checksum was right but whose content this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("WAL record at segment {segment} offset {offset}: {reason}")]
pub struct RecordDecodeError {
    pub segment: u64,
    pub offset: u64,
    pub reason: String,
}

impl GroupWrite {
    /// An empty write for `group`.
    pub fn new(group: GroupId) -> GroupWrite {
        GroupWrite {
            version: RECORD_FORMAT_VERSION,
            group,
            ..Default::default()
        }
    }

    /// Whether the write carries nothing.
    pub fn is_empty(&self) -> bool {
        self.conf_state.is_none()
            && self.compacted.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
    }

    /// Bytes of entry payloads, used to bound batch sizes.
    pub fn payload_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| (entry.data.len() + entry.context.len()) as u64 + 32)
            .sum()
    }
}

impl WalRecord {
    /// Encodes the record as a WAL payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, group) = match self {
            WalRecord::GroupWrite(write) => (KIND_GROUP_WRITE, write.group.0),
            WalRecord::Checkpoint(_) => (KIND_CHECKPOINT, 0),
        };
        out.push(kind);
        out.extend_from_slice(&group.to_be_bytes());
        // Encoding owned plain data into a Vec cannot fail.
        let _ = match self {
            WalRecord::GroupWrite(write) => rmp_serde::encode::write_named(out, write),
            WalRecord::Checkpoint(checkpoint) => rmp_serde::encode::write_named(out, checkpoint),
        };
    }

    /// The group a payload belongs to, without decoding the body (`None` for
    /// checkpoints, which concern every group, or for a payload too short to tell).
    pub fn peek_group(payload: &[u8]) -> Option<GroupId> {
        let prefix = payload.get(..PREFIX_BYTES)?;
        if prefix[0] != KIND_GROUP_WRITE {
            return None;
        }
        let mut group = [0u8; 8];
        group.copy_from_slice(&prefix[1..]);
        Some(GroupId(u64::from_be_bytes(group)))
    }

    /// Decodes a WAL payload.
    pub fn decode(payload: &[u8]) -> Result<WalRecord, String> {
        let (prefix, body) = (
            payload
                .get(..PREFIX_BYTES)
                .ok_or("record shorter than its prefix")?,
            &payload[PREFIX_BYTES.min(payload.len())..],
        );
        let record = match prefix[0] {
            KIND_GROUP_WRITE => {
                let write: GroupWrite =
                    rmp_serde::from_slice(body).map_err(|error| error.to_string())?;
                if write.version != RECORD_FORMAT_VERSION {
                    return Err(format!("unsupported record version {}", write.version));
                }
                WalRecord::GroupWrite(write)
            }
            KIND_CHECKPOINT => {
                let checkpoint: Checkpoint =
                    rmp_serde::from_slice(body).map_err(|error| error.to_string())?;
                if checkpoint.version != RECORD_FORMAT_VERSION {
                    return Err(format!("unsupported record version {}", checkpoint.version));
                }
                WalRecord::Checkpoint(checkpoint)
            }
            other => return Err(format!("unknown record kind {other}")),
        };
        Ok(record)
    }
}

impl From<&Entry> for EntryRecord {
    fn from(entry: &Entry) -> EntryRecord {
        EntryRecord {
            index: entry.index,
            term: entry.term,
            entry_type: entry.get_entry_type() as u8,
            data: entry.data.clone(),
            context: entry.context.clone(),
        }
    }
}

impl EntryRecord {
    /// The raft-rs entry this record stores.
    pub fn to_entry(&self) -> Entry {
        let mut entry = Entry {
            index: self.index,
            term: self.term,
            data: self.data.clone(),
            context: self.context.clone(),
            ..Default::default()
        };
        entry.set_entry_type(match self.entry_type {
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => EntryType::EntryNormal,
        });
        entry
    }
}

impl From<&HardState> for HardStateRecord {
    fn from(state: &HardState) -> HardStateRecord {
        HardStateRecord {
            term: state.term,
            vote: state.vote,
            commit: state.commit,
        }
    }
}

impl HardStateRecord {
    pub fn to_hard_state(self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
            ..Default::default()
        }
    }
}

impl ConfStateRecord {
    /// The record of `state`, produced by the entry at `conf_index`.
    pub fn at(state: &ConfState, conf_index: u64) -> ConfStateRecord {
        ConfStateRecord {
            voters: state.voters.clone(),
            learners: state.learners.clone(),
            voters_outgoing: state.voters_outgoing.clone(),
            learners_next: state.learners_next.clone(),
            auto_leave: state.auto_leave,
            conf_index,
        }
    }

    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters_outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
            ..Default::default()
        }
    }
}

/// Every group's log rebuilt from the WAL, plus what the LogWriter needs to know to
/// delete segments later: the highest entry index each segment holds per group.
#[derive(Default)]
pub struct RecoveredLogs {
    pub logs: HashMap<GroupId, GroupLog>,
    pub segment_max_index: BTreeMap<SegmentId, HashMap<GroupId, u64>>,
    /// The segment holding each group's latest compaction point.
    pub compaction_segment: HashMap<GroupId, SegmentId>,
    /// Groups whose log had a hole (older segments deleted), with the index the hole
    /// ends at. A later compaction point at or past it must cover it; `finish` fails
    /// otherwise.
    gaps: HashMap<GroupId, u64>,
}

impl RecoveredLogs {
    /// Folds one WAL payload into the logs. With `only` set, records of other groups
    /// are skipped (used when one group restarts).
    pub fn apply(
        &mut self,
        position: RecordPosition,
        payload: &[u8],
        only: Option<GroupId>,
    ) -> Result<(), RecordDecodeError> {
        if let (Some(only), Some(group)) = (only, WalRecord::peek_group(payload)) {
            if only != group {
                return Ok(());
            }
        }
        let record = WalRecord::decode(payload).map_err(|reason| RecordDecodeError {
            segment: position.segment.0,
            offset: position.offset,
            reason,
        })?;
        let bad = |reason: String| RecordDecodeError {
            segment: position.segment.0,
            offset: position.offset,
            reason,
        };
        match record {
            WalRecord::GroupWrite(write) => {
                if let Some(last) = write.entries.last() {
                    let max = self
                        .segment_max_index
                        .entry(position.segment)
                        .or_default()
                        .entry(write.group)
                        .or_default();
                    *max = (*max).max(last.index);
                }
                if let Some(compacted) = write.compacted {
                    self.compaction_segment
                        .insert(write.group, position.segment);
                    self.cover_gap(write.group, compacted.index);
                }
                let log = self.logs.entry(write.group).or_default();
                if let Some(gap) = apply_group_write(log, &write).map_err(bad)? {
                    self.gaps.insert(write.group, gap);
                }
            }
            WalRecord::Checkpoint(checkpoint) => {
                for metadata in checkpoint.groups {
                    if only.is_some_and(|only| only != metadata.group) {
                        continue;
                    }
                    self.compaction_segment
                        .insert(metadata.group, position.segment);
                    self.cover_gap(metadata.group, metadata.compacted.index);
                    let log = self.logs.entry(metadata.group).or_default();
                    let write = GroupWrite {
                        version: RECORD_FORMAT_VERSION,
                        group: metadata.group,
                        conf_state: Some(Box::new(metadata.conf_state)),
                        compacted: Some(metadata.compacted),
                        entries: Vec::new(),
                        hard_state: Some(metadata.hard_state),
                    };
                    apply_group_write(log, &write).map_err(bad)?;
                }
            }
        }
        Ok(())
    }

    fn cover_gap(&mut self, group: GroupId, compacted: u64) {
        if self.gaps.get(&group).is_some_and(|gap| *gap <= compacted) {
            self.gaps.remove(&group);
        }
    }

    /// Fails when some group's log has a hole no compaction point covers: entries the
    /// WAL should still hold are missing.
    pub fn finish(&self) -> Result<(), String> {
        match self.gaps.iter().next() {
            None => Ok(()),
            Some((group, gap)) => Err(format!(
                "the WAL lacks entries of group {group} up to index {gap}, and no compaction point covers them"
            )),
        }
    }
}

/// Applies one durable write to a group's log, in the order it was made: the
/// configuration, the compaction point, the entries, then the hard state.
///
/// Entries that do not follow the log (older segments were deleted, so the log's
/// start is only known from a compaction point recorded later) restart the log just
/// before them; the index the hole ends at is returned for the caller to check.
pub fn apply_group_write(log: &mut GroupLog, write: &GroupWrite) -> Result<Option<u64>, String> {
    if let Some(conf_state) = &write.conf_state {
        log.set_conf_state(conf_state.to_conf_state(), conf_state.conf_index);
    }
    if let Some(compacted) = write.compacted {
        let position = LogPosition {
            index: compacted.index,
            term: compacted.term,
        };
        let truncated = log.truncated();
        if compacted.index == truncated.index
            && (truncated.term == 0 || truncated.term == compacted.term)
        {
            // The same point (its term unknown when the log was rebuilt after a
            // hole).
            log.set_truncated_term(compacted.term);
        } else if compacted.index >= truncated.index {
            // A compaction point inside the log with the same term is the log's own
            // checkpoint. Anything else is an installed snapshot: the entries the
            // log holds (at or past the point) belong to a history the snapshot
            // replaced, so they go.
            let own = compacted.index <= log.last_index()
                && raft::Storage::term(log, compacted.index).ok() == Some(compacted.term);
            if own {
                log.compact(compacted.index)
                    .map_err(|error| format!("compaction to {}: {error}", compacted.index))?;
            } else {
                // The group jumped past its log (a snapshot was installed, or the
                // entries up to here were in deleted segments).
                let conf_state = log.conf_state().clone();
                let conf_index = log.conf_index();
                log.reset_to(position, conf_state, conf_index);
            }
        }
    }
    let mut gap = None;
    if let Some(first) = write.entries.first() {
        if first.index > log.last_index() + 1 {
            let conf_state = log.conf_state().clone();
            let conf_index = log.conf_index();
            let start = LogPosition {
                index: first.index - 1,
                term: 0,
            };
            log.reset_to(start, conf_state, conf_index);
            gap = Some(first.index - 1);
        }
        let entries: Vec<Entry> = write.entries.iter().map(EntryRecord::to_entry).collect();
        log.append(&entries).map_err(|error| {
            format!(
                "entries {}..={} do not follow the log ending at {}: {error}",
                entries[0].index,
                entries[entries.len() - 1].index,
                log.last_index()
            )
        })?;
    }
    if let Some(hard_state) = write.hard_state {
        log.set_hard_state(hard_state.to_hard_state());
    }
    Ok(gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_with(group: u64, indexes: std::ops::RangeInclusive<u64>, term: u64) -> GroupWrite {
        let mut write = GroupWrite::new(GroupId(group));
        write.entries = indexes
            .map(|index| EntryRecord {
                index,
                term,
                entry_type: 0,
                data: Bytes::from(vec![index as u8]),
                context: Bytes::new(),
            })
            .collect();
        write.hard_state = Some(HardStateRecord {
            term,
            vote: 1,
            commit: 0,
        });
        write
    }

    fn position(segment: u64, offset: u64) -> RecordPosition {
        RecordPosition {
            segment: SegmentId(segment),
            offset,
        }
    }

    /// Pins the record format: a GroupWrite's prefix and body bytes. If this fails,
    /// old WALs no longer replay; add a version and a migration instead.
    #[test]
    fn golden_bytes_of_a_group_write() {
        let mut write = GroupWrite::new(GroupId(3));
        write.hard_state = Some(HardStateRecord {
            term: 1,
            vote: 2,
            commit: 0,
        });
        let mut bytes = Vec::new();
        WalRecord::GroupWrite(write.clone()).encode(&mut bytes);
        assert_eq!(&bytes[..9], &[1, 0, 0, 0, 0, 0, 0, 0, 3]);
        let expected_body: &[u8] = &[
            0x86, 0xa7, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01, 0xa5, b'g', b'r', b'o',
            b'u', b'p', 0x03, 0xaa, b'c', b'o', b'n', b'f', b'_', b's', b't', b'a', b't', b'e',
            0xc0, 0xa9, b'c', b'o', b'm', b'p', b'a', b'c', b't', b'e', b'd', 0xc0, 0xa7, b'e',
            b'n', b't', b'r', b'i', b'e', b's', 0x90, 0xaa, b'h', b'a', b'r', b'd', b'_', b's',
            b't', b'a', b't', b'e', 0x83, 0xa4, b't', b'e', b'r', b'm', 0x01, 0xa4, b'v', b'o',
            b't', b'e', 0x02, 0xa6, b'c', b'o', b'm', b'm', b'i', b't', 0x00,
        ];
        assert_eq!(&bytes[9..], expected_body, "body: {:02x?}", &bytes[9..]);
        assert_eq!(
            WalRecord::decode(&bytes).unwrap(),
            WalRecord::GroupWrite(write)
        );
        assert_eq!(WalRecord::peek_group(&bytes), Some(GroupId(3)));
    }

    /// Proves the fold rebuilds a log across overwrites, compaction and checkpoints,
    /// tracks per-segment maxima, and that `only` skips other groups.
    #[test]
    fn replay_rebuilds_logs() {
        let mut payloads = Vec::new();
        for write in [
            write_with(1, 1..=5, 1),
            write_with(2, 1..=2, 1),
            write_with(1, 4..=6, 2),
        ] {
            let mut bytes = Vec::new();
            WalRecord::GroupWrite(write).encode(&mut bytes);
            payloads.push(bytes);
        }
        let mut compaction = GroupWrite::new(GroupId(1));
        compaction.compacted = Some(CompactionRecord { index: 3, term: 1 });
        let mut bytes = Vec::new();
        WalRecord::GroupWrite(compaction).encode(&mut bytes);
        payloads.push(bytes);

        let mut all = RecoveredLogs::default();
        let mut only_two = RecoveredLogs::default();
        for (offset, payload) in payloads.iter().enumerate() {
            all.apply(position(offset as u64 / 2, offset as u64), payload, None)
                .unwrap();
            only_two
                .apply(position(0, offset as u64), payload, Some(GroupId(2)))
                .unwrap();
        }
        let one = &all.logs[&GroupId(1)];
        assert_eq!((one.first_index(), one.last_index()), (4, 6));
        assert_eq!(one.truncated(), LogPosition { index: 3, term: 1 });
        assert_eq!(one.hard_state().term, 2);
        assert_eq!(all.segment_max_index[&SegmentId(0)][&GroupId(1)], 5);
        assert_eq!(all.segment_max_index[&SegmentId(1)][&GroupId(1)], 6);
        assert_eq!(only_two.logs.len(), 1);
        assert_eq!(only_two.logs[&GroupId(2)].last_index(), 2);
    }

    /// Regression (found by the Raft simulation): replaying the record of a snapshot
    /// installed over a log holding other entries at its index must drop those
    /// entries, not keep them as if the snapshot were a local checkpoint; a
    /// checkpoint inside the log (same term) keeps what follows it.
    #[test]
    fn installed_snapshot_replaces_a_conflicting_log() {
        let mut log = GroupLog::default();
        apply_group_write(&mut log, &write_with(1, 1..=10, 19)).unwrap();
        let mut checkpoint = GroupWrite::new(GroupId(1));
        checkpoint.compacted = Some(CompactionRecord { index: 4, term: 19 });
        apply_group_write(&mut log, &checkpoint).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (5, 10));
        let mut snapshot = GroupWrite::new(GroupId(1));
        snapshot.compacted = Some(CompactionRecord { index: 8, term: 21 });
        apply_group_write(&mut log, &snapshot).unwrap();
        assert_eq!(log.truncated(), LogPosition { index: 8, term: 21 });
        assert_eq!(log.last_index(), 8, "entries 9 and 10 of term 19 are gone");
        let mut same_point = GroupWrite::new(GroupId(1));
        same_point.compacted = Some(CompactionRecord { index: 8, term: 23 });
        apply_group_write(&mut log, &write_with(1, 9..=9, 21)).unwrap();
        apply_group_write(&mut log, &same_point).unwrap();
        assert_eq!(log.truncated(), LogPosition { index: 8, term: 23 });
        assert_eq!(
            log.last_index(),
            8,
            "entry 9 of the replaced history is gone"
        );
    }

    /// Proves garbage with a valid prefix is reported with its position, not applied.
    #[test]
    fn undecodable_body_is_reported_with_position() {
        let payload = [1u8, 0, 0, 0, 0, 0, 0, 0, 1, 0xc1];
        let mut logs = RecoveredLogs::default();
        let error = logs.apply(position(4, 77), &payload, None).unwrap_err();
        assert_eq!((error.segment, error.offset), (4, 77));
    }
}

//! [`Wal`]: the segmented log directory, its recovery on open, group-commit writes,
//! rollover and deletion of old segments.
//!
//! Invariants:
//! * the active segment has the highest id; ids on disk are consecutive;
//! * every segment but the active one is complete and durable (rollover syncs first);
//! * the active file holds exactly `written_bytes` valid bytes (header and whole
//!   records); records past that live only in the write buffer until [`Wal::sync`];
//! * after a failed write or sync nothing more is written (the WAL is poisoned), since
//!   what reached the disk is unknown.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{encode_record, RECORD_HEADER_BYTES};
use super::segment::{
    encode_segment_header, parse_segment_file_name, recover_segment, replay_segment,
    segment_file_name, SEGMENT_HEADER_BYTES,
};
use super::{
    RecordPosition, RecordVisitor, SegmentId, WalError, WalOptions, RECORD_PAYLOAD_BYTES_MAX,
};

/// Buffered bytes at which [`Wal::append`] writes the buffer out (without syncing), so
/// thousands of appends cost one system call per mebibyte and the buffer stays bounded.
const WRITE_BUFFER_BYTES_FLUSH: usize = 1024 * 1024;
/// How far ahead of the records a preallocated segment is overwritten with zeros.
/// `fallocate` leaves its space "unwritten": the first write into each part of it
/// changes the file's extent map, so every `fdatasync` after an append would write
/// the inode too. Zeros written ahead in steps of this size turn that into one
/// metadata update per step, and the syncs in between write data only (measured on
/// ext4 with 4 KiB appends: 17% more syncs per second and 15% less CPU per sync
/// than appending into fallocated space). The step's zeros are written with the
/// batch that crosses into it, which makes that one sync about this much longer.
const ZEROED_AHEAD_BYTES: u64 = 1024 * 1024;

/// What [`Wal::open`] found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records in all segments, after the torn tail was cut.
    pub records: u64,
    /// Segment files, the active one included.
    pub segments: u64,
    /// Bytes cut from the end of the last segment (zero when there was no torn tail).
    pub torn_tail_truncated_bytes: u64,
    /// Where the torn tail started, when one was cut. Offset 0 means the segment header
    /// itself was torn (a crash during rollover) and was rewritten.
    pub torn_tail: Option<RecordPosition>,
    /// Whether the directory held no segment and a first one was created.
    pub created: bool,
}

/// Counters of the work the WAL has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalFileStats {
    /// `fdatasync`/`fsync` calls on segment files: one per [`Wal::sync`] that had
    /// something to make durable, plus recovery repairs.
    pub fsyncs: u64,
    /// `fsync` calls on the directory, after segments were created or removed.
    pub directory_fsyncs: u64,
    /// Records accepted by [`Wal::append`].
    pub records_appended: u64,
    /// Bytes written to segment files (headers and records).
    pub bytes_written: u64,
}

/// The segment being written.
struct ActiveSegment {
    /// Its id, the highest on disk.
    id: SegmentId,
    /// Its file path, for errors and replay.
    path: PathBuf,
    /// Opened for writing, with the cursor at `written_bytes`.
    file: File,
    /// Bytes written to the file: all of them valid, not necessarily durable.
    written_bytes: u64,
    /// Encoded records (and the header of a fresh segment) not yet written.
    buffer: Vec<u8>,
    /// Whether bytes were written since the last `fdatasync`.
    unsynced: bool,
    /// Bytes from the start of the file known to have been written (records or
    /// zeros), so writing below it changes no file metadata; see
    /// [`ZEROED_AHEAD_BYTES`].
    zeroed_until: u64,
}

/// The node's write-ahead log: a directory of segment files holding opaque records.
///
/// Records appended are durable only after [`Wal::sync`] returns. Dropping the WAL
/// discards records that were appended but not synced; they were never acknowledged.
pub struct Wal {
    /// The WAL directory.
    directory: PathBuf,
    /// The directory itself, kept open to `fsync` it after creating or removing files.
    directory_file: File,
    /// Sizing, for [`Wal::needs_rollover`].
    options: WalOptions,
    /// The complete segments before the active one, with their sizes in bytes.
    closed_segments: BTreeMap<SegmentId, u64>,
    /// The segment being written.
    active: ActiveSegment,
    /// Whether a segment was created or removed since the directory was last synced.
    directory_unsynced: bool,
    /// Set by a failed write or sync: from then on only reopening can tell what is on
    /// disk, so every write is refused.
    poisoned: bool,
    /// Counters.
    stats: WalFileStats,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("directory", &self.directory)
            .field("segments", &(self.closed_segments.len() + 1))
            .field("active_segment", &self.active.id)
            .field("active_segment_bytes", &self.active_segment_bytes())
            .field("buffered_bytes", &self.active.buffer.len())
            .field("poisoned", &self.poisoned)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Wal {
    /// Opens the WAL in `directory`, creating the directory and a first segment when
    /// there is none.
    ///
    /// Scans every segment in order, verifying each record. A torn tail in the last
    /// segment is truncated (and the truncation synced) and reported in the returned
    /// [`Recovery`]; an invalid record anywhere else, or one in the last segment that
    /// is not a torn tail (see the module docs), is refused with
    /// [`WalError::Corrupted`] naming the file and the offset.
    pub fn open(directory: &Path, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        if options.segment_bytes_max == 0 {
            return Err(WalError::InvalidOptions {
                reason: "segment_bytes_max must be above zero".to_string(),
            });
        }
        let mut stats = WalFileStats::default();
        let directory_file = open_directory(directory, &mut stats)?;
        let segment_ids = list_segments(directory)?;

        let mut recovery = Recovery::default();
        let Some((&last_id, earlier_ids)) = segment_ids.split_last() else {
            let active = create_first_segment(directory, &directory_file, options, &mut stats)?;
            recovery.segments = 1;
            recovery.created = true;
            return Ok((
                Wal::assemble(
                    directory,
                    directory_file,
                    options,
                    BTreeMap::new(),
                    active,
                    stats,
                ),
                recovery,
            ));
        };

        let mut closed_segments = BTreeMap::new();
        for &id in earlier_ids {
            let scan = recover_segment(&directory.join(segment_file_name(id)), id, false)?;
            recovery.records += scan.records;
            closed_segments.insert(id, scan.file_bytes);
        }

        let path = directory.join(segment_file_name(last_id));
        let scan = recover_segment(&path, last_id, true)?;
        recovery.records += scan.records;
        recovery.segments = segment_ids.len() as u64;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(WalError::io(&path))?;
        let mut written_bytes = scan.valid_bytes;
        // Zeros after the records of a preallocated segment are its unused space.
        let unused_remainder = options.preallocate && scan.zero_tail;
        if !unused_remainder && (scan.valid_bytes < scan.file_bytes || scan.header_is_torn()) {
            recovery.torn_tail_truncated_bytes = scan.file_bytes - scan.valid_bytes;
            recovery.torn_tail = Some(RecordPosition {
                segment: last_id,
                offset: scan.valid_bytes,
            });
            tracing::warn!(
                segment = %path.display(),
                offset = scan.valid_bytes,
                truncated_bytes = recovery.torn_tail_truncated_bytes,
                "truncating the torn tail of the WAL"
            );
            file.set_len(scan.valid_bytes)
                .map_err(WalError::io(&path))?;
            if scan.header_is_torn() {
                let header = encode_segment_header(last_id);
                file.write_all(&header).map_err(WalError::io(&path))?;
                written_bytes = header.len() as u64;
                stats.bytes_written += written_bytes;
            }
            // The new length is metadata: `sync_all`, not `sync_data`, so it is durable
            // before anything is appended after it.
            file.sync_all().map_err(WalError::io(&path))?;
            stats.fsyncs += 1;
        }
        // What lies after the records of a reopened segment is unknown: zeros,
        // or space never written.
        let mut zeroed_until = written_bytes;
        if options.preallocate {
            zeroed_until = zeroed_until.max(preallocate(
                &mut file,
                &path,
                options.segment_bytes_max,
                &mut stats,
            )?);
        }
        file.seek(SeekFrom::Start(written_bytes))
            .map_err(WalError::io(&path))?;

        let active = ActiveSegment {
            id: last_id,
            path,
            file,
            written_bytes,
            buffer: Vec::new(),
            unsynced: false,
            zeroed_until,
        };
        Ok((
            Wal::assemble(
                directory,
                directory_file,
                options,
                closed_segments,
                active,
                stats,
            ),
            recovery,
        ))
    }

    /// Builds the WAL value once its files are in order.
    fn assemble(
        directory: &Path,
        directory_file: File,
        options: WalOptions,
        closed_segments: BTreeMap<SegmentId, u64>,
        active: ActiveSegment,
        stats: WalFileStats,
    ) -> Wal {
        debug_assert!(closed_segments
            .last_key_value()
            .is_none_or(|(&id, _)| id.next() == active.id));
        Wal {
            directory: directory.to_path_buf(),
            directory_file,
            options,
            closed_segments,
            active,
            directory_unsynced: false,
            poisoned: false,
            stats,
        }
    }

    /// Visits every record payload of every segment in order, reading the files (not a
    /// cache): used at startup and when one Raft group restarts and reloads its records.
    ///
    /// Reads the active segment only up to what was written to it: records still in the
    /// write buffer are not visited, so call [`Wal::sync`] first to include them. An
    /// error from `visit` stops the replay and is returned.
    pub fn replay(&self, visit: &mut RecordVisitor<'_>) -> Result<(), WalError> {
        self.refuse_if_poisoned()?;
        for (&id, &segment_bytes) in &self.closed_segments {
            replay_segment(
                &self.directory.join(segment_file_name(id)),
                id,
                segment_bytes,
                visit,
            )?;
        }
        replay_segment(
            &self.active.path,
            self.active.id,
            self.active.written_bytes,
            visit,
        )
    }

    /// Appends one record to the active segment's write buffer and returns where it
    /// starts. It is durable only after the next [`Wal::sync`]. Never rolls over: the
    /// caller decides when, between batches (see [`Wal::needs_rollover`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordPosition, WalError> {
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX as usize {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len() as u64,
            });
        }
        self.refuse_if_poisoned()?;
        if self.active.buffer.len() >= WRITE_BUFFER_BYTES_FLUSH {
            self.write_buffer()?;
        }
        let position = RecordPosition {
            segment: self.active.id,
            offset: self.active_segment_bytes(),
        };
        encode_record(payload, &mut self.active.buffer)?;
        self.stats.records_appended += 1;
        debug_assert_eq!(
            self.active_segment_bytes(),
            position.offset + (RECORD_HEADER_BYTES + payload.len()) as u64
        );
        Ok(position)
    }

    /// Writes the buffered records and makes everything appended so far durable with
    /// one `fdatasync` of the active segment, plus one `fsync` of the directory when a
    /// segment was created or removed since the last sync. Does nothing when there is
    /// nothing new to make durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.refuse_if_poisoned()?;
        self.write_buffer()?;
        if self.active.unsynced {
            if let Err(source) = self.active.file.sync_data() {
                self.poisoned = true;
                return Err(WalError::Io {
                    path: self.active.path.clone(),
                    source,
                });
            }
            self.active.unsynced = false;
            self.stats.fsyncs += 1;
        }
        self.sync_directory_if_needed()
    }

    /// Bytes in the active segment, its header and buffered records included.
    pub fn active_segment_bytes(&self) -> u64 {
        self.active.written_bytes + self.active.buffer.len() as u64
    }

    /// The segment being written.
    pub fn active_segment(&self) -> SegmentId {
        self.active.id
    }

    /// Whether the active segment has reached [`WalOptions::segment_bytes_max`], so the
    /// caller should roll over after the current batch.
    pub fn needs_rollover(&self) -> bool {
        self.active_segment_bytes() >= self.options.segment_bytes_max
    }

    /// The options the WAL was opened with.
    pub fn options(&self) -> WalOptions {
        self.options
    }

    /// Syncs the active segment, then starts a new empty one and returns its id. The
    /// new segment (and the directory entry naming it) becomes durable with the next
    /// [`Wal::sync`].
    pub fn rollover(&mut self) -> Result<SegmentId, WalError> {
        self.sync()?;
        if self.options.preallocate {
            // A closed segment ends with its last record: trim the zeros while it is
            // still the last segment, where a crash leaving them is harmless.
            let trimmed = self
                .active
                .file
                .set_len(self.active.written_bytes)
                .and_then(|()| self.active.file.sync_all());
            if let Err(source) = trimmed {
                self.poisoned = true;
                return Err(WalError::Io {
                    path: self.active.path.clone(),
                    source,
                });
            }
            self.stats.fsyncs += 1;
        }
        let id = self.active.id.next();
        let path = self.directory.join(segment_file_name(id));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(WalError::io(&path))?;
        let mut zeroed_until = 0;
        if self.options.preallocate {
            zeroed_until = preallocate(
                &mut file,
                &path,
                self.options.segment_bytes_max,
                &mut self.stats,
            )?;
            file.seek(SeekFrom::Start(0)).map_err(WalError::io(&path))?;
        }
        // The buffer is empty after the sync; reuse its capacity.
        let mut buffer = std::mem::take(&mut self.active.buffer);
        buffer.extend_from_slice(&encode_segment_header(id));
        let previous = std::mem::replace(
            &mut self.active,
            ActiveSegment {
                id,
                path,
                file,
                written_bytes: 0,
                buffer,
                unsynced: false,
                zeroed_until,
            },
        );
        self.closed_segments
            .insert(previous.id, previous.written_bytes);
        self.directory_unsynced = true;
        Ok(id)
    }

    /// All segment ids on disk, in order, the active one included.
    pub fn segments(&self) -> Vec<SegmentId> {
        self.closed_segments
            .keys()
            .copied()
            .chain(std::iter::once(self.active.id))
            .collect()
    }

    /// Deletes every segment with an id below `segment`, never the active one, oldest
    /// first, then syncs the directory. Returns how many were deleted.
    ///
    /// The caller must know that no record in them is still needed: every group has
    /// compacted past them and the state machine data they cover is durable.
    pub fn remove_segments_before(&mut self, segment: SegmentId) -> Result<u64, WalError> {
        self.refuse_if_poisoned()?;
        let doomed: Vec<SegmentId> = self
            .closed_segments
            .range(..segment)
            .map(|(&id, _)| id)
            .collect();
        let mut removed = 0u64;
        // Oldest first, so an interruption leaves the remaining ids consecutive.
        for id in doomed {
            let path = self.directory.join(segment_file_name(id));
            fs::remove_file(&path).map_err(WalError::io(&path))?;
            self.closed_segments.remove(&id);
            self.directory_unsynced = true;
            removed += 1;
        }
        self.sync_directory_if_needed()?;
        Ok(removed)
    }

    /// Total bytes of all segment files, buffered bytes of the active one included.
    pub fn total_bytes(&self) -> u64 {
        self.closed_segments.values().sum::<u64>() + self.active_segment_bytes()
    }

    /// Counters of the work done since open.
    pub fn stats(&self) -> WalFileStats {
        self.stats
    }

    /// The WAL directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Refuses any use after a failed write or sync.
    fn refuse_if_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned {
                path: self.active.path.clone(),
            });
        }
        Ok(())
    }

    /// Writes the buffer to the active file (without syncing it).
    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.active.buffer.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.active.file.write_all(&self.active.buffer) {
            // Part of the buffer may have reached the file: the cursor and the file no
            // longer match `written_bytes`.
            self.poisoned = true;
            return Err(WalError::Io {
                path: self.active.path.clone(),
                source,
            });
        }
        let written = self.active.buffer.len() as u64;
        self.active.written_bytes += written;
        self.stats.bytes_written += written;
        self.active.buffer.clear();
        self.active.unsynced = true;
        self.active.zeroed_until = self.active.zeroed_until.max(self.active.written_bytes);
        self.zero_ahead()
    }

    /// Overwrites the allocated space just after the records with zeros when less
    /// than half of [`ZEROED_AHEAD_BYTES`] of it is left written ahead; the next
    /// sync makes them durable with the records. Only ever writes after the last
    /// record, with a positioned write that leaves the cursor where it is.
    fn zero_ahead(&mut self) -> Result<(), WalError> {
        static ZEROS: [u8; ZEROED_AHEAD_BYTES as usize] = [0; ZEROED_AHEAD_BYTES as usize];
        let end = self.active.written_bytes;
        let allocated = self.options.segment_bytes_max;
        if !self.options.preallocate
            || self.active.zeroed_until >= allocated
            || self.active.zeroed_until >= end + ZEROED_AHEAD_BYTES / 2
        {
            return Ok(());
        }
        let from = self.active.zeroed_until;
        let until = (end + ZEROED_AHEAD_BYTES).min(allocated);
        let zeros = &ZEROS[..(until - from) as usize];
        if let Err(source) = self.active.file.write_all_at(zeros, from) {
            // Zeros after the records read as unused space, but a failed write may
            // have left anything there.
            self.poisoned = true;
            return Err(WalError::Io {
                path: self.active.path.clone(),
                source,
            });
        }
        self.active.zeroed_until = until;
        Ok(())
    }

    /// Syncs the directory if a segment was created or removed since the last time.
    fn sync_directory_if_needed(&mut self) -> Result<(), WalError> {
        if !self.directory_unsynced {
            return Ok(());
        }
        if let Err(source) = self.directory_file.sync_all() {
            // As with files, a failed fsync cannot be retried with confidence.
            self.poisoned = true;
            return Err(WalError::Io {
                path: self.directory.clone(),
                source,
            });
        }
        self.directory_unsynced = false;
        self.stats.directory_fsyncs += 1;
        Ok(())
    }
}

/// Creates `directory` when missing (syncing its parent so the new entry survives a
/// crash) and opens it for `fsync`.
fn open_directory(directory: &Path, stats: &mut WalFileStats) -> Result<File, WalError> {
    if !directory.is_dir() {
        fs::create_dir_all(directory).map_err(WalError::io(directory))?;
        let parent = match directory.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)
            .and_then(|parent_file| parent_file.sync_all())
            .map_err(WalError::io(parent))?;
        stats.directory_fsyncs += 1;
    }
    File::open(directory).map_err(WalError::io(directory))
}

/// The segment ids in `directory`, sorted, refusing a gap between them.
fn list_segments(directory: &Path) -> Result<Vec<SegmentId>, WalError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(directory).map_err(WalError::io(directory))? {
        let entry = entry.map_err(WalError::io(directory))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    for pair in ids.windows(2) {
        if let [earlier, later] = pair {
            if later.0 != earlier.0.saturating_add(1) {
                return Err(WalError::MissingSegment {
                    directory: directory.to_path_buf(),
                    missing: earlier.next(),
                });
            }
        }
    }
    Ok(ids)
}

/// Extends `file` up to `bytes` with allocated space that reads as zeros (nothing
/// when it is that long already) and makes the new length durable. Uses
/// `fallocate`, which allocates without writing; where the file system does not
/// support it, zeros are written instead. Returns how many bytes from the start
/// are known to be written: `bytes` when zeros were written, else 0.
fn preallocate(
    file: &mut File,
    path: &Path,
    bytes: u64,
    stats: &mut WalFileStats,
) -> Result<u64, WalError> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let length = file.metadata().map_err(WalError::io(path))?.len();
    if length >= bytes {
        return Ok(0);
    }
    let allocated = rustix::fs::fallocate(
        &*file,
        rustix::fs::FallocateFlags::empty(),
        length,
        bytes - length,
    );
    if allocated.is_err() {
        file.seek(SeekFrom::Start(length))
            .map_err(WalError::io(path))?;
        let mut remaining = bytes - length;
        while remaining > 0 {
            let chunk = remaining.min(ZEROS.len() as u64) as usize;
            file.write_all(&ZEROS[..chunk])
                .map_err(WalError::io(path))?;
            remaining -= chunk as u64;
        }
    }
    file.sync_all().map_err(WalError::io(path))?;
    stats.fsyncs += 1;
    Ok(if allocated.is_err() { bytes } else { 0 })
}

/// Creates segment [`SegmentId::FIRST`] in an empty directory, durably.
fn create_first_segment(
    directory: &Path,
    directory_file: &File,
    options: WalOptions,
    stats: &mut WalFileStats,
) -> Result<ActiveSegment, WalError> {
    let id = SegmentId::FIRST;
    let path = directory.join(segment_file_name(id));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(WalError::io(&path))?;
    let mut zeroed_until = 0;
    if options.preallocate {
        zeroed_until = preallocate(&mut file, &path, options.segment_bytes_max, stats)?;
        file.seek(SeekFrom::Start(0)).map_err(WalError::io(&path))?;
    }
    let header = encode_segment_header(id);
    file.write_all(&header).map_err(WalError::io(&path))?;
    file.sync_data().map_err(WalError::io(&path))?;
    stats.fsyncs += 1;
    stats.bytes_written += header.len() as u64;
    directory_file.sync_all().map_err(WalError::io(directory))?;
    stats.directory_fsyncs += 1;
    Ok(ActiveSegment {
        id,
        path,
        file,
        written_bytes: SEGMENT_HEADER_BYTES as u64,
        buffer: Vec::new(),
        unsynced: false,
        zeroed_until: zeroed_until.max(SEGMENT_HEADER_BYTES as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::{decode_record, encode_record, DecodeOutcome, RECORD_MARKER};
    use proptest::prelude::*;

    /// Segments small enough that a few hundred bytes of records span several.
    const SMALL_SEGMENT_BYTES: u64 = 256;

    fn options(segment_bytes_max: u64) -> WalOptions {
        WalOptions {
            segment_bytes_max,
            preallocate: false,
        }
    }

    /// Opens without preallocation, so file sizes are what the records make them
    /// (the preallocated layout has tests of its own).
    fn open(directory: &Path) -> (Wal, Recovery) {
        Wal::open(directory, options(WalOptions::default().segment_bytes_max)).expect("WAL opens")
    }

    fn preallocated(segment_bytes_max: u64) -> WalOptions {
        WalOptions {
            segment_bytes_max,
            preallocate: true,
        }
    }

    // Proves a preallocated segment is full-size zeros past its records, that a clean
    // reopen reports nothing torn and truncates nothing, that appends continue where
    // the records end, and that rollover trims the closed segment to its records.
    #[test]
    fn preallocated_segments_reopen_cleanly_and_trim_when_closed() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let segment_bytes = 64 * 1024;
        let (mut wal, _) = Wal::open(directory.path(), preallocated(segment_bytes)).expect("opens");
        append_synced(&mut wal, 0, 20);
        let path = segment_path(directory.path(), 1);
        assert_eq!(fs::metadata(&path).expect("metadata").len(), segment_bytes);
        drop(wal);
        let (mut wal, recovery) =
            Wal::open(directory.path(), preallocated(segment_bytes)).expect("reopens");
        assert_eq!(
            (
                recovery.records,
                recovery.torn_tail,
                recovery.torn_tail_truncated_bytes
            ),
            (20, None, 0)
        );
        assert_eq!(fs::metadata(&path).expect("metadata").len(), segment_bytes);
        append_synced(&mut wal, 20, 5);
        let written = wal.active_segment_bytes();
        wal.rollover().expect("rollover");
        append_synced(&mut wal, 25, 5);
        assert_eq!(
            fs::metadata(&path).expect("metadata").len(),
            written,
            "trimmed"
        );
        assert_eq!(
            fs::metadata(segment_path(directory.path(), 2))
                .expect("metadata")
                .len(),
            segment_bytes
        );
        drop(wal);
        let (wal, recovery) =
            Wal::open(directory.path(), preallocated(segment_bytes)).expect("reopens");
        assert_eq!((recovery.records, recovery.torn_tail), (30, None));
        assert_eq!(
            payloads(&replay_all(&wal)),
            (0..30).map(payload).collect::<Vec<_>>()
        );
    }

    // Proves the space after the records of a preallocated segment is overwritten
    // with zeros ahead of them, in steps, never past the allocated size and never
    // over a record: the bytes there read as zeros, the file keeps its size, the
    // mark moves on only once less than half a step is left, and a reopen finds
    // every record and nothing torn.
    #[test]
    fn preallocated_space_is_zeroed_ahead_of_the_records() {
        let read_range = |path: &Path, from: u64, until: u64| {
            let bytes = fs::read(path).expect("read segment");
            bytes[from as usize..until as usize].to_vec()
        };
        let directory = tempfile::tempdir().expect("temporary directory");
        let segment_bytes = 4 * ZEROED_AHEAD_BYTES;
        let (mut wal, _) = Wal::open(directory.path(), preallocated(segment_bytes)).expect("opens");
        append_synced(&mut wal, 0, 10);
        let end = wal.active_segment_bytes();
        let path = segment_path(directory.path(), 1);
        assert_eq!(wal.active.zeroed_until, end + ZEROED_AHEAD_BYTES);
        assert_eq!(fs::metadata(&path).expect("metadata").len(), segment_bytes);
        assert!(read_range(&path, end, end + ZEROED_AHEAD_BYTES)
            .iter()
            .all(|byte| *byte == 0));

        // Less than half a step consumed: the mark stays.
        let first_mark = wal.active.zeroed_until;
        append_synced(&mut wal, 10, 10);
        assert_eq!(wal.active.zeroed_until, first_mark);
        // Records reaching past half of the step move it a step past the records.
        let mut next = 20;
        while wal.active_segment_bytes() + ZEROED_AHEAD_BYTES / 2 <= first_mark {
            let big = vec![7u8; 64 * 1024];
            wal.append(&big).expect("append");
            wal.sync().expect("sync");
            next += 1;
        }
        let end = wal.active_segment_bytes();
        assert_eq!(wal.active.zeroed_until, end + ZEROED_AHEAD_BYTES);
        assert!(read_range(&path, end, end + ZEROED_AHEAD_BYTES)
            .iter()
            .all(|byte| *byte == 0));
        drop(wal);

        let (wal, recovery) =
            Wal::open(directory.path(), preallocated(segment_bytes)).expect("reopens");
        assert_eq!((recovery.records, recovery.torn_tail), (next, None));
        let replayed = payloads(&replay_all(&wal));
        assert_eq!(replayed[..20], (0..20).map(payload).collect::<Vec<_>>()[..]);
        assert!(replayed[20..]
            .iter()
            .all(|record| record == &vec![7u8; 64 * 1024]));
        // A reopened segment knows only its records to be written.
        assert_eq!(wal.active.zeroed_until, wal.active_segment_bytes());

        // A segment smaller than a step is zeroed up to its size, not past it.
        let directory = tempfile::tempdir().expect("temporary directory");
        let small = ZEROED_AHEAD_BYTES / 4;
        let (mut wal, _) = Wal::open(directory.path(), preallocated(small)).expect("opens");
        append_synced(&mut wal, 0, 3);
        assert_eq!(wal.active.zeroed_until, small);
        assert_eq!(
            fs::metadata(segment_path(directory.path(), 1))
                .expect("metadata")
                .len(),
            small
        );
    }

    // Proves a final record torn over preallocated zeros (a prefix of it written, the
    // zeros after it untouched) is a torn tail: cut, reported, the segment extended
    // again, and appends after it survive; while damage followed by a valid record is
    // still corruption.
    #[test]
    fn torn_record_over_preallocated_zeros_is_a_torn_tail() {
        let segment_bytes = 64 * 1024;
        let record_bytes = (RECORD_HEADER_BYTES + payload(3).len()) as u64;
        for written in [1, RECORD_HEADER_BYTES as u64, record_bytes - 1] {
            let directory = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) =
                Wal::open(directory.path(), preallocated(segment_bytes)).expect("opens");
            let positions = append_synced(&mut wal, 0, 3);
            let end = wal.active_segment_bytes();
            drop(wal);
            let mut record = Vec::new();
            encode_record(&payload(3), &mut record).expect("encode");
            let path = segment_path(directory.path(), 1);
            let mut file = OpenOptions::new().write(true).open(&path).expect("open");
            file.seek(SeekFrom::Start(end)).expect("seek");
            file.write_all(&record[..written as usize]).expect("write");
            drop(file);
            let (mut wal, recovery) =
                Wal::open(directory.path(), preallocated(segment_bytes)).expect("reopens");
            assert_eq!(recovery.records, 3, "written {written}");
            assert_eq!(
                recovery.torn_tail,
                Some(RecordPosition {
                    segment: SegmentId(1),
                    offset: end
                })
            );
            assert_eq!(fs::metadata(&path).expect("metadata").len(), segment_bytes);
            append_synced(&mut wal, 3, 1);
            let replayed = replay_all(&wal);
            assert_eq!(replayed.len(), 4);
            assert_eq!(
                replayed[..3].iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                positions
            );
        }
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = Wal::open(directory.path(), preallocated(segment_bytes)).expect("opens");
        let positions = append_synced(&mut wal, 0, 3);
        drop(wal);
        let path = segment_path(directory.path(), 1);
        let mut file = OpenOptions::new().write(true).open(&path).expect("open");
        file.seek(SeekFrom::Start(positions[1].offset + 2))
            .expect("seek");
        file.write_all(&[0xAB]).expect("damage");
        drop(file);
        let error = Wal::open(directory.path(), preallocated(segment_bytes)).unwrap_err();
        let (_, offset, _) = expect_corrupted(error);
        assert_eq!(offset, positions[1].offset);
    }

    fn payload(index: u64) -> Vec<u8> {
        format!("record number {index}").into_bytes()
    }

    /// Every record as (position, payload), read back from the files.
    fn replay_all(wal: &Wal) -> Vec<(RecordPosition, Vec<u8>)> {
        let mut records = Vec::new();
        wal.replay(&mut |position, payload| {
            records.push((position, payload.to_vec()));
            Ok(())
        })
        .expect("replay succeeds");
        records
    }

    fn payloads(records: &[(RecordPosition, Vec<u8>)]) -> Vec<Vec<u8>> {
        records.iter().map(|(_, payload)| payload.clone()).collect()
    }

    fn segment_path(directory: &Path, id: u64) -> PathBuf {
        directory.join(segment_file_name(SegmentId(id)))
    }

    /// Appends `count` records numbered from `first`, syncs, returns their positions.
    fn append_synced(wal: &mut Wal, first: u64, count: u64) -> Vec<RecordPosition> {
        let positions = (first..first + count)
            .map(|index| wal.append(&payload(index)).expect("append"))
            .collect();
        wal.sync().expect("sync");
        positions
    }

    fn expect_corrupted(error: WalError) -> (PathBuf, u64, String) {
        match error {
            WalError::Corrupted {
                path,
                offset,
                reason,
            } => (path, offset, reason),
            other => panic!("expected corruption, got {other}"),
        }
    }

    // Proves records survive a close and reopen: the same payloads at the same
    // positions, in order, and that open reports them without any repair.
    #[test]
    fn round_trip_over_restart() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, recovery) = open(directory.path());
        assert!(recovery.created);
        assert_eq!(wal.active_segment(), SegmentId::FIRST);
        assert_eq!(wal.active_segment_bytes(), SEGMENT_HEADER_BYTES as u64);
        let positions = append_synced(&mut wal, 0, 100);
        assert_eq!(positions[0].offset, SEGMENT_HEADER_BYTES as u64);
        let before = replay_all(&wal);
        drop(wal);

        let (wal, recovery) = open(directory.path());
        assert_eq!(
            recovery,
            Recovery {
                records: 100,
                segments: 1,
                torn_tail_truncated_bytes: 0,
                torn_tail: None,
                created: false,
            }
        );
        let after = replay_all(&wal);
        assert_eq!(after, before);
        assert_eq!(
            after
                .iter()
                .map(|(position, _)| *position)
                .collect::<Vec<_>>(),
            positions
        );
        assert_eq!(payloads(&after), (0..100).map(payload).collect::<Vec<_>>());
    }

    // Proves unsynced appends are not replayed, and that a dropped WAL loses them (they
    // were never acknowledged) while keeping everything synced.
    #[test]
    fn only_synced_records_survive() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        append_synced(&mut wal, 0, 3);
        wal.append(b"never synced").expect("append");
        assert_eq!(replay_all(&wal).len(), 3);
        drop(wal);
        let (wal, recovery) = open(directory.path());
        assert_eq!(recovery.records, 3);
        assert_eq!(recovery.torn_tail_truncated_bytes, 0);
        assert_eq!(replay_all(&wal).len(), 3);
    }

    // Proves a record cut anywhere (in its header or in its payload) at the end of the
    // last segment is a torn tail: the earlier records are kept, the file is cut back to
    // the last whole record, and appends after reopening land there and survive.
    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        let record_bytes = (RECORD_HEADER_BYTES + payload(2).len()) as u64;
        for cut_bytes in 1..record_bytes {
            let directory = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) = open(directory.path());
            let positions = append_synced(&mut wal, 0, 3);
            let file_bytes = wal.active_segment_bytes();
            drop(wal);
            let path = segment_path(directory.path(), 1);
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.set_len(file_bytes - cut_bytes).expect("cut the file");
            drop(file);

            let (mut wal, recovery) = open(directory.path());
            assert_eq!(recovery.records, 2, "cut {cut_bytes}");
            assert_eq!(recovery.torn_tail, Some(positions[2]));
            assert_eq!(recovery.torn_tail_truncated_bytes, record_bytes - cut_bytes);
            assert_eq!(
                fs::metadata(&path).expect("metadata").len(),
                positions[2].offset
            );
            assert_eq!(payloads(&replay_all(&wal)), vec![payload(0), payload(1)]);

            let appended = append_synced(&mut wal, 10, 1);
            assert_eq!(appended[0], positions[2]);
            drop(wal);
            let (wal, recovery) = open(directory.path());
            assert_eq!(recovery.torn_tail, None);
            assert_eq!(
                payloads(&replay_all(&wal)),
                vec![payload(0), payload(1), payload(10)]
            );
        }
    }

    // Proves a zero-filled region at the end of the last segment (a file extended before
    // its data reached the disk) is cut as a torn tail, including zeros that fill
    // exactly one record header.
    #[test]
    fn zero_filled_tail_is_truncated() {
        for zero_bytes in [1u64, RECORD_HEADER_BYTES as u64, 4096] {
            let directory = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) = open(directory.path());
            append_synced(&mut wal, 0, 5);
            let end = wal.active_segment_bytes();
            drop(wal);
            let path = segment_path(directory.path(), 1);
            let mut file = OpenOptions::new().append(true).open(&path).expect("open");
            file.write_all(&vec![0; zero_bytes as usize])
                .expect("zeros");
            drop(file);

            let (wal, recovery) = open(directory.path());
            assert_eq!(recovery.records, 5);
            assert_eq!(recovery.torn_tail_truncated_bytes, zero_bytes);
            assert_eq!(
                recovery.torn_tail,
                Some(RecordPosition {
                    segment: SegmentId(1),
                    offset: end
                })
            );
            assert_eq!(fs::metadata(&path).expect("metadata").len(), end);
            assert_eq!(replay_all(&wal).len(), 5);
        }
    }

    // Proves a flipped payload byte in a record followed by more records is corruption,
    // not a torn tail, even in the last segment: open fails naming the file and the
    // offset of the damaged record, and the message says so.
    #[test]
    fn corrupted_middle_record_is_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        let positions = append_synced(&mut wal, 0, 5);
        drop(wal);
        let path = segment_path(directory.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        let flipped = positions[2].offset as usize + RECORD_HEADER_BYTES + 4;
        bytes[flipped] ^= 0x20;
        fs::write(&path, &bytes).expect("write");

        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("corrupted");
        let message = error.to_string();
        let (error_path, offset, reason) = expect_corrupted(error);
        assert_eq!(error_path, path);
        // The header is 24 bytes and each record "record number N" is 9 + 15 bytes.
        assert_eq!(offset, 24 + 2 * 24);
        assert_eq!(offset, positions[2].offset);
        assert!(reason.contains("checksum mismatch"), "{reason}");
        assert!(
            message.starts_with(&format!(
                "WAL corrupted in {} at offset 72: ",
                path.display()
            )),
            "{message}"
        );
        // Refusing must not have repaired anything.
        assert_eq!(fs::read(&path).expect("read"), bytes);
    }

    // Proves checksum handling at the end of the last segment: a damaged final record
    // that ends exactly at the end of the file is a torn write and is cut, while a
    // damaged stored checksum of a record followed by another is corruption.
    #[test]
    fn checksum_mismatch_is_torn_only_for_the_final_record() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        let positions = append_synced(&mut wal, 0, 4);
        drop(wal);
        let path = segment_path(directory.path(), 1);
        let original = fs::read(&path).expect("read");

        let mut final_damaged = original.clone();
        let last_byte = final_damaged.len() - 1;
        final_damaged[last_byte] ^= 0xFF;
        fs::write(&path, &final_damaged).expect("write");
        let (wal, recovery) = open(directory.path());
        assert_eq!(recovery.records, 3);
        assert_eq!(recovery.torn_tail, Some(positions[3]));
        assert_eq!(
            payloads(&replay_all(&wal)),
            (0..3).map(payload).collect::<Vec<_>>()
        );
        drop(wal);

        let mut checksum_damaged = original;
        checksum_damaged[positions[1].offset as usize + 5] ^= 0x01;
        fs::write(&path, &checksum_damaged).expect("write");
        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("corrupted");
        let (_, offset, reason) = expect_corrupted(error);
        assert_eq!(offset, positions[1].offset);
        assert!(reason.contains("checksum mismatch"), "{reason}");
    }

    // Proves zeros are a torn tail only when they run to the end of the file: a zeroed
    // record followed by valid records is corruption.
    #[test]
    fn zeros_followed_by_data_are_corruption() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        let positions = append_synced(&mut wal, 0, 3);
        drop(wal);
        let path = segment_path(directory.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        let start = positions[1].offset as usize;
        bytes[start..start + RECORD_HEADER_BYTES].fill(0);
        fs::write(&path, &bytes).expect("write");
        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("corrupted");
        let (_, offset, reason) = expect_corrupted(error);
        assert_eq!(offset, positions[1].offset);
        assert!(reason.contains("marker"), "{reason}");
    }

    // Proves the torn tail rule applies to the last segment only: the same cut at the
    // end of an earlier segment (which rollover synced whole) is corruption.
    #[test]
    fn incomplete_record_in_an_earlier_segment_is_corruption() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        append_synced(&mut wal, 0, 3);
        let first_end = wal.active_segment_bytes();
        wal.rollover().expect("rollover");
        append_synced(&mut wal, 3, 3);
        drop(wal);
        let path = segment_path(directory.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(first_end - 3).expect("cut");
        drop(file);
        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("corrupted");
        let (error_path, offset, reason) = expect_corrupted(error);
        assert_eq!(error_path, path);
        assert_eq!(offset, first_end - 24);
        assert!(reason.contains("not the last"), "{reason}");
    }

    // Proves records spread over several segments by rollover replay in append order
    // with increasing positions, before and after a restart, and that the sizes add up.
    #[test]
    fn segment_rollover_replays_in_order() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = Wal::open(directory.path(), options(SMALL_SEGMENT_BYTES)).expect("open");
        for batch in 0..10 {
            append_synced(&mut wal, batch * 5, 5);
            if wal.needs_rollover() {
                let previous = wal.active_segment();
                assert_eq!(wal.rollover().expect("rollover"), previous.next());
            }
        }
        wal.sync().expect("sync");
        let segments = wal.segments();
        assert!(segments.len() >= 4, "{segments:?}");
        assert_eq!(segments.first(), Some(&SegmentId::FIRST));
        assert_eq!(segments.last(), Some(&wal.active_segment()));
        let on_disk_bytes: u64 = segments
            .iter()
            .map(|id| {
                fs::metadata(segment_path(directory.path(), id.0))
                    .expect("metadata")
                    .len()
            })
            .sum();
        assert_eq!(wal.total_bytes(), on_disk_bytes);

        let records = replay_all(&wal);
        assert_eq!(payloads(&records), (0..50).map(payload).collect::<Vec<_>>());
        assert!(records.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let used: Vec<SegmentId> = records
            .iter()
            .map(|(position, _)| position.segment)
            .collect();
        assert!(used.contains(&SegmentId(2)) && used.contains(&SegmentId(3)));
        drop(wal);

        let (wal, recovery) =
            Wal::open(directory.path(), options(SMALL_SEGMENT_BYTES)).expect("open");
        assert_eq!(recovery.records, 50);
        assert_eq!(recovery.segments, segments.len() as u64);
        assert_eq!(wal.segments(), segments);
        assert_eq!(replay_all(&wal), records);
    }

    // Proves a rollover followed by a crash before the next sync is recovered: an empty
    // or zero-filled new segment is given its header again, and writing continues in it.
    #[test]
    fn torn_segment_header_is_rewritten() {
        for torn_header in [Vec::new(), vec![0; SEGMENT_HEADER_BYTES], b"MIMO".to_vec()] {
            let directory = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) = open(directory.path());
            append_synced(&mut wal, 0, 2);
            drop(wal);
            fs::write(segment_path(directory.path(), 2), &torn_header).expect("write");

            let (mut wal, recovery) = open(directory.path());
            assert_eq!(recovery.records, 2);
            assert_eq!(recovery.segments, 2);
            assert_eq!(recovery.torn_tail_truncated_bytes, torn_header.len() as u64);
            assert_eq!(
                recovery.torn_tail,
                Some(RecordPosition {
                    segment: SegmentId(2),
                    offset: 0
                })
            );
            assert_eq!(wal.active_segment(), SegmentId(2));
            append_synced(&mut wal, 2, 1);
            drop(wal);
            let (wal, _) = open(directory.path());
            assert_eq!(
                payloads(&replay_all(&wal)),
                (0..3).map(payload).collect::<Vec<_>>()
            );
        }
    }

    // Proves a bad segment header is corruption at offset 0, and a file whose header
    // names another segment (a renamed or copied file) is refused.
    #[test]
    fn bad_segment_headers_are_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        append_synced(&mut wal, 0, 2);
        wal.rollover().expect("rollover");
        append_synced(&mut wal, 2, 2);
        drop(wal);
        let first = segment_path(directory.path(), 1);
        let original = fs::read(&first).expect("read");

        let mut bad_magic = original.clone();
        bad_magic[0] = b'X';
        fs::write(&first, &bad_magic).expect("write");
        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("bad magic");
        let (path, offset, reason) = expect_corrupted(error);
        assert_eq!((path, offset), (first.clone(), 0));
        assert!(reason.contains("magic"), "{reason}");

        // Segment 2's file moved in place of segment 1: the header says 2.
        fs::write(
            &first,
            fs::read(segment_path(directory.path(), 2)).expect("read"),
        )
        .expect("write");
        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("wrong id");
        let (_, offset, reason) = expect_corrupted(error);
        assert_eq!(offset, 0);
        assert!(reason.contains("names segment 2"), "{reason}");
    }

    // Proves compaction: segments before the given id are deleted from disk and from
    // replay, the active segment is never deleted even when asked, and a reopen starts
    // from the oldest remaining segment.
    #[test]
    fn remove_segments_before_deletes_old_segments_only() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        for segment in 0..4 {
            append_synced(&mut wal, segment * 2, 2);
            if segment < 3 {
                wal.rollover().expect("rollover");
            }
        }
        assert_eq!(wal.segments(), (1..=4).map(SegmentId).collect::<Vec<_>>());
        let directory_fsyncs = wal.stats().directory_fsyncs;

        assert_eq!(wal.remove_segments_before(SegmentId(3)).expect("remove"), 2);
        assert_eq!(wal.stats().directory_fsyncs, directory_fsyncs + 1);
        assert!(!segment_path(directory.path(), 1).exists());
        assert!(!segment_path(directory.path(), 2).exists());
        assert!(segment_path(directory.path(), 3).exists());
        assert_eq!(wal.segments(), vec![SegmentId(3), SegmentId(4)]);
        assert_eq!(
            payloads(&replay_all(&wal)),
            (4..8).map(payload).collect::<Vec<_>>()
        );
        assert_eq!(wal.remove_segments_before(SegmentId(3)).expect("remove"), 0);

        assert_eq!(
            wal.remove_segments_before(SegmentId(u64::MAX))
                .expect("remove"),
            1
        );
        assert_eq!(wal.segments(), vec![SegmentId(4)]);
        assert!(segment_path(directory.path(), 4).exists());
        assert_eq!(
            payloads(&replay_all(&wal)),
            (6..8).map(payload).collect::<Vec<_>>()
        );
        append_synced(&mut wal, 8, 1);
        drop(wal);

        let (wal, recovery) = open(directory.path());
        assert_eq!(recovery.segments, 1);
        assert_eq!(recovery.records, 3);
        assert_eq!(wal.active_segment(), SegmentId(4));
        assert_eq!(
            payloads(&replay_all(&wal)),
            (6..9).map(payload).collect::<Vec<_>>()
        );
    }

    // Proves a segment missing between two others is refused (records were lost), while
    // files with other names in the directory are ignored.
    #[test]
    fn missing_segment_is_refused_and_foreign_files_ignored() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        for segment in 0..3 {
            append_synced(&mut wal, segment, 1);
            wal.rollover().expect("rollover");
        }
        wal.sync().expect("sync");
        drop(wal);
        fs::write(directory.path().join("notes.txt"), b"not a segment").expect("write");
        fs::write(directory.path().join("wal-7.log"), b"not a segment either").expect("write");
        let (_, recovery) = open(directory.path());
        assert_eq!(recovery.segments, 4);

        fs::remove_file(segment_path(directory.path(), 2)).expect("remove");
        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("gap");
        assert!(
            matches!(
                error,
                WalError::MissingSegment {
                    missing: SegmentId(2),
                    ..
                }
            ),
            "{error}"
        );
    }

    // Proves a length field above the limit is refused as corruption from its header
    // alone, even at the end of the last segment where an incomplete record would be a
    // torn tail: the reader never waits for, reads or allocates the announced 4 GiB.
    #[test]
    fn oversized_length_field_is_refused_without_allocating() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        append_synced(&mut wal, 0, 2);
        let end = wal.active_segment_bytes();
        drop(wal);
        let mut header = vec![RECORD_MARKER];
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&[0xAB; 4]);
        header.extend_from_slice(b"a little payload");
        let path = segment_path(directory.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&header).expect("write");
        drop(file);

        let error = Wal::open(directory.path(), WalOptions::default()).expect_err("corrupted");
        let (_, offset, reason) = expect_corrupted(error);
        assert_eq!(offset, end);
        assert!(reason.contains("exceeds the limit"), "{reason}");
    }

    // Proves an oversized payload is refused by append without poisoning the WAL or
    // touching the buffer, and that the limit itself is accepted.
    #[test]
    fn oversized_append_is_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        let before = wal.active_segment_bytes();
        let too_large = vec![0u8; RECORD_PAYLOAD_BYTES_MAX as usize + 1];
        let error = wal.append(&too_large).expect_err("too large");
        assert!(
            matches!(error, WalError::RecordTooLarge { bytes } if bytes == too_large.len() as u64)
        );
        assert_eq!(wal.active_segment_bytes(), before);
        let at_limit = &too_large[..RECORD_PAYLOAD_BYTES_MAX as usize];
        wal.append(at_limit).expect("the limit itself fits");
        wal.sync().expect("sync");
        let mut lengths = Vec::new();
        wal.replay(&mut |_, payload| {
            lengths.push(payload.len());
            Ok(())
        })
        .expect("replay");
        assert_eq!(lengths, vec![RECORD_PAYLOAD_BYTES_MAX as usize]);
    }

    // Proves group commit: a batch of thousands of appends costs one fdatasync, a sync
    // with nothing new costs none, and the directory is synced only after a segment was
    // created.
    #[test]
    fn one_fdatasync_per_batch() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        let start = wal.stats();
        for index in 0..5000 {
            wal.append(&payload(index)).expect("append");
        }
        wal.sync().expect("sync");
        let after_batch = wal.stats();
        assert_eq!(after_batch.fsyncs, start.fsyncs + 1);
        assert_eq!(after_batch.directory_fsyncs, start.directory_fsyncs);
        assert_eq!(after_batch.records_appended, 5000);
        wal.sync().expect("sync");
        assert_eq!(wal.stats().fsyncs, after_batch.fsyncs);

        wal.rollover().expect("rollover");
        wal.append(b"first in the new segment").expect("append");
        wal.sync().expect("sync");
        assert_eq!(wal.stats().fsyncs, after_batch.fsyncs + 1);
        assert_eq!(
            wal.stats().directory_fsyncs,
            after_batch.directory_fsyncs + 1
        );
    }

    // Proves replay reads the files rather than a cache: damage done on disk after open
    // is reported by the next replay, naming the file and offset.
    #[test]
    fn replay_reads_the_files() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        let positions = append_synced(&mut wal, 0, 3);
        let path = segment_path(directory.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        bytes[positions[1].offset as usize + RECORD_HEADER_BYTES] ^= 0x01;
        fs::write(&path, &bytes).expect("write");

        let error = wal.replay(&mut |_, _| Ok(())).expect_err("damaged");
        let (error_path, offset, _) = expect_corrupted(error);
        assert_eq!((error_path, offset), (path, positions[1].offset));
    }

    // Proves an error from the visitor stops the replay and is returned as is.
    #[test]
    fn replay_stops_at_visitor_error() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let (mut wal, _) = open(directory.path());
        append_synced(&mut wal, 0, 5);
        let mut visited = 0;
        let error = wal
            .replay(&mut |_, _| {
                visited += 1;
                if visited == 2 {
                    return Err(WalError::InvalidOptions {
                        reason: "stop here".to_string(),
                    });
                }
                Ok(())
            })
            .expect_err("visitor error");
        assert_eq!(visited, 2);
        assert!(error.to_string().contains("stop here"));
    }

    // Proves zero-sized segments are refused as an option, before touching the disk.
    #[test]
    fn zero_segment_size_is_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let wal_directory = directory.path().join("wal");
        let error = Wal::open(&wal_directory, options(0)).expect_err("invalid");
        assert!(matches!(error, WalError::InvalidOptions { .. }));
        assert!(!wal_directory.exists());
    }

    /// A segment file of segment 1 with a valid header followed by `tail`.
    fn segment_with_tail(tail: &[u8]) -> Vec<u8> {
        let mut bytes = encode_segment_header(SegmentId(1)).to_vec();
        bytes.extend_from_slice(tail);
        bytes
    }

    /// The valid records at the start of `bytes`.
    fn decodable_prefix(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        while let DecodeOutcome::Record {
            payload,
            record_bytes,
        } = decode_record(bytes)
        {
            records.push(payload.to_vec());
            bytes = &bytes[record_bytes..];
        }
        records
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        // Proves open never panics on arbitrary segment contents, with or without a valid
        // header; that whatever it accepts replays as exactly the valid records at the
        // start of the file; and that a second open finds nothing left to repair.
        #[test]
        fn open_arbitrary_segment_never_panics(
            with_header in any::<bool>(),
            valid_payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut content = Vec::new();
            for payload in &valid_payloads {
                encode_record(payload, &mut content).expect("small payload");
            }
            content.extend_from_slice(&tail);
            let bytes = if with_header { segment_with_tail(&content) } else { content };
            let directory = tempfile::tempdir().expect("temporary directory");
            fs::write(segment_path(directory.path(), 1), &bytes).expect("write");

            if let Ok((wal, recovery)) = Wal::open(directory.path(), WalOptions::default()) {
                let replayed = payloads(&replay_all(&wal));
                if with_header {
                    prop_assert_eq!(&replayed, &decodable_prefix(&bytes[SEGMENT_HEADER_BYTES..]));
                }
                prop_assert_eq!(recovery.records, replayed.len() as u64);
                drop(wal);
                let (_, again) = Wal::open(directory.path(), WalOptions::default()).expect("reopen");
                prop_assert_eq!(again.torn_tail, None);
                prop_assert_eq!(again.records, recovery.records);
            }
        }

        // Proves arbitrary payload sequences round-trip through the files, whatever the
        // batching and rollover points, across a restart.
        #[test]
        fn arbitrary_payloads_round_trip(
            batches in proptest::collection::vec(
                (proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), any::<bool>()),
                1..6,
            ),
        ) {
            let directory = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) = Wal::open(directory.path(), options(SMALL_SEGMENT_BYTES)).expect("open");
            let mut expected = Vec::new();
            for (batch, roll) in &batches {
                for payload in batch {
                    wal.append(payload).expect("append");
                    expected.push(payload.clone());
                }
                wal.sync().expect("sync");
                if *roll {
                    wal.rollover().expect("rollover");
                }
            }
            wal.sync().expect("sync");
            prop_assert_eq!(&payloads(&replay_all(&wal)), &expected);
            drop(wal);
            let (wal, recovery) = Wal::open(directory.path(), options(SMALL_SEGMENT_BYTES)).expect("reopen");
            prop_assert_eq!(recovery.torn_tail, None);
            prop_assert_eq!(&payloads(&replay_all(&wal)), &expected);
        }

        // Proves a crash cutting the last segment at any byte recovers a prefix of the
        // synced records: everything before the cut record, nothing invented.
        #[test]
        fn truncation_anywhere_recovers_a_prefix(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 1..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let directory = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) = open(directory.path());
            for payload in &records {
                wal.append(payload).expect("append");
            }
            wal.sync().expect("sync");
            let end = wal.active_segment_bytes();
            drop(wal);
            let kept_bytes = SEGMENT_HEADER_BYTES as u64
                + cut.index((end - SEGMENT_HEADER_BYTES as u64) as usize + 1) as u64;
            let file = OpenOptions::new().write(true).open(segment_path(directory.path(), 1)).expect("open");
            file.set_len(kept_bytes).expect("cut");
            drop(file);

            let (wal, _) = open(directory.path());
            let replayed = payloads(&replay_all(&wal));
            let whole_records = records
                .iter()
                .scan(SEGMENT_HEADER_BYTES as u64, |offset, payload| {
                    *offset += (RECORD_HEADER_BYTES + payload.len()) as u64;
                    Some(*offset)
                })
                .take_while(|&record_end| record_end <= kept_bytes)
                .count();
            prop_assert_eq!(&replayed[..], &records[..whole_records]);
        }
    }
}

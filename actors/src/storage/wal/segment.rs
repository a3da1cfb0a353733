//! One segment file: its name, its header, and reading its records back.
//!
//! Reading is streaming: a [`SegmentReader`] holds at most one chunk plus the record
//! being decoded, so neither a 64 MiB segment nor a corrupted length makes it allocate
//! more than [`RECORD_PAYLOAD_BYTES_MAX`] plus a chunk. The torn tail rule of the module
//! docs is applied here, in [`recover_segment`]; [`replay_segment`] reads segments that
//! open already validated and treats every anomaly as corruption.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::record::{decode_record, DecodeOutcome, InvalidRecord, RECORD_HEADER_BYTES};
use super::{RecordPosition, RecordVisitor, SegmentId, WalError, RECORD_PAYLOAD_BYTES_MAX};

/// Bytes of the header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: usize = 24;

/// The segment format this code writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;

/// The first bytes of every segment file.
const SEGMENT_MAGIC: [u8; 8] = *b"MIMORIWL";

/// Bytes covered by the header checksum: magic, version and segment id.
const SEGMENT_HEADER_CHECKSUMMED_BYTES: usize = 20;

/// How much a reader asks the file for at a time: large enough that a segment is read
/// in few system calls, small enough to bound the memory of a replay.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// The file name of a segment, zero-padded so that names sort like ids.
pub fn segment_file_name(segment: SegmentId) -> String {
    format!("wal-{:020}.log", segment.0)
}

/// The segment id of a file name written by [`segment_file_name`]; `None` for any
/// other name, so foreign files in the directory are left alone.
pub(super) fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentId)
}

/// The header that starts segment `segment`.
pub(super) fn encode_segment_header(segment: SegmentId) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&segment.0.to_le_bytes());
    let checksum = crc32c::crc32c(&header[..SEGMENT_HEADER_CHECKSUMMED_BYTES]);
    header[20..24].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// The `N` bytes of a header field starting at `start`. Offsets are constants of the
/// format, so the slice is always in bounds.
fn header_field<const N: usize>(header: &[u8; SEGMENT_HEADER_BYTES], start: usize) -> [u8; N] {
    let mut field = [0u8; N];
    field.copy_from_slice(&header[start..start + N]);
    field
}

/// Checks a segment header read from `path`, which should hold segment `segment`.
fn verify_segment_header(
    path: &Path,
    segment: SegmentId,
    header: &[u8; SEGMENT_HEADER_BYTES],
) -> Result<(), WalError> {
    let corrupted = |reason: String| WalError::Corrupted {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    if header_field::<8>(header, 0) != SEGMENT_MAGIC {
        return Err(corrupted("not a WAL segment: bad magic".to_string()));
    }
    // The version is checked before the checksum: another version may lay out (and
    // checksum) its header differently, and deserves its own error.
    let version = u32::from_le_bytes(header_field(header, 8));
    if version != SEGMENT_FORMAT_VERSION {
        return Err(WalError::UnsupportedFormat {
            path: path.to_path_buf(),
            version,
        });
    }
    let stored = u32::from_le_bytes(header_field(header, 20));
    let computed = crc32c::crc32c(&header[..SEGMENT_HEADER_CHECKSUMMED_BYTES]);
    if stored != computed {
        return Err(corrupted(format!(
            "segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    let recorded = u64::from_le_bytes(header_field(header, 12));
    if recorded != segment.0 {
        return Err(corrupted(format!(
            "segment header names segment {recorded}, but the file name says {segment}"
        )));
    }
    Ok(())
}

/// What [`recover_segment`] found in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentScan {
    /// Valid records in the segment (before the torn tail, if any).
    pub(super) records: u64,
    /// The size of the file as found.
    pub(super) file_bytes: u64,
    /// Where the valid content ends. Below `file_bytes` only in the last segment, when
    /// a torn tail must be truncated; zero when the header itself is torn.
    pub(super) valid_bytes: u64,
    /// Whether everything from `valid_bytes` to the end of the file is zeros (a
    /// preallocated remainder, or a file system that extended the file with zeros).
    pub(super) zero_tail: bool,
}

impl SegmentScan {
    /// Whether the segment header is torn and must be rewritten.
    pub(super) fn header_is_torn(&self) -> bool {
        self.valid_bytes == 0
    }
}

/// Scans segment `segment` at `path` on open, verifying every record.
///
/// In the last segment (`is_last`) a torn header or a torn tail is reported through
/// [`SegmentScan::valid_bytes`]; everywhere else, and for anything that is not torn,
/// invalid bytes are a [`WalError::Corrupted`] naming the file and the offset.
pub(super) fn recover_segment(
    path: &Path,
    segment: SegmentId,
    is_last: bool,
) -> Result<SegmentScan, WalError> {
    let file = File::open(path).map_err(WalError::io(path))?;
    let file_bytes = file.metadata().map_err(WalError::io(path))?.len();
    let mut reader = SegmentReader::new(path, file, 0, file_bytes)?;
    let corrupted = |offset: u64, reason: String| WalError::Corrupted {
        path: path.to_path_buf(),
        offset,
        reason,
    };

    let expected_header = encode_segment_header(segment);
    let header_bytes = reader.read_up_to(SEGMENT_HEADER_BYTES)?;
    // A torn header holds, at each place, either the byte that was being written or a
    // zero, and nothing follows it: the crash came between creating the file and the
    // first sync of its header.
    let header_is_torn_prefix = header_bytes
        .iter()
        .zip(expected_header)
        .all(|(&found, expected)| found == expected || found == 0);
    if header_bytes != expected_header {
        if is_last && header_is_torn_prefix && reader.rest_is_zero()? {
            return Ok(SegmentScan {
                records: 0,
                file_bytes,
                valid_bytes: 0,
                zero_tail: false,
            });
        }
        let Ok(header) = <[u8; SEGMENT_HEADER_BYTES]>::try_from(header_bytes) else {
            return Err(corrupted(
                0,
                format!("segment header truncated to {file_bytes} bytes"),
            ));
        };
        // Names what is wrong with the header.
        verify_segment_header(path, segment, &header)?;
        return Err(corrupted(
            0,
            "segment header is not the expected one".to_string(),
        ));
    }

    let mut records = 0u64;
    loop {
        match reader.next_record()? {
            SegmentRead::Record { .. } => records += 1,
            SegmentRead::End => {
                return Ok(SegmentScan {
                    records,
                    file_bytes,
                    valid_bytes: file_bytes,
                    zero_tail: false,
                })
            }
            SegmentRead::Incomplete { offset } if is_last => {
                return Ok(SegmentScan {
                    records,
                    file_bytes,
                    valid_bytes: offset,
                    zero_tail: false,
                })
            }
            SegmentRead::Incomplete { offset } => {
                return Err(corrupted(
                    offset,
                    "record runs past the end of a segment that is not the last".to_string(),
                ))
            }
            SegmentRead::Invalid { offset, reason } => {
                if is_last {
                    // A final record torn by a crash: its checksum fails and only
                    // zeros (preallocated, or none at all) follow it.
                    // A damaged length field could make a record seem to swallow the
                    // ones after it: a whole valid record inside its span means
                    // corruption, not a torn write.
                    let torn_final_record = match reason {
                        InvalidRecord::ChecksumMismatch { record_bytes, .. } => {
                            !reader.span_holds_a_record(record_bytes)
                                && reader.rest_is_zero_after(record_bytes)?
                        }
                        _ => false,
                    };
                    let zero_tail = !torn_final_record && reader.rest_is_zero()?;
                    if torn_final_record || zero_tail {
                        return Ok(SegmentScan {
                            records,
                            file_bytes,
                            valid_bytes: offset,
                            zero_tail,
                        });
                    }
                }
                let place = if is_last {
                    "followed by more data in the last segment"
                } else {
                    "in a segment that is not the last"
                };
                return Err(corrupted(offset, format!("{reason}, {place}")));
            }
        }
    }
}

/// Visits every record of segment `segment` at `path` up to `end_bytes`, a length that
/// open or the writer has established as holding only whole, valid records.
pub(super) fn replay_segment(
    path: &Path,
    segment: SegmentId,
    end_bytes: u64,
    visit: &mut RecordVisitor<'_>,
) -> Result<(), WalError> {
    if end_bytes == 0 {
        // A segment created by rollover whose header is still in the write buffer.
        return Ok(());
    }
    let file = File::open(path).map_err(WalError::io(path))?;
    let mut reader = SegmentReader::new(path, file, 0, end_bytes)?;
    let header_bytes = reader.read_up_to(SEGMENT_HEADER_BYTES)?;
    let Ok(header) = <[u8; SEGMENT_HEADER_BYTES]>::try_from(header_bytes) else {
        return Err(WalError::Corrupted {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!("segment header truncated to {end_bytes} bytes"),
        });
    };
    verify_segment_header(path, segment, &header)?;
    loop {
        let (offset, reason) = match reader.next_record()? {
            SegmentRead::Record { offset, payload } => {
                visit(RecordPosition { segment, offset }, payload)?;
                continue;
            }
            SegmentRead::End => return Ok(()),
            SegmentRead::Incomplete { offset } => (
                offset,
                "record runs past the written end of the segment".to_string(),
            ),
            SegmentRead::Invalid { offset, reason } => (offset, reason.to_string()),
        };
        // These bytes were valid when the WAL was opened or written: the file changed
        // underneath the WAL.
        return Err(WalError::Corrupted {
            path: path.to_path_buf(),
            offset,
            reason,
        });
    }
}

/// What a [`SegmentReader`] found next.
enum SegmentRead<'a> {
    /// A valid record starting at `offset`.
    Record { offset: u64, payload: &'a [u8] },
    /// The readable end was reached exactly at a record boundary.
    End,
    /// The record starting at `offset` runs past the readable end.
    Incomplete { offset: u64 },
    /// The bytes at `offset` are not a valid record.
    Invalid { offset: u64, reason: InvalidRecord },
}

/// Reads a segment file front to back, up to a fixed end, in chunks.
///
/// Invariant: `buffer` holds the file bytes from `buffer_offset` to
/// `buffer_offset + buffer.len()`, which never exceeds `end_bytes`; the file cursor is
/// at that end; bytes before `consumed` have been handed out.
struct SegmentReader<'p> {
    /// The file, for error messages.
    path: &'p Path,
    /// The open segment.
    file: File,
    /// Reading stops here, even if the file is longer (the writer may be appending).
    end_bytes: u64,
    /// Bytes read but not yet handed out, plus bytes of the record being decoded.
    buffer: Vec<u8>,
    /// File offset of `buffer[0]`.
    buffer_offset: u64,
    /// Bytes at the front of `buffer` already handed out.
    consumed: usize,
}

impl<'p> SegmentReader<'p> {
    /// A reader of `file` from `start_bytes` to `end_bytes`.
    fn new(
        path: &'p Path,
        mut file: File,
        start_bytes: u64,
        end_bytes: u64,
    ) -> Result<Self, WalError> {
        file.seek(SeekFrom::Start(start_bytes))
            .map_err(WalError::io(path))?;
        Ok(SegmentReader {
            path,
            file,
            end_bytes,
            buffer: Vec::new(),
            buffer_offset: start_bytes,
            consumed: 0,
        })
    }

    /// The file offset of the next unconsumed byte.
    fn position(&self) -> u64 {
        self.buffer_offset + self.consumed as u64
    }

    /// The file offset up to which bytes have been read.
    fn read_end(&self) -> u64 {
        self.buffer_offset + self.buffer.len() as u64
    }

    /// Reads one more chunk (less at the end). Returns false when nothing is left.
    fn fill(&mut self) -> Result<bool, WalError> {
        // Drop what was handed out, so the buffer only grows for the record being
        // decoded: a big record costs its own size, not the segment's.
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.buffer_offset += self.consumed as u64;
            self.consumed = 0;
        }
        let remaining = self.end_bytes.saturating_sub(self.read_end());
        let Ok(chunk) = usize::try_from(remaining.min(READ_CHUNK_BYTES as u64)) else {
            return Ok(false);
        };
        if chunk == 0 {
            return Ok(false);
        }
        let filled = self.buffer.len();
        self.buffer.resize(filled + chunk, 0);
        if let Err(source) = self.file.read_exact(&mut self.buffer[filled..]) {
            self.buffer.truncate(filled);
            return Err(WalError::Io {
                path: self.path.to_path_buf(),
                source,
            });
        }
        Ok(true)
    }

    /// Consumes and returns up to `bytes` bytes (fewer only at the readable end).
    fn read_up_to(&mut self, bytes: usize) -> Result<Vec<u8>, WalError> {
        while self.buffer.len() - self.consumed < bytes && self.fill()? {}
        let available = (self.buffer.len() - self.consumed).min(bytes);
        let taken = self.buffer[self.consumed..self.consumed + available].to_vec();
        self.consumed += available;
        Ok(taken)
    }

    /// Whether every byte from the next unconsumed one to the readable end is zero.
    /// Consumes the rest of the file.
    fn rest_is_zero(&mut self) -> Result<bool, WalError> {
        loop {
            if self.buffer[self.consumed..].iter().any(|&byte| byte != 0) {
                return Ok(false);
            }
            self.consumed = self.buffer.len();
            if !self.fill()? {
                return Ok(true);
            }
        }
    }

    /// Whether a whole, valid record starts anywhere after the first byte of the
    /// next `span` unconsumed ones (a record just decoded, so in the buffer).
    fn span_holds_a_record(&self, span: usize) -> bool {
        let end = (self.consumed + span).min(self.buffer.len());
        (self.consumed + 1..end).any(|start| {
            matches!(
                decode_record(&self.buffer[start..]),
                DecodeOutcome::Record { .. }
            )
        })
    }

    /// Whether every byte after the next `skip` unconsumed ones (which must be in
    /// the buffer: a record just decoded) is zero, to the readable end. Consumes the
    /// rest of the file.
    fn rest_is_zero_after(&mut self, skip: usize) -> Result<bool, WalError> {
        self.consumed = (self.consumed + skip).min(self.buffer.len());
        self.rest_is_zero()
    }

    /// Decodes the next record, reading more of the file as needed.
    fn next_record(&mut self) -> Result<SegmentRead<'_>, WalError> {
        loop {
            let offset = self.position();
            let payload_range = match decode_record(&self.buffer[self.consumed..]) {
                DecodeOutcome::Record {
                    payload,
                    record_bytes,
                } => {
                    let start = self.consumed + RECORD_HEADER_BYTES;
                    let range = start..start + payload.len();
                    self.consumed += record_bytes;
                    range
                }
                DecodeOutcome::Invalid { reason } => {
                    return Ok(SegmentRead::Invalid { offset, reason })
                }
                DecodeOutcome::Incomplete => {
                    if self.fill()? {
                        continue;
                    }
                    return Ok(if offset == self.end_bytes {
                        SegmentRead::End
                    } else {
                        SegmentRead::Incomplete { offset }
                    });
                }
            };
            debug_assert!(payload_range.len() <= RECORD_PAYLOAD_BYTES_MAX as usize);
            return Ok(SegmentRead::Record {
                offset,
                payload: &self.buffer[payload_range],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves segment names sort like ids and parse back, and that foreign names (too
    // few digits, other prefixes, signs) are ignored rather than misread.
    #[test]
    fn segment_file_names_round_trip_and_sort() {
        assert_eq!(
            segment_file_name(SegmentId(42)),
            "wal-00000000000000000042.log"
        );
        assert_eq!(
            segment_file_name(SegmentId(u64::MAX)),
            "wal-18446744073709551615.log"
        );
        for id in [0, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(
                parse_segment_file_name(&segment_file_name(SegmentId(id))),
                Some(SegmentId(id))
            );
        }
        assert!(segment_file_name(SegmentId(9)) < segment_file_name(SegmentId(10)));
        for foreign in [
            "wal-42.log",
            "wal-0000000000000000004a.log",
            "wal-+0000000000000000042.log",
            "wal-00000000000000000042.log.tmp",
            "log-00000000000000000042.log",
            "wal-99999999999999999999.log",
        ] {
            assert_eq!(parse_segment_file_name(foreign), None, "{foreign}");
        }
    }

    // Proves the on-disk segment header does not drift: its exact bytes are pinned.
    #[test]
    fn golden_segment_header_bytes() {
        let header = encode_segment_header(SegmentId(7));
        let golden: [u8; SEGMENT_HEADER_BYTES] = [
            b'M', b'I', b'M', b'O', b'R', b'I', b'W', b'L', // magic
            0x01, 0x00, 0x00, 0x00, // format version 1
            0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // segment id 7
            0x91, 0x3E, 0xD4, 0xB7, // CRC32C of the 20 bytes above
        ];
        assert_eq!(header, golden);
        assert!(verify_segment_header(Path::new("segment"), SegmentId(7), &golden).is_ok());
    }

    // Proves a header is refused when it names another segment, has a bad checksum or
    // an unknown version, each with its own message.
    #[test]
    fn segment_header_mismatches_are_refused() {
        let path = Path::new("segment");
        let header = encode_segment_header(SegmentId(7));
        let error = verify_segment_header(path, SegmentId(8), &header).expect_err("wrong id");
        assert!(error.to_string().contains("names segment 7"), "{error}");

        let mut bad_checksum = header;
        bad_checksum[23] ^= 0xFF;
        let error =
            verify_segment_header(path, SegmentId(7), &bad_checksum).expect_err("bad checksum");
        assert!(error.to_string().contains("checksum"), "{error}");

        let mut future = header;
        future[8] = 2;
        let error = verify_segment_header(path, SegmentId(7), &future).expect_err("version 2");
        assert!(
            matches!(error, WalError::UnsupportedFormat { version: 2, .. }),
            "{error}"
        );
    }
}

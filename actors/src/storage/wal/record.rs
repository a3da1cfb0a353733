//! Record framing: the pure encoder and decoder of one record.
//!
//! No I/O here, so the decoder can be fuzzed directly. The decoder never panics, never
//! allocates and never trusts a length before checking it against
//! [`RECORD_PAYLOAD_BYTES_MAX`]. The format is described in the module docs of
//! [`crate::storage::wal`].

use std::fmt;

use super::{WalError, RECORD_PAYLOAD_BYTES_MAX};

/// The first byte of every record, identifying record format 1. It never starts valid
/// UTF-8 and is neither `0x00` (zero fill) nor `0xFF` (erased flash).
pub const RECORD_MARKER: u8 = 0xF9;

/// Bytes before the payload: marker, length, checksum.
pub const RECORD_HEADER_BYTES: usize = 9;

/// Bytes covered by the checksum before the payload: marker and length.
const CHECKSUMMED_HEADER_BYTES: usize = 5;

/// What the start of a byte slice holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeOutcome<'a> {
    /// A valid record.
    Record {
        /// The payload, borrowed from the input.
        payload: &'a [u8],
        /// Bytes the whole record occupies (header and payload): where the next starts.
        record_bytes: usize,
    },
    /// The slice ends before the record does; more bytes may make it valid.
    Incomplete,
    /// The bytes cannot be the start of a valid record, whatever follows them.
    Invalid {
        /// What is wrong.
        reason: InvalidRecord,
    },
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidRecord {
    /// The first byte is not [`RECORD_MARKER`].
    BadMarker {
        /// The byte found instead.
        found: u8,
    },
    /// The length field is above [`RECORD_PAYLOAD_BYTES_MAX`].
    LengthTooLarge {
        /// The length field's value.
        payload_bytes: u32,
    },
    /// The record is complete but its checksum does not match its bytes.
    ChecksumMismatch {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
        /// Bytes the record would occupy according to its (unverified) length field.
        record_bytes: usize,
    },
}

impl fmt::Display for InvalidRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidRecord::BadMarker { found } => {
                write!(f, "record marker is {found:#04x}, expected {RECORD_MARKER:#04x}")
            }
            InvalidRecord::LengthTooLarge { payload_bytes } => write!(
                f,
                "record length {payload_bytes} exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX} bytes"
            ),
            InvalidRecord::ChecksumMismatch {
                stored,
                computed,
                record_bytes,
            } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x}, \
                 record of {record_bytes} bytes)"
            ),
        }
    }
}

/// Appends the encoded record for `payload` to `out`. Refuses payloads above
/// [`RECORD_PAYLOAD_BYTES_MAX`] without touching `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), WalError> {
    let payload_bytes = match u32::try_from(payload.len()) {
        Ok(bytes) if bytes <= RECORD_PAYLOAD_BYTES_MAX => bytes,
        _ => {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len() as u64,
            })
        }
    };
    let length = payload_bytes.to_le_bytes();
    let checksummed_header = [RECORD_MARKER, length[0], length[1], length[2], length[3]];
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&checksummed_header), payload);

    out.reserve(RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&checksummed_header);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the record at the start of `bytes`. Bytes after the record are ignored.
///
/// Checks happen in the order that lets a damaged header be refused as early as
/// possible: the marker, then the length bound, then completeness, then the checksum.
pub fn decode_record(bytes: &[u8]) -> DecodeOutcome<'_> {
    let Some(&marker) = bytes.first() else {
        return DecodeOutcome::Incomplete;
    };
    if marker != RECORD_MARKER {
        return DecodeOutcome::Invalid {
            reason: InvalidRecord::BadMarker { found: marker },
        };
    }
    let Some((header, rest)) = bytes.split_first_chunk::<RECORD_HEADER_BYTES>() else {
        return DecodeOutcome::Incomplete;
    };
    let [_, length @ .., _, _, _, _] = *header;
    let [_, _, _, _, _, checksum @ ..] = *header;
    let payload_bytes = u32::from_le_bytes(length);
    if payload_bytes > RECORD_PAYLOAD_BYTES_MAX {
        return DecodeOutcome::Invalid {
            reason: InvalidRecord::LengthTooLarge { payload_bytes },
        };
    }
    // The bound above keeps this far below `usize::MAX` on every supported target.
    let payload_len = payload_bytes as usize;
    let Some(payload) = rest.get(..payload_len) else {
        return DecodeOutcome::Incomplete;
    };
    let record_bytes = RECORD_HEADER_BYTES + payload_len;
    let stored = u32::from_le_bytes(checksum);
    let computed =
        crc32c::crc32c_append(crc32c::crc32c(&header[..CHECKSUMMED_HEADER_BYTES]), payload);
    if stored != computed {
        return DecodeOutcome::Invalid {
            reason: InvalidRecord::ChecksumMismatch {
                stored,
                computed,
                record_bytes,
            },
        };
    }
    DecodeOutcome::Record {
        payload,
        record_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(payload, &mut out).expect("payload is below the limit");
        out
    }

    // Proves the crc32c crate computes CRC-32C (Castagnoli) as the format says, using
    // the standard check value of the algorithm.
    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    // Proves the on-disk record format does not drift: one record's exact bytes are
    // pinned, and they decode back to the payload.
    #[test]
    fn golden_record_bytes() {
        let bytes = encoded(b"mimori");
        let golden: [u8; 15] = [
            0xF9, // marker
            0x06, 0x00, 0x00, 0x00, // payload length 6, little-endian
            0x39, 0x1E, 0x05, 0xF3, // CRC32C of the five bytes above and the payload
            b'm', b'i', b'm', b'o', b'r', b'i',
        ];
        assert_eq!(bytes, golden);
        assert_eq!(
            decode_record(&golden),
            DecodeOutcome::Record {
                payload: b"mimori",
                record_bytes: 15
            }
        );
    }

    // Proves an empty payload is a valid record of header size only.
    #[test]
    fn empty_payload_round_trips() {
        let bytes = encoded(b"");
        assert_eq!(bytes.len(), RECORD_HEADER_BYTES);
        assert_eq!(
            decode_record(&bytes),
            DecodeOutcome::Record {
                payload: b"",
                record_bytes: RECORD_HEADER_BYTES
            }
        );
    }

    // Proves a length field above the limit is refused from the header alone: the
    // decoder reports it invalid (not incomplete, which would make a reader wait for or
    // allocate 4 GiB) even though no payload bytes follow.
    #[test]
    fn oversized_length_is_invalid_without_payload() {
        let mut header = vec![RECORD_MARKER];
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode_record(&header),
            DecodeOutcome::Invalid {
                reason: InvalidRecord::LengthTooLarge {
                    payload_bytes: u32::MAX
                }
            }
        );
        let mut just_above = vec![RECORD_MARKER];
        just_above.extend_from_slice(&(RECORD_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
        just_above.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_record(&just_above),
            DecodeOutcome::Invalid {
                reason: InvalidRecord::LengthTooLarge { .. }
            }
        ));
    }

    // Proves the encoder refuses a payload one byte above the limit and leaves the
    // output buffer untouched.
    #[test]
    fn encode_refuses_oversized_payload() {
        let payload = vec![0u8; RECORD_PAYLOAD_BYTES_MAX as usize + 1];
        let mut out = vec![1, 2, 3];
        let error = encode_record(&payload, &mut out).expect_err("payload is too large");
        assert!(
            matches!(error, WalError::RecordTooLarge { bytes } if bytes == payload.len() as u64)
        );
        assert_eq!(out, [1, 2, 3]);
    }

    // Proves a flipped payload byte is a checksum mismatch and so is a flipped length
    // byte that still fits in the input: the checksum covers the length.
    #[test]
    fn checksum_covers_length_and_payload() {
        let mut payload_flipped = encoded(b"hello world");
        payload_flipped[RECORD_HEADER_BYTES + 3] ^= 0x01;
        assert!(matches!(
            decode_record(&payload_flipped),
            DecodeOutcome::Invalid {
                reason: InvalidRecord::ChecksumMismatch { .. }
            }
        ));

        let mut length_flipped = encoded(b"hello world");
        length_flipped[1] ^= 0x01; // 11 becomes 10: still within the input
        assert_eq!(
            decode_record(&length_flipped),
            DecodeOutcome::Invalid {
                reason: InvalidRecord::ChecksumMismatch {
                    stored: u32::from_le_bytes([
                        length_flipped[5],
                        length_flipped[6],
                        length_flipped[7],
                        length_flipped[8]
                    ]),
                    computed: crc32c::crc32c_append(
                        crc32c::crc32c(&length_flipped[..5]),
                        &length_flipped[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + 10]
                    ),
                    record_bytes: RECORD_HEADER_BYTES + 10,
                }
            }
        );
    }

    // Proves zero fill is never a record: a zero marker is refused at once.
    #[test]
    fn zeros_are_invalid() {
        assert_eq!(
            decode_record(&[0; 64]),
            DecodeOutcome::Invalid {
                reason: InvalidRecord::BadMarker { found: 0 }
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Proves the decoder never panics on arbitrary input, and that whatever it calls
        // a record lies within the input and re-encodes to the same bytes.
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let DecodeOutcome::Record { payload, record_bytes } = decode_record(&bytes) {
                prop_assert!(record_bytes <= bytes.len());
                prop_assert_eq!(encoded(payload), &bytes[..record_bytes]);
            }
        }

        // Proves the same on input that starts with a plausible header, which reaches
        // the length and checksum checks far more often than uniform bytes do.
        #[test]
        fn decode_arbitrary_header_never_panics(
            payload_bytes in any::<u32>(),
            checksum in any::<u32>(),
            rest in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = vec![RECORD_MARKER];
            bytes.extend_from_slice(&payload_bytes.to_le_bytes());
            bytes.extend_from_slice(&checksum.to_le_bytes());
            bytes.extend_from_slice(&rest);
            match decode_record(&bytes) {
                DecodeOutcome::Record { record_bytes, .. } => prop_assert!(record_bytes <= bytes.len()),
                DecodeOutcome::Incomplete => prop_assert!(payload_bytes as usize > rest.len()),
                DecodeOutcome::Invalid { .. } => {}
            }
        }

        // Proves encode then decode returns the payload, whatever follows the record,
        // and that every strict prefix of a record is incomplete, not invalid.
        #[test]
        fn round_trip_and_prefixes(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            trailing in proptest::collection::vec(any::<u8>(), 0..32),
            cut in any::<proptest::sample::Index>(),
        ) {
            let record = encoded(&payload);
            let mut bytes = record.clone();
            bytes.extend_from_slice(&trailing);
            prop_assert_eq!(
                decode_record(&bytes),
                DecodeOutcome::Record { payload: &payload, record_bytes: record.len() }
            );
            let prefix = &record[..cut.index(record.len())];
            prop_assert_eq!(decode_record(prefix), DecodeOutcome::Incomplete);
        }

        // Proves any single flipped bit of a record is detected: it never decodes as a
        // record (CRC-32C catches every single-bit error; the marker and length checks
        // catch the rest).
        #[test]
        fn single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut record = encoded(&payload);
            let bit = bit.index(record.len() * 8);
            record[bit / 8] ^= 1 << (bit % 8);
            let is_record = matches!(decode_record(&record), DecodeOutcome::Record { .. });
            prop_assert!(!is_record);
        }
    }
}

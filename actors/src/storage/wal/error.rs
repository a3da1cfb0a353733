//! The errors of the WAL file layer.
//!
//! All of them are fatal for the node's log except [`WalError::RecordTooLarge`], which
//! refuses one record and leaves the WAL usable. Every error about a file names it, so
//! an operator can find the damaged segment.

use std::path::PathBuf;

use super::{SegmentId, RECORD_PAYLOAD_BYTES_MAX};

/// Why a WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The operating system refused an operation on a file or the directory.
    #[error("WAL I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The error from the operating system.
        source: std::io::Error,
    },

    /// A segment holds bytes that are neither valid records nor a torn tail.
    #[error("WAL corrupted in {} at offset {offset}: {reason}", path.display())]
    Corrupted {
        /// The segment file.
        path: PathBuf,
        /// Byte offset from the start of the file of the first invalid byte range
        /// (the start of the bad record or header).
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// A segment between the oldest and the newest is missing, so records are lost.
    #[error(
        "WAL segment {missing} is missing from {}: segments must be consecutive",
        directory.display()
    )]
    MissingSegment {
        /// The WAL directory.
        directory: PathBuf,
        /// The first id absent between two present segments.
        missing: SegmentId,
    },

    /// A segment was written in a format version this code does not read (written by a
    /// newer Mimori, or damaged in a way that kept the magic intact).
    #[error("WAL segment {} has format version {version}, which this version of Mimori does not read", path.display())]
    UnsupportedFormat {
        /// The segment file.
        path: PathBuf,
        /// The version in its header.
        version: u32,
    },

    /// A payload above [`RECORD_PAYLOAD_BYTES_MAX`] was offered; nothing was appended.
    #[error(
        "WAL record payload of {bytes} bytes exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX} bytes"
    )]
    RecordTooLarge {
        /// The size of the refused payload.
        bytes: u64,
    },

    /// An earlier write or sync of the active segment failed, so what reached the disk
    /// is unknown (and after a failed `fsync` a retry may falsely succeed). The WAL
    /// refuses further writes; reopening it recovers from the files.
    #[error("WAL is unusable after a failed write or sync of {}; reopen it to recover", path.display())]
    Poisoned {
        /// The segment whose write or sync failed.
        path: PathBuf,
    },

    /// The options passed to open are unusable.
    #[error("invalid WAL options: {reason}")]
    InvalidOptions {
        /// Which option and why.
        reason: String,
    },
}

impl WalError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { path, source }
    }
}

//! The payload of a Raft log entry: one write command of a shard's state machine.
//!
//! Commands are what the leader proposes and every replica applies in log order. The
//! format is rmp-serde with named fields and a version marker, so a later format can
//! read this one. The golden-bytes test pins the encoding: changing it breaks every
//! WAL on disk.

use crate::kv::{Condition, Namespace};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The version written into every encoded command.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// A write to one key of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Writes `value` under `key` if `condition` holds.
    Put {
        namespace: Namespace,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        value: Bytes,
        condition: Condition,
    },
    /// Removes `key` if it exists and `condition` holds.
    Delete {
        namespace: Namespace,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        condition: Condition,
    },
    /// Sets the indexed fields of `collection` on the shard to `fields`: entries of
    /// dropped fields are deleted, new fields start building (`docs::collection`).
    DefineIndexes {
        collection: String,
        fields: Vec<String>,
    },
    /// Indexes up to `documents_max` more of the documents that existed before the
    /// building index on `field` did.
    BuildIndex {
        collection: String,
        field: String,
        documents_max: u32,
    },
    /// Deletes every document of `collection` on the shard written before this
    /// entry, with their index entries, and empties its index list.
    DropCollection { collection: String },
}

/// The on-log envelope: a version marker, then the command.
#[derive(Serialize, Deserialize)]
struct CommandEnvelope {
    version: u8,
    command: Command,
}

/// The same envelope, borrowing the command so encoding copies nothing twice.
#[derive(Serialize)]
struct CommandEnvelopeRef<'a> {
    version: u8,
    command: &'a Command,
}

/// Why an entry's payload could not be decoded. The log is checksummed, so this means
/// a bug or a format this build does not know; the replica must stop, not guess.
#[derive(Debug, thiserror::Error)]
pub enum CommandDecodeError {
    #[error("command format version {0} is not supported by this build")]
    UnsupportedVersion(u8),
    #[error("malformed command: {0}")]
    Malformed(String),
}

impl Command {
    /// The key this command writes.
    pub fn key(&self) -> (Namespace, &[u8]) {
        match self {
            Command::Put { namespace, key, .. } | Command::Delete { namespace, key, .. } => {
                (*namespace, key)
            }
            Command::DefineIndexes { collection, .. }
            | Command::BuildIndex { collection, .. }
            | Command::DropCollection { collection } => {
                (Namespace::Collection, collection.as_bytes())
            }
        }
    }

    /// Encodes the command for a Raft entry.
    pub fn encode(&self) -> Vec<u8> {
        let envelope = CommandEnvelopeRef {
            version: COMMAND_FORMAT_VERSION,
            command: self,
        };
        // Serializing an owned, well-formed struct into a Vec cannot fail.
        rmp_serde::to_vec_named(&envelope).unwrap_or_default()
    }

    /// Decodes a Raft entry's payload.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandDecodeError> {
        let envelope: CommandEnvelope = rmp_serde::from_slice(bytes)
            .map_err(|error| CommandDecodeError::Malformed(error.to_string()))?;
        if envelope.version != COMMAND_FORMAT_VERSION {
            return Err(CommandDecodeError::UnsupportedVersion(envelope.version));
        }
        Ok(envelope.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Revision;

    /// Pins the encoding of a command: if this fails, the format changed and old WALs
    /// would no longer replay. Bump COMMAND_FORMAT_VERSION and add a migration instead.
    #[test]
    fn golden_bytes_of_a_put() {
        let command = Command::Put {
            namespace: Namespace::Kv,
            key: b"k".to_vec(),
            value: Bytes::from_static(b"v"),
            condition: Condition::RevisionIs(Revision(7)),
        };
        let encoded = command.encode();
        let expected: &[u8] = &[
            0x82, 0xa7, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01, 0xa7, b'c', b'o', b'm',
            b'm', b'a', b'n', b'd', 0x81, 0xa3, b'P', b'u', b't', 0x84, 0xa9, b'n', b'a', b'm',
            b'e', b's', b'p', b'a', b'c', b'e', 0xa2, b'K', b'v', 0xa3, b'k', b'e', b'y', 0xc4,
            0x01, b'k', 0xa5, b'v', b'a', b'l', b'u', b'e', 0xc4, 0x01, b'v', 0xa9, b'c', b'o',
            b'n', b'd', b'i', b't', b'i', b'o', b'n', 0x81, 0xaa, b'R', b'e', b'v', b'i', b's',
            b'i', b'o', b'n', b'I', b's', 0x07,
        ];
        assert_eq!(encoded, expected, "encoded: {encoded:02x?}");
        assert_eq!(Command::decode(&encoded).ok(), Some(command));
    }

    /// Proves an unknown version and garbage are refused rather than misread.
    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let envelope = CommandEnvelope {
            version: 9,
            command: Command::Delete {
                namespace: Namespace::Doc,
                key: b"c/1".to_vec(),
                condition: Condition::Always,
            },
        };
        let bytes = rmp_serde::to_vec_named(&envelope).unwrap_or_default();
        assert!(matches!(
            Command::decode(&bytes),
            Err(CommandDecodeError::UnsupportedVersion(9))
        ));
        assert!(matches!(
            Command::decode(&[0xff, 0x00, 0x13]),
            Err(CommandDecodeError::Malformed(_))
        ));
    }
}

//! Collections and their secondary indexes: the definition the cluster metadata
//! records, and the per-shard record of each index's build state.
//!
//! The metadata holds what an operator declared ([`CollectionDefinition`]). Each
//! shard holds its own [`ShardIndexes`] under `Namespace::Collection`, changed only
//! by commands in the shard's Raft log, so every replica maintains exactly the same
//! index entries: `DefineIndexes` (`node::index_builder` copies the metadata's
//! list into every shard), `BuildIndex` (indexes the next documents that existed
//! before the index did) and `DropCollection`.

use super::filter::FieldPath;
use serde::{Deserialize, Serialize};

/// Version marker of [`ShardIndexes`] as stored.
pub const SHARD_INDEXES_FORMAT_VERSION: u8 = 1;
/// Most indexes one collection may have.
pub const INDEXES_PER_COLLECTION_MAX: usize = 16;
/// Most collections the metadata may define.
pub const COLLECTIONS_MAX: usize = 1_024;
/// Documents one `BuildIndex` command indexes at most: small enough that applying
/// it never holds the shard up for long.
pub const BUILD_BATCH_DOCUMENTS_MAX: u32 = 1_000;

/// A collection as the cluster metadata records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionDefinition {
    pub name: String,
    /// Indexed fields (dotted paths), in the order declared, without duplicates.
    pub indexes: Vec<String>,
}

impl CollectionDefinition {
    /// Checks the index list: valid paths, no duplicates, at most 16.
    pub fn new(name: String, indexes: Vec<String>) -> Result<CollectionDefinition, String> {
        if indexes.len() > INDEXES_PER_COLLECTION_MAX {
            return Err(format!(
                "{} indexes; a collection may have at most {INDEXES_PER_COLLECTION_MAX}",
                indexes.len()
            ));
        }
        for (at, field) in indexes.iter().enumerate() {
            FieldPath::parse(field)?;
            if indexes[..at].contains(field) {
                return Err(format!("field {field:?} is listed twice"));
            }
        }
        Ok(CollectionDefinition { name, indexes })
    }
}

/// How far one shard has built one index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexState {
    /// New writes maintain it; documents up to and including `after` (by id)
    /// that existed before it are indexed, the rest not yet.
    Building { after: Option<String>, indexed: u64 },
    /// Every document is indexed: queries may use it.
    Ready,
}

/// One index of a collection on one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub field: String,
    pub state: IndexState,
}

/// A collection's indexes on one shard, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIndexes {
    pub version: u8,
    pub indexes: Vec<ShardIndex>,
}

impl ShardIndexes {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing an owned, well-formed struct into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<ShardIndexes, String> {
        let indexes: ShardIndexes =
            rmp_serde::from_slice(bytes).map_err(|error| error.to_string())?;
        if indexes.version != SHARD_INDEXES_FORMAT_VERSION {
            return Err(format!(
                "index record format version {} is not supported by this build",
                indexes.version
            ));
        }
        Ok(indexes)
    }

    /// The fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.indexes.iter().map(|index| index.field.as_str())
    }

    /// Whether `field` has a ready index.
    pub fn is_ready(&self, field: &str) -> bool {
        self.indexes
            .iter()
            .any(|index| index.field == field && index.state == IndexState::Ready)
    }

    /// The indexes after redefining the field list as `fields`: kept fields keep
    /// their state, new ones start building.
    pub fn redefined(&self, fields: &[String]) -> ShardIndexes {
        let indexes = fields
            .iter()
            .map(|field| {
                self.indexes
                    .iter()
                    .find(|index| &index.field == field)
                    .cloned()
                    .unwrap_or_else(|| ShardIndex {
                        field: field.clone(),
                        state: IndexState::Building {
                            after: None,
                            indexed: 0,
                        },
                    })
            })
            .collect();
        ShardIndexes {
            version: SHARD_INDEXES_FORMAT_VERSION,
            indexes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the stored encoding of a shard's index record.
    #[test]
    fn golden_bytes() {
        let indexes = ShardIndexes {
            version: 1,
            indexes: vec![ShardIndex {
                field: "a".into(),
                state: IndexState::Ready,
            }],
        };
        let bytes = indexes.encode();
        let expected: &[u8] = &[
            0x82, 0xa7, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01, 0xa7, b'i', b'n', b'd',
            b'e', b'x', b'e', b's', 0x91, 0x82, 0xa5, b'f', b'i', b'e', b'l', b'd', 0xa1, b'a',
            0xa5, b's', b't', b'a', b't', b'e', 0xa5, b'R', b'e', b'a', b'd', b'y',
        ];
        assert_eq!(bytes, expected, "{bytes:02x?}");
        assert_eq!(ShardIndexes::decode(&bytes), Ok(indexes));
        assert!(ShardIndexes::decode(&[0x82]).is_err());
    }

    /// Proves redefining keeps states of kept fields and starts new ones.
    #[test]
    fn redefining_keeps_built_indexes() {
        let before = ShardIndexes::default().redefined(&["a".into()]);
        let mut built = before.clone();
        built.indexes[0].state = IndexState::Ready;
        let after = built.redefined(&["b".into(), "a".into()]);
        assert_eq!(after.fields().collect::<Vec<_>>(), ["b", "a"]);
        assert!(after.is_ready("a"));
        assert!(!after.is_ready("b"));
        assert!(CollectionDefinition::new("c".into(), vec!["a".into(), "a".into()]).is_err());
        assert!(CollectionDefinition::new("c".into(), vec!["a..b".into()]).is_err());
    }
}

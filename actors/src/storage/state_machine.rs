//! The shard state machine on sled: one `Db` per node, one tree per shard replica.
//!
//! Layout of a shard tree (all integers big-endian so keys sort):
//! - `0x00 "applied_index"` → `u64`: a Raft index up to which everything was
//!   applied, written after the data of a batch now and then (a recovery hint, never
//!   relied on for correctness: replay is idempotent).
//! - `namespace byte` + key bytes → `kind u8`, `revision u64`, then for kind 1 (a
//!   live value) the value bytes; kind 2 is a tombstone: the key was deleted at
//!   `revision`. Namespace bytes: `0x01` plain KV, `0x02` documents, `0x04`
//!   collection index records; `0x05` holds index entries (`doc_index`).
//!
//! A second tree per shard indexes tombstones by revision so that they can be purged
//! once the log is compacted past them (replay never reaches back that far).
//!
//! Applying is idempotent: an entry whose index is not above the key's current
//! revision (a tombstone's included) has already taken effect or was overwritten by
//! a later one, and is skipped. Tombstones are what make this hold across deletes: a
//! conditional write that failed before a delete must fail again on replay, not
//! recreate the key. Recovery therefore replays from the last checkpoint, where everything was
//! made durable, without caring how much of the later work sled kept. This is also
//! why a batch is written as plain inserts and not as a sled `Batch`: sled 0.34.7
//! rolls its IO buffer on every batch (`PageCache::pin_log`), which turns each applied
//! Ready into its own disk write and `sync_file_range` and more than halves write
//! throughput (docs/pages/storage.md has the measurements).
//!
//! sled's `flush` does not fully fsync on Linux (sled#1452), so
//! [`StateMachineDb::make_durable`] flushes and then `sync_all`s every file of the
//! database; the WAL drops records only after that returned.
//!
//! A shard's trees come in *generations* (`storage::snapshot`): installing a snapshot
//! streamed from a leader writes a fresh generation and then switches the shard's
//! generation record to it, so a crash mid-install never leaves a half-replaced tree.

use super::doc_index::NAMESPACE_COLLECTION;
use super::snapshot::{self, GenerationRecord, PurgeFloor};
use crate::command::Command;
use crate::ids::{Revision, ShardId};
use crate::kv::{Condition, KvError, Namespace, ScanItem, Versioned};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) const APPLIED_INDEX_KEY: &[u8] = b"\x00applied_index";
pub(super) const VALUE_KIND_LIVE: u8 = 1;
pub(super) const VALUE_KIND_TOMBSTONE: u8 = 2;
pub(super) const VALUE_HEADER_BYTES: usize = 9;

/// Storage failures of the state machine. They are fatal for the replica.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupted state machine value under key {key:02x?}: {reason}")]
    Corrupted { key: Vec<u8>, reason: String },
    #[error("shard {shard}: {reason}")]
    BadSnapshot { shard: ShardId, reason: String },
}

impl From<StoreError> for KvError {
    fn from(error: StoreError) -> KvError {
        match error {
            StoreError::Corrupted { .. } => KvError::Corrupted(error.to_string()),
            other => KvError::Storage(other.to_string()),
        }
    }
}

/// The node's sled database.
#[derive(Clone)]
pub struct StateMachineDb {
    pub(super) db: sled::Db,
    /// Where sled keeps its files; walked by `make_durable`.
    dir: Arc<Path>,
}

impl StateMachineDb {
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<StateMachineDb, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1_000))
            .open()?;
        Ok(StateMachineDb {
            db,
            dir: Arc::from(dir),
        })
    }

    /// The current generation of one shard replica's trees, and the snapshot it was
    /// installed from (when it was). Trees of other generations (an interrupted or
    /// superseded install) are dropped.
    pub fn shard(&self, shard: ShardId) -> Result<(ShardStore, GenerationRecord), StoreError> {
        let record = snapshot::read_generation(self, shard)?;
        snapshot::drop_other_generations(self, shard, record.generation)?;
        let store = self.open_generation(shard, record.generation)?;
        Ok((store, record))
    }

    /// Opens (or creates) the trees of one generation of a shard.
    pub(super) fn open_generation(
        &self,
        shard: ShardId,
        generation: u64,
    ) -> Result<ShardStore, StoreError> {
        let name = snapshot::tree_name(shard, generation);
        let tree = self.db.open_tree(&name)?;
        let tombstones = self.db.open_tree(format!("{name}-tombstones"))?;
        Ok(ShardStore {
            tree,
            tombstones,
            shard,
            generation,
            db: self.clone(),
            purge_floor: Arc::new(PurgeFloor::default()),
        })
    }

    /// Bytes sled's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Makes everything applied so far durable: sled flush, then `sync_all` on every
    /// file and directory of the database (sled's flush alone is not an fsync).
    pub fn make_durable(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        sync_tree(&self.dir)
    }
}

/// `sync_all` on every file below `dir`, then on the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io(&path))?;
        if file_type.is_dir() {
            sync_tree(&path)?;
        } else if file_type.is_file() {
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
    }
    let handle = std::fs::File::open(dir).map_err(io(dir))?;
    handle.sync_all().map_err(io(dir))
}

/// The outcome of applying one command: its revision, or the expected failure that
/// the client is told about (the entry is consumed either way).
pub type ApplyOutcome = Result<Revision, KvError>;

/// One shard replica's tree.
#[derive(Clone)]
pub struct ShardStore {
    pub(super) tree: sled::Tree,
    /// `revision ++ stored key` of every tombstone, for purging in revision order.
    pub(super) tombstones: sled::Tree,
    pub(super) shard: ShardId,
    /// Which generation of the shard's trees this is (see `storage::snapshot`).
    pub(super) generation: u64,
    /// The database, for staging and installing snapshots.
    pub(super) db: StateMachineDb,
    /// Snapshots being streamed from this tree, which tombstone purging must not
    /// overtake (a stream reads the tree while it changes; see `storage::snapshot`).
    pub(super) purge_floor: Arc<PurgeFloor>,
}

pub(super) fn namespace_byte(namespace: Namespace) -> u8 {
    match namespace {
        Namespace::Kv => 0x01,
        Namespace::Doc => 0x02,
        Namespace::Collection => NAMESPACE_COLLECTION,
    }
}

pub(super) fn stored_key(namespace: Namespace, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    stored.push(namespace_byte(namespace));
    stored.extend_from_slice(key);
    stored
}

pub(super) fn encode_value(revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(VALUE_HEADER_BYTES + value.len());
    stored.push(VALUE_KIND_LIVE);
    stored.extend_from_slice(&revision.0.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

pub(super) fn encode_tombstone(revision: Revision) -> Vec<u8> {
    let mut stored = Vec::with_capacity(VALUE_HEADER_BYTES);
    stored.push(VALUE_KIND_TOMBSTONE);
    stored.extend_from_slice(&revision.0.to_be_bytes());
    stored
}

/// Decodes a stored entry's header: its revision and whether it is live (not a
/// tombstone), without copying the value.
pub(super) fn decode_header(key: &[u8], stored: &[u8]) -> Result<(Revision, bool), StoreError> {
    let corrupted = |reason: &str| StoreError::Corrupted {
        key: key.to_vec(),
        reason: reason.to_string(),
    };
    let header = stored
        .get(..VALUE_HEADER_BYTES)
        .ok_or_else(|| corrupted("value shorter than its header"))?;
    let mut revision = [0u8; 8];
    revision.copy_from_slice(&header[1..]);
    let revision = Revision(u64::from_be_bytes(revision));
    match header[0] {
        VALUE_KIND_LIVE => Ok((revision, true)),
        VALUE_KIND_TOMBSTONE if stored.len() == VALUE_HEADER_BYTES => Ok((revision, false)),
        _ => Err(corrupted("unknown value kind")),
    }
}

/// Decodes a stored entry: its revision, and its value unless it is a tombstone.
pub(super) fn decode_value(
    key: &[u8],
    stored: &[u8],
) -> Result<(Revision, Option<Bytes>), StoreError> {
    let (revision, live) = decode_header(key, stored)?;
    let value = live.then(|| Bytes::copy_from_slice(&stored[VALUE_HEADER_BYTES..]));
    Ok((revision, value))
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("shard", &self.shard)
            .field("generation", &self.generation)
            .finish()
    }
}

impl ShardStore {
    /// The shard this tree belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The generation of the shard's trees this store reads and writes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The last Raft index applied to this tree (0 for a new tree).
    pub fn applied_index(&self) -> Result<u64, StoreError> {
        match self.tree.get(APPLIED_INDEX_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let array: [u8; 8] =
                    bytes
                        .as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupted {
                            key: APPLIED_INDEX_KEY.to_vec(),
                            reason: format!("applied index is {} bytes, not 8", bytes.len()),
                        })?;
                Ok(u64::from_be_bytes(array))
            }
        }
    }

    /// Applies committed entries in order, then records the new applied index.
    /// `entries` pairs each Raft index with its command (`None` for entries that carry
    /// no command, such as a new leader's empty entry). Returns one outcome per entry.
    ///
    /// An entry at or below the key's current revision is skipped as already applied
    /// (this happens only when replaying after a restart, when nobody waits for it).
    pub fn apply(
        &self,
        entries: &[(u64, Option<Command>)],
    ) -> Result<Vec<Option<ApplyOutcome>>, StoreError> {
        self.apply_after(entries, u64::MAX, true)
    }

    /// [`ShardStore::apply`], told that no key in the tree carries a revision above
    /// `seen_until`: an unconditional put of a later entry cannot be a replay and
    /// its condition always holds, so it is written without reading the key first.
    /// The applied index is recorded only with `record_applied` (it is a hint for
    /// recovery, and writing it with every batch of one entry doubled the writes).
    pub fn apply_after(
        &self,
        entries: &[(u64, Option<Command>)],
        seen_until: u64,
        record_applied: bool,
    ) -> Result<Vec<Option<ApplyOutcome>>, StoreError> {
        let Some(&(last_index, _)) = entries.last() else {
            return Ok(Vec::new());
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        for (index, command) in entries {
            let Some(command) = command else {
                outcomes.push(None);
                continue;
            };
            let revision = Revision(*index);
            if !matches!(command, Command::Put { .. } | Command::Delete { .. }) {
                outcomes.push(Some(self.apply_collection_command(revision, command)?));
                continue;
            }
            let (namespace, key) = command.key();
            let key = stored_key(namespace, key);
            // An unconditional put of an entry no key has seen yet can skip the read:
            // the key counts as absent, and the condition holds.
            // Documents are always read: their old version's index entries go.
            let unread = *index > seen_until
                && namespace != Namespace::Doc
                && matches!(
                    command,
                    Command::Put {
                        condition: Condition::Always,
                        ..
                    }
                );
            let stored = if unread { None } else { self.tree.get(&key)? };
            let (last_write, current) = match &stored {
                Some(stored) => {
                    let (last_write, live) = decode_header(&key, stored)?;
                    (Some(last_write), live.then_some(last_write))
                }
                None => (None, None),
            };
            if let Some(last_write) = last_write.filter(|last_write| *last_write >= revision) {
                outcomes.push(Some(self.replayed_outcome(command, revision, last_write)));
                continue;
            }
            let condition = match command {
                Command::Put { condition, .. } | Command::Delete { condition, .. } => *condition,
                // Applied above.
                Command::DefineIndexes { .. }
                | Command::BuildIndex { .. }
                | Command::DropCollection { .. } => Condition::Always,
            };
            let condition_holds = match condition {
                Condition::Always => true,
                Condition::RevisionIs(expected) => current == Some(expected),
                Condition::Absent => current.is_none(),
            };
            if !condition_holds {
                outcomes.push(Some(Err(KvError::ConditionFailed { current })));
                continue;
            }
            match command {
                Command::DefineIndexes { .. }
                | Command::BuildIndex { .. }
                | Command::DropCollection { .. } => {}
                Command::Put { value, .. } => {
                    if namespace == Namespace::Doc {
                        let old = stored
                            .as_ref()
                            .filter(|_| current.is_some())
                            .map(|stored| &stored[VALUE_HEADER_BYTES..]);
                        self.update_index_entries(&key[1..], old, Some(value))?;
                    }
                    self.tree.insert(key, encode_value(revision, value))?;
                    outcomes.push(Some(Ok(revision)));
                }
                Command::Delete { .. } => {
                    if current.is_none() {
                        outcomes.push(Some(Err(KvError::NotFound)));
                        continue;
                    }
                    if namespace == Namespace::Doc {
                        let old = stored.as_ref().map(|stored| &stored[VALUE_HEADER_BYTES..]);
                        self.update_index_entries(&key[1..], old, None)?;
                    }
                    self.write_tombstone(&key, revision)?;
                    outcomes.push(Some(Ok(revision)));
                }
            }
        }
        if record_applied {
            self.tree
                .insert(APPLIED_INDEX_KEY, &last_index.to_be_bytes())?;
        }
        Ok(outcomes)
    }

    /// Marks `key` deleted at `revision`, indexed for purging.
    pub(super) fn write_tombstone(&self, key: &[u8], revision: Revision) -> Result<(), StoreError> {
        let mut index_key = revision.0.to_be_bytes().to_vec();
        index_key.extend_from_slice(key);
        self.tombstones.insert(index_key, &[])?;
        self.tree.insert(key, encode_tombstone(revision))?;
        Ok(())
    }

    /// The outcome of an entry skipped because its key already carries `last_write`,
    /// this entry's revision or a later one: a replay after a restart, or an entry
    /// applied after a fuzzy snapshot that read the key later (see `snapshot`).
    ///
    /// The state needs nothing, but the entry's original outcome is known only
    /// when the key holds this very entry's write, or when the entry was an
    /// unconditional put (which always succeeds). Otherwise a later write hides
    /// whether its condition held (or, for a delete, whether the key existed), and
    /// a proposer waiting on it must hear that the outcome is unknown, never a
    /// success that may not have happened.
    fn replayed_outcome(
        &self,
        command: &Command,
        revision: Revision,
        last_write: Revision,
    ) -> ApplyOutcome {
        let unconditional_put = matches!(
            command,
            Command::Put {
                condition: Condition::Always,
                ..
            }
        );
        if last_write == revision || unconditional_put {
            Ok(revision)
        } else {
            Err(KvError::Unavailable {
                shard: self.shard,
                reason: format!(
                    "the write at revision {} was applied from a snapshot that already holds a later write of its key; it may or may not have been applied",
                    revision.0
                ),
                retry_after_ms: 100,
            })
        }
    }

    /// Reads one key.
    pub fn get(&self, namespace: Namespace, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let key = stored_key(namespace, key);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(stored) => {
                let (revision, value) = decode_value(&key, &stored)?;
                Ok(value.map(|value| Versioned { value, revision }))
            }
        }
    }

    /// Keys of `namespace` starting with `prefix`, strictly after `after`, in order, at
    /// most `limit` of them.
    pub fn scan(
        &self,
        namespace: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<ScanItem>, StoreError> {
        let full_prefix = stored_key(namespace, prefix);
        let start = match after {
            Some(after) if after >= prefix => {
                // The smallest key strictly greater than `after`.
                let mut start = stored_key(namespace, after);
                start.push(0);
                start
            }
            _ => full_prefix.clone(),
        };
        let mut items = Vec::new();
        for pair in self.tree.range(start..) {
            if items.len() >= limit {
                break;
            }
            let (key, stored) = pair?;
            if !key.starts_with(&full_prefix) {
                break;
            }
            let (revision, value) = decode_value(&key, &stored)?;
            let Some(value) = value else { continue };
            items.push(ScanItem {
                key: key[1..].to_vec(),
                value,
                revision,
            });
        }
        Ok(items)
    }

    /// Removes tombstones at or below `revision`. Called once the log is compacted
    /// there: replay never starts at or before it, so nothing needs them any more.
    /// Tombstones above the start of a snapshot being streamed are kept until the
    /// stream ends.
    pub fn purge_tombstones(&self, revision: u64) -> Result<u64, StoreError> {
        let revision = self.purge_floor.clamp(revision);
        let end = revision.saturating_add(1).to_be_bytes();
        let mut purged = 0;
        for pair in self.tombstones.range(..end.as_slice()) {
            let (index_key, _) = pair?;
            let key = &index_key[8..];
            if let Some(stored) = self.tree.get(key)? {
                let (last_write, value) = decode_value(key, &stored)?;
                if value.is_none() && last_write.0 <= revision {
                    // Only if nothing rewrote the key meanwhile.
                    let _ = self
                        .tree
                        .compare_and_swap(key, Some(stored), None as Option<&[u8]>)?;
                }
            }
            self.tombstones.remove(&index_key)?;
            purged += 1;
        }
        Ok(purged)
    }

    /// A checksum over every key, revision and value in key order, equal on replicas
    /// with equal content. The applied index is excluded.
    pub fn checksum(&self) -> Result<u64, StoreError> {
        let mut checksum = 0u32;
        let mut count = 0u64;
        for pair in self.tree.iter() {
            let (key, stored) = pair?;
            if key.as_ref() == APPLIED_INDEX_KEY || stored.first() == Some(&VALUE_KIND_TOMBSTONE) {
                // Tombstones are purged at different times on different replicas.
                continue;
            }
            checksum = crc32c::crc32c_append(checksum, &(key.len() as u64).to_be_bytes());
            checksum = crc32c::crc32c_append(checksum, &key);
            checksum = crc32c::crc32c_append(checksum, &stored);
            count += 1;
        }
        Ok((count << 32) | u64::from(checksum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    fn put(key: &str, value: &str, condition: Condition) -> Option<Command> {
        Some(Command::Put {
            namespace: Namespace::Kv,
            key: key.as_bytes().to_vec(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            condition,
        })
    }

    fn delete(key: &str, condition: Condition) -> Option<Command> {
        Some(Command::Delete {
            namespace: Namespace::Kv,
            key: key.as_bytes().to_vec(),
            condition,
        })
    }

    /// Proves revisions are the entry index, conditions see earlier writes of the same
    /// batch, failed conditions and deletes of absent keys write nothing, and the
    /// applied index follows the batch.
    #[test]
    fn apply_checks_conditions_within_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(0)).unwrap();
        let outcomes = store
            .apply(&[
                (1, None),
                (2, put("a", "1", Condition::Absent)),
                (3, put("a", "2", Condition::Absent)),
                (4, put("a", "3", Condition::RevisionIs(Revision(2)))),
                (5, delete("b", Condition::Always)),
                (6, put("b", "x", Condition::RevisionIs(Revision(4)))),
            ])
            .unwrap();
        assert_eq!(outcomes[0], None);
        assert_eq!(outcomes[1], Some(Ok(Revision(2))));
        assert_eq!(
            outcomes[2],
            Some(Err(KvError::ConditionFailed {
                current: Some(Revision(2))
            }))
        );
        assert_eq!(outcomes[3], Some(Ok(Revision(4))));
        assert_eq!(outcomes[4], Some(Err(KvError::NotFound)));
        assert_eq!(
            outcomes[5],
            Some(Err(KvError::ConditionFailed { current: None }))
        );
        assert_eq!(store.applied_index().unwrap(), 6);
        let value = store.get(Namespace::Kv, b"a").unwrap().unwrap();
        assert_eq!(
            (value.value.as_ref(), value.revision),
            (&b"3"[..], Revision(4))
        );
        assert_eq!(store.get(Namespace::Doc, b"a").unwrap(), None);
        let deleted = store.apply(&[(7, delete("a", Condition::Always))]).unwrap();
        assert_eq!(deleted[0], Some(Ok(Revision(7))));
        assert_eq!(store.get(Namespace::Kv, b"a").unwrap(), None);
        db.make_durable().unwrap();
    }

    /// Proves replaying entries that were already applied changes nothing: later
    /// writes are not undone by an earlier delete or conditional put replayed.
    #[test]
    fn replay_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(3)).unwrap();
        let log = vec![
            (1, put("k", "a", Condition::Always)),
            (2, delete("k", Condition::Always)),
            (3, put("k", "b", Condition::Absent)),
            (4, put("j", "x", Condition::Always)),
            (5, delete("j", Condition::RevisionIs(Revision(4)))),
        ];
        store.apply(&log).unwrap();
        let snapshot = |store: &ShardStore| {
            store
                .scan(Namespace::Kv, b"", None, 10)
                .unwrap()
                .into_iter()
                .map(|item| (item.key, item.value, item.revision))
                .collect::<Vec<_>>()
        };
        let before = snapshot(&store);
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].2, Revision(3));
        for start in 0..log.len() {
            store.apply(&log[start..]).unwrap();
            assert_eq!(snapshot(&store), before, "replay from entry {}", start + 1);
        }
    }

    /// Regression: a create-only write that failed before a delete must not recreate
    /// the key when the log is replayed after a restart (the delete leaves a
    /// tombstone carrying its revision), and purging tombstones below the replay
    /// start changes nothing visible.
    #[test]
    fn replay_does_not_resurrect_deleted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(4)).unwrap();
        let log = vec![
            (10, put("k", "first", Condition::Always)),
            (11, put("k", "rejected", Condition::Absent)),
            (12, delete("k", Condition::RevisionIs(Revision(10)))),
        ];
        let outcomes = store.apply(&log).unwrap();
        assert_eq!(
            outcomes[1],
            Some(Err(KvError::ConditionFailed {
                current: Some(Revision(10))
            }))
        );
        assert_eq!(outcomes[2], Some(Ok(Revision(12))));
        store.apply(&log[1..]).unwrap();
        assert_eq!(
            store.get(Namespace::Kv, b"k").unwrap(),
            None,
            "replay resurrected k"
        );
        assert!(store.scan(Namespace::Kv, b"", None, 10).unwrap().is_empty());
        let checksum = store.checksum().unwrap();
        assert_eq!(
            store.purge_tombstones(11).unwrap(),
            0,
            "revision 12 is kept"
        );
        assert_eq!(store.purge_tombstones(12).unwrap(), 1);
        assert_eq!(store.get(Namespace::Kv, b"k").unwrap(), None);
        assert_eq!(
            store.checksum().unwrap(),
            checksum,
            "tombstones are not content"
        );
        // After the purge the key can be created again.
        let again = store
            .apply(&[(13, put("k", "new", Condition::Absent))])
            .unwrap();
        assert_eq!(again[0], Some(Ok(Revision(13))));
    }

    /// Proves scans stay inside the prefix and namespace, resume strictly after
    /// `after`, and honour the limit.
    #[test]
    fn scan_pages_through_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(1)).unwrap();
        let mut entries = Vec::new();
        for (index, key) in ["p/1", "p/2", "p/3", "q/1"].iter().enumerate() {
            entries.push((index as u64 + 1, put(key, "v", Condition::Always)));
        }
        store.apply(&entries).unwrap();
        let keys = |items: Vec<ScanItem>| -> Vec<String> {
            items
                .into_iter()
                .map(|item| String::from_utf8(item.key).unwrap())
                .collect()
        };
        assert_eq!(
            keys(store.scan(Namespace::Kv, b"p/", None, 2).unwrap()),
            ["p/1", "p/2"]
        );
        assert_eq!(
            keys(store.scan(Namespace::Kv, b"p/", Some(b"p/2"), 10).unwrap()),
            ["p/3"]
        );
        assert_eq!(
            keys(store.scan(Namespace::Kv, b"", None, 10).unwrap()).len(),
            4
        );
        assert!(store
            .scan(Namespace::Doc, b"", None, 10)
            .unwrap()
            .is_empty());
    }

    /// Proves a damaged stored value is reported as corruption, never returned.
    #[test]
    fn corrupted_value_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(2)).unwrap();
        store.tree.insert(b"\x01k", &b"\x07"[..]).unwrap();
        assert!(matches!(
            store.get(Namespace::Kv, b"k"),
            Err(StoreError::Corrupted { .. })
        ));
    }
}

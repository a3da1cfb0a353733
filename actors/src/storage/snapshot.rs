//! Shard snapshots: reading a shard's tree out in chunks for a lagging replica, and
//! installing such a stream on the receiving side without ever exposing a
//! half-replaced tree.
//!
//! # Generations
//!
//! A shard's data lives in a pair of trees (data and tombstone index) of one
//! *generation*. Generation 0 is named `shard-{id:010}`; generation `g > 0` is
//! `shard-{id:010}-g{g:010}`. The `shard-generations` tree records, per shard, the
//! current generation and the snapshot position it was installed from. Installing a
//! snapshot writes a new generation (staging), makes it durable, then switches the
//! record and makes that durable: a crash before the switch leaves the old
//! generation current (the staged trees are dropped at the next start), a crash after
//! it leaves the new one, whose snapshot position the replica then adopts as its log
//! start even if the WAL never recorded it (see `ShardReplica::new`).
//!
//! # Fuzzy streams
//!
//! A stream does not freeze the tree. It is labelled with the applied index `A` at
//! which it started and reads keys while later entries keep being applied, so each
//! key is seen as it was after some prefix of the log at or after `A`. The receiver
//! installs it as the state at `A` and then applies the log from `A + 1`. That is
//! correct because applying is idempotent per key: an entry at or below a key's
//! revision is skipped, and a key read before an entry touched it is in exactly the
//! state that entry originally saw, so its condition evaluates the same way.
//! Tombstones carry this argument across deletes, so tombstones above `A` must not be
//! purged while a stream from `A` runs: [`PurgeFloor`] holds them back.
//!
//! The state converges, but a skipped entry's *outcome* is not always known on the
//! receiver: a conditional write (or a delete) whose key the stream read after a
//! later write of it may have failed on the sender. A proposer waiting on such an
//! entry (a follower that proposed it and then installed the snapshot) hears that
//! the outcome is unknown (`ShardStore::apply_after`); reporting success there
//! once let a compare-and-set that had been refused look applied.

use super::doc_index::{NAMESPACE_COLLECTION, NAMESPACE_INDEX};
use super::state_machine::{
    decode_value, ShardStore, StateMachineDb, StoreError, APPLIED_INDEX_KEY, VALUE_KIND_TOMBSTONE,
};
use super::wal_record::ConfStateRecord;
use crate::ids::ShardId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Version of [`GenerationRecord`] as stored.
const GENERATION_FORMAT_VERSION: u8 = 1;
/// The tree holding every shard's generation record.
const GENERATIONS_TREE: &str = "shard-generations";

/// Where an installed snapshot put a shard's log: its index, term and configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPosition {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfStateRecord,
    /// The highest revision of any key the snapshot brought (a fuzzy stream reads
    /// keys written after the index it is labelled with). Replay after a restart
    /// must check every entry up to here against the key's revision.
    #[serde(default)]
    pub revision_max: u64,
}

/// A shard's current generation and the snapshot it came from (none for a tree that
/// grew from the shard's first entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub version: u8,
    pub generation: u64,
    pub snapshot: Option<SnapshotPosition>,
}

/// The name of a shard's data tree in one generation.
pub(super) fn tree_name(shard: ShardId, generation: u64) -> String {
    if generation == 0 {
        format!("shard-{:010}", shard.0)
    } else {
        format!("shard-{:010}-g{generation:010}", shard.0)
    }
}

/// The generation a tree name belongs to, if it is one of `shard`'s data or
/// tombstone trees.
fn generation_of(name: &[u8], shard: ShardId) -> Option<u64> {
    let name = std::str::from_utf8(name).ok()?;
    let rest = name.strip_prefix(&format!("shard-{:010}", shard.0))?;
    let rest = rest.strip_suffix("-tombstones").unwrap_or(rest);
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix("-g")?;
    if digits.len() != 10 {
        return None;
    }
    digits.parse().ok()
}

/// The shard's generation record (generation 0 when none was ever written).
pub(super) fn read_generation(
    db: &StateMachineDb,
    shard: ShardId,
) -> Result<GenerationRecord, StoreError> {
    let tree = db.db.open_tree(GENERATIONS_TREE)?;
    let Some(bytes) = tree.get(shard.0.to_be_bytes())? else {
        return Ok(GenerationRecord {
            version: GENERATION_FORMAT_VERSION,
            ..Default::default()
        });
    };
    let record: GenerationRecord =
        rmp_serde::from_slice(&bytes).map_err(|error| StoreError::Corrupted {
            key: shard.0.to_be_bytes().to_vec(),
            reason: format!("generation record: {error}"),
        })?;
    if record.version != GENERATION_FORMAT_VERSION {
        return Err(StoreError::Corrupted {
            key: shard.0.to_be_bytes().to_vec(),
            reason: format!("generation record version {}", record.version),
        });
    }
    Ok(record)
}

/// Drops every tree of `shard` that belongs to a generation other than `keep`.
pub(super) fn drop_other_generations(
    db: &StateMachineDb,
    shard: ShardId,
    keep: u64,
) -> Result<(), StoreError> {
    for name in db.db.tree_names() {
        if generation_of(&name, shard).is_some_and(|generation| generation != keep) {
            db.db.drop_tree(&name)?;
        }
    }
    Ok(())
}

/// The applied indexes that snapshot streams of one tree started at. Tombstone
/// purging is clamped below the smallest of them.
#[derive(Debug, Default)]
pub struct PurgeFloor {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, u64>>,
}

impl PurgeFloor {
    fn register(self: &Arc<Self>, index: u64) -> FloorGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(id, index);
        }
        FloorGuard {
            floor: Arc::clone(self),
            id,
        }
    }

    /// The highest revision whose tombstones may be purged, given a wish of `revision`.
    pub fn clamp(&self, revision: u64) -> u64 {
        match self.streams.lock() {
            Ok(streams) => streams
                .values()
                .copied()
                .min()
                .map_or(revision, |floor| floor.min(revision)),
            // A poisoned lock means a panic elsewhere; purge nothing rather than guess.
            Err(_) => 0,
        }
    }
}

/// Holds a stream's place in the [`PurgeFloor`] until dropped.
#[derive(Debug)]
pub struct FloorGuard {
    floor: Arc<PurgeFloor>,
    id: u64,
}

impl Drop for FloorGuard {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.floor.streams.lock() {
            streams.remove(&self.id);
        }
    }
}

/// One stored pair of a shard tree as it travels in a snapshot: the stored key
/// (namespace byte first) and the stored value (kind, revision, bytes).
pub type SnapshotPair = (Vec<u8>, Vec<u8>);

/// Reads a shard's tree out in key order, a chunk at a time, for a stream labelled
/// with the applied index it started at.
pub struct SnapshotSource {
    store: ShardStore,
    index: u64,
    /// The last key returned; the next chunk starts strictly after it.
    after: Option<Vec<u8>>,
    finished: bool,
    _guard: FloorGuard,
}

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSource")
            .field("shard", &self.store.shard)
            .field("index", &self.index)
            .field("finished", &self.finished)
            .finish()
    }
}

impl ShardStore {
    /// The shard's generation record, as durably written.
    pub fn generation_record(&self) -> Result<GenerationRecord, StoreError> {
        read_generation(&self.db, self.shard)
    }

    /// Starts a stream of this tree labelled with `index`, the applied index now.
    pub fn snapshot_source(&self, index: u64) -> SnapshotSource {
        SnapshotSource {
            store: self.clone(),
            index,
            after: None,
            finished: false,
            _guard: self.purge_floor.register(index),
        }
    }

    /// Starts staging a snapshot into a fresh generation of this shard. Generations
    /// left over from earlier installs are dropped first.
    pub fn stage_snapshot(&self) -> Result<SnapshotStaging, StoreError> {
        drop_other_generations(&self.db, self.shard, self.generation)?;
        let generation = self.generation + 1;
        let staged = self.db.open_generation(self.shard, generation)?;
        Ok(SnapshotStaging {
            staged,
            revision_max: 0,
        })
    }
}

impl SnapshotSource {
    /// The applied index the stream is labelled with.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether the whole tree has been read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next pairs, about `bytes_max` bytes of them (at least one when any are
    /// left); `None` once the whole tree has been read.
    pub fn next_chunk(
        &mut self,
        bytes_max: usize,
    ) -> Result<Option<Vec<SnapshotPair>>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        let range = match &self.after {
            None => self.store.tree.range::<&[u8], _>(..),
            Some(after) => {
                let mut start = after.clone();
                start.push(0);
                self.store.tree.range(start..)
            }
        };
        let mut pairs = Vec::new();
        let mut bytes = 0usize;
        for pair in range {
            let (key, value) = pair?;
            if key.as_ref() == APPLIED_INDEX_KEY {
                continue;
            }
            bytes += key.len() + value.len();
            pairs.push((key.to_vec(), value.to_vec()));
            if bytes >= bytes_max {
                break;
            }
        }
        match pairs.last() {
            None => {
                self.finished = true;
                Ok(None)
            }
            Some((key, _)) => {
                if bytes < bytes_max {
                    // The range ran out before the chunk filled: nothing follows.
                    self.finished = true;
                }
                self.after = Some(key.clone());
                Ok(Some(pairs))
            }
        }
    }
}

/// A snapshot being written into a fresh generation, chunk by chunk.
pub struct SnapshotStaging {
    staged: ShardStore,
    /// The highest revision written so far (a fuzzy stream may carry revisions
    /// above the index it is labelled with).
    revision_max: u64,
}

impl std::fmt::Debug for SnapshotStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStaging")
            .field("shard", &self.staged.shard)
            .field("generation", &self.staged.generation)
            .finish()
    }
}

impl SnapshotStaging {
    /// Writes one chunk of pairs. Every pair is checked first: a key outside the
    /// data namespaces or a value that does not decode refuses the whole chunk.
    pub fn write(&mut self, pairs: &[SnapshotPair]) -> Result<(), StoreError> {
        let shard = self.staged.shard;
        for (key, value) in pairs {
            match key.first() {
                Some(0x01 | 0x02 | &NAMESPACE_COLLECTION) => {}
                Some(&NAMESPACE_INDEX) if value.is_empty() => continue,
                _ => {
                    return Err(StoreError::BadSnapshot {
                        shard,
                        reason: format!("key {key:02x?} is outside the data namespaces"),
                    })
                }
            }
            let (revision, _) = decode_value(key, value)?;
            self.revision_max = self.revision_max.max(revision.0);
        }
        for (key, value) in pairs {
            if value.first() == Some(&VALUE_KIND_TOMBSTONE) {
                let mut index_key = value[1..9].to_vec();
                index_key.extend_from_slice(key);
                self.staged.tombstones.insert(index_key, &[])?;
            }
            self.staged.tree.insert(key.as_slice(), value.as_slice())?;
        }
        Ok(())
    }

    /// Records the snapshot's index as the staged tree's applied index and makes the
    /// staged generation durable. It is not current until installed.
    pub fn finish(self, index: u64) -> Result<StagedSnapshot, StoreError> {
        self.staged
            .tree
            .insert(APPLIED_INDEX_KEY, &index.to_be_bytes())?;
        self.staged.db.make_durable()?;
        Ok(StagedSnapshot {
            staged: self.staged,
            index,
            revision_max: self.revision_max.max(index),
        })
    }
}

/// A complete, durable staged snapshot, waiting for Raft to accept it.
pub struct StagedSnapshot {
    staged: ShardStore,
    index: u64,
    revision_max: u64,
}

impl std::fmt::Debug for StagedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedSnapshot")
            .field("shard", &self.staged.shard)
            .field("generation", &self.staged.generation)
            .field("index", &self.index)
            .finish()
    }
}

impl StagedSnapshot {
    /// The index the snapshot was labelled with.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The highest revision of any key in it (at least its index).
    pub fn revision_max(&self) -> u64 {
        self.revision_max
    }

    /// Makes the staged generation the shard's current one, durably, and returns
    /// its store. The previous generation stays on disk, unused, until the next
    /// install or start drops it.
    pub fn install(self, mut position: SnapshotPosition) -> Result<ShardStore, StoreError> {
        if position.index != self.index {
            return Err(StoreError::BadSnapshot {
                shard: self.staged.shard,
                reason: format!(
                    "staged at index {} but installed as index {}",
                    self.index, position.index
                ),
            });
        }
        position.revision_max = position.revision_max.max(self.revision_max);
        let record = GenerationRecord {
            version: GENERATION_FORMAT_VERSION,
            generation: self.staged.generation,
            snapshot: Some(position),
        };
        let bytes = rmp_serde::to_vec_named(&record).map_err(|error| StoreError::BadSnapshot {
            shard: self.staged.shard,
            reason: error.to_string(),
        })?;
        let tree = self.staged.db.db.open_tree(GENERATIONS_TREE)?;
        tree.insert(self.staged.shard.0.to_be_bytes(), bytes)?;
        self.staged.db.make_durable()?;
        Ok(self.staged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::kv::{Condition, Namespace};
    use bytes::Bytes;

    fn put(key: &str, value: &str) -> Option<Command> {
        Some(Command::Put {
            namespace: Namespace::Kv,
            key: key.as_bytes().to_vec(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            condition: Condition::Always,
        })
    }

    fn delete(key: &str) -> Option<Command> {
        Some(Command::Delete {
            namespace: Namespace::Kv,
            key: key.as_bytes().to_vec(),
            condition: Condition::Always,
        })
    }

    fn position(index: u64) -> SnapshotPosition {
        SnapshotPosition {
            index,
            term: 2,
            conf_state: ConfStateRecord {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            revision_max: index,
        }
    }

    /// Proves a stream read in small chunks and installed elsewhere reproduces the
    /// tree (content checksum, tombstones, applied index), that the install survives
    /// a reopen with its position, and that the old generation is dropped then.
    #[test]
    fn stream_and_install_reproduce_the_tree() {
        let source_dir = tempfile::tempdir().unwrap();
        let source_db = StateMachineDb::open(source_dir.path(), 1 << 20).unwrap();
        let (source, _) = source_db.shard(ShardId(5)).unwrap();
        let mut entries: Vec<(u64, Option<Command>)> = (1..=300)
            .map(|index| (index, put(&format!("k{index:04}"), "value")))
            .collect();
        entries.push((301, delete("k0007")));
        source.apply(&entries).unwrap();

        let target_dir = tempfile::tempdir().unwrap();
        let target_db = StateMachineDb::open(target_dir.path(), 1 << 20).unwrap();
        let (target, record) = target_db.shard(ShardId(5)).unwrap();
        assert_eq!((record.generation, record.snapshot.as_ref()), (0, None));
        target.apply(&[(1, put("stale", "x"))]).unwrap();

        let mut stream = source.snapshot_source(301);
        let mut staging = target.stage_snapshot().unwrap();
        let mut chunks = 0;
        while let Some(pairs) = stream.next_chunk(256).unwrap() {
            assert!(!pairs.is_empty());
            staging.write(&pairs).unwrap();
            chunks += 1;
        }
        assert!(chunks > 10, "small chunks: {chunks}");
        let staged = staging.finish(301).unwrap();
        let installed = staged.install(position(301)).unwrap();
        assert_eq!(installed.generation(), 1);
        assert_eq!(installed.checksum().unwrap(), source.checksum().unwrap());
        assert_eq!(installed.applied_index().unwrap(), 301);
        assert_eq!(installed.get(Namespace::Kv, b"stale").unwrap(), None);
        assert_eq!(installed.get(Namespace::Kv, b"k0007").unwrap(), None);
        // The tombstone travelled: replaying the delete's predecessor is skipped.
        installed.apply(&[(300, put("k0007", "old"))]).unwrap();
        assert_eq!(installed.get(Namespace::Kv, b"k0007").unwrap(), None);
        drop((installed, target));
        drop(target_db);

        let reopened = StateMachineDb::open(target_dir.path(), 1 << 20).unwrap();
        let (store, record) = reopened.shard(ShardId(5)).unwrap();
        assert_eq!(record.generation, 1);
        assert_eq!(record.snapshot, Some(position(301)));
        assert_eq!(store.checksum().unwrap(), source.checksum().unwrap());
        let names: Vec<Vec<u8>> = reopened
            .db
            .tree_names()
            .iter()
            .map(|n| n.to_vec())
            .collect();
        assert!(
            !names
                .iter()
                .any(|name| name.as_slice() == b"shard-0000000005"),
            "old generation dropped"
        );
    }

    /// Proves an interrupted install (staged, never switched) leaves the old
    /// generation current and its staged trees are dropped at the next open.
    #[test]
    fn interrupted_install_keeps_the_old_generation() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(1)).unwrap();
        store.apply(&[(1, put("a", "1"))]).unwrap();
        let mut staging = store.stage_snapshot().unwrap();
        staging
            .write(&[(b"\x01b".to_vec(), {
                let mut value = vec![1];
                value.extend_from_slice(&9u64.to_be_bytes());
                value
            })])
            .unwrap();
        let _staged = staging.finish(9).unwrap();
        drop(store);
        let (store, record) = db.shard(ShardId(1)).unwrap();
        assert_eq!(record.generation, 0);
        assert!(store.get(Namespace::Kv, b"a").unwrap().is_some());
        assert!(store.get(Namespace::Kv, b"b").unwrap().is_none());
        assert!(!db
            .db
            .tree_names()
            .iter()
            .any(|name| generation_of(name, ShardId(1)) == Some(1)));
    }

    /// Proves bad pairs are refused before anything of the chunk is written.
    #[test]
    fn staging_refuses_bad_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(2)).unwrap();
        let mut staging = store.stage_snapshot().unwrap();
        let good = (b"\x01ok".to_vec(), {
            let mut value = vec![1];
            value.extend_from_slice(&3u64.to_be_bytes());
            value
        });
        for bad in [
            (APPLIED_INDEX_KEY.to_vec(), 5u64.to_be_bytes().to_vec()),
            (b"\x01k".to_vec(), vec![7, 0]),
        ] {
            assert!(staging.write(&[good.clone(), bad]).is_err());
        }
        assert!(staging.staged.tree.is_empty());
    }

    /// Proves the purge floor holds tombstones above a running stream's start and
    /// releases them when the stream is dropped.
    #[test]
    fn purge_waits_for_streams() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateMachineDb::open(dir.path(), 1 << 20).unwrap();
        let (store, _) = db.shard(ShardId(3)).unwrap();
        store
            .apply(&[
                (1, put("a", "1")),
                (2, delete("a")),
                (3, put("b", "1")),
                (4, delete("b")),
            ])
            .unwrap();
        let stream = store.snapshot_source(3);
        assert_eq!(store.purge_tombstones(4).unwrap(), 1, "only revision 2");
        drop(stream);
        assert_eq!(store.purge_tombstones(4).unwrap(), 1, "revision 4 now");
    }

    #[test]
    fn generation_names_parse() {
        assert_eq!(generation_of(b"shard-0000000003", ShardId(3)), Some(0));
        assert_eq!(
            generation_of(b"shard-0000000003-tombstones", ShardId(3)),
            Some(0)
        );
        assert_eq!(
            generation_of(b"shard-0000000003-g0000000012-tombstones", ShardId(3)),
            Some(12)
        );
        assert_eq!(generation_of(b"shard-0000000031", ShardId(3)), None);
        assert_eq!(generation_of(b"shard-generations", ShardId(3)), None);
    }
}

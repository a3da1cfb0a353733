//! Secondary indexes of documents inside one shard's tree, and queries over them.
//!
//! Layout, next to the data namespaces of `state_machine`:
//! - `0x04` collection name → a stored value (kind, revision, bytes) holding the
//!   shard's [`ShardIndexes`] for the collection (`Namespace::Collection`);
//! - `0x05` `len(collection) u8` collection `len(field) u8` field, then the
//!   field's value in the `docs::value_key` encoding, then the document id → empty.
//!   The value encoding is self-delimiting and prefix-free, so entries sort by
//!   (value, id) and all entries of one value share a prefix.
//!
//! Entries are written in the same apply as the document, *before* the document
//! (and the index record before its entries are relied on): sled recovers a prefix
//! of the writes made, so a document whose write survived a crash has its index
//! entries too, and replaying the entry (skipped or not) leaves them right. A
//! snapshot stream reads keys in order, documents (`0x02`) before index records
//! (`0x04`) before entries (`0x05`); a fuzzy stream therefore holds entries at least
//! as new as the documents and records it holds, and the entries applied after the
//! stream's index redo whatever the stream missed (see `snapshot`).

use super::state_machine::{
    decode_header, decode_value, encode_value, stored_key, ApplyOutcome, ShardStore, StoreError,
};
use crate::command::Command;
use crate::docs::collection::{IndexState, ShardIndexes};
use crate::docs::filter::{FieldPath, Test};
use crate::docs::query::{Position, Query, ShardQueryPage};
use crate::docs::value_key::{self, prefix_end, TAG_NULL, TAG_OBJECT};
use crate::ids::Revision;
use crate::kv::{KvError, Namespace};
use serde_json::Value;
use std::time::{Duration, Instant};

/// First byte of a collection's index record (`Namespace::Collection`).
pub const NAMESPACE_COLLECTION: u8 = 0x04;
/// First byte of an index entry.
pub const NAMESPACE_INDEX: u8 = 0x05;
/// Most documents one shard reads for one query page.
pub const QUERY_EXAMINED_MAX: u64 = 200_000;
/// How often (in documents read) a query looks at the clock.
const CLOCK_EVERY_DOCUMENTS: u64 = 64;
/// Most bytes of documents one shard answers a query page with: pages travel
/// between nodes in frames of at most 16 MiB.
pub const QUERY_SHARD_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Documents a drop deletes per pass over the tree.
const DROP_BATCH_DOCUMENTS: usize = 1_000;

/// The prefix of every entry of one index.
fn index_prefix(collection: &str, field: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(3 + collection.len() + field.len());
    prefix.push(NAMESPACE_INDEX);
    // Collection names are at most 128 bytes, field paths at most 200.
    prefix.push(collection.len().min(255) as u8);
    prefix.extend_from_slice(collection.as_bytes());
    prefix.push(field.len().min(255) as u8);
    prefix.extend_from_slice(field.as_bytes());
    prefix
}

/// The stored key prefix of a collection's documents: `0x02 collection/`.
fn documents_prefix(collection: &str) -> Vec<u8> {
    stored_key(Namespace::Doc, format!("{collection}/").as_bytes())
}

/// `(collection, id)` of a document key (`collection/id`).
fn split_document_key(key: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(key).ok()?;
    text.split_once('/')
}

/// A stored document's JSON, if it is JSON.
fn parse_document(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// One contiguous stretch of index keys: `start` inclusive, `end` exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyRange {
    start: Vec<u8>,
    end: Vec<u8>,
}

/// How a shard finds the candidates of a query.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Every document of the collection, in id order.
    Scan,
    /// Entries of a ready index on `field`, in (value, id) order.
    Index {
        field: String,
        /// The index's key prefix.
        prefix: Vec<u8>,
        ranges: Vec<KeyRange>,
    },
}

/// What the filter requires of one field, gathered from its tests.
#[derive(Default)]
struct FieldBounds<'test> {
    equal: Option<&'test [u8]>,
    any_of: Option<&'test [Vec<u8>]>,
    lower: Option<(&'test [u8], bool)>,
    upper: Option<(&'test [u8], bool)>,
    exists: bool,
}

impl FieldBounds<'_> {
    /// Lower is better: an equality beats `$in` beats a range beats `$exists`.
    fn rank(&self) -> Option<u8> {
        if self.equal.is_some() {
            Some(0)
        } else if self.any_of.is_some() {
            Some(1)
        } else if self.lower.is_some() || self.upper.is_some() {
            Some(2)
        } else if self.exists {
            Some(3)
        } else {
            None
        }
    }

    /// The index key ranges holding every entry that can pass, below `prefix`.
    fn ranges(&self, prefix: &[u8]) -> Vec<KeyRange> {
        let key = |value: &[u8]| [prefix, value].concat();
        let exact = |value: &[u8]| {
            let start = key(value);
            let end = prefix_end(&start).unwrap_or_default();
            KeyRange { start, end }
        };
        if let Some(value) = self.equal {
            return vec![exact(value)];
        }
        if let Some(values) = self.any_of {
            return values.iter().map(|value| exact(value)).collect();
        }
        if self.lower.is_some() || self.upper.is_some() {
            let tags: Vec<u8> = [self.lower, self.upper]
                .iter()
                .flatten()
                .map(|(value, _)| value.first().copied().unwrap_or(0))
                .collect();
            if tags.windows(2).any(|pair| pair[0] != pair[1]) {
                // A value cannot have two types: nothing passes.
                return Vec::new();
            }
            let tag = tags[0];
            let start = match self.lower {
                Some((value, true)) => key(value),
                Some((value, false)) => prefix_end(&key(value)).unwrap_or_default(),
                None => key(&[tag]),
            };
            let end = match self.upper {
                Some((value, true)) => prefix_end(&key(value)).unwrap_or_default(),
                Some((value, false)) => key(value),
                None => key(&[tag + 1]),
            };
            return if start < end {
                vec![KeyRange { start, end }]
            } else {
                Vec::new()
            };
        }
        vec![KeyRange {
            start: key(&[TAG_NULL]),
            end: key(&[TAG_OBJECT + 1]),
        }]
    }
}

/// Chooses how to find a query's candidates: the best ready index the filter's
/// required tests can use, else a scan.
fn plan(collection: &str, query: &Query, indexes: &ShardIndexes) -> Plan {
    let mut fields: Vec<(&FieldPath, FieldBounds)> = Vec::new();
    for (path, test) in query.filter.required_tests() {
        if !indexes.is_ready(path.as_str()) {
            continue;
        }
        let at = match fields.iter().position(|(known, _)| *known == path) {
            Some(at) => at,
            None => {
                fields.push((path, FieldBounds::default()));
                fields.len() - 1
            }
        };
        let bounds = &mut fields[at].1;
        match test {
            Test::Eq(value) => bounds.equal = Some(value),
            Test::In(values) => bounds.any_of = Some(values),
            Test::Gt(value) => bounds.lower = tighter(bounds.lower, (value, false), true),
            Test::Gte(value) => bounds.lower = tighter(bounds.lower, (value, true), true),
            Test::Lt(value) => bounds.upper = tighter(bounds.upper, (value, false), false),
            Test::Lte(value) => bounds.upper = tighter(bounds.upper, (value, true), false),
            Test::Exists(true) => bounds.exists = true,
            Test::Exists(false) | Test::Ne(_) => {}
        }
    }
    let sorted_by = |path: &FieldPath| query.sort.as_ref() == Some(path);
    let best = fields
        .iter()
        .filter_map(|(path, bounds)| {
            bounds
                .rank()
                .map(|rank| (rank, !sorted_by(path), *path, bounds))
        })
        .min_by_key(|(rank, unsorted, _, _)| (*rank, *unsorted));
    match best {
        None => Plan::Scan,
        Some((_, _, path, bounds)) => {
            let prefix = index_prefix(collection, path.as_str());
            Plan::Index {
                field: path.as_str().to_string(),
                ranges: bounds.ranges(&prefix),
                prefix,
            }
        }
    }
}

/// The tighter of two bounds on the same side (`lower`: the larger one).
fn tighter<'value>(
    current: Option<(&'value [u8], bool)>,
    candidate: (&'value [u8], bool),
    lower: bool,
) -> Option<(&'value [u8], bool)> {
    let Some(current) = current else {
        return Some(candidate);
    };
    if current.0.first() != candidate.0.first() {
        // Bounds of two types: no value passes both. Either one still bounds a
        // superset of the matches, and the filter is checked on every candidate.
        return Some(candidate);
    }
    let candidate_wins = match current.0.cmp(candidate.0) {
        std::cmp::Ordering::Equal => !candidate.1,
        std::cmp::Ordering::Less => lower,
        std::cmp::Ordering::Greater => !lower,
    };
    Some(if candidate_wins { candidate } else { current })
}

/// A candidate document a walk produced.
struct Candidate {
    id: String,
    /// The stored value (header and document), when the walk read it already.
    stored: Option<sled::IVec>,
}

impl ShardStore {
    /// The collection's index list on this shard (empty when it has none), with
    /// the revision that last wrote it.
    pub fn collection_indexes(
        &self,
        collection: &str,
    ) -> Result<(ShardIndexes, Option<Revision>), StoreError> {
        let key = stored_key(Namespace::Collection, collection.as_bytes());
        let Some(stored) = self.tree.get(&key)? else {
            return Ok((ShardIndexes::default(), None));
        };
        let (revision, value) = decode_value(&key, &stored)?;
        let indexes = match value {
            None => ShardIndexes::default(),
            Some(bytes) => {
                ShardIndexes::decode(&bytes).map_err(|reason| StoreError::Corrupted {
                    key: key.clone(),
                    reason,
                })?
            }
        };
        Ok((indexes, Some(revision)))
    }

    /// Every collection with a non-empty index list on this shard.
    pub fn indexed_collections(&self) -> Result<Vec<(String, ShardIndexes)>, StoreError> {
        let mut collections = Vec::new();
        for pair in self.tree.scan_prefix([NAMESPACE_COLLECTION]) {
            let (key, _) = pair?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            let (indexes, _) = self.collection_indexes(&name)?;
            if !indexes.indexes.is_empty() {
                collections.push((name, indexes));
            }
        }
        Ok(collections)
    }

    fn write_collection_indexes(
        &self,
        collection: &str,
        revision: Revision,
        indexes: &ShardIndexes,
    ) -> Result<(), StoreError> {
        let key = stored_key(Namespace::Collection, collection.as_bytes());
        self.tree
            .insert(key, encode_value(revision, &indexes.encode()))?;
        Ok(())
    }

    /// Keeps the index entries of a document in step with its write from `old` to
    /// `new` (JSON bytes; `None` when absent). Called before the document is
    /// written.
    pub(super) fn update_index_entries(
        &self,
        document_key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let Some((collection, id)) = split_document_key(document_key) else {
            return Ok(());
        };
        let (indexes, _) = self.collection_indexes(collection)?;
        if indexes.indexes.is_empty() {
            return Ok(());
        }
        let old = old.and_then(parse_document);
        let new = new.and_then(parse_document);
        for field in indexes.fields() {
            let path = FieldPath::parse(field).map_err(|reason| StoreError::Corrupted {
                key: stored_key(Namespace::Collection, collection.as_bytes()),
                reason,
            })?;
            let encoded = |document: &Option<Value>| {
                document
                    .as_ref()
                    .and_then(|document| path.lookup(document))
                    .map(value_key::encode)
            };
            let (before, after) = (encoded(&old), encoded(&new));
            if before == after {
                continue;
            }
            let prefix = index_prefix(collection, field);
            if let Some(before) = before {
                self.tree
                    .remove([prefix.as_slice(), &before, id.as_bytes()].concat())?;
            }
            if let Some(after) = after {
                self.tree
                    .insert([prefix.as_slice(), &after, id.as_bytes()].concat(), &[])?;
            }
        }
        Ok(())
    }

    /// Applies a collection command (`DefineIndexes`, `BuildIndex`,
    /// `DropCollection`) at `revision`.
    pub(super) fn apply_collection_command(
        &self,
        revision: Revision,
        command: &Command,
    ) -> Result<ApplyOutcome, StoreError> {
        match command {
            Command::DefineIndexes { collection, fields } => {
                let (current, last_write) = self.collection_indexes(collection)?;
                if last_write.is_some_and(|last_write| last_write >= revision) {
                    return Ok(Ok(revision));
                }
                for field in current.fields() {
                    if !fields.iter().any(|kept| kept == field) {
                        self.remove_prefix(&index_prefix(collection, field))?;
                    }
                }
                self.write_collection_indexes(collection, revision, &current.redefined(fields))?;
                Ok(Ok(revision))
            }
            Command::BuildIndex {
                collection,
                field,
                documents_max,
            } => {
                let (mut indexes, last_write) = self.collection_indexes(collection)?;
                if last_write.is_some_and(|last_write| last_write >= revision) {
                    return Ok(Ok(revision));
                }
                let Some(index) = indexes
                    .indexes
                    .iter_mut()
                    .find(|index| &index.field == field)
                else {
                    return Ok(Ok(revision));
                };
                let IndexState::Building { after, indexed } = &index.state else {
                    return Ok(Ok(revision));
                };
                let (after, indexed) = (after.clone(), *indexed);
                let path = FieldPath::parse(field).map_err(|reason| StoreError::Corrupted {
                    key: stored_key(Namespace::Collection, collection.as_bytes()),
                    reason,
                })?;
                let prefix = index_prefix(collection, field);
                let documents =
                    self.documents_after(collection, after.as_deref(), *documents_max as usize)?;
                for (id, document) in &documents {
                    if let Some(value) = path.lookup(document) {
                        let encoded = value_key::encode(value);
                        self.tree
                            .insert([prefix.as_slice(), &encoded, id.as_bytes()].concat(), &[])?;
                    }
                }
                index.state = if documents.len() < *documents_max as usize {
                    IndexState::Ready
                } else {
                    IndexState::Building {
                        after: documents.last().map(|(id, _)| id.clone()),
                        indexed: indexed + documents.len() as u64,
                    }
                };
                self.write_collection_indexes(collection, revision, &indexes)?;
                Ok(Ok(revision))
            }
            Command::DropCollection { collection } => {
                let (indexes, last_write) = self.collection_indexes(collection)?;
                // Idempotent on its own: only documents written before this entry
                // are deleted, and deleted ones are tombstones.
                let prefix = documents_prefix(collection);
                let mut start = prefix.clone();
                loop {
                    let mut batch = Vec::with_capacity(DROP_BATCH_DOCUMENTS);
                    for pair in self.tree.range(start.as_slice()..) {
                        let (key, stored) = pair?;
                        if !key.starts_with(&prefix) || batch.len() >= DROP_BATCH_DOCUMENTS {
                            break;
                        }
                        batch.push((key, stored));
                    }
                    let Some((last, _)) = batch.last() else { break };
                    start = [last.as_ref(), &[0]].concat();
                    for (key, stored) in &batch {
                        let (written, value) = decode_value(key, stored)?;
                        let Some(value) = value.filter(|_| written < revision) else {
                            continue;
                        };
                        if !indexes.indexes.is_empty() {
                            self.update_index_entries(&key[1..], Some(&value), None)?;
                        }
                        self.write_tombstone(key, revision)?;
                    }
                }
                if last_write.is_none_or(|last_write| last_write < revision) {
                    self.write_collection_indexes(
                        collection,
                        revision,
                        &ShardIndexes::default().redefined(&[]),
                    )?;
                }
                Ok(Ok(revision))
            }
            Command::Put { .. } | Command::Delete { .. } => Err(StoreError::Corrupted {
                key: Vec::new(),
                reason: "a key command was applied as a collection command".into(),
            }),
        }
    }

    /// Up to `limit` live documents of `collection` after id `after`, in id order.
    fn documents_after(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let prefix = documents_prefix(collection);
        let start = match after {
            Some(after) => [prefix.as_slice(), after.as_bytes(), &[0]].concat(),
            None => prefix.clone(),
        };
        let mut documents = Vec::with_capacity(limit.min(4_096));
        for pair in self.tree.range(start..) {
            if documents.len() >= limit {
                break;
            }
            let (key, stored) = pair?;
            if !key.starts_with(&prefix) {
                break;
            }
            let (_, value) = decode_value(&key, &stored)?;
            let Some(value) = value else { continue };
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            // A value that is not JSON has no fields to index; it still counts as
            // walked so the build moves on.
            documents.push((id, parse_document(&value).unwrap_or(Value::Null)));
        }
        Ok(documents)
    }

    /// Removes every key starting with `prefix`.
    fn remove_prefix(&self, prefix: &[u8]) -> Result<(), StoreError> {
        loop {
            let keys: Vec<sled::IVec> = self
                .tree
                .scan_prefix(prefix)
                .keys()
                .take(DROP_BATCH_DOCUMENTS)
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                return Ok(());
            }
            for key in keys {
                self.tree.remove(key)?;
            }
        }
    }

    /// Runs one page of `query` over this shard's documents of `collection`,
    /// within `budget`. `Ok(Err(..))` is a query that needs more than the budget
    /// and cannot stop early (it sorts on a field no usable index orders).
    pub fn query(
        &self,
        collection: &str,
        query: &Query,
        budget: Duration,
    ) -> Result<Result<ShardQueryPage, KvError>, StoreError> {
        let started = Instant::now();
        let (indexes, _) = self.collection_indexes(collection)?;
        let plan = plan(collection, query, &indexes);
        let ordered = match &plan {
            Plan::Scan => query.sort.is_none(),
            Plan::Index { field, .. } => query
                .sort
                .as_ref()
                .is_some_and(|sort| sort.as_str() == field),
        };
        let limit = query.limit as usize;
        let mut page = ShardQueryPage {
            index: match &plan {
                Plan::Scan => None,
                Plan::Index { field, .. } => Some(field.clone()),
            },
            ..ShardQueryPage::default()
        };
        let mut last_examined: Option<Position> = None;
        let mut out_of_budget = false;
        let mut page_bytes = 0usize;
        let mut visit = |candidate: Candidate| -> Result<bool, StoreError> {
            page.examined += 1;
            if page.examined > QUERY_EXAMINED_MAX
                || (page.examined % CLOCK_EVERY_DOCUMENTS == 0 && started.elapsed() > budget)
            {
                out_of_budget = true;
                return Ok(false);
            }
            let stored = match candidate.stored {
                Some(stored) => stored,
                None => {
                    let key = stored_key(
                        Namespace::Doc,
                        format!("{collection}/{}", candidate.id).as_bytes(),
                    );
                    match self.tree.get(&key)? {
                        Some(stored) => stored,
                        None => return Ok(true),
                    }
                }
            };
            let (revision, live) = decode_header(&[], &stored)?;
            if !live {
                return Ok(true);
            }
            let Some(document) =
                parse_document(&stored[super::state_machine::VALUE_HEADER_BYTES..])
            else {
                return Ok(true);
            };
            let position = query.position_of(&candidate.id, &document);
            last_examined = Some(position.clone());
            if !query.is_after_cursor(&position) || !query.filter.matches(&document) {
                return Ok(true);
            }
            let hit = query.hit(position, revision, &document);
            page_bytes += hit.document.len();
            page.hits.push(hit);
            Ok(!(ordered && (page.hits.len() > limit || page_bytes > QUERY_SHARD_PAGE_BYTES_MAX)))
        };
        match &plan {
            Plan::Scan => self.walk_documents(collection, query, ordered, &mut visit)?,
            Plan::Index { prefix, ranges, .. } => {
                self.walk_index(prefix, ranges, query, ordered, &mut visit)?
            }
        }
        if out_of_budget {
            if !ordered {
                return Ok(Err(KvError::QueryTooBroad(format!(
                    "sorting on {:?} reads more than {QUERY_EXAMINED_MAX} documents or {} ms on a shard; add an index on a field the filter tests, narrow the filter, or drop the sort",
                    query.sort.as_ref().map_or("", |sort| sort.as_str()),
                    budget.as_millis()
                ))));
            }
            page.examined_through = last_examined;
        }
        if !ordered {
            page.hits
                .sort_by(|left, right| query.order(&left.position, &right.position));
            page.hits.truncate(limit + 1);
        }
        // Cut to the byte bound; the matches up to the last one kept are complete.
        let kept = kept_within_bytes(&page.hits, QUERY_SHARD_PAGE_BYTES_MAX);
        if kept < page.hits.len() {
            page.hits.truncate(kept);
            page.examined_through = page.hits.last().map(|hit| hit.position.clone());
        }
        Ok(Ok(page))
    }

    /// Feeds every document of the collection to `visit` (in query order when
    /// `ordered`), until it returns `false`.
    fn walk_documents(
        &self,
        collection: &str,
        query: &Query,
        ordered: bool,
        visit: &mut impl FnMut(Candidate) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let prefix = documents_prefix(collection);
        let mut start = prefix.clone();
        let mut end = prefix_end(&prefix).unwrap_or_default();
        if let (true, Some(after)) = (ordered, &query.after) {
            let cursor = [prefix.as_slice(), after.id.as_bytes()].concat();
            if query.descending {
                end = cursor;
            } else {
                start = [cursor.as_slice(), &[0]].concat();
            }
        }
        let range = self.tree.range(start..end);
        let pairs: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if ordered && query.descending {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
        for pair in pairs {
            let (key, stored) = pair?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if !visit(Candidate {
                id,
                stored: Some(stored),
            })? {
                break;
            }
        }
        Ok(())
    }

    /// Feeds the documents of the index entries in `ranges` to `visit` (in query
    /// order when `ordered`), until it returns `false`.
    fn walk_index(
        &self,
        prefix: &[u8],
        ranges: &[KeyRange],
        query: &Query,
        ordered: bool,
        visit: &mut impl FnMut(Candidate) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let descending = ordered && query.descending;
        let ordered_ranges: Box<dyn Iterator<Item = &KeyRange>> = if descending {
            Box::new(ranges.iter().rev())
        } else {
            Box::new(ranges.iter())
        };
        for range in ordered_ranges {
            let (mut start, mut end) = (range.start.clone(), range.end.clone());
            // Seek past the cursor (a cursor without a sort value is before every
            // entry; the visit's own cursor check covers that case).
            if let Some(after) = query
                .after
                .as_ref()
                .filter(|after| ordered && !after.sort_key.is_empty())
            {
                let cursor = [prefix, after.sort_key.as_slice(), after.id.as_bytes()].concat();
                if descending {
                    end = end.min(cursor);
                } else {
                    start = start.max([cursor.as_slice(), &[0]].concat());
                }
            }
            if start >= end {
                continue;
            }
            let entries = self.tree.range(start..end);
            let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
                if descending {
                    Box::new(entries.rev())
                } else {
                    Box::new(entries)
                };
            for entry in entries {
                let (key, _) = entry?;
                let Some(id) = entry_id(&key) else {
                    return Err(StoreError::Corrupted {
                        key: key.to_vec(),
                        reason: "index entry does not decode".into(),
                    });
                };
                if !visit(Candidate { id, stored: None })? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// How many of `hits`, from the first, fit in `bytes_max` (always at least one).
pub fn kept_within_bytes(hits: &[crate::docs::query::QueryHit], bytes_max: usize) -> usize {
    let mut bytes = 0usize;
    for (at, hit) in hits.iter().enumerate() {
        bytes += hit.document.len();
        if at > 0 && bytes > bytes_max {
            return at;
        }
    }
    hits.len()
}

/// The document id at the end of an index entry's key.
fn entry_id(key: &[u8]) -> Option<String> {
    let collection_length = *key.get(1)? as usize;
    let field_at = 2 + collection_length;
    let field_length = *key.get(field_at)? as usize;
    let value_at = field_at + 1 + field_length;
    let value_length = value_key::encoded_length(key.get(value_at..)?)?;
    let id = key.get(value_at + value_length..)?;
    String::from_utf8(id.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::query::{QueryPage, QueryRequest};
    use crate::ids::ShardId;
    use crate::kv::Condition;
    use crate::storage::state_machine::StateMachineDb;
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde_json::json;

    const FIELDS: [&str; 4] = ["n", "s", "b", "o.x"];

    /// A store holding `writes` (id, document or `None` for a delete) in collection
    /// `c`, with ready indexes on every field of [`FIELDS`] when `indexed`.
    fn store_with(
        dir: &std::path::Path,
        writes: &[(String, Option<Value>)],
        indexed: bool,
    ) -> ShardStore {
        let db = StateMachineDb::open(dir, 1 << 22).unwrap();
        let (store, _) = db.shard(ShardId(0)).unwrap();
        let mut index = 0u64;
        let mut next = || {
            index += 1;
            index
        };
        let fields: Vec<String> = FIELDS.iter().map(|field| field.to_string()).collect();
        let mut entries = Vec::new();
        // Half the writes before the index exists (built in the background), half after.
        let (before, after) = writes.split_at(writes.len() / 2);
        let document = |(id, body): &(String, Option<Value>)| {
            let key = format!("c/{id}").into_bytes();
            match body {
                Some(body) => Command::Put {
                    namespace: Namespace::Doc,
                    key,
                    value: Bytes::from(serde_json::to_vec(body).unwrap()),
                    condition: Condition::Always,
                },
                None => Command::Delete {
                    namespace: Namespace::Doc,
                    key,
                    condition: Condition::Always,
                },
            }
        };
        for write in before {
            entries.push((next(), Some(document(write))));
        }
        if indexed {
            entries.push((
                next(),
                Some(Command::DefineIndexes {
                    collection: "c".into(),
                    fields: fields.clone(),
                }),
            ));
        }
        for write in after {
            entries.push((next(), Some(document(write))));
        }
        store.apply(&entries).unwrap();
        if indexed {
            for _ in 0..100 {
                let (indexes, _) = store.collection_indexes("c").unwrap();
                let Some(building) = indexes
                    .indexes
                    .iter()
                    .find(|index| index.state != IndexState::Ready)
                else {
                    break;
                };
                let command = Command::BuildIndex {
                    collection: "c".into(),
                    field: building.field.clone(),
                    documents_max: 3,
                };
                store.apply(&[(next(), Some(command))]).unwrap();
            }
            let (indexes, _) = store.collection_indexes("c").unwrap();
            assert!(
                FIELDS.iter().all(|field| indexes.is_ready(field)),
                "{indexes:?}"
            );
        }
        store
    }

    /// Every page of `request` until the cursor runs out.
    fn run(store: &ShardStore, request: &QueryRequest) -> (Vec<String>, Option<String>) {
        let mut request = request.clone();
        let mut ids = Vec::new();
        for _ in 0..1_000 {
            let query = Query::compile(&request).unwrap();
            let shard_page = store
                .query("c", &query, Duration::from_secs(60))
                .unwrap()
                .unwrap();
            let index = shard_page.index.clone();
            let page: QueryPage = query.merge(vec![shard_page]);
            ids.extend(page.hits.iter().map(|hit| hit.position.id.clone()));
            match page.cursor {
                None => return (ids, index),
                Some(cursor) => request.cursor = Some(cursor),
            }
        }
        panic!("the query did not end");
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i32..4).prop_map(|number| json!(number)),
            (-3i32..4).prop_map(|number| json!(f64::from(number) + 0.5)),
            "[ab]{0,2}".prop_map(Value::String),
            Just(json!([1])),
            Just(json!({"y": 1})),
        ]
    }

    fn any_document() -> impl Strategy<Value = Value> {
        (
            prop::option::of(any_value()),
            prop::option::of(any_value()),
            prop::option::of(any_value()),
            prop::option::of(prop::option::of(any_value())),
        )
            .prop_map(|(n, s, b, o)| {
                let mut document = serde_json::Map::new();
                for (field, value) in [("n", n), ("s", s), ("b", b)] {
                    if let Some(value) = value {
                        document.insert(field.into(), value);
                    }
                }
                match o {
                    None => {}
                    Some(None) => {
                        document.insert("o".into(), json!(7));
                    }
                    Some(Some(x)) => {
                        document.insert("o".into(), json!({ "x": x }));
                    }
                }
                Value::Object(document)
            })
    }

    fn any_test() -> impl Strategy<Value = Value> {
        let operator = prop_oneof![
            Just("$eq"),
            Just("$ne"),
            Just("$gt"),
            Just("$gte"),
            Just("$lt"),
            Just("$lte"),
        ];
        prop_oneof![
            any_value(),
            (operator, any_value()).prop_map(|(operator, value)| json!({ operator: value })),
            (any_value(), any_value()).prop_map(|(low, high)| json!({"$gte": low, "$lt": high})),
            prop::collection::vec(any_value(), 0..3).prop_map(|values| json!({ "$in": values })),
            any::<bool>().prop_map(|exists| json!({ "$exists": exists })),
        ]
    }

    fn any_filter() -> impl Strategy<Value = Value> {
        let field = prop::sample::select(FIELDS.to_vec());
        let leaf = (field, any_test()).prop_map(|(field, test)| json!({ field: test }));
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|all| json!({ "$and": all })),
                prop::collection::vec(inner.clone(), 0..3).prop_map(|any| json!({ "$or": any })),
                (inner.clone(), inner).prop_map(|(left, right)| {
                    let mut merged = left.as_object().cloned().unwrap_or_default();
                    merged.extend(right.as_object().cloned().unwrap_or_default());
                    Value::Object(merged)
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Proves index-backed and scanning evaluation return identical results in
        /// identical order, page by page, for random documents (written before and
        /// after the indexes were declared, overwritten and deleted) and random
        /// filters, sorts and page sizes; and that both equal a brute-force
        /// evaluation of the filter over the documents.
        #[test]
        fn indexed_and_scanning_queries_agree(
            writes in prop::collection::vec((0u8..24, prop::option::weighted(0.85, any_document())), 1..60),
            filter in any_filter(),
            sort in prop::option::of((prop::sample::select(FIELDS.to_vec()), any::<bool>())),
            limit in 1u32..7,
        ) {
            let writes: Vec<(String, Option<Value>)> = writes
                .into_iter()
                .map(|(id, body)| (format!("d{id:02}"), body))
                .collect();
            let indexed_dir = tempfile::tempdir().unwrap();
            let scanned_dir = tempfile::tempdir().unwrap();
            let indexed = store_with(indexed_dir.path(), &writes, true);
            let scanned = store_with(scanned_dir.path(), &writes, false);
            let request = QueryRequest {
                filter: Some(filter.clone()),
                sort: sort.map(|(field, descending)| crate::docs::query::SortRequest {
                    field: field.to_string(),
                    order: if descending { crate::docs::query::SortOrder::Desc } else { crate::docs::query::SortOrder::Asc },
                }),
                limit: Some(limit),
                ..QueryRequest::default()
            };
            let (by_index, _) = run(&indexed, &request);
            let (by_scan, scan_index) = run(&scanned, &request);
            prop_assert_eq!(scan_index, None);
            prop_assert_eq!(&by_index, &by_scan, "filter {}", filter);

            // The reference: the last write of each id wins; filter; order.
            let mut latest = std::collections::BTreeMap::new();
            for (id, body) in &writes {
                latest.insert(id.clone(), body.clone());
            }
            let query = Query::compile(&request).unwrap();
            let mut expected: Vec<Position> = latest
                .iter()
                .filter_map(|(id, body)| body.as_ref().map(|body| (id, body)))
                .filter(|(_, body)| query.filter.matches(body))
                .map(|(id, body)| query.position_of(id, body))
                .collect();
            expected.sort_by(|left, right| query.order(left, right));
            let expected: Vec<String> = expected.into_iter().map(|position| position.id).collect();
            prop_assert_eq!(by_scan, expected, "filter {}", filter);
        }
    }

    /// Proves an equality on an indexed field is served by the index and reads only
    /// the matching documents, and that dropping a collection removes its documents
    /// and index entries.
    #[test]
    fn equality_uses_the_index_and_drop_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let writes: Vec<(String, Option<Value>)> = (0..40)
            .map(|n| (format!("d{n:02}"), Some(json!({"n": n % 4, "s": "x"}))))
            .collect();
        let store = store_with(dir.path(), &writes, true);
        let request = QueryRequest {
            filter: Some(json!({"n": 2, "s": "x"})),
            limit: Some(100),
            ..QueryRequest::default()
        };
        let query = Query::compile(&request).unwrap();
        let page = store
            .query("c", &query, Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert_eq!(page.index.as_deref(), Some("n"));
        assert_eq!(page.hits.len(), 10);
        assert_eq!(page.examined, 10);

        store
            .apply(&[(
                1_000,
                Some(Command::DropCollection {
                    collection: "c".into(),
                }),
            )])
            .unwrap();
        let page = store
            .query("c", &query, Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert!(page.hits.is_empty());
        assert_eq!(store.tree.scan_prefix([NAMESPACE_INDEX]).count(), 0);
        assert!(store.indexed_collections().unwrap().is_empty());
        assert!(store
            .scan(Namespace::Doc, b"c/", None, 10)
            .unwrap()
            .is_empty());
    }

    /// Proves redefining the index list drops the entries of removed fields.
    #[test]
    fn removing_an_index_deletes_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let writes: Vec<(String, Option<Value>)> = (0..10)
            .map(|n| {
                (
                    format!("d{n}"),
                    Some(json!({"n": n, "s": "x", "b": true, "o": {"x": 1}})),
                )
            })
            .collect();
        let store = store_with(dir.path(), &writes, true);
        let entries = |field: &str| store.tree.scan_prefix(index_prefix("c", field)).count();
        assert_eq!(entries("n"), 10);
        store
            .apply(&[(
                1_000,
                Some(Command::DefineIndexes {
                    collection: "c".into(),
                    fields: vec!["s".into()],
                }),
            )])
            .unwrap();
        assert_eq!(entries("n"), 0);
        assert_eq!(entries("s"), 10);
        let (indexes, _) = store.collection_indexes("c").unwrap();
        assert_eq!(indexes.fields().collect::<Vec<_>>(), ["s"]);
        assert!(indexes.is_ready("s"));
    }
}

//! Document queries and collections, on top of the per-shard machinery: a query
//! asks every shard at once (its local replica or its leader's node) and merges
//! the pages (`docs::query`); collection definitions are metadata changes that the
//! index builder (`node::index_builder`) then carries into every shard.

use super::metadata::MetadataChange;
use super::Router;
use crate::command::Command;
use crate::docs::collection::{CollectionDefinition, IndexState, ShardIndexes};
use crate::docs::query::{Query, QueryPage, ShardQueryPage};
use crate::ids::{Revision, ShardId};
use crate::kv::{Consistency, KvError, Namespace};
use crate::node::registry::ShardSlot;
use crate::transport::wire::{PeerRequest, PeerResponse};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long one shard may spend reading for one query page.
pub const QUERY_SHARD_BUDGET: Duration = Duration::from_millis(500);

/// One index of a collection as the cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStatus {
    pub field: String,
    /// `ready` once every shard has indexed every document, else `building`.
    pub state: String,
    pub shards_ready: u32,
    pub shards: u32,
    /// Documents indexed so far by shards still building (a progress figure).
    pub documents_indexed: u64,
}

/// A collection as `GET /v1/collections` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionStatus {
    pub name: String,
    pub indexes: Vec<IndexStatus>,
}

impl Router {
    /// Runs one page of `query` over `collection` on every shard and merges them.
    pub async fn query(
        &self,
        collection: &str,
        query: Query,
        consistency: Consistency,
    ) -> Result<QueryPage, KvError> {
        if self.is_closed() {
            return Err(KvError::ShuttingDown);
        }
        let deadline = self.deadline();
        let query = std::sync::Arc::new(query);
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..self.shard_count() {
            let router = self.clone();
            let query = query.clone();
            let collection = collection.to_string();
            tasks.spawn(async move {
                router
                    .query_shard(ShardId(shard), &collection, &query, consistency, deadline)
                    .await
            });
        }
        let mut pages = Vec::with_capacity(self.shard_count() as usize);
        while let Some(joined) = tasks.join_next().await {
            pages.push(joined.map_err(|error| KvError::Storage(format!("query task: {error}")))??);
        }
        Ok(query.merge(pages))
    }

    /// One shard's page of a query: on the local replica when it may serve, else
    /// from the shard's leader.
    async fn query_shard(
        &self,
        shard: ShardId,
        collection: &str,
        query: &Query,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<ShardQueryPage, KvError> {
        let slot = self.slot(shard)?;
        if self.serves_locally(slot) {
            if consistency == Consistency::Linearizable {
                self.read_index_local(slot, deadline).await?;
            }
            return self.query_store(slot, collection, query).await;
        }
        let request = PeerRequest::Query {
            shard,
            collection: collection.to_string(),
            query: Box::new(query.clone()),
            consistency,
        };
        match self.ask_leader(slot, request, deadline, true).await? {
            PeerResponse::QueryPage(page) => Ok(*page),
            other => Err(KvError::Storage(format!(
                "unexpected answer to a query: {other:?}"
            ))),
        }
    }

    /// Runs a query page on the local replica's store, off the async threads
    /// (it reads up to [`QUERY_SHARD_BUDGET`]).
    pub(super) async fn query_store(
        &self,
        slot: &ShardSlot,
        collection: &str,
        query: &Query,
    ) -> Result<ShardQueryPage, KvError> {
        let store = slot.store();
        let collection = collection.to_string();
        let query = query.clone();
        tokio::task::spawn_blocking(move || store.query(&collection, &query, QUERY_SHARD_BUDGET))
            .await
            .map_err(|error| KvError::Storage(format!("query task: {error}")))??
    }

    /// Proposes `command` on `shard` (at its leader, wherever it is).
    pub async fn propose_on_shard(
        &self,
        shard: ShardId,
        command: Command,
    ) -> Result<Revision, KvError> {
        let slot = self.slot(shard)?;
        self.propose(slot, command, self.deadline()).await
    }

    /// Declares `collection` with `indexes` (replacing its index list) in the
    /// cluster metadata; the index builder then brings every shard in step.
    pub async fn define_collection(&self, definition: CollectionDefinition) -> Result<(), KvError> {
        self.change_metadata(MetadataChange::DefineCollection(definition))
            .await
            .map(|_| ())
    }

    /// Removes `collection` from the metadata and deletes its documents and index
    /// entries on every shard. `NotFound` when neither the metadata nor any
    /// document knows it.
    pub async fn drop_collection(&self, collection: &str) -> Result<(), KvError> {
        let defined = self.context().cluster.metadata().is_some_and(|metadata| {
            metadata
                .collections
                .iter()
                .any(|known| known.name == collection)
        });
        if defined {
            self.change_metadata(MetadataChange::DropCollection {
                name: collection.to_string(),
            })
            .await?;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..self.shard_count() {
            let router = self.clone();
            let command = Command::DropCollection {
                collection: collection.to_string(),
            };
            tasks.spawn(async move { router.propose_on_shard(ShardId(shard), command).await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|error| KvError::Storage(format!("drop task: {error}")))??;
        }
        Ok(())
    }

    /// Every defined collection with the build state of its indexes, read from
    /// every shard (linearizably, so a finished build is never shown unfinished
    /// after it was once shown finished).
    pub async fn collections(&self) -> Result<Vec<CollectionStatus>, KvError> {
        let Some(metadata) = self.context().cluster.metadata() else {
            return Ok(Vec::new());
        };
        let mut statuses = Vec::with_capacity(metadata.collections.len());
        for definition in &metadata.collections {
            statuses.push(self.collection_status(definition).await?);
        }
        Ok(statuses)
    }

    /// One declared collection with the build state of its indexes; `None` when
    /// the metadata does not declare it.
    pub async fn collection(&self, name: &str) -> Result<Option<CollectionStatus>, KvError> {
        let definition = self.context().cluster.metadata().and_then(|metadata| {
            metadata
                .collections
                .iter()
                .find(|known| known.name == name)
                .cloned()
        });
        match definition {
            None => Ok(None),
            Some(definition) => self.collection_status(&definition).await.map(Some),
        }
    }

    /// The build state of one collection's indexes, from every shard.
    pub async fn collection_status(
        &self,
        definition: &CollectionDefinition,
    ) -> Result<CollectionStatus, KvError> {
        let deadline = self.deadline();
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..self.shard_count() {
            let router = self.clone();
            let name = definition.name.clone();
            tasks.spawn(async move {
                let slot = router.slot(ShardId(shard))?;
                router
                    .get_in(
                        slot,
                        Namespace::Collection,
                        name.as_bytes(),
                        Consistency::Linearizable,
                        deadline,
                    )
                    .await
            });
        }
        let mut shard_indexes = Vec::with_capacity(self.shard_count() as usize);
        while let Some(joined) = tasks.join_next().await {
            let found =
                joined.map_err(|error| KvError::Storage(format!("status task: {error}")))??;
            let indexes = match found {
                None => ShardIndexes::default(),
                Some(versioned) => ShardIndexes::decode(&versioned.value).map_err(|reason| {
                    KvError::Corrupted(format!("index record of {}: {reason}", definition.name))
                })?,
            };
            shard_indexes.push(indexes);
        }
        let shards = self.shard_count();
        let indexes = definition
            .indexes
            .iter()
            .map(|field| {
                let mut shards_ready = 0;
                let mut documents_indexed = 0;
                for indexes in &shard_indexes {
                    match indexes.indexes.iter().find(|index| &index.field == field) {
                        Some(index) if index.state == IndexState::Ready => shards_ready += 1,
                        Some(index) => {
                            if let IndexState::Building { indexed, .. } = index.state {
                                documents_indexed += indexed;
                            }
                        }
                        None => {}
                    }
                }
                IndexStatus {
                    field: field.clone(),
                    state: if shards_ready == shards {
                        "ready"
                    } else {
                        "building"
                    }
                    .into(),
                    shards_ready,
                    shards,
                    documents_indexed,
                }
            })
            .collect();
        Ok(CollectionStatus {
            name: definition.name.clone(),
            indexes,
        })
    }
}

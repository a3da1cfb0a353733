//! The index builder: runs on every node and acts on the shards whose local
//! replica leads. Every round, per such shard, it
//!
//! 1. compares the shard's index list of every collection with the metadata's
//!    definition and proposes `DefineIndexes` where they differ (a collection the
//!    metadata no longer defines gets an empty list);
//! 2. proposes `BuildIndex` batches for indexes still building, up to
//!    [`BATCHES_PER_ROUND_MAX`] per shard and round, each waiting for its commit.
//!
//! It is level-triggered: a lost proposal, a leader change or a restart only
//! delays the next round, because each round starts from what the shard's store
//! holds. All replicas apply the same commands, so they index identically.

use super::cluster_state::ClusterState;
use super::registry::ShardRegistry;
use crate::command::Command;
use crate::docs::collection::{IndexState, BUILD_BATCH_DOCUMENTS_MAX};
use crate::ids::ShardId;
use crate::kv::KvError;
use crate::metadata::ClusterMetadata;
use crate::router::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Time between rounds.
pub const BUILD_INTERVAL: Duration = Duration::from_millis(200);
/// Most `BuildIndex` batches one shard is given per round.
pub const BATCHES_PER_ROUND_MAX: u32 = 16;

/// Runs rounds until `stop` changes.
pub async fn run(
    router: Router,
    registry: Arc<ShardRegistry>,
    cluster: Arc<ClusterState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BUILD_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        let Some(metadata) = cluster.metadata() else {
            continue;
        };
        let me = router.node_id().0;
        let mut tasks = tokio::task::JoinSet::new();
        for slot in registry.slots() {
            if slot.actor().is_none() || slot.gauges.leader() != Some(me) {
                continue;
            }
            let (router, registry, metadata) =
                (router.clone(), Arc::clone(&registry), Arc::clone(&metadata));
            let shard = slot.shard;
            tasks.spawn(async move {
                if let Err(error) = reconcile(&router, &registry, shard, &metadata).await {
                    tracing::debug!(shard = shard.0, %error, "index builder round failed");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// One round on one shard; see the module documentation.
async fn reconcile(
    router: &Router,
    registry: &ShardRegistry,
    shard: ShardId,
    metadata: &ClusterMetadata,
) -> Result<(), KvError> {
    let store = || {
        registry
            .slot(shard)
            .map(|slot| slot.store())
            .ok_or_else(|| KvError::InvalidInput(format!("there is no shard {shard}")))
    };
    let mut wanted: Vec<(String, Vec<String>)> = metadata
        .collections
        .iter()
        .map(|definition| (definition.name.clone(), definition.indexes.clone()))
        .collect();
    for (name, _) in store()?.indexed_collections()? {
        if !wanted.iter().any(|(known, _)| *known == name) {
            wanted.push((name, Vec::new()));
        }
    }
    for (collection, fields) in wanted {
        let (indexes, _) = store()?.collection_indexes(&collection)?;
        if indexes.fields().ne(fields.iter().map(String::as_str)) {
            let command = Command::DefineIndexes { collection, fields };
            router.propose_on_shard(shard, command).await?;
        }
    }
    for _ in 0..BATCHES_PER_ROUND_MAX {
        let building =
            store()?
                .indexed_collections()?
                .into_iter()
                .find_map(|(collection, indexes)| {
                    indexes
                        .indexes
                        .iter()
                        .find(|index| index.state != IndexState::Ready)
                        .map(|index| (collection.clone(), index.field.clone()))
                });
        let Some((collection, field)) = building else {
            break;
        };
        let command = Command::BuildIndex {
            collection,
            field,
            documents_max: BUILD_BATCH_DOCUMENTS_MAX,
        };
        router.propose_on_shard(shard, command).await?;
    }
    Ok(())
}

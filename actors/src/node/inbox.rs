//! `NodeInbox`: where the Transport delivers what peers send once the kernel runs.
//! Raft messages and snapshot chunks go to the shard's local replica actor (dropped
//! when there is none: Raft retransmits); forwarded requests are executed by the
//! router on this node only, never forwarded again.

use super::registry::ShardRegistry;
use crate::ids::{GroupId, NodeId, ShardId};
use crate::router::Router;
use crate::shard::replica::SnapshotChunk;
use crate::shard::ShardReplicaMsg;
use crate::transport::wire::PeerRequest;
use crate::transport::{Inbox, ResponseFuture};
use raft::eraftpb::Message;
use std::sync::Arc;
use std::time::Duration;

pub struct NodeInbox {
    pub registry: Arc<ShardRegistry>,
    pub router: Router,
}

impl NodeInbox {
    fn replica(&self, group: GroupId) -> Option<ractor::ActorRef<ShardReplicaMsg>> {
        let shard = u32::try_from(group.0).ok().map(ShardId)?;
        self.registry.slot(shard)?.actor()
    }
}

impl Inbox for NodeInbox {
    fn raft(&self, _from: NodeId, group: GroupId, messages: Vec<Message>) {
        if let Some(replica) = self.replica(group) {
            let _ = replica.send_message(ShardReplicaMsg::Step(messages));
        }
    }

    fn snapshot_chunk(&self, from: NodeId, group: GroupId, chunk: SnapshotChunk) {
        if let Some(replica) = self.replica(group) {
            let _ = replica.send_message(ShardReplicaMsg::SnapshotChunk { from, chunk });
        }
    }

    fn request(&self, _from: NodeId, request: PeerRequest, timeout: Duration) -> ResponseFuture {
        let router = self.router.clone();
        Box::pin(async move { router.execute_forwarded(request, timeout).await })
    }
}

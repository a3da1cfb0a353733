//! The node's identity file (`identity.json` in the data directory): which cluster
//! this data belongs to, which node wrote it, its incarnation and the shard count
//! fixed at bootstrap. Written once, atomically, and checked at every start so a data
//! directory is never served under another node id.
//!
//! A node joining a cluster first records the incarnation it asks with
//! (`joining.json`), so a join retried after a crash is recognised as the same one.

use crate::ids::NodeId;
use crate::storage::json_file;
use serde::{Deserialize, Serialize};
use std::path::Path;

const IDENTITY_FILE: &str = "identity.json";
const JOINING_FILE: &str = "joining.json";
const IDENTITY_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub format_version: u32,
    pub cluster_id: String,
    pub node_id: NodeId,
    pub shard_count: u32,
    /// Random, chosen when the node first joined or bootstrapped. Files written
    /// before it existed read as 0.
    #[serde(default)]
    pub incarnation: u64,
}

/// A join in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Joining {
    node_id: NodeId,
    incarnation: u64,
}

/// Reads the identity of a data directory, checking it belongs to `node_id`; `None`
/// for a directory that never joined or bootstrapped a cluster.
pub fn load(data_dir: &Path, node_id: NodeId) -> Result<Option<NodeIdentity>, String> {
    let Some(identity) = json_file::read::<NodeIdentity>(data_dir, IDENTITY_FILE)? else {
        return Ok(None);
    };
    let path = data_dir.join(IDENTITY_FILE);
    if identity.format_version != IDENTITY_FORMAT_VERSION {
        return Err(format!(
            "{}: unsupported format version {}",
            path.display(),
            identity.format_version
        ));
    }
    if identity.node_id != node_id {
        return Err(format!(
            "data directory belongs to node {} but this node is {}; start with --node-id {} or use another --data-dir",
            identity.node_id, node_id, identity.node_id
        ));
    }
    Ok(Some(identity))
}

/// Writes the identity of a node that has just bootstrapped or joined a cluster.
pub fn create(data_dir: &Path, identity: &NodeIdentity) -> Result<(), String> {
    json_file::write(data_dir, IDENTITY_FILE, identity)?;
    json_file::remove(data_dir, JOINING_FILE)
}

/// A fresh identity for `node_id` in `cluster_id`.
pub fn new_identity(
    cluster_id: String,
    node_id: NodeId,
    shard_count: u32,
    incarnation: u64,
) -> NodeIdentity {
    NodeIdentity {
        format_version: IDENTITY_FORMAT_VERSION,
        cluster_id,
        node_id,
        shard_count,
        incarnation,
    }
}

/// The incarnation to ask to join with: the one recorded by an earlier attempt of
/// the same node, or a new one, recorded before it is used.
pub fn joining_incarnation(data_dir: &Path, node_id: NodeId) -> Result<u64, String> {
    if let Some(joining) = json_file::read::<Joining>(data_dir, JOINING_FILE)? {
        if joining.node_id == node_id {
            return Ok(joining.incarnation);
        }
    }
    let joining = Joining {
        node_id,
        incarnation: rand::random(),
    };
    json_file::write(data_dir, JOINING_FILE, &joining)?;
    Ok(joining.incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a created identity loads back, another node id is refused, and a join
    /// retried reuses its incarnation until the identity is written.
    #[test]
    fn identity_and_join_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), NodeId(2)).unwrap(), None);
        let incarnation = joining_incarnation(dir.path(), NodeId(2)).unwrap();
        assert_eq!(
            joining_incarnation(dir.path(), NodeId(2)).unwrap(),
            incarnation
        );
        let identity = new_identity("c1".into(), NodeId(2), 16, incarnation);
        create(dir.path(), &identity).unwrap();
        assert_eq!(load(dir.path(), NodeId(2)).unwrap(), Some(identity));
        assert!(!dir.path().join(JOINING_FILE).exists());
        let error = load(dir.path(), NodeId(3)).unwrap_err();
        assert!(error.contains("--node-id 2"), "{error}");
    }
}

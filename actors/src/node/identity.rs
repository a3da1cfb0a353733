//! The node's identity file (`identity.json` in the data directory): which cluster
//! this data belongs to, which node wrote it and the shard count fixed at bootstrap.
//! Written once, atomically (temporary file, fsync, rename, directory fsync), and
//! checked at every start so a data directory is never served under another node id.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

const IDENTITY_FILE: &str = "identity.json";
const IDENTITY_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub format_version: u32,
    pub cluster_id: String,
    pub node_id: NodeId,
    pub shard_count: u32,
}

/// Reads the identity, or writes a new one for a fresh data directory.
pub fn load_or_create(
    data_dir: &Path,
    node_id: NodeId,
    shard_count: u32,
) -> Result<NodeIdentity, String> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let identity: NodeIdentity = serde_json::from_slice(&bytes)
                .map_err(|error| format!("{}: {error}", path.display()))?;
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
            Ok(identity)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity = NodeIdentity {
                format_version: IDENTITY_FORMAT_VERSION,
                cluster_id: format!("{:032x}", rand::random::<u128>()),
                node_id,
                shard_count,
            };
            let bytes = serde_json::to_vec_pretty(&identity).map_err(|error| error.to_string())?;
            let temporary = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
            let io = |error: std::io::Error| format!("{}: {error}", temporary.display());
            let mut file = std::fs::File::create(&temporary).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&temporary, &path).map_err(io)?;
            std::fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|error| format!("{}: {error}", data_dir.display()))?;
            Ok(identity)
        }
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

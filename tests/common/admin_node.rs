//! An in-process single-node kernel with an admin server on an ephemeral port, for
//! the admin protocol and dbctl tests.

use anyhow::Context;
use mimori::admin::server::{serve, AdminServerOptions};
use mimori_actors::ids::NodeId;
use mimori_actors::node::{Node, NodeOptions};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A kernel plus an admin server on an ephemeral port.
pub struct AdminTestNode {
    pub node: Node,
    pub address: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl AdminTestNode {
    /// Starts an 8-shard node in a temporary directory and serves the admin protocol.
    pub async fn start(options: AdminServerOptions) -> anyhow::Result<AdminTestNode> {
        let data_dir = tempfile::tempdir()?;
        let mut node_options = NodeOptions::new(NodeId(1), data_dir.path().to_path_buf());
        node_options.shard_count = 8;
        let node = Node::start(node_options)
            .await
            .context("starting the in-process node")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, node.router(), options, async {
            let _ = stopped.await;
        }));
        Ok(AdminTestNode {
            node,
            address,
            stop,
            server,
            _data_dir: data_dir,
        })
    }

    /// The admin endpoint, as dbctl and the client take it.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.address.to_string()]
    }

    /// Stops the server (which must return cleanly within `timeout`) and the node.
    pub async fn stop(self, timeout: Duration) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(timeout, self.server).await???;
        self.node.shutdown().await?;
        Ok(())
    }
}

//! `mimorid`: the node process. Resolves the configuration, binds every listener
//! (so a port in use fails at once, before any data is touched), starts the kernel
//! and the edges, and on SIGTERM/SIGINT shuts down in order: the edges stop taking
//! requests and finish the ones in flight, then the kernel drains, makes the state
//! machine durable and closes the WAL.

use crate::admin::server::AdminServerOptions;
use crate::config::{Config, ConfigError, ConfigLayer};
use crate::gateway::GatewayOptions;
use crate::logs::LogFormat;
use clap::Parser;
use mimori_actors::node::{Node, NodeError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Where a node listens, as the flags that start it name it.
#[derive(Clone, Copy, Debug)]
pub struct ListenAddresses {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
    pub gossip: SocketAddr,
}

/// The flags that start node `node_id` on `data_dir` listening on `listen`: what
/// the demo, the chaos runner and the process tests pass to a `mimorid` they start.
pub fn node_flags(
    node_id: u64,
    data_dir: &std::path::Path,
    listen: ListenAddresses,
) -> Vec<std::ffi::OsString> {
    let mut flags: Vec<std::ffi::OsString> = vec![
        "--node-id".into(),
        node_id.to_string().into(),
        "--data-dir".into(),
        data_dir.into(),
    ];
    for (flag, address) in [
        ("--http", listen.http),
        ("--admin", listen.admin),
        ("--cluster", listen.cluster),
        ("--gossip", listen.gossip),
    ] {
        flags.push(flag.into());
        flags.push(address.to_string().into());
    }
    flags
}

/// How long the edges get to finish in-flight requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Command-line flags. Each one overrides the same setting from the environment
/// (`MIMORI_<NAME>`) and the config file.
#[derive(Debug, Parser)]
#[command(
    name = "mimorid",
    version,
    about = "Runs a Mimori node: a replicated key-value and JSON document store.",
    long_about = "Runs a Mimori node: a replicated key-value and JSON document store.\n\n\
With no flags it runs a working single node on 127.0.0.1 (HTTP 7070, admin 7071, \
cluster 7072, gossip 7073) with its data in ./mimori-data.\n\n\
Settings come from, in increasing precedence: built-in defaults, the TOML file given \
by --config (or MIMORI_CONFIG), MIMORI_<SETTING> environment variables (for example \
MIMORI_NODE_ID=2, MIMORI_JOIN=host:7073,host2:7073), and these flags.",
    after_help = "Examples:\n  mimorid\n  mimorid demo --nodes 3\n  mimorid --node-id 1 --data-dir /var/lib/mimori --http 0.0.0.0:7070\n  mimorid --node-id 2 --data-dir n2 --http 127.0.0.1:7080 --admin 127.0.0.1:7081 \\\n          --cluster 127.0.0.1:7082 --gossip 127.0.0.1:7083 --join 127.0.0.1:7073\n  curl -X PUT --data-binary 'hello' http://127.0.0.1:7070/v1/kv/greeting",
    args_conflicts_with_subcommands = true
)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Option<MimoridCommand>,
    /// This node's id (non-zero; never reused in a cluster) [default: 1]
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Data directory (WAL, state machine, identity) [default: ./mimori-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP/JSON gateway address [default: 127.0.0.1:7070]
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Admin TCP address for dbctl [default: 127.0.0.1:7071]
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Node-to-node address [default: 127.0.0.1:7072]
    #[arg(long)]
    pub cluster: Option<SocketAddr>,
    /// Gossip UDP address [default: 127.0.0.1:7073]
    #[arg(long)]
    pub gossip: Option<SocketAddr>,
    /// Gossip addresses of existing nodes to join, comma-separated (used only by a
    /// node that has not joined yet; without it a new node bootstraps a cluster)
    #[arg(long, value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// Replicas per shard of a new cluster [default: 3]
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// Secret of the cluster connections (prefer MIMORI_CLUSTER_SECRET: flags are
    /// visible to other users) [default: a development secret]
    #[arg(long, hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// TOML config file (same setting names as the flags, with underscores)
    #[arg(long, env = "MIMORI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Shards of a new cluster, fixed at bootstrap [default: 64]
    #[arg(long)]
    pub shard_count: Option<u32>,
    /// Token admin clients must present (unset: no auth)
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Log filter, e.g. info or mimori_actors=debug,info (RUST_LOG wins) [default: info]
    #[arg(long)]
    pub log: Option<String>,
    /// How log lines are written to stderr [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl Flags {
    /// The settings given on the command line.
    pub fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            node_id: self.node_id,
            data_dir: self.data_dir.clone(),
            http: self.http,
            admin: self.admin,
            cluster: self.cluster,
            gossip: self.gossip,
            join: self.join.clone(),
            shard_count: self.shard_count,
            replication_factor: self.replication_factor,
            cluster_secret: self.cluster_secret.clone(),
            admin_token: self.admin_token.clone(),
            log: self.log.clone(),
            log_format: self.log_format,
            ..Default::default()
        }
    }
}

/// Subcommands of `mimorid`; without one it runs a node.
#[derive(Debug, clap::Subcommand)]
pub enum MimoridCommand {
    /// Run a local cluster of N nodes as child processes (Ctrl-C stops them all).
    Demo(crate::demo::DemoArgs),
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address} ({purpose}): {source}")]
    Bind {
        address: SocketAddr,
        purpose: &'static str,
        source: std::io::Error,
    },
    #[error("the node failed: {0}")]
    Node(#[from] NodeError),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot listen on {address} ({purpose}): {reason}")]
    Listen {
        address: String,
        purpose: &'static str,
        reason: String,
    },
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("{purpose} server failed: {source}")]
    Serve {
        purpose: &'static str,
        source: std::io::Error,
    },
}

async fn bind(address: SocketAddr, purpose: &'static str) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::Bind {
            address,
            purpose,
            source,
        })
}

/// Runs a node until `stop` resolves, then shuts it down cleanly.
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let http = bind(config.http, "HTTP gateway").await?;
    let admin = bind(config.admin, "admin").await?;
    if config.cluster_secret.is_none() && !config.cluster.ip().is_loopback() {
        tracing::warn!(
            cluster = %config.cluster,
            "the cluster port is reachable from other hosts but no cluster_secret is set; anyone who can reach it could join"
        );
    }
    // The kernel binds the cluster and gossip addresses itself, before it touches
    // any data.
    let node = match Node::start(config.node_options()).await {
        Ok(node) => node,
        Err(NodeError::Bind {
            address,
            purpose,
            reason,
        }) => {
            return Err(DaemonError::Listen {
                address,
                purpose,
                reason,
            })
        }
        Err(NodeError::Join(error)) => return Err(DaemonError::Join(error.to_string())),
        Err(error) => return Err(error.into()),
    };
    let router = node.router();
    let (stopping, stopped) = watch::channel(false);
    let edge_stop = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.changed().await;
    };
    let gateway_options = GatewayOptions {
        body_bytes_max: u64::from(config.value_bytes_max),
        requests_in_flight_max: config.http_requests_in_flight_max,
        ..GatewayOptions::default()
    };
    let gateway = tokio::spawn(crate::gateway::serve(
        http,
        router.clone(),
        gateway_options,
        edge_stop(stopped.clone()),
    ));
    let defaults = AdminServerOptions::default();
    // A frame must fit the largest value plus its key and the envelope.
    let frame_bytes_max = defaults
        .frame_bytes_max
        .max(config.value_bytes_max + config.key_bytes_max + 64 * 1024);
    let admin_options = AdminServerOptions {
        token: config.admin_token.clone(),
        connections_max: config.admin_connections_max,
        frame_bytes_max,
        ..defaults
    };
    let admin_server = tokio::spawn({
        let router = router.clone();
        let stopped = stopped.clone();
        async move {
            crate::admin::server::serve(admin, router, admin_options, edge_stop(stopped)).await
        }
    });
    tracing::info!(
        node_id = config.node_id,
        http = %config.http,
        admin = %config.admin,
        data_dir = %config.data_dir.display(),
        "mimorid serving"
    );
    let serving = node.wait_until_serving(Duration::from_secs(30)).await;
    if !serving {
        tracing::warn!("not every shard has a leader yet; requests to them wait or get 503");
    }

    let mut gateway = gateway;
    let mut admin_server = admin_server;
    let failure = tokio::select! {
        () = stop => None,
        result = &mut gateway => Some(("HTTP gateway", result)),
        result = &mut admin_server => Some(("admin", result)),
    };
    tracing::info!("shutting down: draining requests");
    let _ = stopping.send(true);
    if failure.is_none() {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let _ = (&mut gateway).await;
            let _ = (&mut admin_server).await;
        })
        .await;
    }
    node.shutdown().await?;
    tracing::info!("shut down cleanly");
    match failure {
        None => Ok(()),
        Some((purpose, Ok(Ok(())))) => Err(DaemonError::Serve {
            purpose,
            source: std::io::Error::other("stopped unexpectedly"),
        }),
        Some((purpose, Ok(Err(source)))) => Err(DaemonError::Serve { purpose, source }),
        Some((purpose, Err(join))) => Err(DaemonError::Serve {
            purpose,
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// Registers for SIGTERM and SIGINT at once (so a signal that arrives while the
/// node is still starting is not lost) and returns a future that resolves on either.
pub fn termination_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

//! The cluster under test: real `mimorid` processes on 127.0.0.1, each with its own
//! data directory, log file and four ports, started, killed, frozen and restarted
//! like an operator (or a crash) would.
//!
//! Two networks: on the loopback (every node on 127.0.0.1 with its own ports, taken
//! from outside the kernel's ephemeral range so a port a killed node will listen on
//! again cannot be taken meanwhile by some client's outgoing socket), or, when the
//! runner is root, every node in its own network namespace (`netns`), where links
//! are cut with iptables. On the loopback, links are cut with the nodes' fault hook
//! (the admin `set_network_faults`). Every node runs with fault injection enabled,
//! so the admin protocol can kill its actors (and cut its links).

use crate::netns::Namespaces;
use anyhow::{anyhow, bail, Context};
use mimori::admin::client::AdminClient;
use mimori::daemon::{node_flags, ListenAddresses};
use mimori_actors::ids::NodeId;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to serve after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one admin request may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How every node of the cluster is run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `mimorid` binary.
    pub binary: PathBuf,
    /// Where the nodes' data directories and logs go.
    pub directory: PathBuf,
    pub shard_count: u32,
    /// Extra `MIMORI_*` settings for every node.
    pub environment: Vec<(String, String)>,
    pub network: NetworkMode,
}

/// How nodes are networked, and so how links are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Namespaces when the runner can build them (root, `ip`, `iptables`), else
    /// the loopback with the fault hook.
    Auto,
    /// Every node in its own network namespace; links cut with iptables.
    Namespaces,
    /// Every node on 127.0.0.1; links cut with the nodes' fault hook.
    Loopback,
}

/// One node process.
pub struct Node {
    pub id: u64,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
    pub gossip: SocketAddr,
    data_dir: PathBuf,
    /// The gossip address it joins through on its first start (none for node 1).
    join: Option<SocketAddr>,
    child: Option<Child>,
    /// Frozen with SIGSTOP.
    paused: bool,
    /// Taken out of the cluster for good (drained, killed and removed).
    pub retired: bool,
}

impl Node {
    /// Whether the process runs (frozen or not).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it runs and is not frozen: it should answer.
    pub fn is_serving(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// The gateway's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }
}

/// Every node the run started, by id (ids start at 1 and are never reused).
pub struct Cluster {
    options: ClusterOptions,
    pub nodes: Vec<Node>,
    /// Set when the nodes run in network namespaces.
    namespaces: Option<Namespaces>,
}

impl Cluster {
    /// Starts `count` nodes: node 1 bootstraps, the others join through it.
    pub async fn start(options: ClusterOptions, count: u64) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&options.directory)
            .with_context(|| format!("create {}", options.directory.display()))?;
        let namespaces = match options.network {
            NetworkMode::Loopback => None,
            NetworkMode::Namespaces => Some(Namespaces::create()?),
            NetworkMode::Auto if Namespaces::available() => match Namespaces::create() {
                Ok(namespaces) => Some(namespaces),
                Err(error) => {
                    println!("chaos: no network namespaces ({error:#}); using the loopback");
                    None
                }
            },
            NetworkMode::Auto => None,
        };
        let mut cluster = Cluster {
            options,
            nodes: Vec::new(),
            namespaces,
        };
        for _ in 0..count {
            cluster.add_node().await?;
        }
        Ok(cluster)
    }

    /// Starts one more node that joins through a serving node; returns its id.
    pub async fn add_node(&mut self) -> anyhow::Result<u64> {
        let id = self.nodes.len() as u64 + 1;
        let join = self
            .nodes
            .iter()
            .find(|node| node.is_serving() && !node.retired)
            .map(|node| node.gossip);
        if id > 1 && join.is_none() {
            bail!("no serving node for node {id} to join through");
        }
        let [http, admin, cluster, gossip] = match self.namespaces.as_mut() {
            Some(namespaces) => namespaces.add_node(id)?,
            None => {
                let ports = mimori::ports::reserve_ports(4)?;
                [0, 1, 2, 3].map(|offset| SocketAddr::from(([127, 0, 0, 1], ports + offset)))
            }
        };
        self.nodes.push(Node {
            id,
            http,
            admin,
            cluster,
            gossip,
            data_dir: self.options.directory.join(format!("node{id}")),
            join,
            child: None,
            paused: false,
            retired: false,
        });
        self.restart(id).await?;
        Ok(id)
    }

    pub fn node(&self, id: u64) -> anyhow::Result<&Node> {
        self.nodes
            .get((id as usize).wrapping_sub(1))
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut Node> {
        self.nodes
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Ids of the nodes still members of the cluster.
    pub fn member_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|node| !node.retired)
            .map(|node| node.id)
            .collect()
    }

    /// Ids of the member nodes that run and are not frozen.
    pub fn serving_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|node| !node.retired && node.is_serving())
            .map(|node| node.id)
            .collect()
    }

    /// Starts node `id` (again, on its data directory) and waits until it serves.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let binary = self.options.binary.clone();
        let shard_count = self.options.shard_count;
        let environment = self.options.environment.clone();
        let namespace = self
            .namespaces
            .as_ref()
            .map(|namespaces| namespaces.namespace(id));
        let node = self.node_mut(id)?;
        if node.child.is_some() {
            bail!("node {id} already runs");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .with_context(|| format!("open {}", node.log_path().display()))?;
        // In a namespace, `ip netns exec` replaces itself with mimorid, so the
        // child's pid is the node's.
        let mut command = match &namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.arg("netns").arg("exec").arg(namespace).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let listen = ListenAddresses {
            http: node.http,
            admin: node.admin,
            cluster: node.cluster,
            gossip: node.gossip,
        };
        command
            .args(node_flags(id, &node.data_dir, listen))
            .arg("--shard-count")
            .arg(shard_count.to_string());
        if let Some(join) = node.join {
            command.arg("--join").arg(join.to_string());
        }
        let child = command
            .env_remove("RUST_LOG")
            .env("MIMORI_FAULT_INJECTION", "true")
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        let url = format!("{}/health", node.url());
        let deadline = Instant::now() + START_TIMEOUT;
        let client = reqwest::Client::new();
        loop {
            let node = self.node_mut(id)?;
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    bail!(
                        "node {id} exited with {status} while starting; see {}",
                        node.log_path().display()
                    );
                }
            }
            let healthy = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id} did not serve within {START_TIMEOUT:?}; see {}",
                    self.node(id)?.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every serving node sees every shard with `voters` replicas and a
    /// leader.
    pub async fn wait_replicated(&self, voters: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut settled = true;
            for id in self.serving_ids() {
                let info = match self.admin(id).await {
                    Ok(mut admin) => admin.cluster_info().await.ok(),
                    Err(_) => None,
                };
                settled &= info.is_some_and(|info| {
                    info.shards
                        .iter()
                        .all(|shard| shard.leader.is_some() && shard.replicas.len() == voters)
                });
            }
            if settled {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "the cluster did not replicate every shard within {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: the process dies at once, without flushing anything.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        child.kill().with_context(|| format!("kill node {id}"))?;
        child.wait().with_context(|| format!("reap node {id}"))?;
        node.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process freezes, as in a long pause of its machine.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "STOP")?;
        self.node_mut(id)?.paused = true;
        Ok(())
    }

    /// SIGCONT: a frozen process carries on.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "CONT")?;
        self.node_mut(id)?.paused = false;
        Ok(())
    }

    fn signal(&self, id: u64, name: &str) -> anyhow::Result<()> {
        let node = self.node(id)?;
        let pid = node
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("node {id} is not running"))?
            .id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed");
        }
        Ok(())
    }

    /// Which network the nodes run on.
    pub fn network(&self) -> &'static str {
        if self.namespaces.is_some() {
            "network namespaces, links cut with iptables"
        } else {
            "loopback, links cut with the nodes' fault hook"
        }
    }

    /// Cuts node `id`'s links: what it sends to `drop_to` and what it receives
    /// from `drop_from` is lost, until `heal_links`.
    pub async fn cut_links(
        &self,
        id: u64,
        drop_to: &BTreeSet<u64>,
        drop_from: &BTreeSet<u64>,
    ) -> anyhow::Result<()> {
        if let Some(namespaces) = &self.namespaces {
            return namespaces.cut(id, drop_to, drop_from);
        }
        let ids = |nodes: &BTreeSet<u64>| nodes.iter().copied().map(NodeId).collect::<Vec<_>>();
        self.admin(id)
            .await?
            .set_network_faults(&ids(drop_to), &ids(drop_from))
            .await
            .map_err(|error| anyhow!("cut the links of node {id}: {error}"))
    }

    /// Hides node `id`'s TCP closes from its peers (see [`Namespaces::hide_closes`]),
    /// so killing it leaves half-open connections behind. Needs network namespaces.
    pub fn hide_closes(&self, id: u64) -> anyhow::Result<()> {
        let namespaces = self
            .namespaces
            .as_ref()
            .ok_or_else(|| anyhow!("hiding closes needs network namespaces (root)"))?;
        let peers = self
            .nodes
            .iter()
            .map(|node| node.id)
            .filter(|peer| *peer != id)
            .collect();
        namespaces.hide_closes(id, &peers)
    }

    /// Restores every link of node `id`.
    pub async fn heal_links(&self, id: u64) -> anyhow::Result<()> {
        if let Some(namespaces) = &self.namespaces {
            return namespaces.heal(id);
        }
        self.admin(id)
            .await?
            .set_network_faults(&[], &[])
            .await
            .map_err(|error| anyhow!("heal the links of node {id}: {error}"))
    }

    /// An admin session with node `id`.
    pub async fn admin(&self, id: u64) -> anyhow::Result<AdminClient> {
        let endpoint = self.node(id)?.admin.to_string();
        AdminClient::connect(&[endpoint], None, ADMIN_TIMEOUT)
            .await
            .map_err(|error| anyhow!("admin session with node {id}: {error}"))
    }

    /// Kills every process that still runs (frozen ones are woken first, so they
    /// die at once).
    pub fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|node| node.id).collect();
        for id in ids {
            if self.node(id).is_ok_and(Node::is_paused) {
                let _ = self.resume(id);
            }
            if self.node(id).is_ok_and(Node::is_running) {
                let _ = self.kill(id);
            }
        }
    }

    /// The last lines of every node's log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- node {} ---\n", node.id));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

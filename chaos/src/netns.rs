//! Real network partitions for a root run: every node in its own network namespace,
//! joined to the runner by a veth pair on one bridge, and links cut with iptables
//! DROP rules inside the nodes' namespaces.
//!
//! Layout: bridge `<prefix>br` in the runner's namespace with 10.213.S.254/24; node
//! `i` in namespace `<prefix>-n<i>` with `eth0` at 10.213.S.i, its peer `<prefix>v<i>`
//! on the bridge. `S` and the prefix come from the runner's process id and a count
//! of clusters it started, so two runs on one machine do not collide. Every node uses the same four ports on its own
//! address. Everything is deleted when the `Namespaces` is dropped.
//!
//! A cut of node `i` towards `j` is `iptables -A OUTPUT -d ip(j) -j DROP` in `i`'s
//! namespace; ignoring `j` is `-A INPUT -s ip(j) -j DROP`. Healing flushes the chains.
//! The runner's own address (.254) is never cut, so clients and the admin
//! connections keep reaching every node, as with the fault hook.

use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The bridge and namespaces of one run.
pub struct Namespaces {
    prefix: String,
    subnet: u8,
    nodes: BTreeSet<u64>,
}

/// Runs a command, failing with its stderr.
fn run(program: &str, arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Namespaces {
    /// Whether this process can build namespaces: it runs as root, `ip` and
    /// `iptables` are there, and a probe namespace with a rule in it works.
    pub fn available() -> bool {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
        let tool = |name: &str| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        };
        if !(root && tool("iptables") && Command::new("ip").arg("-V").output().is_ok()) {
            return false;
        }
        // The kernel must allow namespaces and iptables rules inside them (a
        // container may not): try both once.
        let probe = format!("mcprobe{}", std::process::id() % 100_000);
        let works = run("ip", &["netns", "add", &probe]).is_ok()
            && run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &probe,
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-d",
                    "10.213.0.1",
                    "-j",
                    "DROP",
                ],
            )
            .is_ok();
        let _ = run("ip", &["netns", "del", &probe]);
        works
    }

    /// Creates the bridge.
    pub fn create() -> anyhow::Result<Namespaces> {
        // Distinct per process and per cluster within it.
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let instance = CREATED.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let namespaces = Namespaces {
            prefix: format!("mc{}x{}", pid % 100_000, instance % 10),
            subnet: ((pid + instance) % 200 + 20) as u8,
            nodes: BTreeSet::new(),
        };
        let bridge = namespaces.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let address = format!("{}/24", namespaces.runner_address());
        run("ip", &["addr", "add", &address, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        Ok(namespaces)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    fn runner_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    /// The address of node `id` (ids 1 to 200).
    pub fn address(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, id as u8)
    }

    /// The namespace of node `id`.
    pub fn namespace(&self, id: u64) -> String {
        format!("{}-n{id}", self.prefix)
    }

    /// Creates node `id`'s namespace and links it to the bridge; returns the
    /// node's four addresses (http, admin, cluster, gossip).
    pub fn add_node(&mut self, id: u64) -> anyhow::Result<[SocketAddr; 4]> {
        if !(1..=200).contains(&id) {
            bail!("node ids of a namespaced run are 1 to 200");
        }
        let namespace = self.namespace(id);
        let veth = format!("{}v{id}", self.prefix);
        run("ip", &["netns", "add", &namespace])?;
        self.nodes.insert(id);
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ],
        )?;
        run("ip", &["link", "set", &veth, "master", &self.bridge()])?;
        run("ip", &["link", "set", &veth, "up"])?;
        let address = format!("{}/24", self.address(id));
        let inside = |arguments: &[&str]| {
            let mut full = vec!["netns", "exec", namespace.as_str()];
            full.extend_from_slice(arguments);
            run("ip", &full)
        };
        inside(&["ip", "addr", "add", &address, "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        let ip = self.address(id);
        Ok([7070, 7071, 7072, 7073].map(|port| SocketAddr::from((ip, port))))
    }

    /// Replaces node `id`'s rules: drop what it sends to `drop_to` and what it
    /// receives from `drop_from`.
    pub fn cut(
        &self,
        id: u64,
        drop_to: &BTreeSet<u64>,
        drop_from: &BTreeSet<u64>,
    ) -> anyhow::Result<()> {
        self.heal(id)?;
        let namespace = self.namespace(id);
        for (chain, flag, peers) in [("OUTPUT", "-d", drop_to), ("INPUT", "-s", drop_from)] {
            for peer in peers {
                let peer = self.address(*peer).to_string();
                run(
                    "ip",
                    &[
                        "netns", "exec", &namespace, "iptables", "-A", chain, flag, &peer, "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Makes node `id`'s closes vanish on the way to `peers`: the TCP FIN and RST
    /// segments it sends them are dropped, as with a host that crashed behind a
    /// firewall that drops what it does not know. A node killed then leaves
    /// half-open connections on its peers. Until `heal`.
    pub fn hide_closes(&self, id: u64, peers: &BTreeSet<u64>) -> anyhow::Result<()> {
        let namespace = self.namespace(id);
        for peer in peers {
            let peer = self.address(*peer).to_string();
            for flag in ["FIN", "RST"] {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &namespace,
                        "iptables",
                        "-A",
                        "OUTPUT",
                        "-d",
                        &peer,
                        "-p",
                        "tcp",
                        "--tcp-flags",
                        flag,
                        flag,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Removes node `id`'s rules.
    pub fn heal(&self, id: u64) -> anyhow::Result<()> {
        let namespace = self.namespace(id);
        run(
            "ip",
            &["netns", "exec", &namespace, "iptables", "-F", "OUTPUT"],
        )?;
        run(
            "ip",
            &["netns", "exec", &namespace, "iptables", "-F", "INPUT"],
        )
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for id in &self.nodes {
            // Deleting the namespace deletes its end of the veth pair, and so both.
            let _ = run("ip", &["netns", "del", &self.namespace(*id)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

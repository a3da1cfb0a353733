//! Black-box test harness: runs real `mimorid` processes on 127.0.0.1 with their own
//! data directories and free ports, and kills or stops them like an operator (or a
//! crash) would. Shared by every test that needs a real process.

#![allow(dead_code)]

pub mod admin_node;
pub mod cluster;
pub mod dbctl;

use mimori::daemon::{node_flags, ListenAddresses};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One `mimorid` process and the addresses it serves.
pub struct NodeProcess {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
    pub gossip: SocketAddr,
    extra_args: Vec<String>,
    environment: Vec<(String, String)>,
    child: Option<Child>,
}

/// `mimorid` processes the tests of one binary run at once, at most (a single
/// cluster larger than this runs alone), so two cores are not swamped.
const NODES_AT_ONCE: usize = 6;

/// A counting semaphore over the nodes of this test binary's clusters.
static NODES_RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Holds places for one cluster's nodes until dropped.
pub struct ClusterPlace {
    nodes: usize,
}

impl ClusterPlace {
    /// Waits until a cluster of `nodes` nodes may run.
    pub fn take(nodes: usize) -> ClusterPlace {
        let (running, changed) = &NODES_RUNNING;
        let mut running = running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while *running > 0 && *running + nodes > NODES_AT_ONCE {
            running = changed
                .wait(running)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *running += nodes;
        ClusterPlace { nodes }
    }
}

impl Drop for ClusterPlace {
    fn drop(&mut self) {
        let (running, changed) = &NODES_RUNNING;
        let mut running = running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *running -= self.nodes;
        changed.notify_all();
    }
}

/// Reserves `count` consecutive ports outside the ephemeral range, free for TCP
/// and UDP on 127.0.0.1, never handed out before in this test process.
pub fn reserve_ports(count: u16) -> u16 {
    mimori::ports::reserve_ports(count).unwrap_or_else(|error| panic!("{error}"))
}

/// A TCP port free right now on 127.0.0.1, outside the ephemeral range.
pub fn free_tcp_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], reserve_ports(1)))
}

/// A UDP port free right now on 127.0.0.1, outside the ephemeral range.
pub fn free_udp_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], reserve_ports(1)))
}

impl NodeProcess {
    /// Describes a node with fresh ports; `start` runs it.
    pub fn new(node_id: u64, data_dir: &Path) -> NodeProcess {
        NodeProcess {
            node_id,
            data_dir: data_dir.to_path_buf(),
            http: free_tcp_address(),
            admin: free_tcp_address(),
            cluster: free_tcp_address(),
            gossip: free_udp_address(),
            extra_args: Vec::new(),
            environment: Vec::new(),
            child: None,
        }
    }

    /// Adds environment variables set on every start (settings without flags,
    /// such as `MIMORI_COMPACT_AFTER_ENTRIES`).
    pub fn with_env(mut self, pairs: &[(&str, &str)]) -> NodeProcess {
        self.environment = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        self
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} already running",
            self.node_id
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("open the node's log file");
        let listen = ListenAddresses {
            http: self.http,
            admin: self.admin,
            cluster: self.cluster,
            gossip: self.gossip,
        };
        let child = Command::new(env!("CARGO_BIN_EXE_mimorid"))
            .args(node_flags(self.node_id, &self.data_dir, listen))
            .args(&self.extra_args)
            .envs(self.environment.iter().map(|(name, value)| (name, value)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mimorid");
        self.child = Some(child);
    }

    /// Whether the process runs (was started and has not exited or been killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Whether the process was started and has not been killed or stopped by the
    /// harness (a frozen process counts as running).
    pub fn is_running_now(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: the process freezes (as in a long GC pause or a hung VM).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: a paused process carries on.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Sends signal `name` (`TERM`, `STOP`, ...) without waiting for its effect.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Adds flags passed on every start.
    pub fn with_args(mut self, args: &[&str]) -> NodeProcess {
        self.extra_args = args.iter().map(|arg| arg.to_string()).collect();
        self
    }

    /// Starts the process and waits until `/health` answers 200.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_until_healthy(Duration::from_secs(60));
    }

    /// Polls `/health` until it answers 200; panics with the node's log otherwise.
    pub fn wait_until_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("mimorid exited early with {status}:\n{}", self.log());
                }
            }
            if http_status(self.http, "/health") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "node {} not healthy within {timeout:?}:\n{}",
            self.node_id,
            self.log()
        );
    }

    /// The node's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// SIGKILL: the process dies at once, as in a crash or power loss of the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {} did not stop within 30 s of SIGTERM", self.node_id);
    }

    /// Base URL of the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One blocking GET over a raw socket, returning the status code (used for health
/// polling without an async runtime).
pub fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let line = response.split(|byte| *byte == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One blocking GET over a raw socket, returning the body of a 200 answer (used
/// to poll views without an async runtime). Handles chunked bodies.
pub fn http_get(address: SocketAddr, path: &str) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split])
        .ok()?
        .to_ascii_lowercase();
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let body = &response[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Some(body.to_vec());
    }
    let mut decoded = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|window| window == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(decoded);
        }
        decoded.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

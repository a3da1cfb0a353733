//! Black-box test harness: runs real `mimorid` processes on 127.0.0.1 with their own
//! data directories and free ports, and kills or stops them like an operator (or a
//! crash) would. Shared by every test that needs a real process.

#![allow(dead_code)]

pub mod admin_node;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    child: Option<Child>,
}

/// A TCP port free right now on 127.0.0.1 (the OS picks it).
pub fn free_tcp_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_address() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    socket.local_addr().expect("local address")
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
            child: None,
        }
    }

    /// Adds flags passed on every start.
    pub fn with_args(mut self, args: &[&str]) -> NodeProcess {
        self.extra_args = args.iter().map(|arg| arg.to_string()).collect();
        self
    }

    /// Starts the process and waits until `/health` answers 200.
    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} already running",
            self.node_id
        );
        let log = std::fs::File::create(self.data_dir.with_extension("log"))
            .expect("create the node's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mimorid"))
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http")
            .arg(self.http.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--cluster")
            .arg(self.cluster.to_string())
            .arg("--gossip")
            .arg(self.gossip.to_string())
            .args(&self.extra_args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mimorid");
        self.child = Some(child);
        self.wait_until_healthy(Duration::from_secs(30));
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

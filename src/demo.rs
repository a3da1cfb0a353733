//! `mimorid demo --nodes N`: a local cluster of N `mimorid` child processes on
//! 127.0.0.1, for trying Mimori out and for development.
//!
//! Node `i` (1-based) listens on `base + 10·(i−1)` (HTTP), `+1` (admin), `+2`
//! (cluster) and `+3` (gossip); node 1 bootstraps the cluster and the others join
//! through node 1's gossip address. Data goes to `--data-dir` (kept, so the next
//! demo with the same directory resumes the same cluster) or to a fresh temporary
//! directory (removed at exit). Each node's log is `<data dir>/node-<i>.log`.
//!
//! Ctrl-C or SIGTERM stops every node with SIGTERM (then SIGKILL after a grace
//! period); a node that dies on its own stops the demo too. Only processes the demo
//! started are signalled, by their PID.

use crate::daemon::{node_flags, ListenAddresses};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most nodes a demo runs.
const NODES_MAX: u16 = 9;
/// How long a node may take to answer `/health`.
const HEALTH_WAIT: Duration = Duration::from_secs(60);
/// How long the nodes get to stop after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// Arguments of `mimorid demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Nodes to run (1..=9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=NODES_MAX as i64))]
    pub nodes: u16,
    /// Keep the nodes' data here (one directory per node); default: a temporary
    /// directory removed at exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP port of node 1; node i uses base + 10·(i−1) .. +3.
    #[arg(long, default_value_t = 7070, value_parser = clap::value_parser!(u16).range(1024..=65000))]
    pub base_port: u16,
}

/// One child node.
struct DemoNode {
    id: u16,
    http: SocketAddr,
    admin: SocketAddr,
    child: Child,
}

/// Runs the demo until Ctrl-C; returns the process exit code.
pub fn run(args: &DemoArgs) -> ExitCode {
    let (root, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("mimori-demo-{:08x}", rand::random::<u32>())),
            true,
        ),
    };
    let code = match run_in(args, &root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mimorid demo: {message}");
            ExitCode::from(1)
        }
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&root);
    }
    code
}

fn port_address(port: u32) -> Result<SocketAddr, String> {
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn run_in(args: &DemoArgs, root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|error| format!("{}: {error}", root.display()))?;
    let program =
        std::env::current_exe().map_err(|error| format!("cannot find mimorid: {error}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop))?;
    let base = u32::from(args.base_port);
    let seed_gossip = port_address(base + 3)?;
    let mut nodes: Vec<DemoNode> = Vec::new();
    let outcome = (|| {
        for id in 1..=args.nodes {
            let first = base + 10 * u32::from(id - 1);
            let (http, admin, cluster, gossip) = (
                port_address(first)?,
                port_address(first + 1)?,
                port_address(first + 2)?,
                port_address(first + 3)?,
            );
            let data_dir = root.join(format!("node-{id}"));
            let log_path = root.join(format!("node-{id}.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|error| format!("{}: {error}", log_path.display()))?;
            let mut command = Command::new(&program);
            let listen = ListenAddresses {
                http,
                admin,
                cluster,
                gossip,
            };
            command
                .args(node_flags(u64::from(id), &data_dir, listen))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            if id > 1 {
                command.arg("--join").arg(seed_gossip.to_string());
            }
            let child = command
                .spawn()
                .map_err(|error| format!("cannot start node {id}: {error}"))?;
            nodes.push(DemoNode {
                id,
                http,
                admin,
                child,
            });
            let node = nodes.last_mut().ok_or("no node")?;
            wait_healthy(node, &log_path, &stop)?;
            eprintln!("node {id} is up: http://{http}");
        }
        print_endpoints(&nodes, root, args.data_dir.is_none());
        wait_for_stop(&mut nodes, root, &stop)
    })();
    stop_all(&mut nodes);
    outcome
}

/// Sets `stop` on SIGINT or SIGTERM, from a thread of its own.
fn watch_signals(stop: Arc<AtomicBool>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime for signals: {error}"))?;
    let signal = runtime
        .block_on(async { crate::daemon::termination_signal() })
        .map_err(|error| format!("cannot listen for SIGINT/SIGTERM: {error}"))?;
    std::thread::spawn(move || {
        runtime.block_on(signal);
        stop.store(true, Ordering::SeqCst);
    });
    Ok(())
}

fn wait_healthy(node: &mut DemoNode, log: &Path, stop: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + HEALTH_WAIT;
    while Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        if let Ok(Some(status)) = node.child.try_wait() {
            return Err(format!(
                "node {} exited with {status} while starting; its log:\n{}",
                node.id,
                tail(log)
            ));
        }
        if http_status(node.http, "/health") == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "node {} did not become healthy within {HEALTH_WAIT:?}; its log:\n{}",
        node.id,
        tail(log)
    ))
}

fn print_endpoints(nodes: &[DemoNode], root: &Path, temporary: bool) {
    println!();
    println!("Mimori demo cluster: {} nodes", nodes.len());
    println!(
        "{:<6} {:<24} {:<24}",
        "node", "HTTP gateway", "admin (dbctl)"
    );
    for node in nodes {
        println!(
            "{:<6} {:<24} {:<24}",
            node.id,
            format!("http://{}", node.http),
            node.admin.to_string()
        );
    }
    let first = &nodes[0];
    let endpoints: Vec<String> = nodes.iter().map(|node| node.admin.to_string()).collect();
    println!();
    println!(
        "Data and logs: {}{}",
        root.display(),
        if temporary { " (removed at exit)" } else { "" }
    );
    println!("Try:");
    println!(
        "  curl -X PUT --data-binary hello http://{}/v1/kv/greeting",
        first.http
    );
    if let Some(last) = nodes.last() {
        println!("  curl http://{}/v1/kv/greeting", last.http);
    }
    println!("  curl http://{}/v1/cluster", first.http);
    println!("  dbctl --endpoints {} cluster info", endpoints.join(","));
    println!("Ctrl-C stops every node.");
}

/// Waits for Ctrl-C, or for a node to exit on its own (an error).
fn wait_for_stop(nodes: &mut [DemoNode], root: &Path, stop: &AtomicBool) -> Result<(), String> {
    while !stop.load(Ordering::SeqCst) {
        for node in nodes.iter_mut() {
            if let Ok(Some(status)) = node.child.try_wait() {
                let log = root.join(format!("node-{}.log", node.id));
                return Err(format!(
                    "node {} exited with {status}; its log:\n{}",
                    node.id,
                    tail(&log)
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("stopping {} nodes", nodes.len());
    Ok(())
}

/// SIGTERM to every node still running, then SIGKILL to those that do not stop.
fn stop_all(nodes: &mut [DemoNode]) {
    for node in nodes.iter_mut() {
        if let Ok(None) = node.child.try_wait() {
            if let Ok(pid) = i32::try_from(node.child.id()) {
                // The child is ours and has not been reaped, so the PID is its own.
                let _ = send_signal(pid, "TERM");
            }
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    for node in nodes.iter_mut() {
        while Instant::now() < deadline {
            if !matches!(node.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = node.child.try_wait() {
            eprintln!("node {} did not stop in time; killing it", node.id);
            let _ = node.child.kill();
        }
        let _ = node.child.wait();
    }
}

/// Sends `signal` (a name such as `TERM`) to `pid`. The standard library can only
/// send SIGKILL, and calling libc's `kill` would need `unsafe`.
fn send_signal(pid: i32, signal: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{signal} {pid} failed"
        )))
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One GET over a plain socket; the status code, if any answer came.
fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let line = response.split(|byte| *byte == b'\r').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

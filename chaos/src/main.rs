//! `mimori-chaos`: runs one chaos session and exits 0 only when every check passes.
//! `chaos/run` builds it and `mimorid` in release mode and runs it.

use clap::Parser;
use mimori_chaos::cluster::NetworkMode;
use mimori_chaos::nemesis::{FaultKind, Pacing};
use mimori_chaos::report::summary;
use mimori_chaos::runner::{run, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Starts a cluster of real mimorid processes, runs a concurrent client workload
/// through their gateways while injecting faults chosen by a seed, then checks
/// that the history is linearizable, that nothing acknowledged was lost and that
/// every shard's replicas are identical.
#[derive(Parser, Debug)]
#[command(name = "mimori-chaos", version)]
struct Arguments {
    /// How long the workload and the faults run: 90, 90s, 15m or 1h.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of every random choice (faults, victims, operations); random when unset
    /// and printed either way, so a failing run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes of the cluster (4 or more enables the membership fault).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
    nodes: u64,
    /// Fault kinds, comma-separated: kill, stop, actor, partition, transfer, membership.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,stop,actor,partition,transfer,membership"
    )]
    faults: Vec<FaultKind>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    clients: u32,
    /// Register keys in use at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    keys: u32,
    /// Shards of the cluster.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// The mimorid binary; by default the one next to this executable.
    #[arg(long)]
    mimorid: Option<PathBuf>,
    /// How nodes are networked: `namespaces` (root only: each node in its own
    /// network namespace, partitions with iptables), `loopback` (127.0.0.1,
    /// partitions with the nodes' fault hook), or `auto` (namespaces when possible).
    #[arg(long, value_enum, default_value_t = Network::Auto)]
    network: Network,
    /// Read with `consistency=stale` instead of linearizably: not linearizable by
    /// design, so the run shows the checker catching stale reads (expect FAIL).
    #[arg(long)]
    stale_reads: bool,
    /// Where the nodes' data, logs, history.json and report.json go; a new
    /// temporary directory when unset (printed). After a passing run only the logs
    /// and report.json stay (a long run's data takes gigabytes), unless --keep.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the nodes' data directories and history.json after a passing run too.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Network {
    Auto,
    Namespaces,
    Loopback,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m or 1h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3_600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    if seconds == 0 || seconds > 24 * 3_600 {
        return Err("the duration must be between 1 s and 24 h".into());
    }
    Ok(Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let binary = match arguments.mimorid.clone().or_else(sibling_mimorid) {
        Some(binary) if binary.exists() => binary,
        Some(binary) => {
            eprintln!(
                "error: {} does not exist (build it, or pass --mimorid)",
                binary.display()
            );
            return ExitCode::from(2);
        }
        None => {
            eprintln!("error: cannot locate mimorid; pass --mimorid");
            return ExitCode::from(2);
        }
    };
    let options = RunOptions {
        duration: arguments.duration,
        seed: arguments.seed.unwrap_or_else(rand::random),
        nodes: arguments.nodes,
        faults: arguments.faults,
        clients: arguments.clients,
        keys: arguments.keys,
        shard_count: arguments.shards,
        binary,
        directory: arguments.dir,
        pacing: Pacing::DEFAULT,
        request_timeout: Duration::from_secs(5),
        stale_reads: arguments.stale_reads,
        network: match arguments.network {
            Network::Auto => NetworkMode::Auto,
            Network::Namespaces => NetworkMode::Namespaces,
            Network::Loopback => NetworkMode::Loopback,
        },
    };
    let arguments_keep = arguments.keep;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(report) => {
            print!("{}", summary(&report));
            if report.passed() {
                if !arguments_keep {
                    remove_bulky_files(&report.directory);
                }
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("error: the run could not complete: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Removes what only a failure's post-mortem needs: the nodes' data directories
/// and the history. The logs and report.json stay.
fn remove_bulky_files(directory: &std::path::Path) {
    let _ = std::fs::remove_file(directory.join("history.json"));
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn sibling_mimorid() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("mimorid"))
}

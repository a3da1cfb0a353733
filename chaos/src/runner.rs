//! One chaos run, start to verdict: start the cluster, run the workload while the
//! nemesis injects faults, heal everything, read the final state, check.

use crate::checker::{check, CheckReport, FinalState, ReplicaChecksum};
use crate::cluster::{Cluster, ClusterOptions, NetworkMode};
use crate::history::{Answer, Call, History, Operation, Outcome, Value};
use crate::nemesis::{self, Damage, FaultEvent, FaultKind, Pacing};
use crate::workload::{self, Gateways, WorkloadOptions};
use anyhow::{anyhow, Context};
use mimori_actors::ids::NodeId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The client id final reads are recorded under.
const FINAL_READER: u32 = u32::MAX;
/// How long the final reads and the convergence wait may take, each.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub duration: Duration,
    pub seed: u64,
    pub nodes: u64,
    pub faults: Vec<FaultKind>,
    pub clients: u32,
    pub keys: u32,
    pub shard_count: u32,
    pub binary: PathBuf,
    /// Where the nodes' files go; a fresh temporary directory when unset.
    pub directory: Option<PathBuf>,
    pub pacing: Pacing,
    /// How long a client waits for an answer.
    pub request_timeout: Duration,
    pub network: NetworkMode,
    /// The workload reads stale (see `WorkloadOptions::stale_reads`).
    pub stale_reads: bool,
}

/// What a run did and found.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: u64,
    pub duration_s: f64,
    pub faults: Vec<FaultEvent>,
    /// Faults that could not be injected or healed.
    pub fault_errors: Vec<String>,
    pub check: CheckReport,
    pub directory: PathBuf,
}

impl RunReport {
    /// Whether every check passed and every fault was injected and healed.
    pub fn passed(&self) -> bool {
        self.check.passed() && self.fault_errors.is_empty()
    }

    /// Faults injected, by kind.
    pub fn faults_by_kind(&self) -> BTreeMap<FaultKind, u64> {
        let mut counts = BTreeMap::new();
        for fault in &self.faults {
            *counts.entry(fault.kind).or_default() += 1;
        }
        counts
    }
}

/// The settings every node of a chaos cluster runs with: short request timeouts
/// (so clients get answers rather than timeouts), frequent compaction (so lagging
/// replicas catch up by snapshot during the run).
fn node_environment() -> Vec<(String, String)> {
    [
        ("MIMORI_REQUEST_TIMEOUT_MS", "3000"),
        ("MIMORI_COMPACT_AFTER_ENTRIES", "1000"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// Runs one chaos session.
pub async fn run(options: RunOptions) -> anyhow::Result<RunReport> {
    let directory = match &options.directory {
        Some(directory) => directory.clone(),
        None => tempfile::Builder::new()
            .prefix("mimori-chaos-")
            .tempdir()
            .context("temporary directory")?
            .keep(),
    };
    println!(
        "chaos: seed {}, {} nodes, {:?}, faults {}, files in {}",
        options.seed,
        options.nodes,
        options.duration,
        options
            .faults
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join(","),
        directory.display()
    );
    let mut cluster = Cluster::start(
        ClusterOptions {
            binary: options.binary.clone(),
            directory: directory.clone(),
            shard_count: options.shard_count,
            environment: node_environment(),
            network: options.network,
        },
        options.nodes,
    )
    .await?;
    cluster
        .wait_replicated(options.nodes.min(3) as usize, SETTLE_TIMEOUT)
        .await?;
    println!(
        "chaos: cluster up on the {}; every shard replicated",
        cluster.network()
    );

    let history = Arc::new(History::new());
    let gateways: Gateways = Arc::new(RwLock::new(gateway_urls(&cluster)));
    let stop = Arc::new(AtomicBool::new(false));
    let workload = tokio::spawn(workload::run(
        WorkloadOptions {
            clients: options.clients,
            keys: options.keys,
            request_timeout: options.request_timeout,
            seed: options.seed,
            stale_reads: options.stale_reads,
        },
        Arc::clone(&gateways),
        Arc::clone(&history),
        Arc::clone(&stop),
    ));

    let mut rng = StdRng::seed_from_u64(options.seed);
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut fault_errors = Vec::new();
    let mut damage = Damage::default();
    while started.elapsed() < options.duration {
        let quiet = rng.gen_range(options.pacing.quiet_ms.0..=options.pacing.quiet_ms.1);
        tokio::time::sleep(Duration::from_millis(quiet)).await;
        if started.elapsed() >= options.duration {
            break;
        }
        let usable: Vec<FaultKind> = options
            .faults
            .iter()
            .copied()
            .filter(|kind| *kind != FaultKind::Membership || cluster.member_ids().len() >= 4)
            .collect();
        let Some(&kind) = usable.choose(&mut rng) else {
            continue;
        };
        let hold = Duration::from_millis(
            rng.gen_range(options.pacing.hold_ms.0..=options.pacing.hold_ms.1),
        );
        let at_ms = started.elapsed().as_millis() as u64;
        let begun = Instant::now();
        match nemesis::inject(&mut cluster, kind, &mut rng, hold, &mut damage).await {
            Ok(detail) => {
                println!(
                    "chaos: {:>7.1} s  {:<10} {detail}",
                    at_ms as f64 / 1e3,
                    kind.name()
                );
                faults.push(FaultEvent {
                    kind,
                    detail,
                    at_ms,
                    held_ms: begun.elapsed().as_millis() as u64,
                });
            }
            Err(error) => {
                println!(
                    "chaos: {:>7.1} s  {:<10} FAILED: {error:#}",
                    at_ms as f64 / 1e3,
                    kind.name()
                );
                fault_errors.push(format!("{} at {at_ms} ms: {error:#}", kind.name()));
                // Whatever the fault left broken is undone before going on.
                if let Err(error) = nemesis::heal(&mut cluster, &mut damage).await {
                    fault_errors.push(format!("heal after {}: {error:#}", kind.name()));
                }
            }
        }
        if let Ok(mut urls) = gateways.write() {
            *urls = gateway_urls(&cluster);
        }
    }
    if let Err(error) = nemesis::heal(&mut cluster, &mut damage).await {
        fault_errors.push(format!("final heal: {error:#}"));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = workload.await;
    let workload_s = started.elapsed().as_secs_f64();
    println!(
        "chaos: workload stopped after {workload_s:.1} s; faults healed; reading the final state"
    );

    let gateway_list = gateway_urls(&cluster);
    if gateway_list.is_empty() {
        return Err(anyhow!(
            "no member node is left to read the final state from"
        ));
    }
    final_reads(&history, &gateway_list).await;
    let appends = history.appends();
    let append_values = final_appends(&appends, &gateway_list).await;
    let replicas = converged_checksums(&cluster).await?;
    let operations = history.operations();
    let report = check(
        &operations,
        &appends,
        &FinalState {
            appends: append_values,
            replicas,
        },
    );
    let run = RunReport {
        seed: options.seed,
        nodes: options.nodes,
        duration_s: workload_s,
        faults,
        fault_errors,
        check: report,
        directory: directory.clone(),
    };
    write_json(&directory.join("history.json"), &(&operations, &appends))?;
    write_json(&directory.join("report.json"), &run)?;
    if !run.passed() {
        println!("{}", cluster.log_tails(20));
    }
    cluster.stop_all();
    Ok(run)
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    serde_json::to_writer(std::io::BufWriter::new(file), value)
        .with_context(|| format!("write {}", path.display()))
}

fn gateway_urls(cluster: &Cluster) -> Vec<(u64, String)> {
    cluster
        .nodes
        .iter()
        .filter(|node| !node.retired)
        .map(|node| (node.id, node.url()))
        .collect()
}

/// Reads every register key once more, linearizably, retrying until a definite
/// answer; every attempt goes into the history.
async fn final_reads(history: &Arc<History>, gateways: &[(u64, String)]) {
    let keys: BTreeSet<String> = history
        .operations()
        .into_iter()
        .map(|operation| operation.key)
        .collect();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for (index, key) in keys.into_iter().enumerate() {
        loop {
            let (node, gateway) = &gateways[index % gateways.len().max(1)];
            let invoked_ns = history.now_ns();
            let outcome = workload::read(&http, gateway, &key).await;
            history.record(Operation {
                client: FINAL_READER,
                node: *node,
                key: key.clone(),
                call: Call::Read,
                outcome,
                invoked_ns,
                completed_ns: history.now_ns(),
            });
            if matches!(outcome, Outcome::Ok(_)) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads every append key at the end: what each holds, `None` when absent. Keys
/// that cannot be read by the deadline are left out (and so count as lost when
/// acknowledged).
async fn final_appends(
    appends: &[crate::history::Append],
    gateways: &[(u64, String)],
) -> HashMap<String, Option<Value>> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut found = HashMap::new();
    for chunk in appends.chunks(32) {
        let reads = chunk.iter().enumerate().map(|(index, append)| {
            let http = http.clone();
            let key = append.key.clone();
            let gateways = gateways.to_vec();
            async move {
                let mut attempt = index;
                loop {
                    let (_, gateway) = &gateways[attempt % gateways.len().max(1)];
                    if let Outcome::Ok(Answer::Read { value, .. }) =
                        workload::read(&http, gateway, &key).await
                    {
                        return Some((key, value));
                    }
                    if Instant::now() > deadline {
                        return None;
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        for read in futures_join(reads).await.into_iter().flatten() {
            found.insert(read.0, read.1);
        }
    }
    found
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(output) = handle.await {
            outputs.push(output);
        }
    }
    outputs
}

/// Every placed replica's checksum, once every shard's placed replicas report the
/// same applied index (or the wait times out: the last reading is returned and
/// the checker reports the shards that did not converge).
async fn converged_checksums(
    cluster: &Cluster,
) -> anyhow::Result<BTreeMap<u32, Vec<ReplicaChecksum>>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let reading = read_checksums(cluster).await?;
        let converged = reading.values().all(|replicas| {
            replicas
                .windows(2)
                .all(|pair| pair[0].applied_index == pair[1].applied_index)
        });
        if converged || Instant::now() > deadline {
            return Ok(reading);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn read_checksums(cluster: &Cluster) -> anyhow::Result<BTreeMap<u32, Vec<ReplicaChecksum>>> {
    let members = cluster.serving_ids();
    let asked = *members.first().ok_or_else(|| anyhow!("no serving node"))?;
    let info = cluster
        .admin(asked)
        .await?
        .cluster_info()
        .await
        .map_err(|error| anyhow!("cluster info: {error}"))?;
    let placement: HashMap<u32, Vec<NodeId>> = info
        .shards
        .iter()
        .chain(info.metadata_group.iter())
        .map(|shard| (shard.id.0, shard.replicas.clone()))
        .collect();
    let mut by_shard: BTreeMap<u32, Vec<ReplicaChecksum>> = BTreeMap::new();
    for id in members {
        let mut admin = cluster.admin(id).await?;
        let checksums = admin
            .shard_checksums()
            .await
            .map_err(|error| anyhow!("checksums of node {id}: {error}"))?;
        for checksum in checksums {
            let placed = placement
                .get(&checksum.shard.0)
                .is_some_and(|replicas| replicas.contains(&NodeId(id)));
            if placed {
                by_shard
                    .entry(checksum.shard.0)
                    .or_default()
                    .push(ReplicaChecksum {
                        node: id,
                        applied_index: checksum.applied_index,
                        checksum: checksum.checksum,
                    });
            }
        }
    }
    // A placed replica that reported nothing shows as one at an impossible index,
    // so the shard counts as not converged rather than silently smaller.
    for (shard, replicas) in &placement {
        for node in replicas {
            let reported = by_shard
                .get(shard)
                .is_some_and(|found| found.iter().any(|replica| replica.node == node.0));
            if !reported {
                by_shard.entry(*shard).or_default().push(ReplicaChecksum {
                    node: node.0,
                    applied_index: u64::MAX,
                    checksum: 0,
                });
            }
        }
    }
    Ok(by_shard)
}

//! `dbctl`: the command-line client. Parses arguments ([`cli`]), opens one admin
//! session with [`crate::admin::client::AdminClient`], runs one command and prints
//! the result ([`output`]).
//!
//! Who talks to it: the thin `dbctl` binary, and tests that run it.
//!
//! Invariants: the process exit code is one of `crate::error_code::exit` and means
//! the same for every command; in JSON mode stdout holds exactly one JSON object
//! per run, success or error.

pub mod cli;
mod documents;
mod logs;
pub mod output;

use crate::admin::client::{AdminClient, AdminClientError, AdminClientOptions};
use crate::admin::protocol::ActorTarget;
use crate::error_code::{exit, present_code};
use base64::Engine;
use cli::{
    ActorKind, Cli, ClusterCommand, Command, DebugCommand, NodeCommand, OutputFormat, ShardCommand,
};
use mimori_actors::ids::{NodeId, Revision, ShardId};
use mimori_actors::kv::{Condition, Consistency};
use mimori_actors::metadata::NodeAction;
use output::{
    checksums_table, cluster_table, health_table, json_line, scan_table, shards_table,
    status_table, ChecksumsOutput, DeleteOutput, ErrorBody, ErrorOutput, GetOutput,
    KillShardOutput, NodeActionOutput, PutOutput, ScanOutput, TableStyle, TransferOutput,
};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// What a command printed and the exit code it asks for (non-zero without an
/// error, e.g. `health` of a node that does not serve).
pub(crate) struct Printed {
    pub(crate) stdout: Vec<u8>,
    pub(crate) exit_code: u8,
}

impl Printed {
    pub(crate) fn ok(stdout: impl Into<Vec<u8>>) -> Printed {
        Printed {
            stdout: stdout.into(),
            exit_code: exit::OK,
        }
    }
}

/// Runs a parsed command line on a fresh single-threaded runtime, printing to the
/// process's stdout and stderr; returns the exit code.
pub fn run_blocking(cli: Cli) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::ERROR;
        }
    };
    let format = cli.output_format(std::io::stdout().is_terminal());
    let no_color = std::env::var_os("NO_COLOR");
    output::set_table_style(match format {
        OutputFormat::Tsv => TableStyle::Tsv,
        _ if output::colors_allowed(std::io::stdout().is_terminal(), no_color.as_deref()) => {
            TableStyle::Bold
        }
        _ => TableStyle::Plain,
    });
    let red_errors = output::colors_allowed(std::io::stderr().is_terminal(), no_color.as_deref());
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    runtime.block_on(run(cli, format, red_errors, &mut stdout, &mut stderr))
}

/// Runs a parsed command line in output `format`, printing to `stdout` and
/// `stderr` (errors in red when `red_errors`); returns the exit code.
pub async fn run(
    cli: Cli,
    format: OutputFormat,
    red_errors: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8 {
    let printed = execute(cli, format, stdout, stderr).await;
    let (bytes, exit_code, to_stderr) = match printed {
        Ok(printed) => (printed.stdout, printed.exit_code, false),
        Err(error) => {
            let exit_code = error.exit_code();
            match format {
                OutputFormat::Json => {
                    let body = ErrorOutput {
                        error: ErrorBody {
                            code: error.code().to_string(),
                            message: error.to_string(),
                        },
                    };
                    (json_line(&body).into_bytes(), exit_code, false)
                }
                OutputFormat::Table | OutputFormat::Tsv => {
                    let title = present_code(error.code()).title;
                    let line = format!("error: {error} ({}: {title})", error.code());
                    let line = if red_errors {
                        format!("\x1b[31m{line}\x1b[0m\n")
                    } else {
                        format!("{line}\n")
                    };
                    (line.into_bytes(), exit_code, true)
                }
            }
        }
    };
    let sink: &mut dyn Write = if to_stderr { stderr } else { stdout };
    if sink.write_all(&bytes).and_then(|()| sink.flush()).is_err() {
        // Nowhere left to report it (e.g. a closed pipe); the exit code says it.
        return if exit_code == exit::OK {
            exit::ERROR
        } else {
            exit_code
        };
    }
    exit_code
}

/// The CLI's own invalid-input error, with the same code a server would use.
pub(crate) fn invalid_input(message: impl Into<String>) -> AdminClientError {
    AdminClientError::Server {
        code: "invalid_input".into(),
        message: message.into(),
    }
}

async fn execute(
    cli: Cli,
    format: OutputFormat,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Printed, AdminClientError> {
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "dbctl", &mut script);
        return Ok(Printed::ok(script));
    }
    let endpoints: Vec<String> = cli
        .endpoints
        .iter()
        .map(|endpoint| endpoint.trim().to_string())
        .filter(|endpoint| !endpoint.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(invalid_input(
            "no endpoint given: pass --endpoints HOST:PORT or set MIMORI_ENDPOINTS",
        ));
    }
    // Validate what can be validated before touching the network, so a typo is
    // reported as invalid input even when the cluster is down.
    let scan_after = match &cli.command {
        Command::Scan(scan) => match (&scan.after, &scan.after_base64) {
            (Some(after), _) => Some(after.clone().into_bytes()),
            (None, Some(encoded)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|error| invalid_input(format!("--after-base64: {error}")))?,
            ),
            (None, None) => None,
        },
        _ => None,
    };
    let options = AdminClientOptions {
        token: cli.token.clone().filter(|token| !token.is_empty()),
        timeout: Duration::from_millis(cli.timeout_ms),
        client_name: format!("dbctl/{}", env!("CARGO_PKG_VERSION")),
        ..AdminClientOptions::default()
    };
    if let Command::Import(arguments) = cli.command {
        return documents::import(&endpoints, &options, arguments, format, stderr).await;
    }
    let mut client = AdminClient::connect_with(&endpoints, &options).await?;
    let json = format == OutputFormat::Json;
    match cli.command {
        Command::Doc(command) => documents::doc(&mut client, command, format).await,
        Command::Collection(command) => documents::collection(&mut client, command, format).await,
        Command::Export(arguments) => documents::export(&mut client, arguments, format).await,
        Command::Import(_) | Command::Completions { .. } => {
            Err(invalid_input("handled before connecting"))
        }
        Command::Logs(args) => logs::show(client, &options, &args, json, stdout).await,
        Command::Put(put) => {
            let condition = match (put.if_revision, put.if_absent) {
                (Some(revision), _) => Condition::RevisionIs(Revision(revision)),
                (None, true) => Condition::Absent,
                (None, false) => Condition::Always,
            };
            let revision = client
                .put(put.key.as_bytes(), put.value.as_bytes(), condition)
                .await?;
            Ok(Printed::ok(if json {
                json_line(&PutOutput {
                    key: put.key,
                    revision: revision.0,
                })
            } else {
                format!("OK (revision {revision})\n")
            }))
        }
        Command::Get(get) => {
            let consistency = if get.stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let Some(found) = client.get(get.key.as_bytes(), consistency).await? else {
                return Err(AdminClientError::Server {
                    code: "not_found".into(),
                    message: format!("key {:?} not found", get.key),
                });
            };
            if json {
                let value = output::encode_bytes(&found.value);
                Ok(Printed::ok(json_line(&GetOutput {
                    key: get.key,
                    value: value.text,
                    value_encoding: value.encoding,
                    revision: found.revision.0,
                })))
            } else {
                // Exactly the stored bytes, then a newline.
                let mut raw = found.value.to_vec();
                raw.push(b'\n');
                Ok(Printed::ok(raw))
            }
        }
        Command::Del(delete) => {
            let condition = match delete.if_revision {
                Some(revision) => Condition::RevisionIs(Revision(revision)),
                None => Condition::Always,
            };
            let revision = client.delete(delete.key.as_bytes(), condition).await?;
            Ok(Printed::ok(if json {
                json_line(&DeleteOutput {
                    key: delete.key,
                    revision: revision.0,
                })
            } else {
                format!("deleted (revision {revision})\n")
            }))
        }
        Command::Scan(scan) => {
            let consistency = if scan.stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let page = client
                .scan(
                    scan.prefix.as_bytes(),
                    scan_after.as_deref(),
                    scan.limit,
                    consistency,
                )
                .await?;
            Ok(Printed::ok(if json {
                json_line(&ScanOutput::from_page(&page))
            } else {
                scan_table(&page)
            }))
        }
        Command::Status => {
            let status = client.status().await?;
            Ok(Printed::ok(if json {
                json_line(&status)
            } else {
                status_table(&status)
            }))
        }
        Command::Cluster(ClusterCommand::Info) => {
            let info = client.cluster_info().await?;
            Ok(Printed::ok(if json {
                json_line(&info)
            } else {
                cluster_table(&info)
            }))
        }
        Command::Health => {
            let health = client.health().await?;
            Ok(Printed {
                stdout: if json {
                    json_line(&health)
                } else {
                    health_table(&health)
                }
                .into_bytes(),
                exit_code: if health.serving {
                    exit::OK
                } else {
                    exit::UNAVAILABLE
                },
            })
        }
        Command::Shards => {
            let info = client.cluster_info().await?;
            Ok(Printed::ok(if json {
                json_line(&info.shards)
            } else {
                shards_table(&info)
            }))
        }
        Command::Node(command) => {
            let (node, action) = match command {
                NodeCommand::Drain { node } => (node, NodeAction::Drain),
                NodeCommand::Remove { node } => (node, NodeAction::Remove),
            };
            client.node_action(NodeId(node), action).await?;
            Ok(Printed::ok(if json {
                json_line(&NodeActionOutput { node, action })
            } else {
                match action {
                    NodeAction::Drain => format!(
                        "node {node} is draining; its replicas move to other nodes one shard at a time (watch `dbctl cluster info`)\n"
                    ),
                    NodeAction::Remove => format!(
                        "node {node} is removed; its replicas are re-created on other nodes\n"
                    ),
                }
            }))
        }
        Command::Shard(ShardCommand::TransferLeader { shard, node }) => {
            client.transfer_leader(ShardId(shard), NodeId(node)).await?;
            Ok(Printed::ok(if json {
                json_line(&TransferOutput {
                    shard,
                    leader: node,
                })
            } else {
                format!("shard {shard} is now led by node {node}\n")
            }))
        }
        Command::Shard(ShardCommand::Checksums) => {
            let checksums = client.shard_checksums().await?;
            let node_id = client.node_id().0;
            Ok(Printed::ok(if json {
                json_line(&ChecksumsOutput {
                    node_id,
                    shards: checksums,
                })
            } else {
                checksums_table(&checksums)
            }))
        }
        Command::Debug(DebugCommand::KillShard { shard }) => {
            client.kill_shard_replica(ShardId(shard)).await?;
            let node_id = client.node_id();
            Ok(Printed::ok(if json {
                json_line(&KillShardOutput {
                    shard,
                    node_id: node_id.0,
                    killed: true,
                })
            } else {
                format!(
                    "killed the replica of shard {shard} on node {node_id}; its supervisor restarts it\n"
                )
            }))
        }
        Command::Debug(DebugCommand::KillActor { actor, shard }) => {
            let target = match (actor, shard) {
                (ActorKind::Shard, Some(shard)) => ActorTarget::ShardReplica {
                    shard: ShardId(shard),
                },
                (ActorKind::Shard, None) => {
                    return Err(AdminClientError::Server {
                        code: "invalid_input".into(),
                        message: "kill-actor shard needs --shard".into(),
                    })
                }
                (ActorKind::Membership, _) => ActorTarget::Membership,
                (ActorKind::Transport, _) => ActorTarget::Transport,
            };
            client.kill_actor(target).await?;
            let node_id = client.node_id().0;
            Ok(Printed::ok(if json {
                json_line(&serde_json::json!({ "node_id": node_id, "killed": target }))
            } else {
                format!("killed {target:?} on node {node_id}; it is started again\n")
            }))
        }
        Command::Debug(DebugCommand::CutLinks { to, from }) => {
            let to: Vec<NodeId> = to.into_iter().map(NodeId).collect();
            let from: Vec<NodeId> = from.into_iter().map(NodeId).collect();
            client.set_network_faults(&to, &from).await?;
            let node_id = client.node_id().0;
            Ok(Printed::ok(if json {
                json_line(&serde_json::json!({
                    "node_id": node_id,
                    "drop_to": to.iter().map(|node| node.0).collect::<Vec<_>>(),
                    "drop_from": from.iter().map(|node| node.0).collect::<Vec<_>>(),
                }))
            } else if to.is_empty() && from.is_empty() {
                format!("node {node_id}: every link healed\n")
            } else {
                format!("node {node_id}: dropping traffic to {to:?} and from {from:?}\n")
            }))
        }
    }
}

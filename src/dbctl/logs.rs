//! `dbctl logs`: a node's recent log lines over the admin protocol, from the node
//! dbctl is connected to or, with `--node N`, from node N, reached directly at the
//! admin address the cluster view gives for it (with the same token). `--follow`
//! asks for newer lines every half second until interrupted, and says when lines
//! were written faster than it could read them.

use super::cli::LogsArgs;
use super::output::json_line;
use super::Printed;
use crate::admin::client::{AdminClient, AdminClientError, AdminClientOptions};
use crate::logs::{LogLine, LINES_PER_REQUEST_MAX};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// How often `--follow` asks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// `-o json` without `--follow`: one object with every line.
#[derive(Serialize)]
struct LogsOutput<'a> {
    node_id: u64,
    lines: &'a [LogLine],
}

/// `-o json --follow`: one object per line.
#[derive(Serialize)]
struct FollowedLine<'a> {
    node_id: u64,
    sequence: u64,
    text: &'a str,
}

pub(super) async fn show(
    client: AdminClient,
    options: &AdminClientOptions,
    args: &LogsArgs,
    json: bool,
    stdout: &mut dyn Write,
) -> Result<Printed, AdminClientError> {
    let mut client = match args.node {
        Some(node) if node != client.node_id().0 => connect_to_node(client, options, node).await?,
        _ => client,
    };
    let node_id = client.node_id().0;
    let page = client.logs(None, args.lines).await?;
    if !args.follow {
        return Ok(Printed::ok(if json {
            json_line(&LogsOutput {
                node_id,
                lines: &page.lines,
            })
        } else {
            text(&page.lines)
        }));
    }
    let render = |lines: &[LogLine]| -> String {
        if json {
            lines
                .iter()
                .map(|line| {
                    json_line(&FollowedLine {
                        node_id,
                        sequence: line.sequence,
                        text: &line.text,
                    })
                })
                .collect()
        } else {
            text(lines)
        }
    };
    let mut last = page.last;
    let mut out = render(&page.lines);
    loop {
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`| head`): done.
            return Ok(Printed::ok(Vec::new()));
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let page = client.logs(Some(last), LINES_PER_REQUEST_MAX).await?;
        out = String::new();
        if page.missed > 0 && !json {
            out.push_str(&format!(
                "-- {} lines were written faster than they could be read and are not shown --\n",
                page.missed
            ));
        }
        out.push_str(&render(&page.lines));
        last = page.last;
    }
}

/// A session with node `node`, found in the cluster view of the current one.
async fn connect_to_node(
    mut client: AdminClient,
    options: &AdminClientOptions,
    node: u64,
) -> Result<AdminClient, AdminClientError> {
    let info = client.cluster_info().await?;
    let address = info
        .nodes
        .iter()
        .find(|candidate| candidate.id.0 == node)
        .map(|candidate| candidate.admin.clone())
        .ok_or_else(|| AdminClientError::Server {
            code: "not_found".into(),
            message: format!(
                "node {node} is not in the cluster view of node {}",
                client.node_id()
            ),
        })?;
    let remote = AdminClient::connect_with(std::slice::from_ref(&address), options).await?;
    if remote.node_id().0 != node {
        return Err(AdminClientError::Server {
            code: "unavailable".into(),
            message: format!(
                "{address}, node {node}'s admin address, is served by node {}",
                remote.node_id()
            ),
        });
    }
    Ok(remote)
}

/// Lines as text, one per line.
fn text(lines: &[LogLine]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.text);
        out.push('\n');
    }
    out
}

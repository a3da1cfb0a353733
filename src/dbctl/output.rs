//! How dbctl prints results: raw values and aligned tables for people (`-o table`),
//! tab-separated tables for pipes (`-o tsv`), one stable JSON object per command
//! for scripts (`-o json`).
//!
//! Who talks to it: [`super::run`] builds these outputs from admin client results.
//!
//! The JSON shapes are a public contract (scripts and the chaos runner parse them);
//! add fields, never rename or remove them:
//! - put: `{"key":"user:1","revision":5}`
//! - get: `{"key":"user:1","value":"…","value_encoding":"utf8","revision":5}`
//! - del: `{"key":"user:1","revision":6}` (the revision of the delete)
//! - scan: `{"items":[{"key":…,"key_encoding":…,"value":…,"value_encoding":…,
//!   "revision":N}],"next":null,"next_encoding":null}`
//! - status, health, cluster info: the kernel's `NodeStatus`, `Health` and
//!   `ClusterInfo` with their field names
//! - debug kill-shard: `{"shard":3,"node_id":1,"killed":true}`
//! - any error: `{"error":{"code":"not_found","message":"…"}}`
//!
//! Byte strings that are valid UTF-8 are printed as they are with encoding `"utf8"`;
//! anything else is standard base64 with encoding `"base64"`.

use base64::Engine;
use mimori_actors::kv::{ClusterInfo, Health, NodeStatus, ScanPage, ShardChecksum};
use mimori_actors::metadata::NodeAction;
use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};

/// A value longer than this is cut in scan tables (JSON is never cut).
pub const TABLE_VALUE_CHARS_MAX: usize = 60;

/// A byte string made printable for JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBytes {
    pub text: String,
    /// `"utf8"` or `"base64"`.
    pub encoding: &'static str,
}

/// Encodes bytes for JSON: as they are when UTF-8, base64 otherwise.
pub fn encode_bytes(bytes: &[u8]) -> EncodedBytes {
    match std::str::from_utf8(bytes) {
        Ok(text) => EncodedBytes {
            text: text.to_string(),
            encoding: "utf8",
        },
        Err(_) => EncodedBytes {
            text: base64::engine::general_purpose::STANDARD.encode(bytes),
            encoding: "base64",
        },
    }
}

/// Makes bytes readable on one line of a table: UTF-8 with control characters
/// escaped; other bytes as `\xNN`.
pub fn display_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text
            .chars()
            .map(|character| {
                if character.is_control() {
                    character.escape_default().to_string()
                } else {
                    character.to_string()
                }
            })
            .collect(),
        Err(_) => bytes
            .iter()
            .map(|byte| std::ascii::escape_default(*byte).to_string())
            .collect(),
    }
}

/// Cuts `text` to `chars_max` characters, marking the cut.
fn shorten(text: String, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text;
    }
    let mut short: String = text.chars().take(chars_max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// `put` in JSON.
#[derive(Debug, Serialize)]
pub struct PutOutput {
    pub key: String,
    pub revision: u64,
}

/// `get` in JSON.
#[derive(Debug, Serialize)]
pub struct GetOutput {
    pub key: String,
    pub value: String,
    pub value_encoding: &'static str,
    pub revision: u64,
}

/// `del` in JSON.
#[derive(Debug, Serialize)]
pub struct DeleteOutput {
    pub key: String,
    pub revision: u64,
}

/// One key of `scan` in JSON.
#[derive(Debug, Serialize)]
pub struct ScanItemOutput {
    pub key: String,
    pub key_encoding: &'static str,
    pub value: String,
    pub value_encoding: &'static str,
    pub revision: u64,
}

/// `scan` in JSON.
#[derive(Debug, Serialize)]
pub struct ScanOutput {
    pub items: Vec<ScanItemOutput>,
    /// Pass as `--after` (or `--after-base64`) to continue; null on the last page.
    pub next: Option<String>,
    pub next_encoding: Option<&'static str>,
}

impl ScanOutput {
    /// Converts a scan page.
    pub fn from_page(page: &ScanPage) -> ScanOutput {
        let items = page
            .items
            .iter()
            .map(|item| {
                let key = encode_bytes(&item.key);
                let value = encode_bytes(&item.value);
                ScanItemOutput {
                    key: key.text,
                    key_encoding: key.encoding,
                    value: value.text,
                    value_encoding: value.encoding,
                    revision: item.revision.0,
                }
            })
            .collect();
        let next = page.next.as_deref().map(encode_bytes);
        ScanOutput {
            items,
            next_encoding: next.as_ref().map(|next| next.encoding),
            next: next.map(|next| next.text),
        }
    }
}

/// `debug kill-shard` in JSON.
#[derive(Debug, Serialize)]
pub struct KillShardOutput {
    pub shard: u32,
    pub node_id: u64,
    pub killed: bool,
}

/// An error in JSON: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Serialize)]
pub struct ErrorOutput {
    pub error: ErrorBody,
}

/// The body of [`ErrorOutput`].
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Serializes one JSON output line. The output types above cannot fail to
/// serialize; should one ever, an error object is printed instead of nothing.
pub fn json_line<T: Serialize>(value: &T) -> String {
    match serde_json::to_string(value) {
        Ok(mut line) => {
            line.push('\n');
            line
        }
        Err(error) => format!(
            "{{\"error\":{{\"code\":\"internal\",\"message\":{}}}}}\n",
            serde_json::Value::String(error.to_string())
        ),
    }
}

/// `shards` (and the shard part of `cluster info`) as a table.
pub fn shards_table(info: &ClusterInfo) -> String {
    let list = |nodes: &[mimori_actors::ids::NodeId]| {
        nodes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let rows: Vec<Vec<String>> = info
        .shards
        .iter()
        .map(|shard| {
            vec![
                shard.id.to_string(),
                shard
                    .leader
                    .map(|leader| leader.to_string())
                    .unwrap_or_else(|| "-".into()),
                list(&shard.replicas),
                shard.epoch.to_string(),
                shard
                    .lag_entries
                    .map(|lag| lag.to_string())
                    .unwrap_or_else(|| "-".into()),
                shard.applied_index.to_string(),
                list(&shard.learners),
            ]
        })
        .collect();
    render_table(
        &[
            "SHARD",
            "LEADER",
            "REPLICAS",
            "EPOCH",
            "LAG",
            "APPLIED_INDEX",
            "CATCHING_UP",
        ],
        &rows,
    )
}

/// `node drain` and `node remove` in JSON.
#[derive(Serialize)]
pub struct NodeActionOutput {
    pub node: u64,
    pub action: NodeAction,
}

/// `shard transfer-leader` in JSON.
#[derive(Serialize)]
pub struct TransferOutput {
    pub shard: u32,
    pub leader: u64,
}

/// `shard checksums` in JSON.
#[derive(Serialize)]
pub struct ChecksumsOutput {
    pub node_id: u64,
    pub shards: Vec<ShardChecksum>,
}

/// How tables are rendered in this process: chosen once by `dbctl::run` from the
/// output format and the terminal, read by every table renderer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableStyle {
    /// Aligned columns.
    Plain,
    /// Aligned columns with bold headers (a terminal, `NO_COLOR` unset).
    Bold,
    /// Tab-separated values with a header line.
    Tsv,
}

static TABLE_STYLE: AtomicU8 = AtomicU8::new(0);

/// Sets how tables render from now on.
pub fn set_table_style(style: TableStyle) {
    let code = match style {
        TableStyle::Plain => 0,
        TableStyle::Bold => 1,
        TableStyle::Tsv => 2,
    };
    TABLE_STYLE.store(code, Ordering::Relaxed);
}

/// How tables render now.
pub fn table_style() -> TableStyle {
    match TABLE_STYLE.load(Ordering::Relaxed) {
        1 => TableStyle::Bold,
        2 => TableStyle::Tsv,
        _ => TableStyle::Plain,
    }
}

/// Whether colors may be used on a stream: it is a terminal and `NO_COLOR` is
/// unset or empty (<https://no-color.org>).
pub fn colors_allowed(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// A tsv cell: backslash, tab, newline and carriage return escaped.
pub fn tsv_cell(text: &str) -> String {
    let mut cell = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\\' => cell.push_str("\\\\"),
            '\t' => cell.push_str("\\t"),
            '\n' => cell.push_str("\\n"),
            '\r' => cell.push_str("\\r"),
            other => cell.push(other),
        }
    }
    cell
}

/// Renders rows under headers in the current [`TableStyle`].
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    render_table_as(table_style(), headers, rows)
}

/// Renders rows under headers: left-aligned columns separated by two spaces, or
/// tab-separated lines.
pub fn render_table_as(style: TableStyle, headers: &[&str], rows: &[Vec<String>]) -> String {
    if style == TableStyle::Tsv {
        let mut text = String::new();
        let header: Vec<String> = headers.iter().map(|header| tsv_cell(header)).collect();
        text.push_str(&header.join("\t"));
        text.push('\n');
        for row in rows {
            let cells: Vec<String> = row.iter().map(|cell| tsv_cell(cell)).collect();
            text.push_str(&cells.join("\t"));
            text.push('\n');
        }
        return text;
    }
    let bold = style == TableStyle::Bold;
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(column) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let last = column + 1 == row.len();
            line.push_str(cell);
            if !last {
                let width = widths.get(column).copied().unwrap_or(0);
                let padding = width.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        let line = line.trim_end();
        if bold && std::ptr::eq(row, &header_cells) {
            text.push_str("\x1b[1m");
            text.push_str(line);
            text.push_str("\x1b[0m");
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    text
}

/// Renders `key: value` lines with the values aligned (`key<TAB>value` in tsv).
pub fn render_fields(fields: &[(&str, String)]) -> String {
    if table_style() == TableStyle::Tsv {
        return fields
            .iter()
            .map(|(name, value)| format!("{}\t{}\n", tsv_cell(name), tsv_cell(value)))
            .collect();
    }
    let width = fields
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    fields
        .iter()
        .map(|(name, value)| {
            let padding = width - name.chars().count();
            format!("{name}:{} {value}\n", " ".repeat(padding))
        })
        .collect()
}

/// `scan` as a table; the continuation key, if any, on a last line.
pub fn scan_table(page: &ScanPage) -> String {
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|item| {
            vec![
                display_bytes(&item.key),
                item.revision.0.to_string(),
                shorten(display_bytes(&item.value), TABLE_VALUE_CHARS_MAX),
            ]
        })
        .collect();
    let mut text = render_table(&["KEY", "REVISION", "VALUE"], &rows);
    if let Some(next) = &page.next {
        text.push_str(&format!(
            "next: {} (continue with --after)\n",
            display_bytes(next)
        ));
    }
    text
}

/// `status` as aligned fields.
pub fn status_table(status: &NodeStatus) -> String {
    render_fields(&[
        ("node_id", status.node_id.to_string()),
        ("cluster_id", status.cluster_id.clone()),
        ("version", status.version.clone()),
        ("uptime_seconds", status.uptime_seconds.to_string()),
        ("shard_count", status.shard_count.to_string()),
        ("shards_hosted", status.shards_hosted.to_string()),
        ("shards_serving", status.shards_serving.to_string()),
        ("shards_leading", status.shards_leading.to_string()),
        (
            "shard_restarts_total",
            status.shard_restarts_total.to_string(),
        ),
        (
            "snapshots_sent_total",
            status.snapshots_sent_total.to_string(),
        ),
        (
            "snapshots_installed_total",
            status.snapshots_installed_total.to_string(),
        ),
        ("wal_segments", status.wal.segments.to_string()),
        ("wal_bytes", status.wal.bytes.to_string()),
        ("wal_fsyncs_total", status.wal.fsyncs_total.to_string()),
        ("wal_records_total", status.wal.records_total.to_string()),
        ("wal_entries_total", status.wal.entries_total.to_string()),
        (
            "wal_segments_deleted_total",
            status.wal.segments_deleted_total.to_string(),
        ),
        (
            "wal_checkpoints_total",
            status.wal.checkpoints_total.to_string(),
        ),
        ("peers", status.transport.peers.to_string()),
        (
            "peers_reachable",
            status.transport.peers_reachable.to_string(),
        ),
        (
            "frames_sent_total",
            status.transport.frames_sent_total.to_string(),
        ),
        (
            "frames_received_total",
            status.transport.frames_received_total.to_string(),
        ),
        (
            "frames_rejected_total",
            status.transport.frames_rejected_total.to_string(),
        ),
        (
            "items_dropped_total",
            status.transport.items_dropped_total.to_string(),
        ),
        ("forwarded_total", status.transport.calls_total.to_string()),
        ("gossip_incarnation", status.gossip.incarnation.to_string()),
        (
            "gossip_members_alive",
            status.gossip.members_alive.to_string(),
        ),
        (
            "gossip_members_suspect",
            status.gossip.members_suspect.to_string(),
        ),
        (
            "gossip_members_down",
            status.gossip.members_down.to_string(),
        ),
        (
            "gossip_packets_sent_total",
            status.gossip.packets_sent_total.to_string(),
        ),
        (
            "gossip_packets_received_total",
            status.gossip.packets_received_total.to_string(),
        ),
        (
            "gossip_packets_rejected_total",
            status.gossip.packets_rejected_total.to_string(),
        ),
        (
            "gossip_packets_invalid_total",
            status.gossip.packets_invalid_total.to_string(),
        ),
    ])
}

/// `shard checksums` as a table.
pub fn checksums_table(checksums: &[ShardChecksum]) -> String {
    let rows: Vec<Vec<String>> = checksums
        .iter()
        .map(|checksum| {
            vec![
                checksum.shard.to_string(),
                checksum.applied_index.to_string(),
                format!("{:016x}", checksum.checksum),
                checksum
                    .leader
                    .map(|leader| leader.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render_table(&["SHARD", "APPLIED_INDEX", "CHECKSUM", "LEADER"], &rows)
}

/// `health` as aligned fields.
pub fn health_table(health: &Health) -> String {
    render_fields(&[
        (
            "serving",
            if health.serving { "yes" } else { "no" }.to_string(),
        ),
        ("node_id", health.node_id.to_string()),
        ("shards_total", health.shards_total.to_string()),
        ("shards_hosted", health.shards_hosted.to_string()),
        (
            "shards_without_leader",
            health.shards_without_leader.to_string(),
        ),
        (
            "leaderless_shards",
            if health.leaderless_shards.is_empty() {
                "none".to_string()
            } else {
                let ids: Vec<String> = health
                    .leaderless_shards
                    .iter()
                    .map(u32::to_string)
                    .collect();
                ids.join(",")
            },
        ),
    ])
}

/// `cluster info` as fields, a node table and a shard table.
pub fn cluster_table(info: &ClusterInfo) -> String {
    let mut text = render_fields(&[
        ("cluster_id", info.cluster_id.clone()),
        ("shard_count", info.shard_count.to_string()),
        ("replication_factor", info.replication_factor.to_string()),
        ("nodes", info.nodes.len().to_string()),
        (
            "metadata_group",
            info.metadata_group
                .as_ref()
                .map(|group| {
                    format!(
                        "replicas {}, leader {}, epoch {}",
                        group
                            .replicas
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        group
                            .leader
                            .map(|leader| leader.to_string())
                            .unwrap_or_else(|| "-".into()),
                        group.epoch
                    )
                })
                .unwrap_or_else(|| "-".into()),
        ),
    ]);
    text.push('\n');
    let node_rows: Vec<Vec<String>> = info
        .nodes
        .iter()
        .map(|node| {
            vec![
                node.id.to_string(),
                node.state.clone(),
                node.gossip_state.clone(),
                node.incarnation.to_string(),
                node.uptime_seconds
                    .map(|seconds| format!("{seconds}s"))
                    .unwrap_or_else(|| "-".into()),
                node.http.clone(),
                node.admin.clone(),
                node.cluster.clone(),
                node.gossip.clone(),
                node.replicas.to_string(),
                node.leaders.to_string(),
                if node.reachable { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    text.push_str(&render_table(
        &[
            "NODE",
            "STATE",
            "GOSSIP_STATE",
            "INCARNATION",
            "UPTIME",
            "HTTP",
            "ADMIN",
            "CLUSTER",
            "GOSSIP",
            "REPLICAS",
            "LEADERS",
            "REACHABLE",
        ],
        &node_rows,
    ));
    text.push('\n');
    text.push_str(&shards_table(info));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimori_actors::ids::Revision;
    use mimori_actors::kv::ScanItem;

    /// Proves UTF-8 stays readable and anything else becomes base64, with the
    /// encoding named.
    #[test]
    fn bytes_are_encoded_by_validity() {
        assert_eq!(
            encode_bytes("{\"name\": \"jerk\"}".as_bytes()),
            EncodedBytes {
                text: "{\"name\": \"jerk\"}".into(),
                encoding: "utf8"
            }
        );
        assert_eq!(
            encode_bytes(&[0xff, 0x00]),
            EncodedBytes {
                text: "/wA=".into(),
                encoding: "base64"
            }
        );
        assert_eq!(display_bytes(b"a\nb"), "a\\nb");
        assert_eq!(display_bytes(&[b'a', 0xff]), "a\\xff");
    }

    /// Proves the scan JSON has the documented field names and encodings.
    #[test]
    fn scan_json_shape() {
        let page = ScanPage {
            items: vec![ScanItem {
                key: vec![0xfe],
                value: bytes::Bytes::from_static(b"v"),
                revision: Revision(3),
            }],
            next: Some(b"k".to_vec()),
        };
        let line = json_line(&ScanOutput::from_page(&page));
        assert_eq!(
            line,
            "{\"items\":[{\"key\":\"/g==\",\"key_encoding\":\"base64\",\"value\":\"v\",\"value_encoding\":\"utf8\",\"revision\":3}],\"next\":\"k\",\"next_encoding\":\"utf8\"}\n"
        );
    }

    /// Proves tables align columns and cut long values.
    #[test]
    fn tables_align_columns() {
        let table = render_table(
            &["KEY", "REVISION"],
            &[vec!["a-long-key".into(), "1".into()]],
        );
        assert_eq!(table, "KEY         REVISION\na-long-key  1\n");
        let cut = shorten("x".repeat(100), 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
    }
}

//! Node configuration: every setting with its default, and the layering
//! defaults < TOML file (`--config`) < `MIMORI_*` environment < command-line flags.
//!
//! One struct of optional fields ([`ConfigLayer`]) is read from each source; the
//! layers are merged in order onto [`Config::default`]. The environment is read by
//! turning `MIMORI_FIELD_NAME=value` into the TOML `field_name = value`, so the TOML
//! file, the environment and the flags accept exactly the same names and types.

use crate::logs::LogFormat;
use mimori_actors::ids::NodeId;
use mimori_actors::kv::{Limits, NodeAddresses};
use mimori_actors::membership::actor::GossipTiming;
use mimori_actors::node::NodeOptions;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a node needs to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// This node's id; never reused within a cluster. Non-zero.
    pub node_id: u64,
    /// Where the WAL, the state machine and the identity file live.
    pub data_dir: PathBuf,
    /// HTTP/JSON gateway listen address.
    pub http: SocketAddr,
    /// Admin TCP protocol listen address (dbctl).
    pub admin: SocketAddr,
    /// Node-to-node traffic listen address.
    pub cluster: SocketAddr,
    /// Gossip (SWIM) UDP address.
    pub gossip: SocketAddr,
    /// Gossip addresses of existing nodes to join (used only by a node that has
    /// not joined a cluster yet).
    pub join: Vec<String>,
    /// How long joining may take before the node gives up.
    pub join_timeout_ms: u64,
    /// Shards of a new cluster (fixed at bootstrap).
    pub shard_count: u32,
    /// Replicas of every shard in a new cluster (fixed at bootstrap).
    pub replication_factor: u32,
    /// The secret every node's cluster connections present; nodes with another
    /// secret cannot connect. Unset: a built-in development secret.
    pub cluster_secret: Option<String>,
    /// When set, admin clients must present this token.
    pub admin_token: Option<String>,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub scan_limit_max: u32,
    /// How long a request may wait for its shard.
    pub request_timeout_ms: u32,
    /// HTTP requests served at once; more get 503.
    pub http_requests_in_flight_max: u32,
    /// Admin connections served at once.
    pub admin_connections_max: u32,
    /// sled page cache.
    pub sled_cache_bytes: u64,
    /// WAL segment size before rollover.
    pub wal_segment_bytes: u64,
    /// Under load, the WAL's longest wait before a sync, in microseconds.
    pub wal_gather_us: u64,
    /// Checkpoint when a shard applied this many entries since its last compaction.
    pub compact_after_entries: u64,
    /// Checkpoint at least this often when anything was written.
    pub checkpoint_interval_ms: u64,
    /// Raft tick.
    pub tick_interval_ms: u64,
    /// Ticks without hearing from a leader before a follower campaigns (randomized
    /// up to twice as many).
    pub election_ticks: u64,
    /// How often gossip probes a random member.
    pub gossip_probe_interval_ms: u64,
    /// How long a gossip probe waits for a direct answer before asking others.
    pub gossip_probe_timeout_ms: u64,
    /// How long a suspected member has to refute before it is declared down.
    pub gossip_suspect_timeout_ms: u64,
    /// How long gossip must see a node down before its replicas are re-created
    /// on other nodes.
    pub dead_after_ms: u64,
    /// Most shards being moved at once by the rebalancer.
    pub rebalance_moves_max: u32,
    /// Serve the admin requests that kill actors and cut links between nodes
    /// (tests and the chaos runner). Never turn this on in production.
    pub fault_injection: bool,
    /// Log filter (`info`, `debug`, `mimori_actors=debug,info`, ...).
    pub log: String,
    /// How log lines are written to stderr: `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        let kernel = NodeOptions::new(NodeId(1), PathBuf::from("mimori-data"));
        Config {
            node_id: 1,
            data_dir: PathBuf::from("mimori-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 7070)),
            admin: SocketAddr::from(([127, 0, 0, 1], 7071)),
            cluster: SocketAddr::from(([127, 0, 0, 1], 7072)),
            gossip: SocketAddr::from(([127, 0, 0, 1], 7073)),
            join: Vec::new(),
            join_timeout_ms: kernel.join_timeout_ms,
            shard_count: kernel.shard_count,
            replication_factor: kernel.replication_factor,
            cluster_secret: None,
            admin_token: None,
            key_bytes_max: limits.key_bytes_max,
            value_bytes_max: limits.value_bytes_max,
            scan_limit_max: limits.scan_limit_max,
            request_timeout_ms: kernel.request_timeout_ms,
            http_requests_in_flight_max: 4_096,
            admin_connections_max: 256,
            sled_cache_bytes: kernel.sled_cache_bytes,
            wal_segment_bytes: kernel.wal_segment_bytes,
            wal_gather_us: kernel.wal_gather_us,
            compact_after_entries: kernel.compact_after_entries,
            checkpoint_interval_ms: kernel.checkpoint_interval_ms,
            tick_interval_ms: kernel.tick_interval_ms,
            election_ticks: kernel.election_ticks,
            gossip_probe_interval_ms: kernel.gossip.probe_interval.as_millis() as u64,
            gossip_probe_timeout_ms: kernel.gossip.probe_timeout.as_millis() as u64,
            gossip_suspect_timeout_ms: kernel.gossip.suspect_timeout.as_millis() as u64,
            dead_after_ms: kernel.rebalance.dead_after.as_millis() as u64,
            rebalance_moves_max: kernel.rebalance.moves_max as u32,
            fault_injection: false,
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// One source's settings; `None` leaves the value of earlier layers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub node_id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub cluster: Option<SocketAddr>,
    pub gossip: Option<SocketAddr>,
    pub join: Option<Vec<String>>,
    pub join_timeout_ms: Option<u64>,
    pub shard_count: Option<u32>,
    pub replication_factor: Option<u32>,
    pub cluster_secret: Option<String>,
    pub admin_token: Option<String>,
    pub key_bytes_max: Option<u32>,
    pub value_bytes_max: Option<u32>,
    pub scan_limit_max: Option<u32>,
    pub request_timeout_ms: Option<u32>,
    pub http_requests_in_flight_max: Option<u32>,
    pub admin_connections_max: Option<u32>,
    pub sled_cache_bytes: Option<u64>,
    pub wal_segment_bytes: Option<u64>,
    pub wal_gather_us: Option<u64>,
    pub compact_after_entries: Option<u64>,
    pub checkpoint_interval_ms: Option<u64>,
    pub tick_interval_ms: Option<u64>,
    pub election_ticks: Option<u64>,
    pub gossip_probe_interval_ms: Option<u64>,
    pub gossip_probe_timeout_ms: Option<u64>,
    pub gossip_suspect_timeout_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
    pub rebalance_moves_max: Option<u32>,
    pub fault_injection: Option<bool>,
    pub log: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// A configuration that cannot be used, with the source and field to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {variable}: {message}")]
    Environment { variable: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Longest WAL gather wait a configuration may set.
const WAL_GATHER_US_MAX: u64 = 10_000;

/// Prefix of the environment variables read.
pub const ENVIRONMENT_PREFIX: &str = "MIMORI_";

impl ConfigLayer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::File {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    /// Reads `MIMORI_*` variables (except `MIMORI_CONFIG`, which names the file,
    /// `MIMORI_ENDPOINTS`/`MIMORI_TOKEN`, which belong to dbctl, and the
    /// `MIMORI_SIM_*`, `MIMORI_CHAOS_*` and `MIMORI_TEST_*` knobs of the tests, which
    /// a node started by a test inherits).
    pub fn from_environment(
        variables: impl Iterator<Item = (String, String)>,
    ) -> Result<ConfigLayer, ConfigError> {
        let mut table = toml::Table::new();
        let mut names = Vec::new();
        for (variable, value) in variables {
            let Some(name) = variable.strip_prefix(ENVIRONMENT_PREFIX) else {
                continue;
            };
            let test_knob = ["SIM_", "CHAOS_", "TEST_"]
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if matches!(name, "CONFIG" | "ENDPOINTS" | "TOKEN") || test_knob {
                continue;
            }
            let field = name.to_ascii_lowercase();
            let parsed = if field == "join" {
                toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|part| !part.is_empty())
                        .map(|part| toml::Value::String(part.to_string()))
                        .collect(),
                )
            } else if field == "fault_injection" {
                match value.as_str() {
                    "true" | "1" => toml::Value::Boolean(true),
                    "false" | "0" => toml::Value::Boolean(false),
                    // Left as a string so the error names the setting and its type.
                    _ => toml::Value::String(value),
                }
            } else if is_numeric_field(&field) {
                match value.parse::<i64>() {
                    Ok(number) => toml::Value::Integer(number),
                    // Left as a string so the error names the setting and its type.
                    Err(_) => toml::Value::String(value),
                }
            } else {
                toml::Value::String(value)
            };
            table.insert(field.clone(), parsed);
            names.push((field, variable));
        }
        ConfigLayer::deserialize(toml::Value::Table(table)).map_err(|error| {
            let message = error.to_string();
            let variable = names
                .iter()
                .find(|(field, _)| message.contains(field.as_str()))
                .map(|(_, variable)| variable.clone())
                .unwrap_or_else(|| format!("{ENVIRONMENT_PREFIX}*"));
            ConfigError::Environment { variable, message }
        })
    }
}

/// Whether a setting holds a number (so `MIMORI_NODE_ID=3` is read as one, while
/// `MIMORI_ADMIN_TOKEN=12345` stays a string).
fn is_numeric_field(field: &str) -> bool {
    [
        "_id", "_count", "_max", "_ms", "_us", "_bytes", "_entries", "_factor", "_ticks",
    ]
    .iter()
    .any(|suffix| field.ends_with(suffix))
}

macro_rules! merge_fields {
    ($config:expr, $layer:expr, $($field:ident),+ $(,)?) => {
        $(if let Some(value) = $layer.$field { $config.$field = value; })+
    };
}

impl Config {
    /// Applies `layer` on top of this configuration.
    pub fn merge(&mut self, layer: ConfigLayer) {
        merge_fields!(
            self,
            layer,
            node_id,
            data_dir,
            http,
            admin,
            cluster,
            gossip,
            join,
            join_timeout_ms,
            shard_count,
            replication_factor,
            key_bytes_max,
            value_bytes_max,
            scan_limit_max,
            request_timeout_ms,
            http_requests_in_flight_max,
            admin_connections_max,
            sled_cache_bytes,
            wal_segment_bytes,
            wal_gather_us,
            compact_after_entries,
            checkpoint_interval_ms,
            tick_interval_ms,
            election_ticks,
            gossip_probe_interval_ms,
            gossip_probe_timeout_ms,
            gossip_suspect_timeout_ms,
            dead_after_ms,
            rebalance_moves_max,
            fault_injection,
            log,
            log_format,
        );
        if layer.admin_token.is_some() {
            self.admin_token = layer.admin_token;
        }
        if layer.cluster_secret.is_some() {
            self.cluster_secret = layer.cluster_secret;
        }
    }

    /// Defaults, then the file, then the environment, then the flags.
    pub fn resolve(
        file: Option<&Path>,
        environment: impl Iterator<Item = (String, String)>,
        flags: ConfigLayer,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            config.merge(ConfigLayer::from_file(path)?);
        }
        config.merge(ConfigLayer::from_environment(environment)?);
        config.merge(flags);
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges so a bad value fails at start with its name, not later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.node_id == 0 {
            return invalid("node_id must be at least 1".into());
        }
        if !(1..=mimori_actors::node::SHARD_COUNT_MAX).contains(&self.shard_count) {
            return invalid(format!(
                "shard_count must be 1..={}, not {}",
                mimori_actors::node::SHARD_COUNT_MAX,
                self.shard_count
            ));
        }
        if !(1..=64 * 1024).contains(&self.key_bytes_max) {
            return invalid("key_bytes_max must be 1..=65536".into());
        }
        // A value travels in one WAL record (at most 32 MiB) and in one frame between
        // nodes, which peers refuse above 16 MiB; 8 MiB leaves room for the envelope
        // and the other items of a frame.
        if !(1..=8 * 1024 * 1024).contains(&self.value_bytes_max) {
            return invalid("value_bytes_max must be 1..=8388608 (8 MiB)".into());
        }
        if self.admin_connections_max == 0 {
            return invalid("admin_connections_max must be at least 1".into());
        }
        if self.scan_limit_max == 0 {
            return invalid("scan_limit_max must be at least 1".into());
        }
        if self.request_timeout_ms < 10 {
            return invalid("request_timeout_ms must be at least 10".into());
        }
        if self.wal_segment_bytes < 1024 * 1024 {
            return invalid("wal_segment_bytes must be at least 1 MiB".into());
        }
        if self.wal_gather_us > WAL_GATHER_US_MAX {
            return invalid(format!(
                "wal_gather_us must be at most {WAL_GATHER_US_MAX} ({} ms)",
                WAL_GATHER_US_MAX / 1000
            ));
        }
        if !(10..=10_000).contains(&self.tick_interval_ms) {
            return invalid("tick_interval_ms must be 10..=10000".into());
        }
        if self.compact_after_entries == 0 {
            return invalid("compact_after_entries must be at least 1".into());
        }
        if !(1..=7).contains(&self.replication_factor) {
            return invalid("replication_factor must be 1..=7".into());
        }
        if !(2..=1_000).contains(&self.election_ticks) {
            return invalid("election_ticks must be 2..=1000".into());
        }
        if !(10..=60_000).contains(&self.gossip_probe_interval_ms) {
            return invalid("gossip_probe_interval_ms must be 10..=60000".into());
        }
        if self.gossip_probe_timeout_ms == 0
            || self.gossip_probe_timeout_ms >= self.gossip_probe_interval_ms
        {
            return invalid(
                "gossip_probe_timeout_ms must be at least 1 and below gossip_probe_interval_ms"
                    .into(),
            );
        }
        if !(10..=600_000).contains(&self.gossip_suspect_timeout_ms) {
            return invalid("gossip_suspect_timeout_ms must be 10..=600000".into());
        }
        if self.dead_after_ms < 1_000 {
            return invalid("dead_after_ms must be at least 1000".into());
        }
        if !(1..=4_096).contains(&self.rebalance_moves_max) {
            return invalid("rebalance_moves_max must be 1..=4096".into());
        }
        if self.join_timeout_ms < 100 {
            return invalid("join_timeout_ms must be at least 100".into());
        }
        if self.cluster_secret.as_deref() == Some("") {
            return invalid(
                "cluster_secret must not be empty (leave it unset for the development secret)"
                    .into(),
            );
        }
        if self.admin_token.as_deref() == Some("") {
            return invalid(
                "admin_token must not be empty (leave it unset to disable auth)".into(),
            );
        }
        Ok(())
    }

    /// The kernel's options.
    pub fn node_options(&self) -> NodeOptions {
        let mut options = NodeOptions::new(NodeId(self.node_id), self.data_dir.clone());
        options.shard_count = self.shard_count;
        options.replication_factor = self.replication_factor;
        options.join = self.join.clone();
        options.join_timeout_ms = self.join_timeout_ms;
        if let Some(secret) = &self.cluster_secret {
            options.cluster_secret = secret.clone();
        }
        options.election_ticks = self.election_ticks;
        options.addresses = NodeAddresses {
            http: self.http.to_string(),
            admin: self.admin.to_string(),
            cluster: self.cluster.to_string(),
            gossip: self.gossip.to_string(),
        };
        options.limits = Limits {
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            scan_limit_max: self.scan_limit_max,
        };
        options.request_timeout_ms = self.request_timeout_ms;
        options.wal_segment_bytes = self.wal_segment_bytes;
        options.wal_gather_us = self.wal_gather_us;
        options.sled_cache_bytes = self.sled_cache_bytes;
        options.compact_after_entries = self.compact_after_entries;
        options.checkpoint_interval_ms = self.checkpoint_interval_ms;
        options.tick_interval_ms = self.tick_interval_ms;
        options.gossip = GossipTiming {
            probe_interval: Duration::from_millis(self.gossip_probe_interval_ms),
            probe_timeout: Duration::from_millis(self.gossip_probe_timeout_ms),
            suspect_timeout: Duration::from_millis(self.gossip_suspect_timeout_ms),
        };
        options.rebalance.dead_after = Duration::from_millis(self.dead_after_ms);
        options.rebalance.moves_max = self.rebalance_moves_max as usize;
        options.fault_injection = self.fault_injection;
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Resolves a configuration from one environment variable alone.
    fn resolve_one(variable: &str, value: &str) -> Result<Config, ConfigError> {
        Config::resolve(
            None,
            environment(&[(variable, value)]),
            ConfigLayer::default(),
        )
    }

    /// Proves the precedence defaults < file < environment < flags, field by field.
    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mimori.toml");
        std::fs::write(
            &file,
            "node_id = 2\nshard_count = 16\nhttp = \"127.0.0.1:9000\"\nlog = \"debug\"\n",
        )
        .unwrap();
        let flags = ConfigLayer {
            node_id: Some(4),
            ..Default::default()
        };
        let config = Config::resolve(
            Some(&file),
            environment(&[
                ("MIMORI_NODE_ID", "3"),
                ("MIMORI_SHARD_COUNT", "32"),
                ("MIMORI_JOIN", "a:1, b:2"),
                ("MIMORI_ENDPOINTS", "ignored"),
                ("MIMORI_CHAOS_SEED", "7"),
                ("MIMORI_TEST_UI_SCREENSHOT", "ignored"),
                ("HOME", "ignored"),
            ]),
            flags,
        )
        .unwrap();
        assert_eq!(config.node_id, 4, "flag wins");
        assert_eq!(config.shard_count, 32, "environment beats file");
        assert_eq!(
            config.http,
            "127.0.0.1:9000".parse().unwrap(),
            "file beats default"
        );
        assert_eq!(config.log, "debug");
        assert_eq!(config.join, ["a:1", "b:2"]);
        assert_eq!(config.admin, Config::default().admin, "default stays");
        let token = Config::resolve(
            None,
            environment(&[("MIMORI_ADMIN_TOKEN", "12345")]),
            ConfigLayer::default(),
        )
        .unwrap();
        assert_eq!(
            token.admin_token.as_deref(),
            Some("12345"),
            "digits stay a string"
        );
    }

    /// Proves `MIMORI_FAULT_INJECTION` reads as a flag (`true`/`1`, `false`/`0`),
    /// is off by default, reaches the kernel options, and that anything else is an
    /// error naming the variable.
    #[test]
    fn fault_injection_is_a_flag() {
        let resolve = |value: &str| resolve_one("MIMORI_FAULT_INJECTION", value);
        assert!(!Config::default().fault_injection);
        for (value, expected) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            let config = resolve(value).unwrap();
            assert_eq!(config.fault_injection, expected, "{value}");
            assert_eq!(config.node_options().fault_injection, expected);
        }
        let error = resolve("yes").unwrap_err().to_string();
        assert!(error.contains("MIMORI_FAULT_INJECTION"), "{error}");
    }

    /// Proves bad input names its source: an unknown file key, a bad env value, a
    /// value out of range.
    #[test]
    fn errors_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "nodeid = 2\n").unwrap();
        let error = Config::resolve(Some(&file), environment(&[]), ConfigLayer::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("bad.toml") && error.contains("nodeid"),
            "{error}"
        );
        let error = resolve_one("MIMORI_HTTP", "not-an-address")
            .unwrap_err()
            .to_string();
        assert!(error.contains("MIMORI_HTTP"), "{error}");
        let error = resolve_one("MIMORI_NODE_ID", "0").unwrap_err().to_string();
        assert!(error.contains("node_id"), "{error}");
    }

    /// Proves `MIMORI_WAL_GATHER_US` reads as a number, reaches the kernel options,
    /// and that a wait above the limit is refused.
    #[test]
    fn wal_gather_is_bounded() {
        let resolve = |value: &str| resolve_one("MIMORI_WAL_GATHER_US", value);
        assert_eq!(Config::default().wal_gather_us, 0, "off by default");
        for value in [0, 250, WAL_GATHER_US_MAX] {
            let config = resolve(&value.to_string()).unwrap();
            assert_eq!(config.node_options().wal_gather_us, value);
        }
        let error = resolve(&(WAL_GATHER_US_MAX + 1).to_string())
            .unwrap_err()
            .to_string();
        assert!(error.contains("wal_gather_us"), "{error}");
    }
}

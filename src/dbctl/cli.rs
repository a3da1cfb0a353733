//! dbctl's command line: global options, subcommands and their help text.
//!
//! Who talks to it: the `dbctl` binary parses with [`parse`]; [`super::run`]
//! executes the parsed [`Cli`]. Parsing never touches the network.
//!
//! Invariant: a usage error exits with `exit::INVALID_INPUT` (4), never clap's
//! default 2, because 2 means "cannot connect" to scripts ([`usage_exit_code`]).

use crate::error_code::exit;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The endpoint used when neither `--endpoints` nor `MIMORI_ENDPOINTS` is given.
pub const ENDPOINT_DEFAULT: &str = "127.0.0.1:7071";

const AFTER_HELP: &str = "\
Examples:
  dbctl put user:1 '{\"name\": \"jerk\"}'
  dbctl get user:1
  dbctl put user:1 '{\"name\": \"jerk\"}' --if-revision 5
  dbctl put lock:a held --if-absent
  dbctl del user:1
  dbctl scan user: --limit 50
  dbctl -o json get user:1
  dbctl --endpoints 10.0.0.1:7071,10.0.0.2:7071 cluster info
  dbctl shard transfer-leader 12 3
  dbctl shard checksums
  dbctl logs --node 2 --follow
  dbctl doc put people ada '{\"name\": \"ada\", \"age\": 36}'
  dbctl collection create people --index age
  dbctl doc query people '{\"age\": {\"$gte\": 18}}' --sort age
  dbctl import people.jsonl people
  MIMORI_TOKEN=secret dbctl status

Output:
  -o table (the default on a terminal) prints `get` values as raw bytes followed by
  a newline and everything else as aligned text, with bold headers and red errors
  unless NO_COLOR is set. -o tsv (the default when stdout is piped) prints tables
  tab-separated with a header line; `get` still prints the raw value. -o json
  prints one JSON object per command on stdout; errors too, as
  {\"error\":{\"code\":..,\"message\":..}}.

Exit codes:
  0 ok                 1 error              2 cannot connect
  3 not found          4 invalid input      5 condition failed
  6 unavailable        7 timeout            8 unauthorized
  9 protocol mismatch";

/// Command-line client for a Mimori cluster, over the admin TCP protocol.
#[derive(Debug, Parser)]
#[command(name = "dbctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Admin endpoints (host:port), comma separated; tried in order.
    #[arg(
        long,
        global = true,
        env = "MIMORI_ENDPOINTS",
        value_delimiter = ',',
        default_value = ENDPOINT_DEFAULT,
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Vec<String>,

    /// Admin token, when the cluster requires one.
    #[arg(long, global = true, env = "MIMORI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Bound on connecting and on each request, in milliseconds.
    #[arg(
        long,
        global = true,
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000),
        value_name = "MS"
    )]
    pub timeout_ms: u64,

    /// Output format [default: table on a terminal, tsv when piped]
    #[arg(short = 'o', long = "output", global = true, value_enum)]
    pub output: Option<OutputFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Raw values for `get`, aligned text otherwise.
    Table,
    /// One JSON object on stdout.
    Json,
    /// Tab-separated: a header line, then one line per row; tabs, newlines and
    /// backslashes in cells escaped as `\t`, `\n`, `\\`.
    Tsv,
}

impl Cli {
    /// The output format: the one asked for, else table on a terminal and tsv when
    /// stdout is piped.
    pub fn output_format(&self, stdout_is_terminal: bool) -> OutputFormat {
        match self.output {
            Some(format) => format,
            None if stdout_is_terminal => OutputFormat::Table,
            None => OutputFormat::Tsv,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a value.
    #[command(after_help = "Example:\n  dbctl put user:1 '{\"name\": \"jerk\"}'")]
    Put(PutArgs),
    /// Read a value; prints exactly the stored bytes and a newline.
    #[command(after_help = "Example:\n  dbctl get user:1\n  dbctl -o json get user:1")]
    Get(GetArgs),
    /// Delete a key.
    #[command(visible_alias = "delete")]
    Del(DeleteArgs),
    /// List keys starting with a prefix, in key order.
    #[command(
        after_help = "Example:\n  dbctl scan user: --limit 10\n  dbctl scan user: --after user:10"
    )]
    Scan(ScanArgs),
    /// The node's counters (WAL, shards, uptime).
    Status,
    /// Cluster-wide views.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Every shard: replicas, leader, placement epoch, replication lag.
    Shards,
    /// Per-shard operations.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Node operations: drain, remove.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Whether the node serves; exits 0 when it does and 6 when it does not.
    Health,
    /// A node's recent log lines (the last 2,000 are kept in memory); `--follow`
    /// keeps printing new ones until interrupted.
    #[command(
        after_help = "Examples:\n  dbctl logs\n  dbctl logs --node 3 --lines 20\n  dbctl logs --node 2 --follow\n  dbctl -o json logs --lines 5   # one JSON object per line"
    )]
    Logs(LogsArgs),
    /// JSON documents: put, get, del, query.
    #[command(subcommand)]
    Doc(DocCommand),
    /// Collections and their secondary indexes.
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Load a JSON-lines file into a collection, one document per line.
    #[command(
        after_help = "Examples:\n  dbctl import people.jsonl people\n  dbctl import people.jsonl people --id-field id --batch 500\n  zcat big.jsonl.gz | dbctl import - people\n\nEach line is a JSON object. Its id is the string (or integer) member named by\n--id-field, removed from nothing (the document is stored as given); a line\nwithout one gets a generated id. Bad lines are reported by line number and\ncounted; the import stops after --errors-max of them."
    )]
    Import(ImportArgs),
    /// Write every document of a collection as JSON lines, in id order.
    #[command(
        after_help = "Examples:\n  dbctl export people > people.jsonl\n  dbctl export people people.jsonl --no-id"
    )]
    Export(ExportArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  dbctl completions bash > /etc/bash_completion.d/dbctl\n  dbctl completions zsh > \"${fpath[1]}/_dbctl\"\n  dbctl completions fish > ~/.config/fish/completions/dbctl.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Fault injection and diagnostics; not for production use.
    #[command(subcommand)]
    Debug(DebugCommand),
}

/// `doc` subcommands.
#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Write a JSON object as a document (`-` reads it from stdin).
    #[command(
        after_help = "Examples:\n  dbctl doc put people ada '{\"name\": \"ada\", \"age\": 36}'\n  dbctl doc put people ada - < ada.json\n  dbctl doc put people ada '{\"age\": 37}' --if-revision 12"
    )]
    Put {
        collection: String,
        id: String,
        /// The document, or `-` for stdin.
        json: String,
        /// Write only if the document's current revision is exactly this.
        #[arg(long, value_name = "N", conflicts_with = "if_absent")]
        if_revision: Option<u64>,
        /// Write only if the document does not exist.
        #[arg(long)]
        if_absent: bool,
    },
    /// Read a document; prints its JSON.
    Get {
        collection: String,
        id: String,
        /// Serve from the local replica without confirming leadership.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a document.
    #[command(visible_alias = "delete")]
    Del {
        collection: String,
        id: String,
        /// Delete only if the document's current revision is exactly this.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Query a collection with a JSON filter (see the HTTP API's query docs).
    #[command(
        after_help = "Examples:\n  dbctl doc query people '{\"age\": {\"$gte\": 18}}' --sort age --desc --limit 10\n  dbctl doc query people '{\"address.city\": \"Oslo\"}' --projection name,age --all\n  dbctl -o json doc query people"
    )]
    Query(QueryArgs),
}

/// Arguments of `doc query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    pub collection: String,
    /// The filter, a JSON object [default: every document]
    pub filter: Option<String>,
    /// Order by this field (dotted path) [default: document id]
    #[arg(long, value_name = "FIELD")]
    pub sort: Option<String>,
    /// Descending order.
    #[arg(long)]
    pub desc: bool,
    /// Documents per page.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only these fields, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...")]
    pub projection: Vec<String>,
    /// Continue after the page that printed this cursor.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Follow cursors and print every matching document (at most 1,000,000).
    #[arg(long)]
    pub all: bool,
    /// Serve from local replicas without confirming leadership.
    #[arg(long)]
    pub stale: bool,
}

/// `collection` subcommands.
#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Declare a collection with secondary indexes (replaces its index list);
    /// existing documents are indexed in the background.
    #[command(
        after_help = "Examples:\n  dbctl collection create people --index age --index address.city\n  dbctl collection list   # STATE goes from building to ready"
    )]
    Create {
        name: String,
        /// A field to index (dotted path); repeat for more.
        #[arg(long = "index", value_name = "FIELD")]
        indexes: Vec<String>,
    },
    /// Every declared collection and the state of its indexes.
    List,
    /// Drop a collection: its definition, documents and index entries.
    Drop { name: String },
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON-lines file, or `-` for stdin.
    pub file: String,
    pub collection: String,
    /// The member holding each document's id.
    #[arg(long, default_value = "_id", value_name = "FIELD")]
    pub id_field: String,
    /// Documents per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Requests in flight at once (each on its own connection).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// Stop after this many bad lines or failed documents.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..))]
    pub errors_max: u64,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    pub collection: String,
    /// Write here instead of stdout.
    pub file: Option<String>,
    /// Leave out the `_id` member that carries each document's id.
    #[arg(long)]
    pub no_id: bool,
    /// Serve from local replicas without confirming leadership.
    #[arg(long)]
    pub stale: bool,
}

/// Arguments of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (UTF-8).
    pub key: String,
    /// The value, stored as the given bytes.
    pub value: String,
    /// Write only if the key's current revision is exactly this.
    #[arg(long, value_name = "N", conflicts_with = "if_absent")]
    pub if_revision: Option<u64>,
    /// Write only if the key does not exist.
    #[arg(long)]
    pub if_absent: bool,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key (UTF-8).
    pub key: String,
    /// Serve from the local replica without confirming leadership; may be stale.
    #[arg(long)]
    pub stale: bool,
}

/// Arguments of `del`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The key (UTF-8).
    pub key: String,
    /// Delete only if the key's current revision is exactly this.
    #[arg(long, value_name = "N")]
    pub if_revision: Option<u64>,
}

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The node whose lines to show (reached at the admin address the cluster
    /// view gives for it) [default: the node dbctl is connected to]
    #[arg(long, value_name = "N")]
    pub node: Option<u64>,
    /// How many of the most recent lines to show first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub lines: u32,
    /// Keep printing new lines as they are written, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Only keys starting with this prefix; "" lists every key.
    pub prefix: String,
    /// Most keys to return.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Start strictly after this key (the `next` of the previous page).
    #[arg(long, value_name = "KEY", conflicts_with = "after_base64")]
    pub after: Option<String>,
    /// Like --after, for a key that is not UTF-8 (a `next` printed as base64).
    #[arg(long, value_name = "BASE64")]
    pub after_base64: Option<String>,
    /// Serve from the local replica without confirming leadership; may be stale.
    #[arg(long)]
    pub stale: bool,
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, shards and their leaders as the node sees them.
    Info,
}

/// `shard` subcommands.
#[derive(Debug, Subcommand)]
pub enum ShardCommand {
    /// Move a shard's leadership to another of its voters; waits until it leads.
    #[command(after_help = "Example:\n  dbctl shard transfer-leader 12 3")]
    TransferLeader {
        /// The shard id.
        shard: u32,
        /// The node that should lead it.
        node: u64,
    },
    /// Content checksum and applied index of every replica on the node; replicas
    /// of a shard with equal applied indexes and checksums hold equal data.
    Checksums,
}

/// `node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Move every replica off a node (one shard at a time); the node stays a
    /// member and keeps serving through the others. Refused when fewer active
    /// nodes than the replication factor would remain.
    #[command(
        after_help = "Example:\n  dbctl node drain 4\n  dbctl cluster info   # watch its REPLICAS go to 0"
    )]
    Drain {
        /// The node id.
        node: u64,
    },
    /// Forget a node that is gone for good: nothing is placed on it again and its
    /// replicas are re-created elsewhere. Refused while gossip sees it alive.
    #[command(after_help = "Example:\n  dbctl node remove 4")]
    Remove {
        /// The node id.
        node: u64,
    },
}

/// `debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Kill the node's local replica actor of a shard; its supervisor restarts it.
    KillShard {
        /// The shard id.
        shard: u32,
    },
    /// Kill one of the node's actors; whatever supervises it starts it again. The
    /// node must run with fault injection enabled.
    #[command(
        after_help = "Examples:\n  dbctl debug kill-actor transport\n  dbctl debug kill-actor membership\n  dbctl debug kill-actor shard --shard 3"
    )]
    KillActor {
        /// Which actor.
        #[arg(value_enum)]
        actor: ActorKind,
        /// The shard, for `shard`.
        #[arg(long, required_if_eq("actor", "shard"))]
        shard: Option<u32>,
    },
    /// Cut the node's links: drop everything it sends to the nodes in `--to` and
    /// everything it receives from the nodes in `--from` (Transport and gossip).
    /// No lists heal. The node must run with fault injection enabled.
    #[command(
        after_help = "Examples:\n  dbctl debug cut-links --to 2,3 --from 2,3   # isolate this node\n  dbctl debug cut-links                       # heal"
    )]
    CutLinks {
        /// Nodes this node's traffic no longer reaches.
        #[arg(long, value_delimiter = ',')]
        to: Vec<u64>,
        /// Nodes whose traffic this node ignores.
        #[arg(long, value_delimiter = ',')]
        from: Vec<u64>,
    },
}

/// An actor `debug kill-actor` can kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActorKind {
    /// A shard replica (name it with `--shard`).
    Shard,
    /// The gossip actor.
    Membership,
    /// The node-to-node Transport.
    Transport,
}

/// Parses the command line (first item: the program name).
pub fn parse<I, T>(arguments: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(arguments)
}

/// The exit code for a parse outcome that is not a command: 0 for `--help` and
/// `--version`, `exit::INVALID_INPUT` for every usage error.
pub fn usage_exit_code(error: &clap::Error) -> u8 {
    match error.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => exit::OK,
        _ => exit::INVALID_INPUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the derive is consistent (clap's own checks) and that usage errors
    /// map to exit 4 while `--help` maps to 0.
    #[test]
    fn usage_errors_exit_with_invalid_input() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let error = parse(["dbctl", "put", "only-a-key"]).unwrap_err();
        assert_eq!(usage_exit_code(&error), exit::INVALID_INPUT);
        let error = parse(["dbctl"]).unwrap_err();
        assert_eq!(usage_exit_code(&error), exit::INVALID_INPUT);
        let error = parse([
            "dbctl",
            "put",
            "k",
            "v",
            "--if-revision",
            "1",
            "--if-absent",
        ])
        .unwrap_err();
        assert_eq!(usage_exit_code(&error), exit::INVALID_INPUT);
        let help = parse(["dbctl", "--help"]).unwrap_err();
        assert_eq!(usage_exit_code(&help), exit::OK);
    }

    /// Proves global options are accepted after the subcommand and endpoints are
    /// split on commas.
    #[test]
    fn global_options_anywhere() {
        let cli = parse([
            "dbctl",
            "get",
            "user:1",
            "--endpoints",
            "a:1,b:2",
            "-o",
            "json",
            "--stale",
        ])
        .unwrap();
        assert_eq!(cli.endpoints, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(cli.output, Some(OutputFormat::Json));
        let Command::Get(get) = cli.command else {
            panic!("expected get");
        };
        assert_eq!(get.key, "user:1");
        assert!(get.stale);
    }
}

//! The agent's local API: what `sg-agent run` serves on its Unix socket and
//! what the CLI sends.
//!
//! Wire format: one JSON [`Request`] per line; the daemon answers each with
//! one JSON line, `{"ok": RESULT}` or `{"error": "MESSAGE"}`. A connection
//! may carry any number of requests, one at a time. Requests carry the user's
//! text as typed (addresses, port ranges, ids): the daemon parses it with the
//! policy's own parsers, so every error names the field and the limit the same
//! way, whichever client sent it.
//!
//! Every change is durable (committed to the store) and in force on the data
//! plane before its answer is sent.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Where `sg-agent run` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sg-agent/api.sock";

/// The longest request line the daemon reads (an `apply` document or an
/// import of 200 rules fits with room to spare).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// A rule as the user wrote it (SPEC §1's rule table); parsed by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleText {
    /// `ingress` or `egress`.
    pub direction: String,
    /// `Accept` or `Drop`; default `Accept`.
    #[serde(default)]
    pub policy: Option<String>,
    /// 1..100; default 1.
    #[serde(default)]
    pub priority: Option<String>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE`, `ALL` or a number.
    pub protocol: String,
    /// `a/b`, `-1/-1` or a port list id; default `-1/-1`.
    #[serde(default)]
    pub port_range: Option<String>,
    /// A CIDR or address, a group id or a prefix list id.
    pub peer: String,
    #[serde(default)]
    pub source_port_range: Option<String>,
    /// The local address (ingress destination, egress source) as a CIDR.
    #[serde(default)]
    pub local: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Which sessions a `sessions` request means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    #[serde(default)]
    pub nic: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

/// One packet to explain (`sg-agent trace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceText {
    pub nic: String,
    /// The workload's direction: `ingress` or `egress`.
    pub direction: String,
    pub protocol: String,
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub source_port: Option<u16>,
    #[serde(default)]
    pub destination_port: Option<u16>,
    /// ICMP type and code (ICMP and ICMPv6); default an echo request.
    #[serde(default)]
    pub icmp_type: Option<u8>,
    #[serde(default)]
    pub icmp_code: Option<u8>,
}

/// Everything the API offers (SPEC §5, plus the operator's extras of §6).
///
/// Every field of every request is known: an unknown one (a misspelt
/// option would otherwise be read as absent and take its default) refuses
/// the request, naming it. serde's `deny_unknown_fields` covers the
/// variants with fields; the [`Deserialize`] impl below covers the rest
/// (variants without fields, which serde lets take any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    rename_all = "snake_case",
    deny_unknown_fields,
    remote = "Self"
)]
pub enum Request {
    /// The daemon's own state: versions, programs, NICs attached, store.
    Status,

    // --- groups ---------------------------------------------------------------
    GroupCreate {
        name: String,
        #[serde(default)]
        description: String,
        /// `basic` (default) or `enterprise`.
        #[serde(default)]
        kind: Option<String>,
        /// `Accept` or `Drop` (basic groups only).
        #[serde(default)]
        inner_policy: Option<String>,
        #[serde(default)]
        deletion_protection: bool,
        #[serde(default)]
        tags: BTreeMap<String, String>,
        /// Create from a template: `default`, `Sys-WebServer`, `Sys-FullAccess`.
        #[serde(default)]
        template: Option<String>,
    },
    GroupList,
    GroupShow {
        id: String,
    },
    GroupModify {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        deletion_protection: Option<bool>,
        #[serde(default)]
        tags: Option<BTreeMap<String, String>>,
    },
    GroupSetInnerPolicy {
        id: String,
        policy: String,
    },
    GroupDelete {
        id: String,
    },
    GroupClone {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        keep_rules: bool,
        #[serde(default)]
        copy_tags: bool,
    },
    /// Redundant rules of a group (or of every group).
    GroupHealth {
        #[serde(default)]
        id: Option<String>,
    },

    // --- rules ----------------------------------------------------------------
    /// Adds rules to a group, all or none.
    RuleAuthorize {
        group: String,
        rules: Vec<RuleText>,
    },
    /// Removes rules from a group, all or none.
    RuleRevoke {
        group: String,
        rules: Vec<String>,
    },
    /// Replaces a rule's fields, keeping its id and place.
    RuleModify {
        group: String,
        rule: String,
        spec: RuleText,
    },
    /// A group's rules, or a NIC's merged and sorted rules.
    RuleList {
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        nic: Option<String>,
    },
    /// Imports rules in the documents' JSON or CSV (at most 200 at a time).
    RuleImport {
        group: String,
        /// `json` or `csv`.
        format: String,
        text: String,
    },
    /// Exports a group's rules as the documents' JSON or CSV, with the file
    /// name the documents give it.
    RuleExport {
        group: String,
        format: String,
        #[serde(default)]
        region: Option<String>,
    },

    // --- NICs -----------------------------------------------------------------
    NicBind {
        name: String,
        /// `local` or `port`.
        mode: String,
        #[serde(default)]
        addresses: Vec<String>,
        #[serde(default)]
        extra_allowed: Vec<String>,
        #[serde(default)]
        anti_spoof: Option<bool>,
        groups: Vec<String>,
    },
    NicUnbind {
        name: String,
    },
    NicJoin {
        name: String,
        group: String,
    },
    NicLeave {
        name: String,
        group: String,
    },
    NicSetGroups {
        name: String,
        groups: Vec<String>,
    },
    NicSetAddresses {
        name: String,
        addresses: Vec<String>,
        #[serde(default)]
        extra_allowed: Vec<String>,
    },
    NicList,
    NicShow {
        name: String,
    },

    // --- prefix lists and port lists ------------------------------------------
    PrefixListCreate {
        name: String,
        #[serde(default)]
        description: String,
        /// `ipv4` or `ipv6`.
        family: String,
        max_entries: u32,
        /// `CIDR` or `CIDR description…`.
        #[serde(default)]
        entries: Vec<String>,
    },
    PrefixListModify {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        max_entries: Option<u32>,
        #[serde(default)]
        entries: Option<Vec<String>>,
    },
    PrefixListDelete {
        id: String,
    },
    PrefixListList,
    PrefixListShow {
        id: String,
    },
    PortListCreate {
        name: String,
        #[serde(default)]
        description: String,
        max_entries: u32,
        /// `a/b` or `a/b description…`.
        #[serde(default)]
        entries: Vec<String>,
    },
    PortListModify {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        max_entries: Option<u32>,
        #[serde(default)]
        entries: Option<Vec<String>>,
    },
    PortListDelete {
        id: String,
    },
    PortListList,
    PortListShow {
        id: String,
    },

    // --- fleet hosts ----------------------------------------------------------
    /// Every host of the fleet: the live ones (their agents record what they
    /// have in force) and those that bind NICs.
    HostList,
    /// Removes another host's NIC bindings from the fleet (a host that is
    /// gone for good): its NICs stop being members of their groups. Refused
    /// for this host, and for a live host unless `force`.
    HostRemove {
        host: String,
        #[serde(default)]
        force: bool,
    },

    // --- settings -------------------------------------------------------------
    SettingsShow,
    SettingsSet {
        #[serde(default)]
        block_port_25: Option<bool>,
        #[serde(default)]
        platform_addresses: Option<Vec<String>>,
        #[serde(default)]
        snapshot_retention_days: Option<u32>,
        #[serde(default)]
        tcp_handshake_secs: Option<u32>,
        #[serde(default)]
        tcp_established_secs: Option<u32>,
        #[serde(default)]
        tcp_closing_secs: Option<u32>,
        #[serde(default)]
        other_secs: Option<u32>,
        #[serde(default)]
        fragment_timeout_secs: Option<u32>,
    },

    // --- whole state ----------------------------------------------------------
    /// Sets the whole desired state from a YAML or JSON document, all or
    /// nothing; with `dry_run`, only says what would change. A document
    /// without content is refused (the empty state is `{}`), and so is one
    /// that would unbind every NIC or delete every group, unless
    /// `allow_delete_all`.
    Apply {
        document: String,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        allow_delete_all: bool,
    },
    /// The whole state as an `apply` document (JSON).
    Export,

    // --- snapshots ------------------------------------------------------------
    SnapshotList {
        #[serde(default)]
        group: Option<String>,
    },
    SnapshotShow {
        id: u64,
    },
    SnapshotRestore {
        id: u64,
    },

    // --- observing ------------------------------------------------------------
    /// Reads every map back and compares it with the compiled policy of
    /// every bound NIC; repairs what differs unless `no_repair`.
    Verify {
        #[serde(default)]
        no_repair: bool,
    },
    /// The verdict for one packet and what decided it, from the compiled
    /// policy the kernel holds.
    Trace(TraceText),
    /// Packet counters, per-rule hits, decisions by reason, session events.
    Stats {
        #[serde(default)]
        nic: Option<String>,
    },
    SessionList {
        #[serde(default)]
        filter: SessionFilter,
    },
    SessionFlush {
        #[serde(default)]
        filter: SessionFilter,
        /// Required when the filter is empty.
        #[serde(default)]
        all: bool,
    },
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The derived form (`remote = "Self"` makes it an inherent function).
        Request::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let given = serde_json::Value::deserialize(deserializer)?;
        // The derived form; its errors name the field (`unknown field `x`,
        // expected `id``).
        let request = Request::deserialize(&given).map_err(D::Error::custom)?;
        // Internally tagged variants without fields accept any: every field
        // of a request serialises, so a key the request does not give back
        // is one it did not read.
        let known = serde_json::to_value(&request).map_err(D::Error::custom)?;
        match unknown_field(&given, &known) {
            Some(path) => Err(D::Error::custom(format!(
                "unknown field `{path}` (op {:?} takes no such field)",
                known
                    .get("op")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?")
            ))),
            None => Ok(request),
        }
    }
}

/// The first key of `given` that `known` lacks, as a dotted path (array
/// elements by index), looking into objects and arrays alike: for input
/// whose parsed form serialises every field it read.
pub fn unknown_field(given: &serde_json::Value, known: &serde_json::Value) -> Option<String> {
    fn walk(given: &serde_json::Value, known: &serde_json::Value, path: &str) -> Option<String> {
        use serde_json::Value;
        match (given, known) {
            (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, v)| {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    None => Some(p),
                    Some(kv) => walk(v, kv, &p),
                }
            }),
            (Value::Array(g), Value::Array(k)) => g
                .iter()
                .zip(k)
                .enumerate()
                .find_map(|(i, (v, kv))| walk(v, kv, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    walk(given, known, "")
}

/// One answer on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(String),
    /// A read answered while the fleet store is unreachable: the state as
    /// of the revision in force, and why it may be out of date.
    Stale {
        value: serde_json::Value,
        note: String,
    },
}

/// A failed call: the daemon's own message, or why it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The daemon refused the request; the message is its own, verbatim.
    #[error("{0}")]
    Refused(String),
    #[error(
        "cannot reach sg-agent at {path}: {source} (is `sg-agent run` running? --socket names another)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to sg-agent at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sg-agent at {path} answered something unreadable: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

/// A connection to the daemon.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon's socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, CallError> {
        let stream = UnixStream::connect(path).map_err(|source| CallError::Connect {
            path: path.to_owned(),
            source,
        })?;
        // A generous bound: a 1,000-rule apply compiles and installs in tens
        // of milliseconds, but a daemon that hangs must not hang the CLI.
        let io = |source| CallError::Io {
            path: path.to_owned(),
            source,
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `request` and waits for its answer.
    pub fn call(&mut self, request: &Request) -> Result<serde_json::Value, CallError> {
        let io = |source| CallError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(request).map_err(|e| CallError::Protocol {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(io)?;
        if n == 0 {
            return Err(CallError::Protocol {
                path: self.path.clone(),
                reason: "the connection closed before an answer".to_owned(),
            });
        }
        match serde_json::from_str(&answer) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Stale { value, note }) => {
                eprintln!("warning: {note}");
                Ok(value)
            }
            Ok(Reply::Error(e)) => Err(CallError::Refused(e)),
            Err(e) => Err(CallError::Protocol {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

/// Connects to `path`, sends one request and returns its answer.
pub fn call(path: &Path, request: &Request) -> Result<serde_json::Value, CallError> {
    Client::connect(path)?.call(request)
}

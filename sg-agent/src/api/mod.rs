//! The agent's local API: what `sg-agent run` serves on its Unix socket and
//! what the CLI sends, typed once here for both.
//!
//! The wire is HTTP/1.1 with JSON bodies ([`routes`] maps each request to a
//! method and a versioned path; `docs/openapi.json` describes them, made by
//! [`openapi`] from these types). A request is one of the families below,
//! tagged by its `op`; an answer is the result's JSON with status 200, or an
//! [`ApiError`] with the status its kind means. Requests carry the user's
//! text as typed (addresses, port ranges, ids): the daemon parses it with the
//! policy's own parsers, so every error names the field and the limit the same
//! way, whichever client sent it.
//!
//! Every change is durable (committed to the store) and in force on the data
//! plane before its answer is sent.

pub mod client;
pub mod error;
pub mod openapi;
pub mod reply;
pub mod routes;
mod schema;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use client::{CallError, Client, call};
pub use error::{ApiError, ErrorKind};

/// Where `sg-agent run` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sg-agent/api.sock";

/// The longest request body the daemon reads (an `apply` document or an
/// import of 200 rules fits with room to spare); a longer one is refused
/// with status 413.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// A rule as the user wrote it (SPEC §1's rule table); parsed by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// Which sessions a `sessions` request means (flattened into it: its
/// fields are the request's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// Everything the API offers (SPEC §5, plus the operator's extras of §6),
/// one enum per family of requests, so that every handler takes exactly
/// the requests of its family and the compiler checks the dispatch.
///
/// On the wire (and in [`routes`]) a request is the object its family
/// serialises to, tagged by its `op`. Every field of every request is known:
/// an unknown one (a misspelt option would otherwise be read as absent and
/// take its default) refuses the request, naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Request {
    Group(GroupRequest),
    Rule(RuleRequest),
    Nic(NicRequest),
    PrefixList(PrefixListRequest),
    PortList(PortListRequest),
    Host(HostRequest),
    State(StateRequest),
    Snapshot(SnapshotRequest),
    Observe(ObserveRequest),
    Session(SessionRequest),
}

/// A new security group (`group_create`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `basic` (default) or `enterprise`.
    #[serde(default)]
    pub kind: Option<String>,
    /// `Accept` or `Drop` (basic groups only).
    #[serde(default)]
    pub inner_policy: Option<String>,
    #[serde(default)]
    pub deletion_protection: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Create from a template: `default`, `Sys-WebServer`, `Sys-FullAccess`.
    #[serde(default)]
    pub template: Option<String>,
}

/// The group requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum GroupRequest {
    #[serde(rename = "group_create")]
    Create(GroupCreate),
    #[serde(rename = "group_list")]
    List,
    #[serde(rename = "group_show")]
    Show { id: String },
    #[serde(rename = "group_modify")]
    Modify {
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
    #[serde(rename = "group_set_inner_policy")]
    SetInnerPolicy { id: String, policy: String },
    #[serde(rename = "group_delete")]
    Delete { id: String },
    #[serde(rename = "group_clone")]
    Clone {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        keep_rules: bool,
        #[serde(default)]
        copy_tags: bool,
    },
    /// Redundant rules of a group (or of every group).
    #[serde(rename = "group_health")]
    Health {
        #[serde(default)]
        id: Option<String>,
    },
}

/// The rule requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum RuleRequest {
    /// Adds rules to a group, all or none.
    #[serde(rename = "rule_authorize")]
    Authorize { group: String, rules: Vec<RuleText> },
    /// Removes rules from a group, all or none.
    #[serde(rename = "rule_revoke")]
    Revoke { group: String, rules: Vec<String> },
    /// Replaces a rule's fields, keeping its id and place.
    #[serde(rename = "rule_modify")]
    Modify {
        group: String,
        rule: String,
        spec: RuleText,
    },
    /// A group's rules, or a NIC's merged and sorted rules.
    #[serde(rename = "rule_list")]
    List {
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        nic: Option<String>,
    },
    /// Imports rules in the documents' JSON or CSV (at most 200 at a time).
    #[serde(rename = "rule_import")]
    Import {
        group: String,
        /// `json` or `csv`.
        format: String,
        text: String,
    },
    /// Exports a group's rules as the documents' JSON or CSV, with the file
    /// name the documents give it.
    #[serde(rename = "rule_export")]
    Export {
        group: String,
        format: String,
        #[serde(default)]
        region: Option<String>,
    },
}

/// The nic requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum NicRequest {
    #[serde(rename = "nic_bind")]
    Bind {
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
    #[serde(rename = "nic_unbind")]
    Unbind { name: String },
    #[serde(rename = "nic_join")]
    Join { name: String, group: String },
    #[serde(rename = "nic_leave")]
    Leave { name: String, group: String },
    #[serde(rename = "nic_set_groups")]
    SetGroups { name: String, groups: Vec<String> },
    #[serde(rename = "nic_set_addresses")]
    SetAddresses {
        name: String,
        addresses: Vec<String>,
        #[serde(default)]
        extra_allowed: Vec<String>,
    },
    #[serde(rename = "nic_list")]
    List,
    #[serde(rename = "nic_show")]
    Show { name: String },
}

/// The prefix list requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum PrefixListRequest {
    #[serde(rename = "prefix_list_create")]
    Create {
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
    #[serde(rename = "prefix_list_modify")]
    Modify {
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
    #[serde(rename = "prefix_list_delete")]
    Delete { id: String },
    #[serde(rename = "prefix_list_list")]
    List,
    #[serde(rename = "prefix_list_show")]
    Show { id: String },
}

/// The port list requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum PortListRequest {
    #[serde(rename = "port_list_create")]
    Create {
        name: String,
        #[serde(default)]
        description: String,
        max_entries: u32,
        /// `a/b` or `a/b description…`.
        #[serde(default)]
        entries: Vec<String>,
    },
    #[serde(rename = "port_list_modify")]
    Modify {
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
    #[serde(rename = "port_list_delete")]
    Delete { id: String },
    #[serde(rename = "port_list_list")]
    List,
    #[serde(rename = "port_list_show")]
    Show { id: String },
}

/// The fleet host requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum HostRequest {
    /// Every host of the fleet: the live ones (their agents record what they
    /// have in force) and those that bind NICs.
    #[serde(rename = "host_list")]
    List,
    /// Removes another host's NIC bindings from the fleet (a host that is
    /// gone for good): its NICs stop being members of their groups. Refused
    /// for this host, and for a live host unless `force`.
    #[serde(rename = "host_remove")]
    Remove {
        host: String,
        #[serde(default)]
        force: bool,
    },
}

/// The whole-state requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum StateRequest {
    #[serde(rename = "settings_show")]
    SettingsShow,
    #[serde(rename = "settings_set")]
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
    /// Sets the whole desired state from a YAML or JSON document, all or
    /// nothing; with `dry_run`, only says what would change. A document
    /// without content is refused (the empty state is `{}`), and so is one
    /// that would unbind every NIC or delete every group, unless
    /// `allow_delete_all`.
    #[serde(rename = "apply")]
    Apply {
        document: String,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        allow_delete_all: bool,
    },
    /// The whole state as an `apply` document (JSON).
    #[serde(rename = "export")]
    Export,
}

/// The snapshot requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum SnapshotRequest {
    #[serde(rename = "snapshot_list")]
    List {
        #[serde(default)]
        group: Option<String>,
    },
    #[serde(rename = "snapshot_show")]
    Show { id: u64 },
    #[serde(rename = "snapshot_restore")]
    Restore { id: u64 },
}

/// The observing requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum ObserveRequest {
    /// The daemon's own state: versions, programs, NICs attached, store.
    #[serde(rename = "status")]
    Status,
    /// Reads every map back and compares it with the compiled policy of
    /// every bound NIC; repairs what differs unless `no_repair`.
    #[serde(rename = "verify")]
    Verify {
        #[serde(default)]
        no_repair: bool,
    },
    /// The verdict for one packet and what decided it, from the compiled
    /// policy the kernel holds.
    #[serde(rename = "trace")]
    Trace(TraceText),
    /// Packet counters, per-rule hits, decisions by reason, session events.
    /// The rule hits are paged: at most `limit` rows, in the order of (NIC,
    /// direction, rule); a reply with `next` has more, asked for with
    /// `after` set to it.
    #[serde(rename = "stats")]
    Stats {
        /// Only this NIC (interface name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nic: Option<String>,
        /// Only this direction's rule hits: `ingress` or `egress`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
        /// Only rules that decided at least this many packets (1: only
        /// rules with hits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_packets: Option<u64>,
        /// Rule-hit rows in this page, 1 to 10,000 (default 1,000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// The `next` of the page before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
}

/// Rule-hit rows a `stats` page holds unless its `limit` says otherwise.
pub const STATS_PAGE: u32 = 1_000;
/// The largest `limit` of a `stats` page.
pub const STATS_PAGE_MAX: u32 = 10_000;

/// The session requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op")]
pub enum SessionRequest {
    #[serde(rename = "session_list")]
    List {
        #[serde(flatten)]
        filter: SessionFilter,
        /// At most this many sessions (default: all of them, streamed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    #[serde(rename = "session_flush")]
    Flush {
        #[serde(flatten)]
        filter: SessionFilter,
        /// Required when the filter is empty.
        #[serde(default)]
        all: bool,
    },
}

impl Request {
    /// The request's `op`, as on the wire.
    pub fn op(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let given = Value::deserialize(deserializer)?;
        let request = from_value(&given).map_err(D::Error::custom)?;
        // Internally tagged variants without fields accept any, and so does
        // a flattened one: every field of a request serialises, so a key the
        // request does not give back is one it did not read.
        let known = serde_json::to_value(&request).map_err(D::Error::custom)?;
        match unknown_field(&given, &known) {
            Some(path) => Err(D::Error::custom(format!(
                "unknown field `{path}` (op {:?} takes no such field)",
                request.op()
            ))),
            None => Ok(request),
        }
    }
}

/// The request `given` is, by its family: the first family that knows its
/// `op` reads it (its errors name the field).
fn from_value(given: &Value) -> Result<Request, String> {
    fn family<T: serde::de::DeserializeOwned>(
        given: &Value,
        wrap: fn(T) -> Request,
    ) -> Option<Result<Request, String>> {
        match T::deserialize(given) {
            Ok(r) => Some(Ok(wrap(r))),
            Err(e) if e.to_string().starts_with("unknown variant") => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }
    let op = match given.get("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err("op: must be a string".to_owned()),
        None => return Err("missing field `op`".to_owned()),
    };
    family(given, Request::Group)
        .or_else(|| family(given, Request::Rule))
        .or_else(|| family(given, Request::Nic))
        .or_else(|| family(given, Request::PrefixList))
        .or_else(|| family(given, Request::PortList))
        .or_else(|| family(given, Request::Host))
        .or_else(|| family(given, Request::State))
        .or_else(|| family(given, Request::Snapshot))
        .or_else(|| family(given, Request::Observe))
        .or_else(|| family(given, Request::Session))
        .unwrap_or_else(|| Err(format!("op: unknown op `{op}`")))
}

/// The first key of `given` that `known` lacks, as a dotted path (array
/// elements by index), looking into objects and arrays alike: for input
/// whose parsed form serialises every field it read.
pub fn unknown_field(given: &Value, known: &Value) -> Option<String> {
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

/// The daemon's answer to one request, before it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    Error(ApiError),
    /// A read answered while the fleet store is unreachable: the state as
    /// of the revision in force, and why it may be out of date (on the wire:
    /// status 200 with the note in [`STALE_HEADER`]).
    Stale {
        value: Value,
        note: String,
    },
}

/// The response header that says a read may be out of date, and why.
pub const STALE_HEADER: &str = "x-sg-stale";

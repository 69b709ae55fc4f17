//! The replies of the API: what the daemon answers with status 200, typed
//! once here for the daemon (which builds them) and the CLI (which reads
//! them). Listings of the policy's own objects (groups, lists, settings,
//! the apply document) are the policy's types as they serialise; the
//! OpenAPI document names each op's reply ([`REPLIES`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a change made or changed: its id (a group, a list, a rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Changed {
    pub id: String,
}

/// What a delete removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub deleted: String,
}

/// The NIC a NIC request changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NicChanged {
    pub nic: String,
}

/// A group and the NICs that are its members (`group_show`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupShown {
    /// The group, as the policy holds it.
    #[schemars(with = "Value")]
    pub group: sg_policy::SecurityGroup,
    pub members: Vec<String>,
}

/// A rule another rule of its group makes redundant (`group_health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Redundant {
    pub group: String,
    pub rule: String,
    pub covered_by: String,
}

/// The ids of the rules an authorize added, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RuleIds {
    pub ids: Vec<String>,
}

/// The ids of the rules a revoke removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Revoked {
    pub revoked: Vec<String>,
}

/// What an import added, and what it left out and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Imported {
    pub imported: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// A record an import left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Skipped {
    /// Its place in the document, from 0.
    pub index: u64,
    /// The document's rule id, if it gave one (else empty).
    #[serde(default)]
    pub rule_id: String,
    pub reason: String,
}

/// A group's rules as the documents' JSON or CSV, and the file name the
/// documents give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Exported {
    pub file_name: String,
    pub text: String,
}

/// A bound NIC as the data plane holds it (`nic_show`, `nic_list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NicShown {
    #[schemars(with = "Value")]
    pub binding: sg_policy::NicBinding,
    pub ifindex: Option<u32>,
    pub attached: bool,
    pub version: Option<u64>,
    /// The NIC lost its data-plane entry and drops everything.
    #[serde(default)]
    pub closed: bool,
    /// Why the NIC is not brought to the policy, when it is not.
    #[serde(default)]
    pub degraded: Option<String>,
}

/// What an apply changed (or, with `dry_run`, would change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Applied {
    pub applied: bool,
    /// One line per change, as `apply` prints them.
    pub changes: Vec<String>,
    /// The sweep lines (also the first of `changes`).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What a snapshot restore put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Restored {
    pub group: String,
    /// How many rules the group has now.
    pub rules: u64,
}

/// What a host removal unbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostRemoved {
    pub host: String,
    /// NIC bindings removed.
    pub unbound: u64,
}

/// One live session (a line of the streamed `session_list`); `a` sent the
/// first packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRow {
    pub nic: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `gre` or the protocol number.
    pub protocol: String,
    /// 4 or 6.
    pub family: u8,
    pub a: String,
    /// The port (ICMP: the echo identifier).
    pub a_port: u16,
    pub b: String,
    pub b_port: u16,
    /// The workload's direction of the first packet.
    pub direction: String,
    pub state: String,
    pub age_secs: f64,
    pub idle_secs: f64,
    /// The policy version that admitted it.
    pub version: u32,
}

/// How many sessions a flush removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Flushed {
    pub flushed: u64,
}

/// The verdict for one packet and what decided it (`trace`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Traced {
    /// `accept` or `drop`, as the kernel's tables decide.
    pub verdict: String,
    pub reason: String,
    pub rule: Option<String>,
    pub group: Option<String>,
    pub priority: Option<u64>,
    pub detail: String,
    /// Whether the reference evaluator decides the same from the policy.
    #[serde(default)]
    pub reference_agrees: bool,
    /// The reference evaluator's verdict and reason.
    #[serde(default)]
    pub reference: Reference,
    #[serde(default)]
    pub note: String,
}

/// What the reference evaluator decides for a traced packet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Reference {
    /// `accept` or `drop`.
    pub verdict: String,
    pub reason: String,
}

/// One difference between the kernel's maps and the compiled policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DriftRow {
    pub nic: Option<String>,
    pub what: String,
    /// How it is (or would be) repaired.
    pub repair: String,
}

/// What a verify found and whether it repaired it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Verified {
    pub drift: Vec<DriftRow>,
    pub repaired: bool,
    /// NIC (or part) → why it is not brought to the policy.
    pub degraded: BTreeMap<String, String>,
}

/// The daemon's own state (`status`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub socket: String,
    /// The SQLite path, or the etcd endpoints and this host's name.
    pub store: String,
    /// The store's identity (hex), made at random with it.
    pub store_id: String,
    /// The generation of the policy the store holds.
    pub store_generation: u64,
    /// Where the data plane is pinned.
    pub pins: String,
    pub groups: u64,
    pub rules: u64,
    pub nics: Vec<NicShown>,
    /// Program name to kernel program id.
    pub programs: BTreeMap<String, u32>,
    /// Nothing degraded and the last self-check found no drift.
    pub healthy: bool,
    /// NIC (or part) → why it is not brought to the policy.
    pub degraded: BTreeMap<String, String>,
    pub self_check: SelfCheck,
    /// The fleet (etcd stores only; null on a single host).
    pub fleet: Option<FleetStatus>,
}

/// The periodic self-check of the maps against the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SelfCheck {
    pub runs: u64,
    /// Differences found, over all runs.
    pub drift_total: u64,
    /// What the last run found.
    pub last_drift: Vec<DriftRow>,
    /// Runs that could not read the maps.
    pub errors: u64,
    /// When the last one ran (Unix seconds; 0: never).
    pub last_at: u64,
}

/// This host in its fleet, and every live host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FleetStatus {
    pub host: Option<String>,
    /// The store revision whose policy this host has in force.
    pub revision: i64,
    pub store_reachable: bool,
    /// Reads answer from the local copy: the store is unreachable.
    pub stale: bool,
    /// When reachability last changed (Unix seconds; 0: never).
    pub since: u64,
    pub hosts: Vec<FleetHost>,
}

/// A live host of the fleet as it last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FleetHost {
    pub host: String,
    pub revision: i64,
    pub generation: u64,
    /// Store revisions behind this host.
    pub behind: i64,
    /// When it last reported (Unix seconds).
    pub at: u64,
    /// Its agent's version.
    pub agent: String,
}

/// A host the fleet knows (`host_list`): live, or with NICs bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostRow {
    pub host: String,
    /// This agent's own host.
    pub this: bool,
    pub live: bool,
    /// NICs bound on it.
    pub nics: u64,
    pub revision: Option<i64>,
    pub behind: Option<i64>,
}

/// A rule of a NIC's merged, sorted list (`rule_list` with `nic`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MergedRule {
    pub direction: String,
    pub priority: u8,
    /// `Allow` or `Deny`.
    pub action: String,
    pub group: String,
    pub rule: String,
    pub protocol: String,
    pub ports: String,
    pub peer: String,
    pub source_ports: Option<String>,
    pub local: Option<String>,
}

/// Counters, one page of rule hits, decisions by reason (`stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    /// `ingress` and `egress`, each counter name → packets.
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per NIC: this page's rule hits, and its decisions by reason.
    pub nics: BTreeMap<String, NicStats>,
    /// Session event → count.
    pub sessions: BTreeMap<String, u64>,
    pub drop_log: Option<DropLogCounts>,
    /// More rule hits follow: ask again with `after` set to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One NIC's part of [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct NicStats {
    /// In the order of (direction, rule), ingress first.
    pub rules: Vec<RuleHit>,
    pub reasons: Vec<ReasonCount>,
}

/// Packets and bytes a rule (or a default) decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RuleHit {
    pub dir: String,
    /// The rule id, or what decided instead (`default: intra-group sg-…`).
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Packets decided for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReasonCount {
    pub dir: String,
    pub reason: String,
    pub packets: u64,
}

/// The drop log's own counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DropLogCounts {
    pub logged: u64,
    pub suppressed: u64,
    /// Lost to a full ring buffer.
    pub ringbuf_full: u64,
}

/// The reply of every op: a type above, `[T]` for an array of them, or
/// one of the policy's own objects ([`POLICY_OBJECTS`]); `A|B` when the
/// request decides which (`rule_list`: a group's rules, or a NIC's merged
/// list). A test checks every op of the route table is here.
pub const REPLIES: &[(&str, &str)] = &[
    ("group_create", "Changed"),
    ("group_modify", "Changed"),
    ("group_set_inner_policy", "Changed"),
    ("group_clone", "Changed"),
    ("group_delete", "Deleted"),
    ("group_list", "[SecurityGroup]"),
    ("group_show", "GroupShown"),
    ("group_health", "[Redundant]"),
    ("rule_list", "[Rule]|[MergedRule]"),
    ("rule_authorize", "RuleIds"),
    ("rule_revoke", "Revoked"),
    ("rule_modify", "Changed"),
    ("rule_import", "Imported"),
    ("rule_export", "Exported"),
    ("nic_list", "[NicShown]"),
    ("nic_bind", "NicChanged"),
    ("nic_unbind", "NicChanged"),
    ("nic_join", "NicChanged"),
    ("nic_leave", "NicChanged"),
    ("nic_set_groups", "NicChanged"),
    ("nic_set_addresses", "NicChanged"),
    ("nic_show", "NicShown"),
    ("prefix_list_list", "[PrefixList]"),
    ("prefix_list_show", "PrefixList"),
    ("prefix_list_create", "Changed"),
    ("prefix_list_modify", "Changed"),
    ("prefix_list_delete", "Deleted"),
    ("port_list_list", "[PortList]"),
    ("port_list_show", "PortList"),
    ("port_list_create", "Changed"),
    ("port_list_modify", "Changed"),
    ("port_list_delete", "Deleted"),
    ("host_list", "[HostRow]"),
    ("host_remove", "HostRemoved"),
    ("settings_show", "Settings"),
    ("settings_set", "Settings"),
    ("export", "ApplyDocument"),
    ("apply", "Applied"),
    ("snapshot_list", "[SnapshotInfo]"),
    ("snapshot_show", "Snapshot"),
    ("snapshot_restore", "Restored"),
    ("status", "Status"),
    ("verify", "Verified"),
    ("trace", "Traced"),
    ("stats", "Stats"),
    ("session_list", "SessionRow"),
    ("session_flush", "Flushed"),
];

/// The policy's own objects that replies carry as they serialise (the
/// `sg-policy` crate's types, which have no schema of their own): each
/// named, with where it is described.
pub const POLICY_OBJECTS: &[(&str, &str)] = &[
    (
        "SecurityGroup",
        "A security group with its rules, as the policy holds it (docs/api.md, \"Objects\")",
    ),
    (
        "Rule",
        "A rule of a group, with its id (docs/api.md, \"Objects\")",
    ),
    ("PrefixList", "A prefix list (docs/api.md, \"Objects\")"),
    ("PortList", "A port list (docs/api.md, \"Objects\")"),
    (
        "Settings",
        "The host's settings: port 25, platform addresses, retention, session timeouts",
    ),
    (
        "ApplyDocument",
        "The whole state as an apply document (docs/apply.md)",
    ),
    (
        "Snapshot",
        "A snapshot of a group's rules, the rules included (times: Unix seconds)",
    ),
    (
        "SnapshotInfo",
        "A snapshot as listed: its rules counted (times: Unix seconds)",
    ),
];

/// The schemas of the reply types, by name.
pub(super) fn schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let mut add =
        |name: &'static str, schema: schemars::Schema| out.push((name, schema.to_value()));
    add("Changed", generator.subschema_for::<Changed>());
    add("Deleted", generator.subschema_for::<Deleted>());
    add("NicChanged", generator.subschema_for::<NicChanged>());
    add("GroupShown", generator.subschema_for::<GroupShown>());
    add("Redundant", generator.subschema_for::<Redundant>());
    add("RuleIds", generator.subschema_for::<RuleIds>());
    add("Revoked", generator.subschema_for::<Revoked>());
    add("Imported", generator.subschema_for::<Imported>());
    add("Exported", generator.subschema_for::<Exported>());
    add("NicShown", generator.subschema_for::<NicShown>());
    add("Applied", generator.subschema_for::<Applied>());
    add("Restored", generator.subschema_for::<Restored>());
    add("HostRemoved", generator.subschema_for::<HostRemoved>());
    add("SessionRow", generator.subschema_for::<SessionRow>());
    add("Flushed", generator.subschema_for::<Flushed>());
    add("Traced", generator.subschema_for::<Traced>());
    add("Verified", generator.subschema_for::<Verified>());
    add("Status", generator.subschema_for::<Status>());
    add("HostRow", generator.subschema_for::<HostRow>());
    add("MergedRule", generator.subschema_for::<MergedRule>());
    add("Stats", generator.subschema_for::<Stats>());
    for (name, description) in POLICY_OBJECTS {
        out.push((
            name,
            serde_json::json!({"type": "object", "description": description}),
        ));
    }
    out
}

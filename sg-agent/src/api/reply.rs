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
    pub reference: Value,
    #[serde(default)]
    pub note: String,
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

/// The reply type of each op whose reply is one of the types above (the
/// others answer with the policy's own objects, or with the status and
/// counters documented in docs/daemon.md).
pub const REPLIES: &[(&str, &str)] = &[
    ("group_create", "Changed"),
    ("group_modify", "Changed"),
    ("group_set_inner_policy", "Changed"),
    ("group_clone", "Changed"),
    ("group_delete", "Deleted"),
    ("group_show", "GroupShown"),
    ("rule_authorize", "RuleIds"),
    ("rule_revoke", "Revoked"),
    ("rule_modify", "Changed"),
    ("rule_import", "Imported"),
    ("rule_export", "Exported"),
    ("nic_bind", "NicChanged"),
    ("nic_unbind", "NicChanged"),
    ("nic_join", "NicChanged"),
    ("nic_leave", "NicChanged"),
    ("nic_set_groups", "NicChanged"),
    ("nic_set_addresses", "NicChanged"),
    ("nic_show", "NicShown"),
    ("prefix_list_create", "Changed"),
    ("prefix_list_modify", "Changed"),
    ("prefix_list_delete", "Deleted"),
    ("port_list_create", "Changed"),
    ("port_list_modify", "Changed"),
    ("port_list_delete", "Deleted"),
    ("host_remove", "HostRemoved"),
    ("apply", "Applied"),
    ("snapshot_restore", "Restored"),
    ("verify", "Verified"),
    ("trace", "Traced"),
    ("session_list", "SessionRow"),
    ("session_flush", "Flushed"),
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
    out
}

//! The apply document: its structure, how it is read, and the document of a state
//! (the way back, `export`).
//!
//! The same structure in YAML and JSON ([`parse`]); an unknown field anywhere
//! is an error. A document without content (blank, only comments, only
//! `---`, a YAML null) is refused: the empty state is only ever the explicit
//! `{}`. Every text field is read with the model's own parsers
//! ([`Protocol::parse`], [`parse_port_spec`], [`Peer::parse`], [`Cidr::parse`],
//! [`parse_priority`] …), so normalisation and messages are the API's, and
//! every error names its place in the document (`groups[1].rules[3].port_range`).
//!
//! ```yaml
//! settings: {block_port_25: true}   # optional: absent keeps the current settings
//! prefix_lists:
//!   - {id: pl-1, name: office, family: ipv4, max_entries: 10,
//!      entries: [{cidr: 10.0.0.0/8, description: ""}]}
//! port_lists:
//!   - {name: web-ports, max_entries: 5, entries: [{range: 80/80}]}
//! groups:
//!   - name: web
//!     type: basic                      # basic (default) | enterprise | advanced
//!     inner_access_policy: Accept      # basic groups only; default Accept
//!     deletion_protection: false
//!     tags: {env: prod}
//!     rules:
//!       - {direction: ingress, policy: Accept, priority: 1, protocol: TCP,
//!          port_range: web-ports, peer: office}
//! nics:
//!   - {name: veth0, mode: local, addresses: [10.0.0.2], groups: [web]}
//! ```
//!
//! A rule's `port_range` is `a/b`, `-1/-1` (the default), a port list id or the
//! name of a port list of the document; its `peer` an address or CIDR, a group
//! or prefix list id, or the name of a group or prefix list of the document;
//! a NIC's `groups` are ids or names of groups of the document. Ids and
//! addresses win over names; a name must be unique among the document's
//! objects it could name (else it is refused as ambiguous).

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, Visitor},
};
use serde_json::Value;

use crate::{
    error::PolicyError,
    model::{BindingMode, GroupType, InnerPolicy, PortSpec, SecurityGroup, Settings, State},
};

// ---- the document -----------------------------------------------------------

/// A whole desired state, as written in an `apply` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Absent: keep the current settings; present: exactly these (missing
    /// fields take their defaults).
    #[serde(
        default,
        deserialize_with = "strict_settings",
        skip_serializing_if = "Option::is_none"
    )]
    pub settings: Option<Settings>,
    #[serde(default)]
    pub prefix_lists: Vec<PrefixListDoc>,
    #[serde(default)]
    pub port_lists: Vec<PortListDoc>,
    #[serde(default)]
    pub groups: Vec<GroupDoc>,
    #[serde(default)]
    pub nics: Vec<NicDoc>,
}

/// A prefix list of a [`Document`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixListDoc {
    /// `pl-…`; absent: matched by name, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `ipv4` or `ipv6` (any case).
    pub family: String,
    pub max_entries: u32,
    #[serde(default)]
    pub entries: Vec<PrefixEntryDoc>,
}

/// One entry of a [`PrefixListDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixEntryDoc {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A port list of a [`Document`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortListDoc {
    /// `prl-…`; absent: matched by name, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub max_entries: u32,
    #[serde(default)]
    pub entries: Vec<PortEntryDoc>,
}

/// One entry of a [`PortListDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortEntryDoc {
    /// `a/b`.
    pub range: Scalar,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A security group of a [`Document`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDoc {
    /// `sg-…`; absent: matched by name, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `basic` (the default), `enterprise` or `advanced`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `Accept` or `Drop`, basic groups only; absent: `Accept`. An
    /// enterprise group has none (it always isolates its members): giving
    /// one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_access_policy: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletion_protection: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// In order.
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
}

/// A rule of a [`GroupDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// `sgr-…`; absent: the id of an equal rule of the group, or new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `Accept` (the default) or `Drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// 1..=100; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Scalar>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE`, `ALL` or a number.
    pub protocol: Scalar,
    /// `a/b`, `-1/-1` (the default), a port list id or a port list's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<Scalar>,
    /// An address or CIDR, a group or prefix list id, or a group's or prefix
    /// list's name.
    pub peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<Scalar>,
    /// The local address (ingress destination, egress source) as a CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A NIC binding of a [`Document`], identified by its interface name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicDoc {
    pub name: String,
    /// `local` or `port`.
    pub mode: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_allowed: Vec<String>,
    /// Absent: the mode's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_spoof: Option<bool>,
    /// Ids or names of groups of the document, in order.
    pub groups: Vec<String>,
}

/// A value written as a string or a number (`priority: 5` and `priority: "5"`
/// alike); read as text by the model's parsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Number(i64),
    Text(String),
}

impl Default for Scalar {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl From<&str> for Scalar {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<i64> for Scalar {
    fn from(n: i64) -> Self {
        Self::Number(n)
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Number(n) => s.serialize_i64(*n),
            Self::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or_else(|_| Scalar::Text(v.to_string()), Scalar::Number))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// Settings through their own serde, plus what `Settings` does not do itself:
/// refusing unknown fields (found by comparing with what the parsed settings
/// serialise to, so no field list is written twice).
fn strict_settings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Settings>, D::Error> {
    let value = Value::deserialize(d)?;
    if value.is_null() {
        return Ok(None);
    }
    let settings: Settings = serde_json::from_value(value.clone())
        .map_err(|e| de::Error::custom(format!("settings: {e}")))?;
    let known = serde_json::to_value(&settings).map_err(de::Error::custom)?;
    if let Some(path) = unknown_key(&value, &known, "settings") {
        return Err(de::Error::custom(format!("{path}: unknown field")));
    }
    Ok(Some(settings))
}

/// The first key of `given` that `known` lacks (recursively), as a path.
fn unknown_key(given: &Value, known: &Value, path: &str) -> Option<String> {
    let (Value::Object(g), Value::Object(k)) = (given, known) else {
        return None;
    };
    g.iter().find_map(|(key, v)| match k.get(key) {
        // A null may stand for a field that serialises to nothing.
        None if v.is_null() => None,
        None => Some(format!("{path}.{key}")),
        Some(kv) => unknown_key(v, kv, &format!("{path}.{key}")),
    })
}

/// Reads a document: JSON when its first non-blank character is `{`, YAML
/// otherwise. Only the shape is checked here; [`desired`] checks the values.
///
/// A document that says nothing — blank, only comments, only `---`, or a
/// YAML null (`null`, `~`) — is refused: read as a state it would be the
/// empty one, and applying it would delete everything. The empty state is
/// only ever the explicit `{}`.
pub fn parse(text: &str) -> Result<Document, PolicyError> {
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with('{') {
        return serde_json::from_str(body).map_err(|e| PolicyError::Document {
            format: "JSON",
            reason: e.to_string(),
        });
    }
    // YAML reads a document without content as null: `Option` tells it
    // apart from a mapping, `{}` included.
    let doc: Option<Document> = if body.is_empty() {
        None
    } else {
        serde_norway::from_str(body).map_err(|e| PolicyError::Document {
            format: "YAML",
            reason: e.to_string(),
        })?
    };
    doc.ok_or_else(|| PolicyError::Document {
        format: "YAML",
        reason: EMPTY_DOCUMENT.to_owned(),
    })
}

/// Why a document without content is refused, and what to write instead.
pub const EMPTY_DOCUMENT: &str = "the document is empty (nothing but blanks, comments, `---` \
     or null), so nothing was applied; an empty state (no groups, lists or NICs) is written \
     `{}`, and applying it over a state that binds NICs or holds groups also needs \
     allow_delete_all (`sg-agent apply --allow-delete-all`)";

// ---- from a state -------------------------------------------------------------

/// The state as a document, ids included, settings included: applying it to
/// the same state changes nothing.
pub fn document_of(state: &State) -> Document {
    Document {
        settings: Some(state.settings.clone()),
        prefix_lists: state
            .prefix_lists
            .values()
            .map(|l| PrefixListDoc {
                id: Some(l.id.to_string()),
                name: l.name.clone(),
                description: l.description.clone(),
                family: l.family.to_string(),
                max_entries: l.max_entries,
                entries: l
                    .entries
                    .iter()
                    .map(|e| PrefixEntryDoc {
                        cidr: e.cidr.to_string(),
                        description: e.description.clone(),
                    })
                    .collect(),
            })
            .collect(),
        port_lists: state
            .port_lists
            .values()
            .map(|l| PortListDoc {
                id: Some(l.id.to_string()),
                name: l.name.clone(),
                description: l.description.clone(),
                max_entries: l.max_entries,
                entries: l
                    .entries
                    .iter()
                    .map(|e| PortEntryDoc {
                        range: Scalar::Text(e.range.to_string()),
                        description: e.description.clone(),
                    })
                    .collect(),
            })
            .collect(),
        groups: state.groups.values().map(|g| group_doc(g)).collect(),
        nics: state
            .nics
            .values()
            .map(|n| NicDoc {
                name: n.name.clone(),
                mode: mode_text(n.mode).to_owned(),
                addresses: n.addresses.iter().map(ToString::to_string).collect(),
                extra_allowed: n.extra_allowed.iter().map(ToString::to_string).collect(),
                anti_spoof: n.anti_spoof,
                groups: n.groups.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

fn group_doc(g: &SecurityGroup) -> GroupDoc {
    GroupDoc {
        id: Some(g.id.to_string()),
        name: g.name.clone(),
        description: g.description.clone(),
        kind: Some(g.kind.to_string()),
        // Enterprise groups have none (SPEC §1): a document giving one is
        // refused, so the export leaves it out.
        inner_access_policy: (g.kind == GroupType::Basic)
            .then(|| inner_text(g.inner_policy).to_owned()),
        deletion_protection: g.deletion_protection,
        tags: g.tags.clone(),
        rules: g
            .rules
            .iter()
            .map(|r| {
                let s = &r.spec;
                let protocol = s.protocol.to_string();
                RuleDoc {
                    id: Some(r.id.to_string()),
                    direction: s.direction.to_string(),
                    policy: Some(s.action.to_string()),
                    priority: Some(Scalar::Number(i64::from(s.priority))),
                    protocol: protocol
                        .parse::<i64>()
                        .map_or(Scalar::Text(protocol), Scalar::Number),
                    port_range: Some(Scalar::Text(ports_text(&s.ports))),
                    peer: s.peer.to_string(),
                    source_port_range: s.source_ports.map(|p| Scalar::Text(p.to_string())),
                    local: s.local.map(|c| c.to_string()),
                    description: s.description.clone(),
                }
            })
            .collect(),
    }
}

pub(super) fn mode_text(mode: BindingMode) -> &'static str {
    match mode {
        BindingMode::Local => "local",
        BindingMode::Port => "port",
    }
}

pub(super) fn inner_text(policy: InnerPolicy) -> &'static str {
    match policy {
        InnerPolicy::Accept => "Accept",
        InnerPolicy::Drop => "Drop",
    }
}

pub(super) fn ports_text(ports: &PortSpec) -> String {
    match ports {
        PortSpec::Any => "-1/-1".to_owned(),
        PortSpec::Range(r) => r.to_string(),
        PortSpec::List(id) => id.to_string(),
    }
}

//! The import/export record shared by JSON and CSV: one rule in the documents'
//! field names (SPEC §5), and the import procedure with its per-rule report.
//!
//! Mapping (ingress / egress):
//! - peer CIDR: `SourceCidrIp` or `Ipv6SourceCidrIp` / `DestCidrIp` or `Ipv6DestCidrIp`;
//! - peer group: `SourceGroupId` / `DestGroupId`;
//! - peer prefix list: `SourcePrefixListId` / `DestPrefixListId`;
//! - local address (quintuple): `DestCidrIp`/`Ipv6DestCidrIp` / `SourceCidrIp`/`Ipv6SourceCidrIp`;
//! - `PortRange` (`a/b` or `-1/-1`) or `PortRangeListId`; `SourcePortRange`.
//!
//! An empty field is an absent one. An unknown field is refused, naming it: a
//! misspelt field read as absent would change the rule (`"Polcy": "Drop"`
//! would import an `Accept`, `"Prority": 100` a priority of 1). The few
//! fields the documents' API returns beside the rule ([`EXTRA_FIELDS`]) are
//! accepted when they ask for nothing sg would have to enforce.

use super::{
    addr::{Cidr, Family},
    error::{Labels, PolicyError},
    ids::{GroupId, PortListId, PrefixListId, RuleId},
    model::{
        Action, Direction, Peer, PortRange, PortSpec, Protocol, Rule, RuleSpec, State,
        parse_port_spec, parse_priority,
    },
    validate::{MAX_IMPORT_RULES, check_text},
};

/// The record's fields, in export order.
pub const FIELDS: [&str; 19] = [
    "SecurityGroupId",
    "SecurityGroupRuleId",
    "Direction",
    "Policy",
    "Priority",
    "IpProtocol",
    "PortRange",
    "PortRangeListId",
    "SourcePortRange",
    "SourceCidrIp",
    "DestCidrIp",
    "Ipv6SourceCidrIp",
    "Ipv6DestCidrIp",
    "SourceGroupId",
    "DestGroupId",
    "SourcePrefixListId",
    "DestPrefixListId",
    "Description",
    // Kept last: the documents list it with the rule fields; JSON nests rules
    // under it, CSV repeats it on each row.
    "Permissions",
];

/// The number of per-rule fields (all of [`FIELDS`] but `Permissions`).
pub const RULE_FIELDS: usize = FIELDS.len() - 1;

/// Fields the documents' API returns with a rule that sg does not enforce:
/// accepted on import while they say nothing sg would have to enforce
/// ([`check_extra_field`]), and not kept.
pub const EXTRA_FIELDS: [&str; 8] = [
    "CreateTime",
    "SourceGroupName",
    "DestGroupName",
    "NicType",
    "SourceGroupOwnerAccount",
    "DestGroupOwnerAccount",
    "SourceGroupOwnerId",
    "DestGroupOwnerId",
];

/// Checks a field of an imported rule that is not one of [`FIELDS`]:
/// `CreateTime` and the group names are information only; `NicType` must be
/// empty or `intranet` (sg enforces the private, VPC, rules); the owner
/// fields must be empty (cross-account peers are not supported). Anything
/// else is an unknown field. `prefix` names the record (`Permissions[3]`).
pub fn check_extra_field(prefix: &str, name: &str, value: &str) -> Result<(), PolicyError> {
    let v = value.trim();
    match name {
        "CreateTime" | "SourceGroupName" | "DestGroupName" => Ok(()),
        "NicType" if v.is_empty() || v.eq_ignore_ascii_case("intranet") => Ok(()),
        "NicType" => Err(PolicyError::invalid(
            format!("{prefix}.{name}"),
            value,
            "sg enforces intranet (VPC) rules only",
        )),
        "SourceGroupOwnerAccount"
        | "DestGroupOwnerAccount"
        | "SourceGroupOwnerId"
        | "DestGroupOwnerId"
            if v.is_empty() =>
        {
            Ok(())
        }
        "SourceGroupOwnerAccount"
        | "DestGroupOwnerAccount"
        | "SourceGroupOwnerId"
        | "DestGroupOwnerId" => Err(PolicyError::invalid(
            format!("{prefix}.{name}"),
            value,
            "cross-account group references are not supported",
        )),
        _ => Err(unknown_field(prefix, name)),
    }
}

/// A field that is neither one of [`FIELDS`] nor one of [`EXTRA_FIELDS`].
pub fn unknown_field(prefix: &str, name: &str) -> PolicyError {
    PolicyError::UnknownField {
        field: prefix.to_owned(),
        name: name.to_owned(),
        expected: FIELDS[..RULE_FIELDS].join(", "),
    }
}

/// One rule as text fields, indexed like [`FIELDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleRecord {
    values: [String; RULE_FIELDS],
}

impl RuleRecord {
    /// A field's value ("" when absent or unknown).
    pub fn get(&self, name: &str) -> &str {
        FIELDS[..RULE_FIELDS]
            .iter()
            .position(|f| *f == name)
            .map_or("", |i| self.values[i].as_str())
    }

    /// Sets a field; unknown names are ignored.
    pub fn set(&mut self, name: &str, value: String) {
        if let Some(i) = FIELDS[..RULE_FIELDS].iter().position(|f| *f == name) {
            self.values[i] = value;
        }
    }

    /// The values in [`FIELDS`] order.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The record of one rule of group `group`.
    pub fn from_rule(group: &GroupId, rule: &Rule) -> Self {
        let s = &rule.spec;
        let mut r = Self::default();
        r.set("SecurityGroupId", group.to_string());
        r.set("SecurityGroupRuleId", rule.id.to_string());
        r.set("Direction", s.direction.to_string());
        r.set("Policy", s.action.to_string());
        r.set("Priority", s.priority.to_string());
        r.set("IpProtocol", s.protocol.to_string());
        match &s.ports {
            PortSpec::Any => r.set("PortRange", "-1/-1".to_owned()),
            PortSpec::Range(p) => r.set("PortRange", p.to_string()),
            PortSpec::List(id) => r.set("PortRangeListId", id.to_string()),
        }
        if let Some(sp) = s.source_ports {
            r.set("SourcePortRange", sp.to_string());
        }
        let (peer_side, local_side) = sides(s.direction);
        match &s.peer {
            Peer::Cidr(c) => r.set(cidr_field(peer_side, c.family()), c.to_string()),
            Peer::Group(g) => r.set(&format!("{peer_side}GroupId"), g.to_string()),
            Peer::PrefixList(p) => r.set(&format!("{peer_side}PrefixListId"), p.to_string()),
        }
        if let Some(l) = s.local {
            r.set(cidr_field(local_side, l.family()), l.to_string());
        }
        r.set("Description", s.description.clone());
        r
    }

    /// Reads the rule: its wanted id (if well-formed) and its spec. `prefix`
    /// names the record in errors (`Permissions[3]`). A group peer equal to the
    /// record's `SecurityGroupId` becomes `target` (the group's own members).
    pub fn to_rule(
        &self,
        prefix: &str,
        target: &GroupId,
    ) -> Result<(Option<RuleId>, RuleSpec), PolicyError> {
        let f = |name: &str| format!("{prefix}.{name}");
        let need = |name: &str| -> Result<&str, PolicyError> {
            let v = self.get(name);
            if v.trim().is_empty() {
                Err(PolicyError::invalid(f(name), v, "required"))
            } else {
                Ok(v)
            }
        };
        let direction = Direction::parse(&f("Direction"), need("Direction")?)?;
        let action = match self.get("Policy") {
            v if v.trim().is_empty() => Action::Accept,
            v => Action::parse(&f("Policy"), v)?,
        };
        let priority = match self.get("Priority") {
            v if v.trim().is_empty() => 1,
            v => parse_priority(&f("Priority"), v)?,
        };
        let protocol = Protocol::parse(&f("IpProtocol"), need("IpProtocol")?)?;
        let ports = match (
            self.get("PortRange").trim(),
            self.get("PortRangeListId").trim(),
        ) {
            ("" | "-1/-1", list) if !list.is_empty() => {
                PortSpec::List(PortListId::parse(&f("PortRangeListId"), list)?)
            }
            (range, list) if !list.is_empty() => {
                return Err(PolicyError::invalid(
                    f("PortRange"),
                    range,
                    "give either PortRange or PortRangeListId, not both",
                ));
            }
            (range, _) => parse_port_spec(&f("PortRange"), need("PortRange").map(|_| range)?)?,
        };
        let source_ports = match self.get("SourcePortRange").trim() {
            "" => None,
            v => Some(PortRange::parse(&f("SourcePortRange"), v)?),
        };
        let (peer, local) = self.addresses(prefix, direction, target)?;
        let description = self.get("Description");
        check_text(&f("Description"), description)?;
        // A malformed id is refused, as the API refuses it: replacing it by
        // a fresh one without a word would lose the document's identity of
        // the rule (a well-formed id that is taken still gets a fresh one,
        // reported with the rule).
        let id = match self.get("SecurityGroupRuleId").trim() {
            "" => None,
            v => Some(RuleId::parse(&f("SecurityGroupRuleId"), v)?),
        };
        Ok((
            id,
            RuleSpec {
                direction,
                action,
                priority,
                protocol,
                ports,
                peer,
                source_ports,
                local,
                description: description.to_owned(),
            },
        ))
    }

    /// The peer and local address fields of a record.
    fn addresses(
        &self,
        prefix: &str,
        direction: Direction,
        target: &GroupId,
    ) -> Result<(Peer, Option<Cidr>), PolicyError> {
        let f = |name: &str| format!("{prefix}.{name}");
        let (peer_side, local_side) = sides(direction);
        for name in [
            format!("{local_side}GroupId"),
            format!("{local_side}PrefixListId"),
        ] {
            let v = self.get(&name);
            if !v.is_empty() {
                return Err(PolicyError::invalid(
                    f(&name),
                    v,
                    format!("an {direction} rule's peer is on the {peer_side} side"),
                ));
            }
        }
        let mut peers = Vec::new();
        for (name, family) in [
            (cidr_field(peer_side, Family::Ipv4), Family::Ipv4),
            (cidr_field(peer_side, Family::Ipv6), Family::Ipv6),
        ] {
            if let Some(c) = family_cidr(&f(name), self.get(name), family)? {
                peers.push(Peer::Cidr(c));
            }
        }
        let gname = format!("{peer_side}GroupId");
        match self.get(&gname).trim() {
            "" => {}
            v if v.contains('/') => {
                return Err(PolicyError::invalid(
                    f(&gname),
                    v,
                    "cross-account group references are not supported",
                ));
            }
            v => {
                let g = GroupId::parse(&f(&gname), v)?;
                let own = self.get("SecurityGroupId").trim();
                peers.push(Peer::Group(if own == g.as_str() {
                    target.clone()
                } else {
                    g
                }));
            }
        }
        let pname = format!("{peer_side}PrefixListId");
        if !self.get(&pname).trim().is_empty() {
            peers.push(Peer::PrefixList(PrefixListId::parse(
                &f(&pname),
                self.get(&pname).trim(),
            )?));
        }
        if peers.len() != 1 {
            return Err(PolicyError::invalid(
                f(peer_side),
                peers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                format!(
                    "an {direction} rule needs exactly one peer: a CIDR, a group id or a prefix list id"
                ),
            ));
        }
        let mut locals = Vec::new();
        for (name, family) in [
            (cidr_field(local_side, Family::Ipv4), Family::Ipv4),
            (cidr_field(local_side, Family::Ipv6), Family::Ipv6),
        ] {
            if let Some(c) = family_cidr(&f(name), self.get(name), family)? {
                locals.push(c);
            }
        }
        if locals.len() > 1 {
            return Err(PolicyError::invalid(
                f(local_side),
                format!("{} and {}", locals[0], locals[1]),
                "at most one local address",
            ));
        }
        Ok((peers.remove(0), locals.pop()))
    }
}

fn family_cidr(field: &str, text: &str, family: Family) -> Result<Option<Cidr>, PolicyError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let c = Cidr::parse(field, text)?;
    if c.family() != family {
        return Err(PolicyError::invalid(
            field,
            text,
            format!("this field takes {family} addresses"),
        ));
    }
    Ok(Some(c))
}

fn sides(direction: Direction) -> (&'static str, &'static str) {
    match direction {
        Direction::Ingress => ("Source", "Dest"),
        Direction::Egress => ("Dest", "Source"),
    }
}

fn cidr_field(side: &str, family: Family) -> &'static str {
    match (side, family) {
        ("Source", Family::Ipv4) => "SourceCidrIp",
        ("Source", Family::Ipv6) => "Ipv6SourceCidrIp",
        (_, Family::Ipv4) => "DestCidrIp",
        (_, Family::Ipv6) => "Ipv6DestCidrIp",
    }
}

/// One imported rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRule {
    /// Position in the document (0-based).
    pub index: usize,
    /// The rule's id: the document's when it was free, a new one otherwise.
    pub id: RuleId,
}

/// One rule the import skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRule {
    pub index: usize,
    /// The document's `SecurityGroupRuleId`, if any.
    pub rule_id: String,
    pub reason: PolicyError,
}

/// What an import did, rule by rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: Vec<ImportedRule>,
    pub skipped: Vec<SkippedRule>,
}

/// Imports records into `group`: each valid record becomes a rule; each other
/// one is skipped with its reason (priority above 100, bad field, missing
/// reference, duplicate, quota). More than 200 records refuse the whole import.
pub fn import_records(
    state: &mut State,
    group: &GroupId,
    records: Vec<(String, Result<RuleRecord, PolicyError>)>,
    what: &str,
) -> Result<ImportReport, PolicyError> {
    if records.len() > MAX_IMPORT_RULES {
        return Err(PolicyError::LimitExceeded {
            field: what.to_owned(),
            value: records.len(),
            limit: MAX_IMPORT_RULES,
            what: "rules per import",
        });
    }
    let g = state.group("group", group)?;
    if g.managed {
        return Err(PolicyError::Managed {
            group: group.to_string(),
            operation: "import rules",
        });
    }
    let mut report = ImportReport::default();
    // A rule imported earlier in this document is named by its place in it
    // (`Permissions[0]`), not by the id it was just given.
    let mut labels = Labels::default();
    for (index, (prefix, record)) in records.into_iter().enumerate() {
        let rule_id = record
            .as_ref()
            .map(|r| r.get("SecurityGroupRuleId").to_owned())
            .unwrap_or_default();
        let outcome = record
            .and_then(|r| r.to_rule(&prefix, group))
            .and_then(|(id, spec)| state.insert_rules(group, vec![(id, spec)], &prefix, true));
        match outcome {
            Ok(mut ids) => {
                let id = ids.remove(0);
                labels.id(&id, format!("{prefix} of this import"));
                report.imported.push(ImportedRule { index, id });
            }
            Err(reason) => report.skipped.push(SkippedRule {
                index,
                rule_id,
                reason: labels.apply(reason),
            }),
        }
    }
    Ok(report)
}

/// The records of a group's rules, in stored order.
pub fn export_records(state: &State, group: &GroupId) -> Result<Vec<RuleRecord>, PolicyError> {
    let g = state.group("group", group)?;
    Ok(g.rules
        .iter()
        .map(|r| RuleRecord::from_rule(group, r))
        .collect())
}

/// Checks a region id used in file names: lowercase letters, digits and '-'.
pub fn check_region(region: &str) -> Result<(), PolicyError> {
    if region.is_empty()
        || region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(PolicyError::invalid(
            "region",
            region,
            "a region id is 1..=64 lowercase letters, digits or '-'",
        ));
    }
    Ok(())
}

//! Request texts read into the model's values, each error naming the request's field.

use std::net::IpAddr;

use crate::api::RuleText;
use sg_policy::{
    self, Cidr, GroupId, NicBinding, PolicyError, PortListEntry, PortRange, PrefixListEntry,
    RuleSpec,
};

pub(super) fn group_id(field: &str, text: &str) -> Result<GroupId, PolicyError> {
    GroupId::parse(field, text)
}

/// `VALUE` or `VALUE description…`.
pub(super) fn split_entry(text: &str) -> (&str, String) {
    let t = text.trim();
    match t.split_once(char::is_whitespace) {
        Some((v, d)) => (v, d.trim().to_owned()),
        None => (t, String::new()),
    }
}

pub(super) fn prefix_entries(entries: &[String]) -> Result<Vec<PrefixListEntry>, PolicyError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (v, description) = split_entry(e);
            Ok(PrefixListEntry {
                cidr: Cidr::parse(&format!("prefix_list.entries[{i}]"), v)?,
                description,
            })
        })
        .collect()
}

pub(super) fn port_entries(entries: &[String]) -> Result<Vec<PortListEntry>, PolicyError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (v, description) = split_entry(e);
            Ok(PortListEntry {
                range: PortRange::parse(&format!("port_list.entries[{i}]"), v)?,
                description,
            })
        })
        .collect()
}

/// One IP address, or an error naming `field`.
pub(super) fn ip(field: &str, text: &str) -> Result<IpAddr, PolicyError> {
    text.trim()
        .parse()
        .map_err(|_| PolicyError::invalid(field, text, "not an IP address"))
}

pub(super) fn addresses(field: &str, list: &[String]) -> Result<Vec<IpAddr>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| NicBinding::parse_address(&format!("{field}[{i}]"), a))
        .collect()
}

pub(super) fn cidrs(field: &str, list: &[String]) -> Result<Vec<Cidr>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| Cidr::parse(&format!("{field}[{i}]"), a))
        .collect()
}

pub(super) fn group_ids(field: &str, list: &[String]) -> Result<Vec<GroupId>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, g)| group_id(&format!("{field}[{i}]"), g))
        .collect()
}

/// A rule as typed, parsed by the policy's own parsers.
pub fn rule_spec(t: &RuleText) -> Result<RuleSpec, PolicyError> {
    let mut spec = RuleSpec::from_text(
        &t.direction,
        t.policy.as_deref().unwrap_or("Accept"),
        t.priority.as_deref().unwrap_or("1"),
        &t.protocol,
        t.port_range.as_deref().unwrap_or("-1/-1"),
        &t.peer,
    )?;
    if let Some(s) = &t.source_port_range {
        spec.source_ports = Some(PortRange::parse("rule.source_port_range", s)?);
    }
    if let Some(l) = &t.local {
        spec.local = Some(Cidr::parse("rule.local", l)?);
    }
    if let Some(d) = &t.description {
        spec.description.clone_from(d);
    }
    Ok(spec)
}

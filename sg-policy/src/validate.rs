//! Validation: every limit of SPEC §2 and every shape rule of SPEC §1.
//!
//! Entry points: [`check_rule`] checks one requested rule against the state it
//! would join (field names like `rule.priority`); [`validate_state`] checks a
//! whole state, what a stored state must be to load, so a state that was
//! accepted once re-validates after any round trip; [`validate_change`] is
//! what every operation runs on its result before committing: the whole
//! state, the platform-address limit and the free text that is new
//! ([`check_text`]); [`validate_new`] is that for a state that is all new.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    addr::{Cidr, Family},
    error::PolicyError,
    ids::{GroupId, PortListId, PrefixListId},
    model::{
        GroupType, InnerPolicy, NicBinding, Peer, PortList, PortSpec, PrefixList, Rule, RuleSpec,
        SecurityGroup, SessionTimeouts, Settings, State,
    },
};

/// At most 10 groups per NIC (SPEC §2).
pub const MAX_GROUPS_PER_NIC: usize = 10;
/// At most this many addresses and extra allowed prefixes per NIC, together:
/// what the data plane's own-address table holds per NIC
/// (`sg_common::maps::OWN_PER_NIC`).
pub const MAX_OWN_PER_NIC: usize = sg_common::maps::OWN_PER_NIC as usize;
/// At most 1,000 rules across all groups of a NIC, lists counted at their max (SPEC §2).
pub const MAX_RULES_PER_NIC: usize = 1000;
/// At most 20 rules naming a group as peer in one basic group (SPEC §2).
pub const MAX_GROUP_PEER_RULES: usize = 20;
/// Priorities 1..=100 (SPEC §1).
pub const PRIORITY_MIN: u8 = 1;
/// Priorities 1..=100 (SPEC §1).
pub const PRIORITY_MAX: u8 = 100;
/// An import takes at most 200 rules (SPEC §2).
pub const MAX_IMPORT_RULES: usize = 200;
/// **Decided** (SPEC silent): a prefix or port list holds at most 200 entries.
pub const MAX_LIST_ENTRIES: u32 = 200;
/// **Decided**: names are 1..=128 characters.
pub const MAX_NAME_CHARS: usize = 128;
/// **Decided**: group and list descriptions are at most 256 characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// **Decided**: rule and entry descriptions are at most 512 characters.
pub const MAX_RULE_DESCRIPTION_CHARS: usize = 512;
/// **Decided**: at most 20 tags per group, keys 1..=128 and values 0..=128 characters.
pub const MAX_TAGS: usize = 20;
/// **Decided**: tag key and value length.
pub const MAX_TAG_CHARS: usize = 128;
/// Linux interface names are at most 15 bytes (IFNAMSIZ − 1).
pub const MAX_IFNAME_BYTES: usize = 15;

// Every name a NIC may have fits a census (another host's NIC, counted).
const _: () = assert!(MAX_IFNAME_BYTES <= crate::census::MAX_NAME_BYTES);
/// **Decided**: a session idle timeout is 1 s..=1 week (SPEC §4: configurable).
pub const SESSION_TIMEOUT_MIN_SECS: u32 = 1;
/// **Decided**: a session idle timeout is 1 s..=1 week.
pub const SESSION_TIMEOUT_MAX_SECS: u32 = 604_800;
/// **Decided**: a first fragment is remembered 1 s..=10 min for its later
/// fragments (SPEC §3 item 8: configurable, by default the kernel's own
/// reassembly time, 30 s). Below the reassembly time a slow datagram's last
/// fragments can drop; above 10 minutes an id would be remembered long past
/// any reassembly queue that could still hold the datagram.
pub const FRAGMENT_TIMEOUT_MIN_SECS: u32 = 1;
/// **Decided**: see [`FRAGMENT_TIMEOUT_MIN_SECS`].
pub const FRAGMENT_TIMEOUT_MAX_SECS: u32 = 600;
/// Snapshots are kept at least 1 day (seed 000, SPEC §5).
pub const SNAPSHOT_RETENTION_MIN_DAYS: u32 = 1;
/// Snapshots are kept at most 30 days (seed 000, SPEC §5).
pub const SNAPSHOT_RETENTION_MAX_DAYS: u32 = 30;

/// **Decided**: a platform address (exempt from every rule, SPEC §3 step 2)
/// is an IPv4 prefix of at least /8; broader ones are refused. The seeds'
/// health-check range, `100.64.0.0/10`, fits.
pub const PLATFORM_MIN_PREFIX_V4: u8 = 8;
/// **Decided**: a platform address is an IPv6 prefix of at least /32.
pub const PLATFORM_MIN_PREFIX_V6: u8 = 32;

/// Checks a name: 1..=128 characters, no control characters.
pub fn check_name(field: &str, name: &str) -> Result<(), PolicyError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(PolicyError::out_of_range(
            format!("{field} length"),
            n,
            format!("1..={MAX_NAME_CHARS} characters"),
        ));
    }
    // Names never took control characters, so a stored state holds none;
    // the full check of free text (`check_text`) applies to what changes.
    if let Some((position, c)) = name.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(forbidden(field, position, c, "control character"));
    }
    Ok(())
}

/// Why `c` may not appear in free text, if it may not: a control character
/// (C0 with tab and newline, DEL, C1), a bidirectional embedding, override
/// or isolate (U+202A–U+202E, U+2066–U+2069: they reorder what a terminal
/// shows, "Trojan Source"), or a line or paragraph separator (U+2028,
/// U+2029). Bidirectional marks (U+200E, U+200F, U+061C) and joiners stay
/// allowed: they reorder no strong characters and some scripts need them.
pub fn forbidden_char(c: char) -> Option<&'static str> {
    match c {
        c if c.is_control() => Some("control character"),
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            Some("bidirectional formatting character")
        }
        '\u{2028}' | '\u{2029}' => Some("line separator"),
        _ => None,
    }
}

fn forbidden(field: &str, position: usize, c: char, class: &'static str) -> PolicyError {
    PolicyError::ForbiddenCharacter {
        field: field.to_owned(),
        code: u32::from(c),
        position: position + 1,
        class,
    }
}

/// Checks free text a user gives (names, descriptions, tags): no character
/// that [`forbidden_char`] refuses. The error names the field, the
/// character as `U+XXXX` and its position (counting characters from 1).
pub fn check_text(field: &str, text: &str) -> Result<(), PolicyError> {
    match text
        .chars()
        .enumerate()
        .find_map(|(i, c)| forbidden_char(c).map(|class| (i, c, class)))
    {
        Some((i, c, class)) => Err(forbidden(field, i, c, class)),
        None => Ok(()),
    }
}

/// Checks a free-text description against a length limit.
pub fn check_description(field: &str, text: &str, max: usize) -> Result<(), PolicyError> {
    let n = text.chars().count();
    if n > max {
        return Err(PolicyError::out_of_range(
            format!("{field} length"),
            n,
            format!("0..={max} characters"),
        ));
    }
    Ok(())
}

/// Checks a group's tags.
pub fn check_tags(field: &str, tags: &BTreeMap<String, String>) -> Result<(), PolicyError> {
    if tags.len() > MAX_TAGS {
        return Err(PolicyError::LimitExceeded {
            field: field.to_owned(),
            value: tags.len(),
            limit: MAX_TAGS,
            what: "tags per group",
        });
    }
    for (k, v) in tags {
        let kf = format!("{field}[{k:?}]");
        let kn = k.chars().count();
        if kn == 0 || kn > MAX_TAG_CHARS {
            return Err(PolicyError::out_of_range(
                format!("{kf} key length"),
                kn,
                format!("1..={MAX_TAG_CHARS} characters"),
            ));
        }
        check_description(&format!("{kf} value"), v, MAX_TAG_CHARS)?;
    }
    Ok(())
}

/// Checks one rule as it would stand in group `owner` of `state`: priority, the
/// protocol/port combination, quintuple extras, and the references it makes
/// (existence, enterprise restrictions, address families).
pub fn check_rule(
    state: &State,
    owner: &SecurityGroup,
    field: &str,
    rule: &RuleSpec,
) -> Result<(), PolicyError> {
    if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&rule.priority) {
        return Err(PolicyError::out_of_range(
            format!("{field}.priority"),
            rule.priority,
            format!("{PRIORITY_MIN}..={PRIORITY_MAX}"),
        ));
    }
    check_ports(state, field, rule)?;
    let peer_family = check_peer(state, owner, field, rule)?;
    if let (Some(local), Some(family)) = (rule.local, peer_family)
        && local.family() != family
    {
        return Err(PolicyError::invalid(
            format!("{field}.local"),
            local,
            format!(
                "the peer is {family}, so a {} local address could never match",
                local.family()
            ),
        ));
    }
    check_description(
        &format!("{field}.description"),
        &rule.description,
        MAX_RULE_DESCRIPTION_CHARS,
    )
}

fn check_ports(state: &State, field: &str, rule: &RuleSpec) -> Result<(), PolicyError> {
    let pf = format!("{field}.port_range");
    if rule.protocol.has_ports() {
        match &rule.ports {
            PortSpec::Any => {
                return Err(PolicyError::invalid(
                    pf,
                    "-1/-1",
                    format!(
                        "{} rules need a port range a/b (1..=65535) or a port list",
                        rule.protocol
                    ),
                ));
            }
            PortSpec::Range(r) => r.check(&pf)?,
            PortSpec::List(id) => {
                if !state.port_lists.contains_key(id) {
                    return Err(PolicyError::not_found(pf, PortListId::KIND, id));
                }
            }
        }
    } else {
        match &rule.ports {
            PortSpec::Any => {}
            PortSpec::Range(r) => {
                return Err(PolicyError::invalid(
                    pf,
                    r,
                    format!(
                        "ports apply to TCP and UDP only; {} rules take -1/-1",
                        rule.protocol
                    ),
                ));
            }
            PortSpec::List(id) => {
                return Err(PolicyError::invalid(
                    pf,
                    id,
                    format!(
                        "port lists apply to TCP and UDP only, not {}",
                        rule.protocol
                    ),
                ));
            }
        }
    }
    if let Some(sp) = rule.source_ports {
        let sf = format!("{field}.source_port_range");
        if !rule.protocol.has_ports() {
            return Err(PolicyError::invalid(
                sf,
                sp,
                format!(
                    "source ports apply to TCP and UDP only, not {}",
                    rule.protocol
                ),
            ));
        }
        sp.check(&sf)?;
    }
    Ok(())
}

/// Checks the peer; returns its family when it has exactly one.
fn check_peer(
    state: &State,
    owner: &SecurityGroup,
    field: &str,
    rule: &RuleSpec,
) -> Result<Option<Family>, PolicyError> {
    let pf = format!("{field}.peer");
    match &rule.peer {
        Peer::Cidr(c) => Ok(Some(c.family())),
        Peer::PrefixList(id) => state
            .prefix_lists
            .get(id)
            .map(|pl| Some(pl.family))
            .ok_or_else(|| PolicyError::not_found(pf, PrefixListId::KIND, id)),
        Peer::Group(id) => {
            if owner.kind == GroupType::Enterprise {
                return Err(PolicyError::Enterprise {
                    field: pf,
                    value: id.to_string(),
                    reason: "rules of an enterprise group cannot name a security group as peer",
                });
            }
            let target_kind = if id == &owner.id {
                owner.kind
            } else {
                state.group(&pf, id)?.kind
            };
            if target_kind == GroupType::Enterprise {
                return Err(PolicyError::Enterprise {
                    field: pf,
                    value: id.to_string(),
                    reason: "an enterprise group cannot be named as a rule's peer",
                });
            }
            Ok(None)
        }
    }
}

/// How many rules one rule counts for in the per-NIC quota: a prefix list or
/// port list counts at its max entries; a rule naming both counts the product
/// (**decided**: that is how many plain rules it stands for).
pub fn quota_weight(state: &State, rule: &RuleSpec) -> usize {
    let pl = match &rule.peer {
        Peer::PrefixList(id) => state.prefix_lists.get(id).map_or(1, |l| l.max_entries),
        _ => 1,
    };
    let prl = match &rule.ports {
        PortSpec::List(id) => state.port_lists.get(id).map_or(1, |l| l.max_entries),
        _ => 1,
    };
    usize::try_from(u64::from(pl) * u64::from(prl)).unwrap_or(usize::MAX)
}

/// The quota count of a NIC's groups (SPEC §2).
pub fn nic_quota(state: &State, groups: &[GroupId]) -> usize {
    groups
        .iter()
        .filter_map(|g| state.groups.get(g))
        .flat_map(|g| g.rules.iter())
        .map(|r| quota_weight(state, &r.spec))
        .fold(0usize, usize::saturating_add)
}

/// Checks a group on its own and with its rules.
pub fn check_group(state: &State, group: &SecurityGroup) -> Result<(), PolicyError> {
    let f = format!("groups[{}]", group.id);
    check_name(&format!("{f}.name"), &group.name)?;
    check_description(
        &format!("{f}.description"),
        &group.description,
        MAX_DESCRIPTION_CHARS,
    )?;
    check_tags(&format!("{f}.tags"), &group.tags)?;
    if group.kind == GroupType::Enterprise && group.inner_policy != InnerPolicy::Drop {
        return Err(PolicyError::Enterprise {
            field: format!("{f}.inner_policy"),
            value: "Accept".to_owned(),
            reason: "enterprise groups always isolate their members",
        });
    }
    let mut group_peers = 0usize;
    // The first rule of each match, to find a duplicate in one pass.
    let mut seen = std::collections::HashMap::with_capacity(group.rules.len());
    for (i, rule) in group.rules.iter().enumerate() {
        let rf = format!("{f}.rules[{i}]");
        check_rule(state, group, &rf, &rule.spec)?;
        if matches!(rule.spec.peer, Peer::Group(_)) {
            group_peers += 1;
        }
        if let Some(dup) = seen.insert(rule.spec.match_key(), &rule.id) {
            return Err(PolicyError::DuplicateRule {
                field: rf,
                group: group.id.to_string(),
                existing: dup.to_string(),
            });
        }
    }
    if group_peers > MAX_GROUP_PEER_RULES {
        return Err(PolicyError::LimitExceeded {
            field: format!("{f}.rules"),
            value: group_peers,
            limit: MAX_GROUP_PEER_RULES,
            what: "rules naming a security group as peer per basic group",
        });
    }
    Ok(())
}

/// Checks what prefix and port lists share: name, description, and entries
/// within `1..=MAX_LIST_ENTRIES` max entries.
fn check_list_header(
    f: &str,
    name: &str,
    description: &str,
    max_entries: u32,
    entries: usize,
) -> Result<(), PolicyError> {
    check_name(&format!("{f}.name"), name)?;
    check_description(
        &format!("{f}.description"),
        description,
        MAX_DESCRIPTION_CHARS,
    )?;
    check_max_entries(f, max_entries, entries)
}

/// Checks a prefix list.
pub fn check_prefix_list(list: &PrefixList) -> Result<(), PolicyError> {
    let f = format!("prefix_lists[{}]", list.id);
    check_list_header(
        &f,
        &list.name,
        &list.description,
        list.max_entries,
        list.entries.len(),
    )?;
    let mut seen = BTreeSet::new();
    for (i, e) in list.entries.iter().enumerate() {
        let ef = format!("{f}.entries[{i}]");
        if e.cidr.family() != list.family {
            return Err(PolicyError::invalid(
                format!("{ef}.cidr"),
                e.cidr,
                format!("the list's family is {}", list.family),
            ));
        }
        if !seen.insert(e.cidr) {
            return Err(PolicyError::invalid(
                format!("{ef}.cidr"),
                e.cidr,
                "listed twice",
            ));
        }
        check_description(
            &format!("{ef}.description"),
            &e.description,
            MAX_RULE_DESCRIPTION_CHARS,
        )?;
    }
    Ok(())
}

/// Checks a port list.
pub fn check_port_list(list: &PortList) -> Result<(), PolicyError> {
    let f = format!("port_lists[{}]", list.id);
    check_list_header(
        &f,
        &list.name,
        &list.description,
        list.max_entries,
        list.entries.len(),
    )?;
    let mut seen = BTreeSet::new();
    for (i, e) in list.entries.iter().enumerate() {
        let ef = format!("{f}.entries[{i}]");
        e.range.check(&format!("{ef}.range"))?;
        if !seen.insert(e.range) {
            return Err(PolicyError::invalid(
                format!("{ef}.range"),
                e.range,
                "listed twice",
            ));
        }
        check_description(
            &format!("{ef}.description"),
            &e.description,
            MAX_RULE_DESCRIPTION_CHARS,
        )?;
    }
    Ok(())
}

fn check_max_entries(f: &str, max: u32, len: usize) -> Result<(), PolicyError> {
    if !(1..=MAX_LIST_ENTRIES).contains(&max) {
        return Err(PolicyError::out_of_range(
            format!("{f}.max_entries"),
            max,
            format!("1..={MAX_LIST_ENTRIES}"),
        ));
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if len > max {
        return Err(PolicyError::LimitExceeded {
            field: format!("{f}.entries"),
            value: len,
            limit: max,
            what: "entries (the list's max_entries)",
        });
    }
    Ok(())
}

/// Checks a NIC binding against the state: name, addresses, 1..=10 existing
/// groups of one type, and the 1,000-rule quota.
pub fn check_nic(state: &State, nic: &NicBinding) -> Result<(), PolicyError> {
    check_nic_at(state, nic, &format!("nics[{}]", nic.name))
}

/// [`check_nic`] with the errors' field paths under `f` (another host's
/// NIC is `hosts[HOST].nics[NAME]`).
fn check_nic_at(state: &State, nic: &NicBinding, f: &str) -> Result<(), PolicyError> {
    check_nic_fields_at(nic, f)?;
    check_nic_groups_at(state, &nic.name, &nic.groups, f)
}

/// The checks of a NIC that need nothing else: its name, its addresses and
/// how many it has (field paths under `f`).
pub fn check_nic_fields_at(nic: &NicBinding, f: &str) -> Result<(), PolicyError> {
    if nic.name.is_empty()
        || nic.name.len() > MAX_IFNAME_BYTES
        || nic
            .name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(PolicyError::invalid(
            format!("{f}.name"),
            &nic.name,
            format!(
                "an interface name is 1..={MAX_IFNAME_BYTES} bytes without '/', ':' or white space"
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, a) in nic.addresses.iter().enumerate() {
        let af = format!("{f}.addresses[{i}]");
        let host = Cidr::host(*a);
        let bad = a.is_unspecified()
            || a.is_multicast()
            || matches!(a, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
            || matches!(a, std::net::IpAddr::V4(v4) if v4.is_broadcast());
        if bad {
            return Err(PolicyError::invalid(af, a, "not a unicast address"));
        }
        if !seen.insert(host) {
            return Err(PolicyError::invalid(af, a, "listed twice"));
        }
    }
    let own = nic.addresses.len() + nic.extra_allowed.len();
    if own > MAX_OWN_PER_NIC {
        return Err(PolicyError::LimitExceeded {
            field: format!("{f}.addresses"),
            value: own,
            limit: MAX_OWN_PER_NIC,
            what: "addresses and extra allowed prefixes per NIC",
        });
    }
    Ok(())
}

/// The checks of NIC `name`'s list of groups against the state: how many,
/// none twice, each existing, one type, and the rules they add up to (field
/// paths under `f`). A counted NIC of another host is checked by its list.
pub fn check_nic_groups_at(
    state: &State,
    name: &str,
    groups: &[GroupId],
    f: &str,
) -> Result<(), PolicyError> {
    let count = groups.len();
    if count == 0 {
        return Err(PolicyError::out_of_range(
            format!("{f}.groups count"),
            0,
            format!("1..={MAX_GROUPS_PER_NIC} (a NIC belongs to at least one group)"),
        ));
    }
    if count > MAX_GROUPS_PER_NIC {
        return Err(PolicyError::LimitExceeded {
            field: format!("{f}.groups"),
            value: count,
            limit: MAX_GROUPS_PER_NIC,
            what: "security groups per NIC",
        });
    }
    let mut first: Option<&SecurityGroup> = None;
    for (i, gid) in groups.iter().enumerate() {
        let gf = format!("{f}.groups[{i}]");
        if groups[..i].contains(gid) {
            return Err(PolicyError::invalid(
                gf,
                gid,
                "the NIC lists this group twice",
            ));
        }
        let g = state.group(&gf, gid)?;
        match first {
            None => first = Some(g),
            Some(f0) if f0.kind != g.kind => {
                return Err(PolicyError::MixedGroupTypes {
                    nic: name.to_owned(),
                    first: f0.id.to_string(),
                    first_type: f0.kind.to_string(),
                    other: g.id.to_string(),
                    other_type: g.kind.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    let quota = nic_quota(state, groups);
    if quota > MAX_RULES_PER_NIC {
        return Err(PolicyError::LimitExceeded {
            field: format!("{f}.rules"),
            value: quota,
            limit: MAX_RULES_PER_NIC,
            what: "rules (ingress + egress, lists counted at their max entries) across the groups of one NIC",
        });
    }
    Ok(())
}

/// Checks the agent settings: each session timeout within
/// `SESSION_TIMEOUT_MIN_SECS..=SESSION_TIMEOUT_MAX_SECS`, the fragment timeout
/// within `FRAGMENT_TIMEOUT_MIN_SECS..=FRAGMENT_TIMEOUT_MAX_SECS`, the snapshot retention
/// within `SNAPSHOT_RETENTION_MIN_DAYS..=SNAPSHOT_RETENTION_MAX_DAYS`.
pub fn check_settings(settings: &Settings) -> Result<(), PolicyError> {
    let SessionTimeouts {
        tcp_handshake_secs,
        tcp_established_secs,
        tcp_closing_secs,
        other_secs,
    } = settings.session_timeouts;
    for (name, secs) in [
        ("tcp_handshake_secs", tcp_handshake_secs),
        ("tcp_established_secs", tcp_established_secs),
        ("tcp_closing_secs", tcp_closing_secs),
        ("other_secs", other_secs),
    ] {
        if !(SESSION_TIMEOUT_MIN_SECS..=SESSION_TIMEOUT_MAX_SECS).contains(&secs) {
            return Err(PolicyError::out_of_range(
                format!("settings.session_timeouts.{name}"),
                secs,
                format!("{SESSION_TIMEOUT_MIN_SECS}..={SESSION_TIMEOUT_MAX_SECS} seconds"),
            ));
        }
    }
    let frag = settings.fragment_timeout_secs;
    if !(FRAGMENT_TIMEOUT_MIN_SECS..=FRAGMENT_TIMEOUT_MAX_SECS).contains(&frag) {
        return Err(PolicyError::out_of_range(
            "settings.fragment_timeout_secs",
            frag,
            format!("{FRAGMENT_TIMEOUT_MIN_SECS}..={FRAGMENT_TIMEOUT_MAX_SECS} seconds"),
        ));
    }
    let days = settings.snapshot_retention_days;
    if !(SNAPSHOT_RETENTION_MIN_DAYS..=SNAPSHOT_RETENTION_MAX_DAYS).contains(&days) {
        return Err(PolicyError::out_of_range(
            "settings.snapshot_retention_days",
            days,
            format!("{SNAPSHOT_RETENTION_MIN_DAYS}..={SNAPSHOT_RETENTION_MAX_DAYS} days"),
        ));
    }
    Ok(())
}

/// Checks the platform addresses: each at least
/// [`PLATFORM_MIN_PREFIX_V4`] / [`PLATFORM_MIN_PREFIX_V6`] long. A platform
/// address exempts every packet to or from it from every rule, so
/// `0.0.0.0/0` there would turn enforcement off without a word.
pub fn check_platform_addresses(settings: &Settings) -> Result<(), PolicyError> {
    for (i, c) in settings.platform_addresses.iter().enumerate() {
        let min = match c.family() {
            Family::Ipv4 => PLATFORM_MIN_PREFIX_V4,
            Family::Ipv6 => PLATFORM_MIN_PREFIX_V6,
        };
        if c.len() < min {
            return Err(PolicyError::invalid(
                format!("settings.platform_addresses[{i}]"),
                c.to_cidr_string(),
                format!(
                    "a platform address is exempt from every rule, so it is at most a /{min} \
                     for {} (this is a /{}); list the platform's own addresses",
                    c.family(),
                    c.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks going from `old` to `new`, the check of every change: `new`
/// passes [`validate_state`], its platform addresses
/// [`check_platform_addresses`] (all of them: a state that holds a broader
/// one from an older agent takes no change but the one that narrows it),
/// and every free-text field that is new or changed passes [`check_text`].
///
/// **Decided**: text that `old` holds unchanged is not checked again, so a
/// store written by an older agent (which took control characters in
/// descriptions) still loads and takes changes; the CLI escapes such text
/// when it prints it.
pub fn validate_change(old: &State, new: &State) -> Result<(), PolicyError> {
    validate_state(new)?;
    check_platform_addresses(&new.settings)?;
    // Only text with a character to refuse is looked up in `old`: the
    // common case costs one scan of each text.
    let suspect: Vec<FreeText<'_>> = all_texts(new)
        .into_iter()
        .filter(|t| t.text.chars().any(|c| forbidden_char(c).is_some()))
        .collect();
    if suspect.is_empty() {
        return Ok(());
    }
    let known = texts(old);
    for t in suspect {
        if known.get(&t.key) != Some(&t.text) {
            check_text(&t.field(), t.text)?;
        }
    }
    Ok(())
}

/// [`validate_change`] for a state that is all new (a file given by the
/// user): every text field is checked.
pub fn validate_new(state: &State) -> Result<(), PolicyError> {
    validate_change(&State::with_seed(0), state)
}

/// What a free-text field belongs to, to find it again in another state.
#[derive(Debug, PartialEq, Eq, Hash)]
enum TextKey<'a> {
    GroupName(&'a GroupId),
    GroupDescription(&'a GroupId),
    TagKey(&'a GroupId, &'a str),
    TagValue(&'a GroupId, &'a str),
    RuleDescription(&'a super::ids::RuleId),
    PrefixListName(&'a PrefixListId),
    PrefixListDescription(&'a PrefixListId),
    PrefixEntry(&'a PrefixListId, Cidr),
    PortListName(&'a PortListId),
    PortListDescription(&'a PortListId),
    PortEntry(&'a PortListId, super::model::PortRange),
}

/// One free-text field of a state: what it belongs to, its text, and (for
/// the path in errors, made only when one is needed) the group of a rule
/// and the position of a rule or list entry.
struct FreeText<'a> {
    key: TextKey<'a>,
    group: Option<&'a GroupId>,
    position: usize,
    text: &'a str,
}

impl FreeText<'_> {
    /// The field's path, as [`validate_state`]'s errors write it.
    fn field(&self) -> String {
        let i = self.position;
        match &self.key {
            TextKey::GroupName(g) => format!("groups[{g}].name"),
            TextKey::GroupDescription(g) => format!("groups[{g}].description"),
            TextKey::TagKey(g, k) => format!("groups[{g}].tags[{k:?}] key"),
            TextKey::TagValue(g, k) => format!("groups[{g}].tags[{k:?}] value"),
            TextKey::RuleDescription(_) => match self.group {
                Some(g) => format!("groups[{g}].rules[{i}].description"),
                None => format!("rules[{i}].description"),
            },
            TextKey::PrefixListName(l) => format!("prefix_lists[{l}].name"),
            TextKey::PrefixListDescription(l) => format!("prefix_lists[{l}].description"),
            TextKey::PrefixEntry(l, _) => format!("prefix_lists[{l}].entries[{i}].description"),
            TextKey::PortListName(l) => format!("port_lists[{l}].name"),
            TextKey::PortListDescription(l) => format!("port_lists[{l}].description"),
            TextKey::PortEntry(l, _) => format!("port_lists[{l}].entries[{i}].description"),
        }
    }
}

/// Every free-text field of `state` by what it belongs to.
fn texts(state: &State) -> std::collections::HashMap<TextKey<'_>, &str> {
    all_texts(state)
        .into_iter()
        .map(|t| (t.key, t.text))
        .collect()
}

/// Every free-text field of `state`: group names, descriptions and tags,
/// rule descriptions, list names, descriptions and entry descriptions.
fn all_texts(state: &State) -> Vec<FreeText<'_>> {
    let mut out = Vec::new();
    let mut push = |key, group, position, text| {
        out.push(FreeText {
            key,
            group,
            position,
            text,
        });
    };
    for (id, g) in &state.groups {
        push(TextKey::GroupName(id), None, 0, g.name.as_str());
        push(TextKey::GroupDescription(id), None, 0, &g.description);
        for (k, v) in &g.tags {
            push(TextKey::TagKey(id, k), None, 0, k);
            push(TextKey::TagValue(id, k), None, 0, v);
        }
        for (i, r) in g.rules.iter().enumerate() {
            push(
                TextKey::RuleDescription(&r.id),
                Some(id),
                i,
                &r.spec.description,
            );
        }
    }
    for (id, l) in &state.prefix_lists {
        push(TextKey::PrefixListName(id), None, 0, &l.name);
        push(TextKey::PrefixListDescription(id), None, 0, &l.description);
        for (j, e) in l.entries.iter().enumerate() {
            push(TextKey::PrefixEntry(id, e.cidr), None, j, &e.description);
        }
    }
    for (id, l) in &state.port_lists {
        push(TextKey::PortListName(id), None, 0, &l.name);
        push(TextKey::PortListDescription(id), None, 0, &l.description);
        for (j, e) in l.entries.iter().enumerate() {
            push(TextKey::PortEntry(id, e.range), None, j, &e.description);
        }
    }
    out
}

/// Checks a whole state: every object, every reference, every limit.
pub fn validate_state(state: &State) -> Result<(), PolicyError> {
    check_settings(&state.settings)?;
    for (id, list) in &state.prefix_lists {
        if id != &list.id {
            return Err(PolicyError::invalid(
                format!("prefix_lists[{id}].id"),
                &list.id,
                "differs from its key",
            ));
        }
        check_prefix_list(list)?;
    }
    for (id, list) in &state.port_lists {
        if id != &list.id {
            return Err(PolicyError::invalid(
                format!("port_lists[{id}].id"),
                &list.id,
                "differs from its key",
            ));
        }
        check_port_list(list)?;
    }
    let mut rule_ids = BTreeSet::new();
    for (id, group) in &state.groups {
        if id != &group.id {
            return Err(PolicyError::invalid(
                format!("groups[{id}].id"),
                &group.id,
                "differs from its key",
            ));
        }
        check_group(state, group)?;
        for (i, Rule { id: rid, .. }) in group.rules.iter().enumerate() {
            if !rule_ids.insert(rid) {
                return Err(PolicyError::invalid(
                    format!("groups[{id}].rules[{i}].id"),
                    rid,
                    "another rule has this id",
                ));
            }
        }
    }
    for (name, nic) in &state.nics {
        if name != &nic.name {
            return Err(PolicyError::invalid(
                format!("nics[{name}].name"),
                &nic.name,
                "differs from its key",
            ));
        }
        check_nic(state, nic)?;
    }
    // Every other host's NICs are members too: a change that would take
    // one of them past a limit is refused here, wherever it was made.
    for (host, nics) in &state.remote {
        for (name, nic) in nics {
            let f = format!("hosts[{host}].nics[{name}]");
            if name != &nic.name {
                return Err(PolicyError::invalid(
                    format!("{f}.name"),
                    &nic.name,
                    "differs from its key",
                ));
            }
            check_nic_at(state, nic, &f)?;
        }
    }
    // … and so are those counted by their groups (their own fields were
    // checked when they were counted).
    for (groups, _) in state.census.lists() {
        let (host, name) = state.census.example(groups).unwrap_or(("?", "?"));
        check_nic_groups_at(state, name, groups, &format!("hosts[{host}].nics[{name}]"))?;
    }
    Ok(())
}

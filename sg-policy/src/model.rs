//! The policy model of SPEC §1: groups, rules, prefix lists, port lists, NIC
//! bindings and agent settings, gathered in one [`State`].
//!
//! Plain data: every field is public so the store and the compiler can read it,
//! but changes go through the operations in [`ops`](super::ops), which validate.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{
    addr::{Cidr, Family},
    census::Census,
    error::{PolicyError, one_of},
    ids::{GroupId, IdGen, PortListId, PrefixListId, RuleId},
};

/// Protocol numbers with names (SPEC §1).
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
}

/// `basic` or `enterprise` (the seeds' "advanced").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupType {
    Basic,
    #[serde(alias = "advanced")]
    Enterprise,
}

impl fmt::Display for GroupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Basic => "basic",
            Self::Enterprise => "enterprise",
        })
    }
}

impl GroupType {
    /// `basic`, `enterprise` or `advanced` (any case), naming `field` when
    /// it is none of them. The one reader of a group type, for every input.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        one_of(
            field,
            text,
            &[
                ("basic", Self::Basic),
                ("enterprise", Self::Enterprise),
                ("advanced", Self::Enterprise),
            ],
        )
    }
}

/// Intra-group policy (`InnerAccessPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InnerPolicy {
    Accept,
    Drop,
}

impl InnerPolicy {
    /// `Accept` or `Drop` (any case), naming `field` when it is neither.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        one_of(
            field,
            text,
            &[("Accept", Self::Accept), ("Drop", Self::Drop)],
        )
    }
}

/// A rule's policy.
///
/// Ordered `Drop` < `Accept`: at equal priority `Drop` is stronger (SPEC §3 step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Drop,
    Accept,
}

impl Action {
    /// Parses `Accept`/`Allow` or `Drop`/`Deny`, any case.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "accept" | "allow" => Ok(Self::Accept),
            "drop" | "deny" => Ok(Self::Drop),
            _ => Err(PolicyError::invalid(field, text, "expected Accept or Drop")),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accept => "Accept",
            Self::Drop => "Drop",
        })
    }
}

/// `ingress` (towards the NIC's workload) or `egress` (from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// Parses `ingress`/`egress` (also `inbound`/`outbound`), any case.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ingress" | "inbound" => Ok(Self::Ingress),
            "egress" | "outbound" => Ok(Self::Egress),
            _ => Err(PolicyError::invalid(
                field,
                text,
                "expected ingress or egress",
            )),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// A rule's protocol: `ALL` or one IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Protocol {
    All,
    Number(u8),
}

impl Protocol {
    pub const TCP: Self = Self::Number(proto::TCP);
    pub const UDP: Self = Self::Number(proto::UDP);
    pub const ICMP: Self = Self::Number(proto::ICMP);
    pub const ICMPV6: Self = Self::Number(proto::ICMPV6);
    pub const GRE: Self = Self::Number(proto::GRE);

    /// Parses `TCP`, `UDP`, `ICMP` (or `ICMPv4`), `ICMPv6`, `GRE`, `ALL` (any case)
    /// or a number 0..=255.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        let trimmed = text.trim();
        match trimmed.to_ascii_lowercase().as_str() {
            "all" => return Ok(Self::All),
            "tcp" => return Ok(Self::TCP),
            "udp" => return Ok(Self::UDP),
            "icmp" | "icmpv4" => return Ok(Self::ICMP),
            "icmpv6" => return Ok(Self::ICMPV6),
            "gre" => return Ok(Self::GRE),
            _ => {}
        }
        if !trimmed.is_empty() && trimmed.len() <= 5 && trimmed.bytes().all(|b| b.is_ascii_digit())
        {
            let n: u32 = trimmed.parse().unwrap_or(u32::MAX);
            return u8::try_from(n)
                .map(Self::Number)
                .map_err(|_| PolicyError::out_of_range(field, n, "0..=255"));
        }
        Err(PolicyError::invalid(
            field,
            text,
            "expected TCP, UDP, ICMP, ICMPv6, GRE, ALL or a protocol number 0..=255",
        ))
    }

    /// The number, `None` for `ALL`.
    pub fn number(self) -> Option<u8> {
        match self {
            Self::All => None,
            Self::Number(n) => Some(n),
        }
    }

    /// Whether rules of this protocol carry ports (TCP and UDP only).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Number(proto::TCP | proto::UDP))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("ALL"),
            Self::Number(proto::TCP) => f.write_str("TCP"),
            Self::Number(proto::UDP) => f.write_str("UDP"),
            Self::Number(proto::ICMP) => f.write_str("ICMP"),
            Self::Number(proto::ICMPV6) => f.write_str("ICMPv6"),
            Self::Number(proto::GRE) => f.write_str("GRE"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

impl TryFrom<String> for Protocol {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Self, PolicyError> {
        Self::parse("protocol", &text)
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> String {
        p.to_string()
    }
}

/// An inclusive port range `from/to`; valid when 1 ≤ from ≤ to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    /// One port, `p/p`.
    pub fn single(port: u16) -> Self {
        Self {
            from: port,
            to: port,
        }
    }

    /// Parses `a/b` with 1 ≤ a ≤ b ≤ 65535.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        let trimmed = text.trim();
        let Some((first, last)) = trimmed.split_once('/') else {
            return Err(PolicyError::invalid(
                field,
                text,
                "expected a port range a/b such as 22/22 or 8000/9000",
            ));
        };
        let port = |part: &str| -> Result<u16, PolicyError> {
            if part.is_empty() || part.len() > 6 || !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(PolicyError::invalid(
                    field,
                    text,
                    "expected a port range a/b such as 22/22 or 8000/9000",
                ));
            }
            let n: u32 = part.parse().unwrap_or(u32::MAX);
            match u16::try_from(n) {
                Ok(p) if p >= 1 => Ok(p),
                _ => Err(PolicyError::out_of_range(field, n, "1..=65535")),
            }
        };
        let range = Self {
            from: port(first)?,
            to: port(last)?,
        };
        range.check(field)?;
        Ok(range)
    }

    /// Checks 1 ≤ from ≤ to.
    pub fn check(self, field: &str) -> Result<(), PolicyError> {
        if self.from == 0 {
            return Err(PolicyError::out_of_range(field, self.from, "1..=65535"));
        }
        if self.from > self.to {
            return Err(PolicyError::invalid(
                field,
                self,
                "the first port is above the last",
            ));
        }
        Ok(())
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.from <= port && port <= self.to
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.from, self.to)
    }
}

impl TryFrom<String> for PortRange {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Self, PolicyError> {
        Self::parse("port range", &text)
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

/// A rule's destination ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSpec {
    /// `-1/-1`: ports do not apply (every protocol but TCP and UDP).
    Any,
    /// `a/b` (TCP and UDP).
    Range(PortRange),
    /// A port list (TCP and UDP).
    List(PortListId),
}

/// A rule's "authorization object": the peer address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Cidr(Cidr),
    Group(GroupId),
    PrefixList(PrefixListId),
}

impl Peer {
    /// Parses a CIDR or address, an `sg-…` id or a `pl-…` id.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        let t = text.trim();
        if t.starts_with(GroupId::PREFIX) {
            GroupId::parse(field, t).map(Self::Group)
        } else if t.starts_with(PrefixListId::PREFIX) {
            PrefixListId::parse(field, t).map(Self::PrefixList)
        } else {
            Cidr::parse(field, t).map(Self::Cidr)
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(c) => c.fmt(f),
            Self::Group(g) => g.fmt(f),
            Self::PrefixList(p) => p.fmt(f),
        }
    }
}

/// A rule as requested: everything but its id (SPEC §1's rule table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleSpec {
    pub direction: Direction,
    pub action: Action,
    /// 1..=100, smaller is stronger.
    pub priority: u8,
    pub protocol: Protocol,
    /// Destination ports.
    pub ports: PortSpec,
    /// For ingress the packet's source, for egress its destination.
    pub peer: Peer,
    /// Quintuple extra: the packet's source port range.
    #[serde(default)]
    pub source_ports: Option<PortRange>,
    /// Quintuple extra: ingress destination / egress source address.
    #[serde(default)]
    pub local: Option<Cidr>,
    #[serde(default)]
    pub description: String,
}

impl RuleSpec {
    /// A rule of priority 1 with no quintuple extras and no description.
    pub fn new(
        direction: Direction,
        action: Action,
        protocol: Protocol,
        ports: PortSpec,
        peer: Peer,
    ) -> Self {
        Self {
            direction,
            action,
            priority: 1,
            protocol,
            ports,
            peer,
            source_ports: None,
            local: None,
            description: String::new(),
        }
    }

    /// Parses a rule from the seeds' table columns: direction, policy, priority,
    /// protocol, port range (`a/b`, `-1/-1` or `prl-…`) and peer.
    pub fn from_text(
        direction: &str,
        policy: &str,
        priority: &str,
        protocol: &str,
        ports: &str,
        peer: &str,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            direction: Direction::parse("rule.direction", direction)?,
            action: Action::parse("rule.policy", policy)?,
            priority: parse_priority("rule.priority", priority)?,
            protocol: Protocol::parse("rule.protocol", protocol)?,
            ports: parse_port_spec("rule.port_range", ports)?,
            peer: Peer::parse("rule.peer", peer)?,
            source_ports: None,
            local: None,
            description: String::new(),
        })
    }

    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    #[must_use]
    pub fn with_source_ports(mut self, range: PortRange) -> Self {
        self.source_ports = Some(range);
        self
    }

    #[must_use]
    pub fn with_local(mut self, local: Cidr) -> Self {
        self.local = Some(local);
        self
    }

    #[must_use]
    pub fn with_description(mut self, description: &str) -> Self {
        description.clone_into(&mut self.description);
        self
    }

    /// Whether two rules match the same packets with the same action and priority
    /// (the description does not count).
    pub fn same_match(&self, other: &Self) -> bool {
        self.match_key() == other.match_key()
    }

    /// Everything of the rule but its description: what it matches and does.
    /// Equal keys are [`RuleSpec::same_match`]; hashable, for finding
    /// duplicates in one pass.
    pub fn match_key(
        &self,
    ) -> (
        Direction,
        Action,
        u8,
        Protocol,
        &PortSpec,
        &Peer,
        Option<PortRange>,
        Option<Cidr>,
    ) {
        (
            self.direction,
            self.action,
            self.priority,
            self.protocol,
            &self.ports,
            &self.peer,
            self.source_ports,
            self.local,
        )
    }
}

/// Parses a priority; anything outside 1..=100 is refused naming the range.
pub fn parse_priority(field: &str, text: &str) -> Result<u8, PolicyError> {
    let t = text.trim();
    let n: i64 = t
        .parse()
        .map_err(|_| PolicyError::invalid(field, text, "expected a priority 1..=100"))?;
    match u8::try_from(n) {
        Ok(p) if (1..=100).contains(&p) => Ok(p),
        _ => Err(PolicyError::out_of_range(field, n, "1..=100")),
    }
}

/// Parses `a/b`, `-1/-1` or a `prl-…` id.
pub fn parse_port_spec(field: &str, text: &str) -> Result<PortSpec, PolicyError> {
    let t = text.trim();
    if t == "-1/-1" {
        Ok(PortSpec::Any)
    } else if t.starts_with(PortListId::PREFIX) {
        PortListId::parse(field, t).map(PortSpec::List)
    } else {
        PortRange::parse(field, t).map(PortSpec::Range)
    }
}

/// A rule: a validated [`RuleSpec`] with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: RuleId,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// A security group (SPEC §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: GroupId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub kind: GroupType,
    /// Basic groups only; an enterprise group always isolates (stored as `Drop`).
    pub inner_policy: InnerPolicy,
    #[serde(default)]
    pub deletion_protection: bool,
    #[serde(default)]
    pub managed: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One prefix list entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PrefixListEntry {
    pub cidr: Cidr,
    #[serde(default)]
    pub description: String,
}

/// A prefix list (`pl-…`): counts toward quotas with its `max_entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixList {
    pub id: PrefixListId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub family: Family,
    pub max_entries: u32,
    #[serde(default)]
    pub entries: Vec<PrefixListEntry>,
}

/// One port list entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortListEntry {
    pub range: PortRange,
    #[serde(default)]
    pub description: String,
}

/// A port list (`prl-…`): counts toward quotas with its `max_entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortList {
    pub id: PortListId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub max_entries: u32,
    #[serde(default)]
    pub entries: Vec<PortListEntry>,
}

/// Where the NIC sits relative to its workload (SPEC §1, **decided**).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    /// The workload's own NIC: received = ingress, sent = egress.
    Local,
    /// The host side of a workload's veth/tap: received = egress, sent = ingress.
    Port,
}

impl BindingMode {
    /// `local` or `port` (any case), naming `field` when it is neither.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        one_of(field, text, &[("local", Self::Local), ("port", Self::Port)])
    }

    /// The workload's direction of a packet seen on the interface: `received`
    /// is true at the receive hook (XDP / TC ingress), false at TC egress.
    pub fn direction(self, received: bool) -> Direction {
        match (self, received) {
            (Self::Local, true) | (Self::Port, false) => Direction::Ingress,
            (Self::Local, false) | (Self::Port, true) => Direction::Egress,
        }
    }
}

/// A NIC bound on this host, with its addresses and ordered groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicBinding {
    /// Interface name (the key; followed across index changes).
    pub name: String,
    pub mode: BindingMode,
    /// The NIC's private addresses (IPv4 and IPv6).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// Extra allowed addresses: count as the NIC's own everywhere (SPEC §3 step 0).
    #[serde(default)]
    pub extra_allowed: Vec<Cidr>,
    /// Anti-spoofing switch; `None` = the mode's default (on for `port`, off for `local`).
    #[serde(default)]
    pub anti_spoof: Option<bool>,
    /// 1..=10 groups of one type, in order.
    pub groups: Vec<GroupId>,
}

impl NicBinding {
    /// One of a NIC's addresses, as every input names it (API, CLI, apply
    /// documents): an address, or the same address as a host prefix (`/32`,
    /// `/128`). A network is refused, naming `field`: a NIC holds addresses;
    /// the networks it may also send from are its `extra_allowed`.
    pub fn parse_address(field: &str, text: &str) -> Result<IpAddr, PolicyError> {
        let cidr = Cidr::parse(field, text)?;
        if cidr.is_host() {
            Ok(cidr.addr())
        } else {
            Err(PolicyError::invalid(
                field,
                text,
                "a NIC address is one address, not a network (extra_allowed takes networks)",
            ))
        }
    }

    /// A binding with the given addresses and groups, anti-spoofing at its default.
    pub fn new(
        name: &str,
        mode: BindingMode,
        addresses: Vec<IpAddr>,
        groups: Vec<GroupId>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            mode,
            addresses,
            extra_allowed: Vec::new(),
            anti_spoof: None,
            groups,
        }
    }

    /// Whether anti-spoofing applies to this NIC.
    pub fn anti_spoof_enabled(&self) -> bool {
        self.anti_spoof.unwrap_or(self.mode == BindingMode::Port)
    }

    /// The NIC's own addresses as CIDRs: its addresses (host routes) and its extra
    /// allowed addresses, sorted, without duplicates.
    pub fn own_cidrs(&self) -> Vec<Cidr> {
        let mut v: Vec<Cidr> = self
            .addresses
            .iter()
            .map(|a| Cidr::host(*a))
            .chain(self.extra_allowed.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether `ip` is one of the NIC's own addresses.
    pub fn owns(&self, ip: &IpAddr) -> bool {
        self.addresses.contains(ip) || self.extra_allowed.iter().any(|c| c.contains(ip))
    }
}

/// Agent settings that take part in decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Always-allowed platform addresses (SPEC §3 step 2); empty by default. The
    /// seeds' metadata service, `100.100.100.200`, is the usual example.
    #[serde(default)]
    pub platform_addresses: Vec<Cidr>,
    /// Drop egress TCP to port 25 (SPEC §3 step 3); on by default.
    #[serde(default = "yes")]
    pub block_port_25: bool,
    /// Idle timeouts of sessions (SPEC §4).
    #[serde(default)]
    pub session_timeouts: SessionTimeouts,
    /// How long a first fragment is remembered for the later fragments of
    /// its datagram, in seconds from when it was seen (SPEC §3 item 8):
    /// 1..=600, default 30 (the kernel's reassembly time). Later fragments
    /// after that drop.
    #[serde(default = "Settings::default_fragment_timeout_secs")]
    pub fragment_timeout_secs: u32,
    /// How many days a security group snapshot is kept before it is deleted
    /// (SPEC §5, seed 000: 1..=30, default 1).
    #[serde(default = "Settings::default_snapshot_retention_days")]
    pub snapshot_retention_days: u32,
}

fn yes() -> bool {
    true
}

impl Settings {
    fn default_snapshot_retention_days() -> u32 {
        1
    }

    fn default_fragment_timeout_secs() -> u32 {
        30
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            platform_addresses: Vec::new(),
            block_port_25: true,
            session_timeouts: SessionTimeouts::default(),
            fragment_timeout_secs: Self::default_fragment_timeout_secs(),
            snapshot_retention_days: Self::default_snapshot_retention_days(),
        }
    }
}

/// Idle timeouts of sessions, in seconds (SPEC §4): a session is alive while its
/// idle time is below the timeout of its state. Each is 1..=604,800 (a week).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTimeouts {
    /// TCP until the handshake completes (the initiator's ACK after the
    /// responder's SYN-ACK); 60 s.
    #[serde(default = "SessionTimeouts::default_tcp_handshake_secs")]
    pub tcp_handshake_secs: u32,
    /// Established TCP, one FIN seen included (half-closed is legal); 910 s.
    #[serde(default = "SessionTimeouts::default_tcp_established_secs")]
    pub tcp_established_secs: u32,
    /// TCP once either side sent RST or both sides sent FIN; 10 s.
    #[serde(default = "SessionTimeouts::default_tcp_closing_secs")]
    pub tcp_closing_secs: u32,
    /// UDP, ICMP echo and every other protocol; 910 s.
    #[serde(default = "SessionTimeouts::default_other_secs")]
    pub other_secs: u32,
}

impl SessionTimeouts {
    fn default_tcp_handshake_secs() -> u32 {
        60
    }

    fn default_tcp_established_secs() -> u32 {
        910
    }

    fn default_tcp_closing_secs() -> u32 {
        10
    }

    fn default_other_secs() -> u32 {
        910
    }
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self {
            tcp_handshake_secs: Self::default_tcp_handshake_secs(),
            tcp_established_secs: Self::default_tcp_established_secs(),
            tcp_closing_secs: Self::default_tcp_closing_secs(),
            other_secs: Self::default_other_secs(),
        }
    }
}

/// Everything the policy knows: the desired state of one host, and in a
/// fleet what the other hosts bind (members of groups span hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub settings: Settings,
    /// Shared with the states cloned from this one until written
    /// (`Arc::make_mut`): a clone of a large state costs a pointer per
    /// group, and comparing two states skips every group they share
    /// (`Arc`'s equality looks at the pointer first).
    #[serde(default)]
    pub groups: BTreeMap<GroupId, std::sync::Arc<SecurityGroup>>,
    #[serde(default)]
    pub prefix_lists: BTreeMap<PrefixListId, PrefixList>,
    #[serde(default)]
    pub port_lists: BTreeMap<PortListId, PortList>,
    /// NIC bindings of this host by interface name: the NICs it enforces.
    #[serde(default)]
    pub nics: BTreeMap<String, NicBinding>,
    /// In a fleet, the NIC bindings of every other host, by host name then
    /// interface name: members of their groups (SPEC §1), counted by every
    /// check that spans NICs, never enforced here. Empty on a single host.
    /// Held whole only where a group of this host's NICs names their
    /// groups (see [`State::named_groups`]); the rest are in `census`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote: BTreeMap<String, BTreeMap<String, NicBinding>>,
    /// In a fleet, the other hosts' NICs not in `remote`: counted by their
    /// groups, for the checks that span NICs. Shared between the copies of
    /// a state; kept by the fleet store, never serialised with the state.
    #[serde(skip)]
    pub census: Arc<Census>,
    pub ids: IdGen,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// An empty state whose ids are seeded from the clock.
    pub fn new() -> Self {
        Self::with_id_gen(IdGen::from_entropy())
    }

    /// An empty state with reproducible ids.
    pub fn with_seed(seed: u64) -> Self {
        Self::with_id_gen(IdGen::with_seed(seed))
    }

    fn with_id_gen(ids: IdGen) -> Self {
        Self {
            settings: Settings::default(),
            groups: BTreeMap::new(),
            prefix_lists: BTreeMap::new(),
            port_lists: BTreeMap::new(),
            nics: BTreeMap::new(),
            remote: BTreeMap::new(),
            census: Arc::default(),
            ids,
        }
    }

    /// A group by id, or an error naming `field`.
    pub fn group(&self, field: &str, id: &GroupId) -> Result<&SecurityGroup, PolicyError> {
        self.groups
            .get(id)
            .map(|g| &**g)
            .ok_or_else(|| PolicyError::not_found(field, GroupId::KIND, id))
    }

    /// A NIC binding by name, or an error.
    pub fn nic(&self, name: &str) -> Result<&NicBinding, PolicyError> {
        self.nics
            .get(name)
            .ok_or_else(|| PolicyError::not_found("nic", "NIC binding", name))
    }

    /// Every rule of the state with the group that holds it.
    pub fn all_rules(&self) -> impl Iterator<Item = (&SecurityGroup, &Rule)> {
        self.groups.values().flat_map(|g| {
            let g: &SecurityGroup = g;
            g.rules.iter().map(move |r| (g, r))
        })
    }

    /// A rule by id with its group.
    pub fn find_rule(&self, id: &RuleId) -> Option<(&SecurityGroup, &Rule)> {
        self.all_rules().find(|(_, r)| &r.id == id)
    }

    /// The NICs that are members of `group`, on this host and (in a fleet)
    /// on every other.
    pub fn members<'a>(&'a self, group: &'a GroupId) -> impl Iterator<Item = &'a NicBinding> + 'a {
        self.all_nics().filter(move |n| n.groups.contains(group))
    }

    /// The interface names of every member of `group`: this host's NICs,
    /// then the other hosts', held whole or counted.
    pub fn member_names<'a>(&'a self, group: &'a GroupId) -> Vec<&'a str> {
        let mut out: Vec<&str> = self.members(group).map(|n| n.name.as_str()).collect();
        out.extend(self.census.members(group).into_iter().map(|(_, n)| n));
        out
    }

    /// The groups whose members' addresses this host's tables hold: the
    /// groups of its NICs (the intra-group policy) and every group a rule
    /// of theirs names as its peer. Other hosts' members of any other group
    /// need not be held whole (see [`census`](crate::census)).
    pub fn named_groups(&self) -> BTreeSet<GroupId> {
        let own: BTreeSet<&GroupId> = self.nics.values().flat_map(|n| &n.groups).collect();
        let mut out: BTreeSet<GroupId> = own.iter().map(|g| (*g).clone()).collect();
        for gid in own {
            for r in self.groups.get(gid).into_iter().flat_map(|g| &g.rules) {
                if let Peer::Group(p) = &r.spec.peer {
                    out.insert(p.clone());
                }
            }
        }
        out
    }

    /// Every NIC binding: this host's, then the other hosts'.
    pub fn all_nics(&self) -> impl Iterator<Item = &NicBinding> {
        self.nics
            .values()
            .chain(self.remote.values().flat_map(BTreeMap::values))
    }

    pub(crate) fn fresh_group_id(&mut self) -> GroupId {
        loop {
            let id = GroupId::from_suffix(&self.ids.next_suffix());
            if !self.groups.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn fresh_rule_id(&mut self) -> RuleId {
        loop {
            let id = RuleId::from_suffix(&self.ids.next_suffix());
            if self.find_rule(&id).is_none() {
                return id;
            }
        }
    }

    pub(crate) fn fresh_prefix_list_id(&mut self) -> PrefixListId {
        loop {
            let id = PrefixListId::from_suffix(&self.ids.next_suffix());
            if !self.prefix_lists.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn fresh_port_list_id(&mut self) -> PortListId {
        loop {
            let id = PortListId::from_suffix(&self.ids.next_suffix());
            if !self.port_lists.contains_key(&id) {
                return id;
            }
        }
    }
}

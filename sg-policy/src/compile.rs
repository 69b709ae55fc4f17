//! The compiler: a NIC's merged, sorted rules of one direction (from
//! [`crate::merged_rules`]) and its defaults, turned into the map
//! images the kernel classifies with (layouts in `sg_common::policy`). Pure: no
//! I/O; the map writer in `dataplane` loads the result.
//!
//! Rank r is the r-th rule in decision order; after the rules come the
//! ingress default's intra-group pseudo-rules (one per shared basic group that
//! accepts, in the NIC's group order: SPEC §3 step 6). For every packet field
//! the image holds, per value, the set of ranks whose condition on that field
//! the value meets; the kernel ANDs the sets and takes the lowest rank.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use sg_common::{
    policy::{MAX_INTERVALS, MAX_RANKS, PROTO_OTHER, RuleBits, WORDS, verdict},
    reason,
};

use crate::{
    Action, Cidr, Direction, Family, GroupId, PolicyError, PortMatch, RuleId, State,
    merge::nic_defaults, merged_rules,
};

/// What a rank stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rank {
    Rule(RuleId),
    /// Ingress default: a member of this basic group (intra-group Accept).
    IntraGroup(GroupId),
}

/// One address prefix and the ranks whose condition it meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub cidr: Cidr,
    pub bits: RuleBits,
}

/// Elementary intervals of one port field: interval i is
/// `bounds[i] ..= bounds[i + 1] - 1` (the last ends at 65535).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTable {
    pub bounds: Vec<u16>,
    pub bits: Vec<RuleBits>,
    /// Ranks without a condition on this field (for packets without ports).
    pub none: RuleBits,
}

/// A compiled table: one NIC, one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub ranks: Vec<Rank>,
    /// How many of `ranks` are rules (the rest are pseudo-rules).
    pub n_rules: usize,
    pub accept: RuleBits,
    pub default_verdict: u32,
    pub default_reason: u32,
    pub peer: Vec<Prefix>,
    pub local: Vec<Prefix>,
    /// Per protocol number named by some rule, plus [`PROTO_OTHER`].
    pub proto: Vec<(u16, RuleBits)>,
    pub dport: PortTable,
    pub sport: PortTable,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("nics[{nic}] {direction:?}: {ranks} rules and defaults exceed the data plane's {max}")]
    TooManyRanks {
        nic: String,
        direction: Direction,
        ranks: usize,
        max: u32,
    },
    #[error("nics[{nic}] {direction:?}: {n} {field} port intervals exceed the data plane's {max}")]
    TooManyIntervals {
        nic: String,
        direction: Direction,
        field: &'static str,
        n: usize,
        max: u32,
    },
}

impl Table {
    /// A table with no ranks (for clearing a slot).
    pub fn empty() -> Self {
        let empty_ports = || PortTable {
            bounds: Vec::new(),
            bits: Vec::new(),
            none: RuleBits::EMPTY,
        };
        Self {
            ranks: Vec::new(),
            n_rules: 0,
            accept: RuleBits::EMPTY,
            default_verdict: verdict::DROP,
            default_reason: reason::NO_TABLE,
            peer: Vec::new(),
            local: Vec::new(),
            proto: Vec::new(),
            dport: empty_ports(),
            sport: empty_ports(),
        }
    }

    /// 64-bit words the kernel must AND.
    pub fn words(&self) -> u32 {
        u32::try_from(self.ranks.len().div_ceil(64)).unwrap_or(u32::MAX)
    }

    /// The deciding rank for a packet, found the way the kernel finds it in
    /// this table's map image (`sg-ebpf` `rules::classify`): the longest
    /// prefix of each address trie, the elementary port interval, the
    /// protocol's set (else the any-protocol set), intersected; the lowest rank
    /// set wins. `peer` is the source for ingress, the destination for
    /// egress; `local` the other. `None`: no rank matches (the default).
    pub fn classify(
        &self,
        peer: IpAddr,
        local: IpAddr,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    ) -> Option<usize> {
        let lpm = |prefixes: &[Prefix], a: IpAddr| {
            prefixes
                .iter()
                .filter(|p| p.cidr.addr().is_ipv4() == a.is_ipv4() && p.cidr.contains(&a))
                .max_by_key(|p| p.cidr.len())
                .map(|p| p.bits)
        };
        let ports = |t: &PortTable, port: u16| {
            if matches!(protocol, 6 | 17) {
                let i = t.bounds.iter().rposition(|&b| b <= port)?;
                t.bits.get(i).copied()
            } else {
                Some(t.none)
            }
        };
        let proto = self
            .proto
            .iter()
            .find(|(p, _)| *p == u16::from(protocol))
            .or_else(|| self.proto.iter().find(|(p, _)| *p == PROTO_OTHER))
            .map(|(_, b)| *b)?;
        let sets = [
            lpm(&self.peer, peer)?,
            lpm(&self.local, local)?,
            proto,
            ports(&self.dport, dst_port)?,
            ports(&self.sport, src_port)?,
        ];
        (0..self.ranks.len()).find(|&r| sets.iter().all(|b| b.words[r / 64] >> (r % 64) & 1 != 0))
    }

    /// Whether rank `rank`'s action is Accept.
    pub fn accepts(&self, rank: usize) -> bool {
        self.accept.words[rank / 64] >> (rank % 64) & 1 != 0
    }
}

fn set(bits: &mut RuleBits, rank: usize) {
    bits.words[rank / 64] |= 1 << (rank % 64);
}

/// One condition of one rank on one field.
struct Condition<'a> {
    rank: usize,
    protocol: Option<u8>,
    dst_ports: &'a PortMatch,
    src_ports: &'a PortMatch,
    peers: &'a [Cidr],
    local: Option<Cidr>,
}

/// Compiles NIC `nic`'s table for `direction`.
pub fn compile(state: &State, nic: &str, direction: Direction) -> Result<Table, CompileError> {
    let rules = merged_rules(state, nic, direction)?;
    let defaults = nic_defaults(state, nic)?;
    let any = PortMatch::Any;
    let mut ranks: Vec<Rank> = rules.iter().map(|r| Rank::Rule(r.id.clone())).collect();
    let mut conditions: Vec<Condition<'_>> = rules
        .iter()
        .enumerate()
        .map(|(rank, r)| Condition {
            rank,
            protocol: r.protocol,
            dst_ports: &r.dst_ports,
            src_ports: &r.src_ports,
            peers: &r.peers,
            local: r.local,
        })
        .collect();
    let n_rules = ranks.len();
    if direction == Direction::Ingress {
        for (group, members) in &defaults.ingress_intra_group {
            conditions.push(Condition {
                rank: ranks.len(),
                protocol: None,
                dst_ports: &any,
                src_ports: &any,
                peers: members,
                local: None,
            });
            ranks.push(Rank::IntraGroup(group.clone()));
        }
    }
    if ranks.len() > MAX_RANKS as usize {
        return Err(CompileError::TooManyRanks {
            nic: nic.to_owned(),
            direction,
            ranks: ranks.len(),
            max: MAX_RANKS,
        });
    }
    let mut accept = RuleBits::EMPTY;
    for (rank, r) in rules.iter().enumerate() {
        if r.action == Action::Accept {
            set(&mut accept, rank);
        }
    }
    for rank in n_rules..ranks.len() {
        set(&mut accept, rank);
    }
    let (default_verdict, default_reason) = match (direction, defaults.egress) {
        (Direction::Ingress, _) => (verdict::DROP, reason::DEFAULT_INGRESS_DROP),
        (Direction::Egress, Action::Accept) => (verdict::ACCEPT, reason::DEFAULT_EGRESS_BASIC),
        (Direction::Egress, Action::Drop) => (verdict::DROP, reason::DEFAULT_EGRESS_ENTERPRISE),
    };
    let peer = prefixes(
        conditions
            .iter()
            .flat_map(|c| c.peers.iter().map(|p| (*p, c.rank))),
    );
    // A rule without a local condition matches every local address, of both families.
    let local = prefixes(conditions.iter().flat_map(|c| {
        let all = [Cidr::any(Family::Ipv4), Cidr::any(Family::Ipv6)];
        let cidrs: Vec<Cidr> = c.local.map_or_else(|| all.to_vec(), |l| vec![l]);
        cidrs.into_iter().map(move |l| (l, c.rank))
    }));
    let proto = protocols(&conditions);
    let ports = |field: &'static str, source: bool| {
        let table = port_table(
            conditions
                .iter()
                .map(|c| (c.rank, if source { c.src_ports } else { c.dst_ports })),
        );
        if table.bounds.len() > MAX_INTERVALS as usize {
            return Err(CompileError::TooManyIntervals {
                nic: nic.to_owned(),
                direction,
                field,
                n: table.bounds.len(),
                max: MAX_INTERVALS,
            });
        }
        Ok(table)
    };
    let dport = ports("destination", false)?;
    let sport = ports("source", true)?;
    Ok(Table {
        ranks,
        n_rules,
        accept,
        default_verdict,
        default_reason,
        peer,
        local,
        proto,
        dport,
        sport,
    })
}

/// Per protocol number some rank names: the ranks naming it or ALL; and
/// [`PROTO_OTHER`]: the ranks naming ALL.
fn protocols(conditions: &[Condition<'_>]) -> Vec<(u16, RuleBits)> {
    let mut all_protocols = RuleBits::EMPTY;
    let named: BTreeSet<u8> = conditions.iter().filter_map(|c| c.protocol).collect();
    for c in conditions.iter().filter(|c| c.protocol.is_none()) {
        set(&mut all_protocols, c.rank);
    }
    let mut proto: Vec<(u16, RuleBits)> = named
        .iter()
        .map(|&p| {
            let mut bits = all_protocols;
            for c in conditions.iter().filter(|c| c.protocol == Some(p)) {
                set(&mut bits, c.rank);
            }
            (u16::from(p), bits)
        })
        .collect();
    proto.push((PROTO_OTHER, all_protocols));
    proto
}

/// The distinct prefixes of `pairs`, each with the ranks of every prefix that
/// contains it (itself included): a longest-prefix match then yields every rank
/// whose condition the address meets.
fn prefixes(pairs: impl Iterator<Item = (Cidr, usize)>) -> Vec<Prefix> {
    // The ranks of each prefix, and the prefix lengths present per family:
    // the prefixes holding a prefix are its widenings to those lengths, so
    // each is found by lookups (distinct × lengths), not by comparing every
    // pair (distinct × pairs: 10,000 group members named by 20 rules were
    // 200 million comparisons, seconds per NIC).
    let mut ranks: HashMap<Cidr, RuleBits> = HashMap::new();
    let mut lengths: BTreeSet<(Family, u8)> = BTreeSet::new();
    for (cidr, rank) in pairs {
        set(ranks.entry(cidr).or_insert(RuleBits::EMPTY), rank);
        lengths.insert((cidr.family(), cidr.len()));
    }
    let distinct: BTreeSet<Cidr> = ranks.keys().copied().collect();
    distinct
        .into_iter()
        .map(|cidr| {
            let mut bits = RuleBits::EMPTY;
            for &(_, len) in lengths.range((cidr.family(), 0)..=(cidr.family(), cidr.len())) {
                if let Some(outer) = ranks.get(&cidr.widened(len)) {
                    for (w, o) in bits.words.iter_mut().zip(outer.words) {
                        *w |= o;
                    }
                }
            }
            Prefix { cidr, bits }
        })
        .collect()
}

/// Elementary intervals of one port field and each interval's ranks.
fn port_table<'a>(conds: impl Iterator<Item = (usize, &'a PortMatch)> + Clone) -> PortTable {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0]);
    for (_, m) in conds.clone() {
        if let PortMatch::Ranges(v) = m {
            for &(a, b) in v {
                cuts.insert(u32::from(a));
                cuts.insert(u32::from(b) + 1);
            }
        }
    }
    let bounds: Vec<u16> = cuts
        .into_iter()
        .filter_map(|c| u16::try_from(c).ok())
        .collect();
    let mut none = RuleBits::EMPTY;
    let mut bits = vec![RuleBits::EMPTY; bounds.len()];
    for (rank, m) in conds {
        match m {
            PortMatch::Any => {
                set(&mut none, rank);
                for b in &mut bits {
                    set(b, rank);
                }
            }
            PortMatch::Ranges(v) => {
                for (i, lo) in bounds.iter().enumerate() {
                    // Ranges start and end on bounds, so covering an
                    // interval's first port means covering all of it.
                    if v.iter().any(|&(a, b)| a <= *lo && *lo <= b) {
                        set(&mut bits[i], rank);
                    }
                }
            }
        }
    }
    PortTable { bounds, bits, none }
}

/// The kernel's key bytes of an address: IPv4 as 4 bytes, IPv6 as 16.
pub fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `::ffff:a.b.c.d` for IPv4, the address itself for IPv6.
pub fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

const _: () = assert!(WORDS * 64 == MAX_RANKS as usize);

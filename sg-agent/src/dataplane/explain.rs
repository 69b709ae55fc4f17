//! What the kernel will do with one packet, worked out from the maps it
//! holds (not the agent's copy of them) by the same lookups the programs
//! make (`sg-ebpf` `decide.rs`, `early.rs`, `rules.rs`): the interface's entry, the own-address
//! and platform tries, the settings, the table header, the address tries'
//! longest matches, the rule bits and the port bounds' binary search. For
//! `sg-agent trace`: if the maps drifted from the policy, the trace shows
//! the maps.

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use sg_common::{
    maps::{ADDR4, ADDR6, BITS, BOUNDS, IFACES, OWN, PLAT4, PLAT6, SETTINGS, TABLES},
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, DIR_EGRESS, DIR_INGRESS, FIELD_LOCAL, FIELD_PEER,
        INTERVAL_SEARCH_STEPS, IfaceConfig, MAX_INTERVALS, NO_RANK, OWN_KEY_PREFIX_BITS,
        OwnAddrKey, PROTO_OTHER, RuleBits, Settings, TableMeta, WORDS, bits_kind, iface_flags,
        own_key_nic, settings_flags, table_id, verdict,
    },
    reason,
};

use super::{Error, Maps, mapio::map_err};
use sg_policy::compile::mapped;
use sg_policy::{Direction, Packet};

/// The kernel's decision for a packet, from its maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelDecision {
    /// `sg_common::policy::verdict`.
    pub verdict: u32,
    /// `sg_common::reason`.
    pub reason: u32,
    /// The deciding rank, or [`NO_RANK`].
    pub rank: u32,
    /// The interface entry it was decided with (`None`: the interface has
    /// none, so it passes untouched).
    pub config: Option<IfaceConfig>,
}

impl KernelDecision {
    fn of(config: IfaceConfig, verdict: u32, reason: u32) -> Self {
        Self {
            verdict,
            reason,
            rank: NO_RANK,
            config: Some(config),
        }
    }
}

fn found<V>(r: Result<V, aya::maps::MapError>, name: &'static str) -> Result<Option<V>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if super::mapio::not_found(&e) => Ok(None),
        Err(e) => Err(Error::Map {
            map: name,
            source: e,
        }),
    }
}

impl Maps {
    /// Decides `p`, the first packet of a flow (no session, not a later
    /// fragment), crossing interface `ifindex` in the workload's
    /// `direction`, the way the programs would with what the maps hold now.
    pub fn explain(
        &self,
        ifindex: u32,
        direction: Direction,
        p: &Packet,
    ) -> Result<KernelDecision, Error> {
        let ifaces = &self.ifaces;
        let Some(cfg) = found(ifaces.get(&ifindex, 0), IFACES)? else {
            return Ok(KernelDecision {
                verdict: verdict::ACCEPT,
                reason: reason::UNBOUND,
                rank: NO_RANK,
                config: None,
            });
        };
        let dir = if direction == Direction::Ingress {
            DIR_INGRESS
        } else {
            DIR_EGRESS
        };
        if let Some(d) = self.before_rules(&cfg, dir, p)? {
            return Ok(d);
        }
        let table = table_id(cfg.nic, dir, cfg.slot & 1);
        let meta: TableMeta = self.tables.get(&table, 0).map_err(map_err(TABLES))?;
        let (peer, local) = if dir == DIR_INGRESS {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        let rank = self.classify(table, &meta, peer, local, p)?;
        let mut d = KernelDecision::of(cfg, meta.default_verdict, meta.default_reason);
        if rank == NO_RANK {
            return Ok(d);
        }
        d.rank = rank;
        if rank >= meta.n_rules {
            d.verdict = verdict::ACCEPT;
            d.reason = reason::DEFAULT_INTRA_GROUP;
        } else {
            let w = (rank / 64) as usize % WORDS;
            d.verdict = if meta.accept.words[w] >> (rank % 64) & 1 != 0 {
                verdict::ACCEPT
            } else {
                verdict::DROP
            };
            d.reason = reason::RULE;
        }
        Ok(d)
    }

    /// Steps 0 to 3, as `early::decide` takes them.
    fn before_rules(
        &self,
        cfg: &IfaceConfig,
        dir: u32,
        p: &Packet,
    ) -> Result<Option<KernelDecision>, Error> {
        let v4 = p.src.is_ipv4();
        let accept = |r| Some(KernelDecision::of(*cfg, verdict::ACCEPT, r));
        let drop = |r| Some(KernelDecision::of(*cfg, verdict::DROP, r));
        if v4 != p.dst.is_ipv4() {
            return Ok(drop(reason::MALFORMED));
        }
        let icmp6 = !v4 && p.protocol == 58;
        let nd = p.is_neighbour_discovery();
        if dir == DIR_EGRESS && cfg.flags & iface_flags::ANTI_SPOOF != 0 {
            if icmp6 && p.icmp_type == 136 {
                let owned = match p.nd_target {
                    Some(t) => self.owns(cfg, IpAddr::V6(t))?,
                    None => false,
                };
                if !owned {
                    return Ok(drop(reason::SPOOF_ND_TARGET));
                }
            }
            if !self.owns(cfg, p.src)? && !sg_policy::evaluate::spoof_exempt(p) {
                return Ok(drop(reason::SPOOF_SOURCE));
            }
        }
        if nd {
            return Ok(accept(reason::NEIGHBOUR_DISCOVERY));
        }
        if p.is_path_mtu() {
            return Ok(accept(reason::PATH_MTU));
        }
        let settings: Settings = self.settings.get(&0, 0).map_err(map_err(SETTINGS))?;
        let peer = if dir == DIR_INGRESS { p.src } else { p.dst };
        if settings.flags & settings_flags::PLATFORM_ADDRESSES != 0 && self.platform(peer)? {
            return Ok(accept(reason::PLATFORM_ADDRESS));
        }
        if dir == DIR_EGRESS
            && p.protocol == 6
            && p.dst_port == 25
            && settings.flags & settings_flags::BLOCK_PORT_25 != 0
        {
            return Ok(drop(reason::PORT_25));
        }
        Ok(None)
    }

    fn owns(&self, cfg: &IfaceConfig, addr: IpAddr) -> Result<bool, Error> {
        let trie = &self.own;
        let key = OwnAddrKey {
            nic: own_key_nic(cfg.nic, cfg.slot & 1),
            family: if addr.is_ipv4() { 4 } else { 6 },
            addr: mapped(addr),
        };
        Ok(found(trie.get(&Key::new(OWN_KEY_PREFIX_BITS + 128, key), 0), OWN)?.is_some())
    }

    fn platform(&self, addr: IpAddr) -> Result<bool, Error> {
        Ok(match addr {
            IpAddr::V4(a) => {
                let t = &self.plat4;
                found(t.get(&Key::new(32, a.octets()), 0), PLAT4)?.is_some()
            }
            IpAddr::V6(a) => {
                let t = &self.plat6;
                found(t.get(&Key::new(128, a.octets()), 0), PLAT6)?.is_some()
            }
        })
    }

    /// `rules::classify` over the maps.
    fn classify(
        &self,
        table: u32,
        meta: &TableMeta,
        peer: IpAddr,
        local: IpAddr,
        p: &Packet,
    ) -> Result<u32, Error> {
        let Some(peer) = self.addr_bits(table, FIELD_PEER, peer)? else {
            return Ok(NO_RANK);
        };
        let Some(local) = self.addr_bits(table, FIELD_LOCAL, local)? else {
            return Ok(NO_RANK);
        };
        let proto = match self.bits(table, bits_kind::PROTO, u16::from(p.protocol))? {
            Some(b) => b,
            None => match self.bits(table, bits_kind::PROTO, PROTO_OTHER)? {
                Some(b) => b,
                None => return Ok(NO_RANK),
            },
        };
        let has_ports = matches!(p.protocol, 6 | 17);
        let Some(dport) = self.port_bits(table, has_ports, 0, p.dst_port)? else {
            return Ok(NO_RANK);
        };
        let Some(sport) = self.port_bits(table, has_ports, 1, p.src_port)? else {
            return Ok(NO_RANK);
        };
        let words = (meta.words as usize).min(WORDS);
        for w in 0..words {
            let x =
                peer.words[w] & local.words[w] & proto.words[w] & dport.words[w] & sport.words[w];
            if x != 0 {
                return Ok(u32::try_from(w * 64).expect("< MAX_RANKS") + x.trailing_zeros());
            }
        }
        Ok(NO_RANK)
    }

    fn addr_bits(&self, table: u32, field: u32, addr: IpAddr) -> Result<Option<RuleBits>, Error> {
        let table_field = (table * 2 + field).to_be_bytes();
        match addr {
            IpAddr::V4(a) => {
                let t = &self.addr4;
                let key = AddrKeyV4 {
                    table_field,
                    addr: a.octets(),
                };
                found(t.get(&Key::new(64, key), 0), ADDR4)
            }
            IpAddr::V6(a) => {
                let t = &self.addr6;
                let key = AddrKeyV6 {
                    table_field,
                    addr: a.octets(),
                };
                found(t.get(&Key::new(160, key), 0), ADDR6)
            }
        }
    }

    fn bits(&self, table: u32, kind: u16, index: u16) -> Result<Option<RuleBits>, Error> {
        let m = &self.bits;
        found(m.get(&BitsKey { table, kind, index }, 0), BITS)
    }

    fn port_bits(
        &self,
        table: u32,
        has_ports: bool,
        field: u32,
        port: u16,
    ) -> Result<Option<RuleBits>, Error> {
        let (kind, none) = if field == 0 {
            (bits_kind::DPORT, bits_kind::DPORT_NONE)
        } else {
            (bits_kind::SPORT, bits_kind::SPORT_NONE)
        };
        if !has_ports {
            return self.bits(table, none, 0);
        }
        let m = &self.bounds;
        let Some(b) = found(m.get(&(table * 2 + field), 0), BOUNDS)? else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (0u32, b.n);
        for _ in 0..INTERVAL_SEARCH_STEPS {
            if hi <= lo + 1 {
                break;
            }
            let mid = u32::midpoint(lo, hi);
            if b.bounds[(mid & (MAX_INTERVALS - 1)) as usize] <= port {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        match u16::try_from(lo) {
            Ok(i) => self.bits(table, kind, i),
            Err(_) => Ok(None),
        }
    }
}

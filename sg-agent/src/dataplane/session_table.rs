//! Reading and flushing the session table (SPEC §4) of a loaded [`Dataplane`].

use std::{
    borrow::{Borrow, BorrowMut},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::maps::{Array, HashMap, MapData};
use serde::Serialize;
use sg_common::{
    conntrack::{SIDE_A, SessionEntry, SessionKey, event, timeout},
    maps::{SESSION_EVENTS, SESSIONS, SETTINGS},
    policy::{DIR_INGRESS, Settings},
};

use super::{
    Error, Maps,
    mapio::{injected_read, map_err},
};
use sg_policy::Cidr;

/// Which sessions an operation applies to; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The data plane's NIC id.
    pub nic: Option<u32>,
    pub protocol: Option<u8>,
    /// Either endpoint's address lies in this prefix.
    pub address: Option<Cidr>,
    /// Either endpoint's port (or echo identifier) is this.
    pub port: Option<u16>,
}

/// One endpoint: address and port (the identifier for ICMP echo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
}

/// A session as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// The data plane's NIC id (see [`Dataplane::nic_id`]).
    pub nic: u32,
    pub protocol: u8,
    /// The endpoint that sent the first packet, and the other.
    pub initiator: Endpoint,
    pub responder: Endpoint,
    /// The policy direction of the first packet: `ingress` or `egress`.
    pub direction: &'static str,
    /// `handshake`, `established`, `closing` (TCP) or `active`.
    pub state: &'static str,
    /// Since the first packet, and since the latest.
    pub age: Duration,
    pub idle: Duration,
    /// The NIC's policy version the session was last found allowed under.
    pub policy_version: u32,
    /// Idle below its timeout. Expired entries count as absent to the data
    /// plane and are removed by their next packet or by the LRU.
    pub live: bool,
}

fn address(w: [u64; 2], family: u8) -> IpAddr {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&w[0].to_ne_bytes());
    b[8..].copy_from_slice(&w[1].to_ne_bytes());
    let v6 = Ipv6Addr::from(b);
    if family == 4 {
        IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
    } else {
        IpAddr::V6(v6)
    }
}

/// `CLOCK_MONOTONIC_COARSE`, the clock the programs stamp sessions with
/// (`bpf_ktime_get_coarse_ns`): read the same way, an entry this side sees as
/// expired is expired for the next packet too.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn describe(k: &SessionKey, e: &SessionEntry, now: u64, timeouts: &[u64]) -> Session {
    let a = Endpoint {
        address: address(k.a, k.family),
        port: k.port_a,
    };
    let b = Endpoint {
        address: address(k.b, k.family),
        port: k.port_b,
    };
    let (initiator, responder) = if e.initiator == SIDE_A {
        (a, b)
    } else {
        (b, a)
    };
    let class = timeout::class(k.proto, e.tcp);
    let state = match class {
        timeout::TCP_HANDSHAKE => "handshake",
        timeout::TCP_ESTABLISHED => "established",
        timeout::TCP_CLOSING => "closing",
        _ => "active",
    };
    let idle = now.saturating_sub(e.last_seen);
    Session {
        nic: k.nic,
        protocol: k.proto,
        initiator,
        responder,
        direction: if u32::from(e.first_dir) == DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        },
        state,
        age: Duration::from_nanos(now.saturating_sub(e.created)),
        idle: Duration::from_nanos(idle),
        policy_version: e.version,
        live: idle < timeouts.get(class).copied().unwrap_or(0),
    }
}

impl Filter {
    fn matches(&self, k: &SessionKey) -> bool {
        let a = address(k.a, k.family);
        let b = address(k.b, k.family);
        self.nic.is_none_or(|n| n == k.nic)
            && self.protocol.is_none_or(|p| p == k.proto)
            && self
                .address
                .is_none_or(|c| c.contains(&a) || c.contains(&b))
            && self.port.is_none_or(|p| p == k.port_a || p == k.port_b)
    }
}

fn sessions_of<T: Borrow<MapData>>(
    map: &HashMap<T, SessionKey, SessionEntry>,
) -> Vec<(SessionKey, SessionEntry)> {
    // Entries may vanish while we walk (LRU, packets): skip what errs.
    map.iter().filter_map(Result::ok).collect()
}

fn list_in<T: Borrow<MapData>>(
    map: &HashMap<T, SessionKey, SessionEntry>,
    settings: &Settings,
    filter: &Filter,
) -> Vec<Session> {
    let now = monotonic_ns();
    let mut out: Vec<Session> = sessions_of(map)
        .iter()
        .filter(|(k, _)| filter.matches(k))
        .map(|(k, e)| describe(k, e, now, &settings.timeouts_ns))
        .collect();
    out.sort_by(|x, y| (x.nic, x.age).cmp(&(y.nic, y.age)).reverse());
    out
}

/// Calls `f` with each session matching `filter`, in the table's order,
/// until it returns false: one entry in memory at a time.
fn walk_in<T: Borrow<MapData>>(
    map: &HashMap<T, SessionKey, SessionEntry>,
    settings: &Settings,
    filter: &Filter,
    mut f: impl FnMut(&Session) -> bool,
) {
    let now = monotonic_ns();
    // Entries may vanish while we walk (LRU, packets): skip what errs.
    for (k, e) in map.iter().filter_map(Result::ok) {
        if filter.matches(&k) && !f(&describe(&k, &e, now, &settings.timeouts_ns)) {
            return;
        }
    }
}

fn flush_in<T: BorrowMut<MapData>>(
    map: &mut HashMap<T, SessionKey, SessionEntry>,
    filter: &Filter,
) -> usize {
    let keys: Vec<SessionKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| filter.matches(k))
        .collect();
    keys.iter().filter(|k| map.remove(k).is_ok()).count()
}

impl Maps {
    /// The sessions matching `filter`, newest first within each NIC.
    pub fn sessions(&self, filter: &Filter) -> Result<Vec<Session>, Error> {
        let settings = self.settings.get(&0, 0).map_err(map_err(SETTINGS))?;
        Ok(list_in(&self.sessions, &settings, filter))
    }

    /// Removes the sessions matching `filter`; returns how many went. The next
    /// packet of a removed session is decided by the rules again.
    pub fn flush_sessions(&mut self, filter: &Filter) -> usize {
        flush_in(&mut self.sessions, filter)
    }

    /// Session events (`sg_common::conntrack::event`) summed over CPUs.
    pub fn session_events(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        injected_read(SESSION_EVENTS, None)?;
        event::NAMES
            .iter()
            .zip(0u32..)
            .map(|(name, i)| {
                let v = self
                    .session_events
                    .get(&i, 0)
                    .map_err(map_err(SESSION_EVENTS))?;
                Ok((*name, v.iter().sum()))
            })
            .collect()
    }

    /// One session event (`sg_common::conntrack::event::NAMES`) summed over
    /// CPUs; 0 for a name that is not an event.
    pub fn session_event(&self, name: &str) -> Result<u64, Error> {
        Ok(self
            .session_events()?
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v))
    }
}

/// The session table of a pinned data plane, opened on its own: so the
/// daemon can list and flush sessions on another thread than the one that
/// owns the data plane (a walk of a full table takes a while).
pub struct SessionTable {
    map: HashMap<MapData, SessionKey, SessionEntry>,
    settings: Array<MapData, Settings>,
    root: std::path::PathBuf,
}

impl SessionTable {
    /// Opens the session table and the settings pinned under `root`.
    pub fn open(root: &std::path::Path) -> Result<Self, Error> {
        let open = |name: &'static str| {
            let data = MapData::from_pin(root.join("maps").join(name)).map_err(map_err(name))?;
            aya::maps::Map::from_map_data(data).map_err(map_err(name))
        };
        Ok(Self {
            map: HashMap::try_from(open(SESSIONS)?).map_err(map_err(SESSIONS))?,
            settings: Array::try_from(open(SETTINGS)?).map_err(map_err(SETTINGS))?,
            root: root.to_owned(),
        })
    }

    /// The same table opened again, for a walk that takes its time (a
    /// listing streamed to a slow client) without holding this one.
    pub fn reopen(&self) -> Result<Self, Error> {
        Self::open(&self.root)
    }

    /// Calls `f` with each session matching `filter` until it returns false.
    pub fn walk(&self, filter: &Filter, f: impl FnMut(&Session) -> bool) -> Result<(), Error> {
        let settings = self.settings.get(&0, 0).map_err(map_err(SETTINGS))?;
        walk_in(&self.map, &settings, filter, f);
        Ok(())
    }

    /// Removes the sessions matching `filter`; returns how many went.
    pub fn flush(&mut self, filter: &Filter) -> usize {
        flush_in(&mut self.map, filter)
    }
}

//! The agent's record in the kernel (`sg_common::agent::AgentRecord`): which
//! store's state a pinned data plane enforces, and how far into it; and what
//! a pinned data plane enforces, read before anything is loaded, so that an
//! agent that must refuse to start changes nothing.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData};
use sg_common::{
    agent::AgentRecord,
    maps::{AGENT, IFACES},
    policy::IfaceConfig,
};

use super::{Error, Maps, mapio::map_err};

/// What a pinned data plane enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    /// The record of the agent that put it in force (all zero if none).
    pub record: AgentRecord,
    /// The interfaces bound in it: index, and name if it exists here.
    pub interfaces: Vec<(u32, Option<String>)>,
}

impl Enforced {
    /// Whether anything is enforced or recorded at all.
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.record == AgentRecord::default()
    }

    /// Whether the pins belong to another network namespace, gone, whose
    /// inode the kernel gave to this one: nothing of them enforces anything
    /// here.
    pub fn is_stale(&self) -> bool {
        self.record.netns_cookie != 0 && netns_cookie().is_ok_and(|c| c != self.record.netns_cookie)
    }
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`).
pub fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a plain socket call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just got and nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).expect("8 fits");
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open(path: &Path, name: &'static str) -> Result<Option<Map>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(path).map_err(map_err(name))?;
    Map::from_map_data(data).map(Some).map_err(map_err(name))
}

/// What the data plane pinned under `root` enforces; `None` if nothing is
/// pinned there. Reads only.
pub fn inspect(root: &Path) -> Result<Option<Enforced>, Error> {
    let maps = root.join("maps");
    let Some(ifaces) = open(&maps.join(IFACES), IFACES)? else {
        return Ok(None);
    };
    let ifaces = HashMap::<_, u32, IfaceConfig>::try_from(ifaces).map_err(map_err(IFACES))?;
    let mut interfaces: Vec<(u32, Option<String>)> = ifaces
        .keys()
        .filter_map(Result::ok)
        .map(|i| (i, crate::iface::name(i)))
        .collect();
    interfaces.sort_unstable();
    let record = match open(&maps.join(AGENT), AGENT)? {
        Some(m) => Array::<_, AgentRecord>::try_from(m)
            .map_err(map_err(AGENT))?
            .get(&0, 0)
            .map_err(map_err(AGENT))?,
        None => AgentRecord::default(),
    };
    Ok(Some(Enforced { record, interfaces }))
}

impl Maps {
    /// The agent's record in the kernel.
    pub fn record(&self) -> Result<AgentRecord, Error> {
        self.agent.get(&0, 0).map_err(map_err(AGENT))
    }

    /// Records which store's state is in force, and how far into it.
    pub fn set_record(&mut self, record: &AgentRecord) -> Result<(), Error> {
        self.agent.set(0, record, 0).map_err(map_err(AGENT))
    }
}

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

use super::{Dataplane, Error, mapio::map_err};

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
        .map(|i| (i, super::writer::if_name(i)))
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

impl Dataplane {
    /// The agent's record in the kernel.
    pub fn record(&self) -> Result<AgentRecord, Error> {
        let map = self.ebpf.map(AGENT).ok_or(Error::MissingMap(AGENT))?;
        Array::<_, AgentRecord>::try_from(map)
            .map_err(map_err(AGENT))?
            .get(&0, 0)
            .map_err(map_err(AGENT))
    }

    /// Records which store's state is in force, and how far into it.
    pub fn set_record(&mut self, record: &AgentRecord) -> Result<(), Error> {
        let map = self.ebpf.map_mut(AGENT).ok_or(Error::MissingMap(AGENT))?;
        Array::<_, AgentRecord>::try_from(map)
            .map_err(map_err(AGENT))?
            .set(0, record, 0)
            .map_err(map_err(AGENT))
    }
}

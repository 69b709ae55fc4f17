//! Why the data plane could not do what was asked: each variant names the
//! program, map, interface or path involved.

use aya::{
    EbpfError,
    maps::MapError,
    programs::{ProgramError, tc::TcError},
};
use sg_common::policy::MAX_NICS;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the programs do not record their last decision: load them with Dataplane::load_for_tests"
    )]
    NotRecording,
    #[error("the eBPF object is empty: this build skipped it (AYA_BUILD_SKIP); rebuild without it")]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[source] EbpfError),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {prog}: {source}")]
    Program {
        prog: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("interface name {0:?} is not valid (empty, too long or has a NUL)")]
    InterfaceName(String),
    #[error("adding a clsact qdisc to {iface}: {source}")]
    Qdisc {
        iface: String,
        #[source]
        source: TcError,
    },
    #[error("already attached to {0}: detach first")]
    AlreadyAttached(String),
    #[error(
        "more than {0} NICs: the data plane was loaded for {0} (attach --max-nics, at most 128)"
    )]
    TooManyNics(u32),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning or opening pinned map {0}: {1}")]
    Pin(std::path::PathBuf, String),
    #[error("session capacity: must be at least 1")]
    SessionCapacity,
    #[error("NIC limit {0}: must be 1 to {MAX_NICS}")]
    NicLimit(u32),
    #[error("counting CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    #[error(
        "the maps pinned at {dir} were made with other limits ({source}): start with the same --session-capacity and --max-nics, or remove them with `sg-agent cleanup` (which stops enforcement)"
    )]
    PinnedIncompatible {
        dir: std::path::PathBuf,
        #[source]
        source: MapError,
    },
    #[error("could not remove what unbound NICs left in the maps ({0}); kept to try again")]
    Leftovers(String),
    #[error("{path}: {reason}")]
    Link {
        path: std::path::PathBuf,
        reason: String,
    },
}

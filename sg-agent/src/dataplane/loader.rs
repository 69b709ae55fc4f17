//! The data plane: the embedded object loaded (its programs verified, its
//! maps created or adopted from pins), composed of four parts: the programs
//! (`programs.rs`), the maps as typed handles taken once (`maps.rs`), the
//! links that attach the programs (`links.rs`) and the NICs bound in the
//! maps (`nics.rs`). A job that needs one part is written on that part
//! (sessions, counters, the drop log, the record and `explain` on
//! [`Maps`]); the jobs that keep parts in step are written on
//! [`Dataplane`]: the switch (`writer.rs`), adoption (`adopt.rs`), drift
//! checks (`verify.rs`), rule counters (`rule_counters.rs`).
//!
//! Two lifetimes: loaded plainly ([`Dataplane::load_with`]), everything
//! attached is detached by [`Dataplane::detach`] or on drop, and nothing is
//! pinned. Loaded persistently ([`Dataplane::load_pinned`], the daemon), the
//! maps and the attachment links are pinned in bpffs, outlive the process,
//! and the next agent adopts them (see `pins.rs`).

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::MapError,
    programs::{SchedClassifier, Xdp},
};
use sg_common::{
    maps::{
        BITS, BITS_PER_TABLE, PROG_TC_EGRESS, PROG_XDP, RULE_STATS, SESSION_ENTRIES, SESSIONS,
        TEST_FLAGS, test_flags,
    },
    policy::{DEFAULT_NICS, MAX_NICS, MAX_RANKS},
};
use sg_policy::Settings;

use super::{AttachMode, Error, Maps, NamespaceLock, links::Links, nics::Nics, pins, programs};

/// The eBPF object built by `build.rs` from `sg-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg"));

/// What one map costs the kernel ([`Dataplane::map_memory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMemory {
    pub name: String,
    pub bytes: u64,
    /// A copy per CPU: `bytes` grows with the CPUs.
    pub per_cpu: bool,
}

/// The kernel's per-CPU map types (`enum bpf_map_type`): percpu hash,
/// percpu array, LRU percpu hash, percpu cgroup storage.
const PER_CPU_MAP_TYPES: [u64; 4] = [5, 6, 10, 21];

/// Sizes fixed when the data plane loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sessions the table holds; when full, the least recently used goes.
    pub sessions: u32,
    /// NICs this instance can bind (at most [`MAX_NICS`]). Each costs 64 KiB
    /// of per-rule counters per CPU and about 280 KiB of rule-bit buckets.
    pub nics: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions: SESSION_ENTRIES,
            nics: DEFAULT_NICS,
        }
    }
}

/// The loaded programs and maps, attached to any number of interfaces of one
/// network namespace (interfaces are keyed by ifindex, which is per namespace).
pub struct Dataplane {
    /// The object, holding the programs (the maps are taken out of it).
    pub(super) ebpf: Ebpf,
    pub(super) maps: Maps,
    pub(super) links: Links,
    pub(super) nics: Nics,
    /// Where maps and links are pinned, if loaded persistently.
    pub(super) pins: Option<PathBuf>,
    /// The namespace's lock, held while loaded persistently (one agent per
    /// namespace, see `lock.rs`).
    pub(super) lock: Option<NamespaceLock>,
}

impl Dataplane {
    /// Loads the object and its three programs into the kernel (the verifier
    /// runs here), with the default [`Limits`]. Nothing is attached yet.
    pub fn load() -> Result<Self, Error> {
        Self::load_with(Limits::default())
    }

    /// [`Dataplane::load`] with the given limits.
    pub fn load_with(limits: Limits) -> Result<Self, Error> {
        Self::load_inner(limits, None, false)
    }

    /// [`Dataplane::load_with`] for tests (`sg_common::maps::test_flags`):
    /// the programs record every decision whole (its NIC, direction and
    /// version) for [`Maps::last_decision`], and parse and count the frames
    /// of interfaces no binding names as they do a bound one's (the parser
    /// tests run frames on no interface). The agent never loads them so:
    /// each costs every packet and nothing in the agent reads it.
    pub fn load_for_tests(limits: Limits) -> Result<Self, Error> {
        Self::load_inner(limits, None, true)
    }

    /// Loads persistently: every map is pinned under `dir/maps` (the maps
    /// pinned there by an earlier agent are adopted, contents and all), and
    /// interfaces attached from now on keep their links pinned under
    /// `dir/links`, so enforcement goes on while no agent runs. The interface
    /// bindings found in adopted maps are taken over (see `pins.rs`). The
    /// pin directory is the one `lock` holds: no second agent can load it.
    pub fn load_pinned(limits: Limits, lock: NamespaceLock) -> Result<Self, Error> {
        let dir = lock.root().to_path_buf();
        let mut dp = Self::load_inner(limits, Some(&dir), false)?;
        dp.lock = Some(lock);
        Ok(dp)
    }

    fn load_inner(limits: Limits, pins: Option<&Path>, for_tests: bool) -> Result<Self, Error> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        if limits.sessions == 0 {
            return Err(Error::SessionCapacity);
        }
        if limits.nics == 0 || limits.nics > MAX_NICS {
            return Err(Error::NicLimit(limits.nics));
        }
        let flags = if for_tests {
            test_flags::RECORD_LAST | test_flags::PARSE_UNBOUND
        } else {
            0
        };
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(SESSIONS, limits.sessions)
            .map_max_entries(RULE_STATS, limits.nics * 4 * MAX_RANKS)
            .map_max_entries(BITS, limits.nics * 4 * BITS_PER_TABLE)
            .override_global(TEST_FLAGS, &flags, true);
        let adopting = match pins {
            Some(dir) => pins::prepare(&mut loader, dir)?,
            None => false,
        };
        let mut ebpf = loader.load(OBJECT).map_err(|e| match (pins, e) {
            (Some(dir), EbpfError::MapError(source @ MapError::IncompatiblePinnedMap { .. })) => {
                Error::PinnedIncompatible {
                    dir: dir.to_path_buf(),
                    source,
                }
            }
            (_, e) => Error::Load(e),
        })?;
        programs::xdp(&mut ebpf)?
            .load()
            .map_err(|source| Error::Program {
                prog: PROG_XDP,
                source,
            })?;
        programs::tc_egress(&mut ebpf)?
            .load()
            .map_err(|source| Error::Program {
                prog: PROG_TC_EGRESS,
                source,
            })?;
        // Every program is verified now, before any interface is attached:
        // loading one on first use (the verifier takes about a second) left
        // a cold attach's receive side open meanwhile.
        programs::tc_ingress(&mut ebpf)?;
        programs::tc_tag_guard(&mut ebpf)?;
        let mut maps = Maps::take(&mut ebpf)?;
        maps.records_last = for_tests;
        let mut dp = Self {
            ebpf,
            maps,
            links: Links::new(pins.map(|p| p.join("links"))),
            nics: Nics::new(limits.nics),
            pins: pins.map(Path::to_path_buf),
            lock: None,
        };
        if adopting {
            // The adopted maps hold the settings and bindings in force: keep
            // enforcing them until the caller installs its policy. Whatever
            // belongs to no adopted binding is removed on the way.
            dp.adopt_bindings()?;
        } else {
            dp.maps.set_settings(&Settings::default())?;
            if pins.is_some() {
                // Pinned maps without the interface map (a cleanup killed
                // halfway) hold entries of no binding at all.
                let removed = dp.remove_unknown()?;
                if removed > 0 {
                    log::warn!("removed {removed} map entries of no binding from the pinned maps");
                }
            }
        }
        if let Some(dir) = pins {
            pins::prune_old_map_pins(dir);
        }
        Ok(dp)
    }

    /// The aya handle of the object, for its programs (`BPF_PROG_TEST_RUN`,
    /// programs only tests load). Its maps are in [`Dataplane::maps`].
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The aya handle, mutably.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The maps, for the jobs that need nothing else: sessions, counters,
    /// the drop log, the agent's record, explaining a decision.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The maps, mutably.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// The loaded XDP program.
    pub fn xdp(&mut self) -> Result<&mut Xdp, Error> {
        programs::xdp(&mut self.ebpf)
    }

    /// The loaded TC egress program.
    pub fn tc_egress(&mut self) -> Result<&mut SchedClassifier, Error> {
        programs::tc_egress(&mut self.ebpf)
    }

    /// The TC ingress program (attach mode `tc`; loaded with the others).
    pub fn tc_ingress(&mut self) -> Result<&mut SchedClassifier, Error> {
        programs::tc_ingress(&mut self.ebpf)
    }

    /// The tag guard (TC ingress beside an XDP receive side; loaded with the
    /// others).
    pub fn tc_tag_guard(&mut self) -> Result<&mut SchedClassifier, Error> {
        programs::tc_tag_guard(&mut self.ebpf)
    }

    /// The loaded programs, by role, with their kernel ids.
    pub fn program_ids(&self) -> Vec<(&'static str, u32)> {
        programs::ids(&self.ebpf)
    }

    /// Attaches XDP (or, in mode [`AttachMode::Tc`], TC ingress) on the
    /// receive side and TC egress on the transmit side of `iface`, resolved
    /// in the calling thread's network namespace; with pinned links when
    /// loaded persistently, adopting those an earlier agent pinned for this
    /// very interface (same name and index).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), Error> {
        self.links.attach(&mut self.ebpf, iface, mode)
    }

    /// The interface index `iface` had when the programs were attached to it.
    pub fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.links.attached_ifindex(iface)
    }

    /// Whether the programs are attached to `iface`.
    pub fn is_attached(&self, iface: &str) -> bool {
        self.links.is_attached(iface)
    }

    /// Detaches from every interface. The programs stay loaded; their maps keep
    /// their contents.
    pub fn detach(&mut self) -> Result<(), Error> {
        self.links.detach(&mut self.ebpf)
    }

    /// Detaches both programs from `iface` (and removes our clsact qdisc, if
    /// we added one).
    pub fn detach_from(&mut self, iface: &str) -> Result<(), Error> {
        self.links.detach_from(&mut self.ebpf, iface)
    }

    /// Forgets `iface` without detaching: for an interface that is gone,
    /// whose links the kernel already detached. Pins left by it are removed.
    pub fn forget(&mut self, iface: &str) {
        self.links.forget(iface);
    }

    /// Forgets `iface`'s attachment so that the next [`Dataplane::attach`]
    /// takes it again: pinned links that are still fine are adopted (our
    /// program swapped in), missing or detached ones made anew. Unpinned
    /// attachments are detached first.
    pub fn reattach(&mut self, iface: &str) {
        self.links.reattach(&mut self.ebpf, iface);
    }

    /// Removes the link pins of every interface not in `keep`: after the
    /// first reconcile of a restarted agent, what it no longer serves.
    pub fn prune_links(&mut self, keep: &[String]) -> Vec<String> {
        self.links.prune(keep)
    }

    /// Kernel memory of every map the programs use, by map name, in bytes:
    /// the kernel's own accounting (`memlock` in the map's fdinfo, which on
    /// 6.4 and later counts what the map really holds, including per-CPU
    /// copies and entries allocated as used), and whether the map keeps a
    /// copy per CPU (its type, from the same fdinfo).
    pub fn map_memory(&mut self) -> Result<Vec<MapMemory>, Error> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let mut ids = std::collections::BTreeSet::new();
        for prog in [PROG_XDP, PROG_TC_EGRESS] {
            let p = self.ebpf.program(prog).ok_or(Error::MissingProgram(prog))?;
            let info = p.info().map_err(|source| Error::Program { prog, source })?;
            ids.extend(
                info.map_ids()
                    .map_err(|source| Error::Program { prog, source })?
                    .unwrap_or_default(),
            );
        }
        let mut out = Vec::new();
        for id in ids {
            let map = |source| Error::Map {
                map: "by id",
                source,
            };
            let info = aya::maps::MapInfo::from_id(id).map_err(map)?;
            let fd = info.fd().map_err(map)?;
            let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
            let text =
                std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
            let field = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            out.push(MapMemory {
                name: info.name_as_str().unwrap_or("?").to_owned(),
                bytes: field("memlock:"),
                per_cpu: PER_CPU_MAP_TYPES.contains(&field("map_type:")),
            });
        }
        Ok(out)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.links.detach_owned(&mut self.ebpf);
    }
}

//! Loads the embedded object and attaches its two programs to an interface:
//! XDP on receive, TC on transmit (tcx where the kernel has it, else a clsact
//! qdisc of our own).
//!
//! Two lifetimes: loaded plainly ([`Dataplane::load_with`]), everything
//! attached is detached by [`Dataplane::detach`] or on drop, and nothing is
//! pinned. Loaded persistently ([`Dataplane::load_pinned`], the daemon), the
//! maps and the attachment links are pinned in bpffs, outlive the process,
//! and the next agent adopts them (see `pins.rs`).

use std::ffi::CString;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::MapError,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{self, SchedClassifierLinkId, TcError},
        xdp::XdpLinkId,
    },
    util::KernelVersion,
};
use sg_common::{
    maps::{
        BITS, BITS_PER_TABLE, PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_TC_TAG_GUARD, PROG_XDP,
        RULE_STATS, SESSION_ENTRIES, SESSIONS,
    },
    policy::{DEFAULT_NICS, MAX_NICS, MAX_RANKS},
};

use sg_policy::Settings;

/// The eBPF object built by `build.rs` from `sg-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg"));

#[derive(Debug, thiserror::Error)]
pub enum Error {
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

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// By interface kind: TC ingress on veth (where `cargo xtask throughput`
    /// measured it ahead of XDP: native XDP on veth copies every frame),
    /// XDP elsewhere, native where the driver has it.
    #[default]
    Auto,
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
    /// No XDP: a TC ingress program decides the receive side.
    Tc,
}

impl AttachMode {
    pub(super) fn xdp_mode(self) -> Option<XdpMode> {
        match self {
            Self::Auto => Some(XdpMode::Default),
            Self::Native => Some(XdpMode::Driver),
            Self::Generic => Some(XdpMode::Skb),
            Self::Tc => None,
        }
    }
}

/// What decides an interface's receive side.
pub(super) enum Rx {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

/// How an interface's links are held: receive side, transmit side, and
/// beside an XDP receive side the tag guard (`sg_tc_tag_guard` on TC
/// ingress: XDP cannot see a VLAN tag the kernel keeps beside the frame).
pub(super) enum Held {
    /// By the programs: detached when we detach or drop.
    Owned {
        rx: Rx,
        tc: SchedClassifierLinkId,
        guard: Option<SchedClassifierLinkId>,
        /// We added a clsact qdisc (kernel without tcx) and must remove it.
        own_clsact: bool,
    },
    /// By pins in bpffs: they outlive the agent; removing the pins detaches.
    Pinned { links: Vec<std::path::PathBuf> },
}

pub(super) struct Attachment {
    pub(super) iface: String,
    pub(super) ifindex: u32,
    pub(super) held: Held,
}

/// The loaded programs and maps, attached to any number of interfaces of one
/// network namespace (interfaces are keyed by ifindex, which is per namespace).
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) attachments: std::collections::BTreeMap<String, Attachment>,
    pub(super) nics: super::writer::Nics,
    /// Where maps and links are pinned, if loaded persistently.
    pub(super) pins: Option<std::path::PathBuf>,
    /// The namespace's lock, held while loaded persistently (one agent per
    /// namespace, see `lock.rs`).
    pub(super) lock: Option<super::NamespaceLock>,
}

impl Dataplane {
    /// Loads the object and its three programs into the kernel (the verifier
    /// runs here), with the default [`Limits`]. Nothing is attached yet.
    pub fn load() -> Result<Self, Error> {
        Self::load_with(Limits::default())
    }

    /// [`Dataplane::load`] with the given limits.
    pub fn load_with(limits: Limits) -> Result<Self, Error> {
        Self::load_inner(limits, None)
    }

    /// Loads persistently: every map is pinned under `dir/maps` (the maps
    /// pinned there by an earlier agent are adopted, contents and all), and
    /// interfaces attached from now on keep their links pinned under
    /// `dir/links`, so enforcement goes on while no agent runs. The interface
    /// bindings found in adopted maps are taken over (see `pins.rs`). The
    /// pin directory is the one `lock` holds: no second agent can load it.
    pub fn load_pinned(limits: Limits, lock: super::NamespaceLock) -> Result<Self, Error> {
        let dir = lock.root().to_path_buf();
        let mut dp = Self::load_inner(limits, Some(&dir))?;
        dp.lock = Some(lock);
        Ok(dp)
    }

    fn load_inner(limits: Limits, pins: Option<&std::path::Path>) -> Result<Self, Error> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        if limits.sessions == 0 {
            return Err(Error::SessionCapacity);
        }
        if limits.nics == 0 || limits.nics > MAX_NICS {
            return Err(Error::NicLimit(limits.nics));
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(SESSIONS, limits.sessions)
            .map_max_entries(RULE_STATS, limits.nics * 4 * MAX_RANKS)
            .map_max_entries(BITS, limits.nics * 4 * BITS_PER_TABLE);
        let adopting = match pins {
            Some(dir) => super::pins::prepare(&mut loader, dir)?,
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
        xdp_mut(&mut ebpf)?
            .load()
            .map_err(|source| Error::Program {
                prog: PROG_XDP,
                source,
            })?;
        tc_mut(&mut ebpf)?.load().map_err(|source| Error::Program {
            prog: PROG_TC_EGRESS,
            source,
        })?;
        let mut dp = Self {
            ebpf,
            attachments: std::collections::BTreeMap::new(),
            nics: super::writer::Nics::new(limits.nics),
            pins: pins.map(std::path::Path::to_path_buf),
            lock: None,
        };
        // Every program is verified now, before any interface is attached:
        // loading one on first use (the verifier takes about a second) left
        // a cold attach's receive side open meanwhile.
        dp.tc_ingress()?;
        dp.tc_tag_guard()?;
        if adopting {
            // The adopted maps hold the settings and bindings in force: keep
            // enforcing them until the caller installs its policy. Whatever
            // belongs to no adopted binding is removed on the way.
            dp.adopt_bindings()?;
        } else {
            dp.set_settings(&Settings::default())?;
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
            super::pins::prune_old_map_pins(dir);
        }
        Ok(dp)
    }

    /// The aya handle, for map access and `BPF_PROG_TEST_RUN`.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The aya handle, mutably.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The loaded XDP program.
    pub fn xdp(&mut self) -> Result<&mut Xdp, Error> {
        xdp_mut(&mut self.ebpf)
    }

    /// The loaded TC egress program.
    pub fn tc_egress(&mut self) -> Result<&mut SchedClassifier, Error> {
        tc_mut(&mut self.ebpf)
    }

    /// Attaches XDP (or, in mode [`AttachMode::Tc`], TC ingress) on the
    /// receive side and TC egress on the transmit side of `iface`, resolved
    /// in the calling thread's network namespace.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), Error> {
        if self.attachments.contains_key(iface) {
            return Err(Error::AlreadyAttached(iface.to_owned()));
        }
        let name = CString::new(iface)
            .ok()
            .filter(|n| !n.is_empty() && n.as_bytes().len() < libc::IFNAMSIZ)
            .ok_or_else(|| Error::InterfaceName(iface.to_owned()))?;
        // tcx needs no qdisc; older kernels need a clsact qdisc for the filters.
        let own_clsact = KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0));
        if own_clsact {
            tc::qdisc_add_clsact(name.as_c_str()).map_err(|source| Error::Qdisc {
                iface: iface.to_owned(),
                source,
            })?;
        }
        let mode = match mode {
            AttachMode::Auto if driver(iface).as_deref() == Some("veth") => AttachMode::Tc,
            m => m,
        };
        if self.pins.is_some() {
            if !own_clsact {
                return self.attach_pinned(iface, mode);
            }
            log::warn!(
                "{iface}: this kernel has no tcx, so its TC attachments cannot be pinned: \
                 enforcement on it stops when the agent stops"
            );
        }
        self.attach_owned(iface, &name, mode, own_clsact)
    }

    /// Attaches without pins: the links live as long as this data plane.
    fn attach_owned(
        &mut self,
        iface: &str,
        name: &std::ffi::CStr,
        mode: AttachMode,
        own_clsact: bool,
    ) -> Result<(), Error> {
        let rx = match mode.xdp_mode() {
            Some(xdp_mode) => self
                .xdp()?
                .attach(name, xdp_mode)
                .map(Rx::Xdp)
                .map_err(|source| Error::Program {
                    prog: PROG_XDP,
                    source,
                }),
            None => self.tc_ingress().and_then(|p| {
                p.attach(name, TcAttachType::Ingress)
                    .map(Rx::Tc)
                    .map_err(|source| Error::Program {
                        prog: PROG_TC_INGRESS,
                        source,
                    })
            }),
        };
        let attached = rx.and_then(|rx| {
            match self.tc_egress()?.attach(name, TcAttachType::Egress) {
                Ok(tc) => Ok((rx, tc)),
                Err(source) => {
                    // Leave nothing half-attached behind.
                    let _ = self.detach_rx(rx);
                    Err(Error::Program {
                        prog: PROG_TC_EGRESS,
                        source,
                    })
                }
            }
        });
        let attached = attached.and_then(|(rx, tc)| {
            if !matches!(rx, Rx::Xdp(_)) {
                return Ok((rx, tc, None));
            }
            match self.tc_tag_guard()?.attach(name, TcAttachType::Ingress) {
                Ok(guard) => Ok((rx, tc, Some(guard))),
                Err(source) => {
                    let _ = self.detach_rx(rx);
                    let _ = self.tc_egress().map(|p| p.detach(tc));
                    Err(Error::Program {
                        prog: PROG_TC_TAG_GUARD,
                        source,
                    })
                }
            }
        });
        match attached {
            Ok((rx, tc, guard)) => {
                self.attachments.insert(
                    iface.to_owned(),
                    Attachment {
                        iface: iface.to_owned(),
                        ifindex: crate::iface::index(iface).unwrap_or(0),
                        held: Held::Owned {
                            rx,
                            tc,
                            guard,
                            own_clsact,
                        },
                    },
                );
                Ok(())
            }
            Err(e) => {
                if own_clsact {
                    let _ = remove_clsact(name);
                }
                Err(e)
            }
        }
    }

    pub(super) fn detach_rx(&mut self, rx: Rx) -> Result<(), Error> {
        match rx {
            Rx::Xdp(id) => self.xdp()?.detach(id).map_err(|source| Error::Program {
                prog: PROG_XDP,
                source,
            }),
            Rx::Tc(id) => self
                .tc_ingress()?
                .detach(id)
                .map_err(|source| Error::Program {
                    prog: PROG_TC_INGRESS,
                    source,
                }),
        }
    }

    /// The loaded programs, by role, with their kernel ids.
    pub fn program_ids(&self) -> Vec<(&'static str, u32)> {
        [
            ("xdp", PROG_XDP),
            ("tc ingress", PROG_TC_INGRESS),
            ("tc egress", PROG_TC_EGRESS),
            ("tc tag guard", PROG_TC_TAG_GUARD),
        ]
        .into_iter()
        .filter_map(|(role, name)| {
            let info = self.ebpf.program(name)?.info().ok()?;
            Some((role, info.id()))
        })
        .collect()
    }

    /// The tag guard (TC ingress beside an XDP receive side; loaded with the
    /// others).
    pub fn tc_tag_guard(&mut self) -> Result<&mut SchedClassifier, Error> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_TC_TAG_GUARD)
            .ok_or(Error::MissingProgram(PROG_TC_TAG_GUARD))?
            .try_into()
            .map_err(|source| Error::Program {
                prog: PROG_TC_TAG_GUARD,
                source,
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program {
                prog: PROG_TC_TAG_GUARD,
                source,
            })?;
        }
        Ok(prog)
    }

    /// The TC ingress program (attach mode `tc`; loaded with the others).
    pub fn tc_ingress(&mut self) -> Result<&mut SchedClassifier, Error> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_TC_INGRESS)
            .ok_or(Error::MissingProgram(PROG_TC_INGRESS))?
            .try_into()
            .map_err(|source| Error::Program {
                prog: PROG_TC_INGRESS,
                source,
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program {
                prog: PROG_TC_INGRESS,
                source,
            })?;
        }
        Ok(prog)
    }

    /// Kernel memory of every map the programs use, by map name, in bytes:
    /// the kernel's own accounting (`memlock` in the map's fdinfo, which on
    /// 6.4 and later counts what the map really holds, including per-CPU
    /// copies and entries allocated as used).
    pub fn map_memory(&mut self) -> Result<Vec<(String, u64)>, Error> {
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
            let bytes = text
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            out.push((info.name_as_str().unwrap_or("?").to_owned(), bytes));
        }
        Ok(out)
    }

    /// The interface index `iface` had when the programs were attached to it.
    pub fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.attachments.get(iface).map(|a| a.ifindex)
    }

    /// Whether the programs are attached to `iface`.
    pub fn is_attached(&self, iface: &str) -> bool {
        self.attachments.contains_key(iface)
    }

    /// Detaches from every interface. The programs stay loaded; their maps keep
    /// their contents.
    pub fn detach(&mut self) -> Result<(), Error> {
        let names: Vec<String> = self.attachments.keys().cloned().collect();
        let mut result = Ok(());
        for name in names {
            result = result.and(self.detach_from(&name));
        }
        result
    }

    /// Detaches both programs from `iface` (and removes our clsact qdisc, if
    /// we added one).
    pub fn detach_from(&mut self, iface: &str) -> Result<(), Error> {
        let Some(a) = self.attachments.remove(iface) else {
            return Ok(());
        };
        let (rx, tc, guard, own_clsact) = match a.held {
            Held::Owned {
                rx,
                tc,
                guard,
                own_clsact,
            } => (rx, tc, guard, own_clsact),
            Held::Pinned { links } => return super::pins::unpin_links(&links),
        };
        let mut tc_result = self
            .tc_egress()?
            .detach(tc)
            .map_err(|source| Error::Program {
                prog: PROG_TC_EGRESS,
                source,
            });
        if let Some(g) = guard {
            tc_result =
                tc_result.and(
                    self.tc_tag_guard()?
                        .detach(g)
                        .map_err(|source| Error::Program {
                            prog: PROG_TC_TAG_GUARD,
                            source,
                        }),
                );
        }
        let xdp_result = self.detach_rx(rx);
        if own_clsact && let Ok(name) = CString::new(a.iface.clone()) {
            // Removing the qdisc removes any filter still on it.
            let _ = remove_clsact(&name);
        }
        tc_result.and(xdp_result)
    }

    /// Forgets `iface` without detaching: for an interface that is gone,
    /// whose links the kernel already detached. Pins left by it are removed.
    pub fn forget(&mut self, iface: &str) {
        if let Some(Attachment {
            held: Held::Pinned { links },
            ..
        }) = self.attachments.remove(iface)
        {
            let _ = super::pins::unpin_links(&links);
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // Pinned links stay: enforcement outlives the agent by design.
        let owned: Vec<String> = self
            .attachments
            .iter()
            .filter(|(_, a)| matches!(a.held, Held::Owned { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in owned {
            if let Err(e) = self.detach_from(&name) {
                log::warn!("detaching from {name} on drop: {e}");
            }
        }
    }
}

fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROG_XDP)
        .ok_or(Error::MissingProgram(PROG_XDP))?
        .try_into()
        .map_err(|source| Error::Program {
            prog: PROG_XDP,
            source,
        })
}

fn tc_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(PROG_TC_EGRESS)
        .ok_or(Error::MissingProgram(PROG_TC_EGRESS))?
        .try_into()
        .map_err(|source| Error::Program {
            prog: PROG_TC_EGRESS,
            source,
        })
}

/// The driver of interface `iface` in the calling thread's network namespace
/// (`ethtool -i`), if the kernel says.
pub fn driver(iface: &str) -> Option<String> {
    /// `struct ethtool_drvinfo` (linux/ethtool.h).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 5 * 4],
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 32 * 4 + 12 + 5 * 4],
    };
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    req.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: a datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCETHTOOL with ifr_data pointing at a drvinfo of the size the
    // kernel writes; both outlive the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &raw mut req) };
    // SAFETY: our socket.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// `tc qdisc del dev IFACE clsact`, for kernels where we had to add one.
fn remove_clsact(iface: &std::ffi::CStr) -> std::io::Result<()> {
    let status = std::process::Command::new("tc")
        .args(["qdisc", "del", "dev"])
        .arg(iface.to_string_lossy().as_ref())
        .arg("clsact")
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "tc qdisc del exited {status}"
        )))
    }
}

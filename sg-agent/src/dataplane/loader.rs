//! Loads the embedded object and attaches its two programs to an interface:
//! XDP on receive, TC on transmit (tcx where the kernel has it, else a clsact
//! qdisc of our own). Everything attached is detached by [`Dataplane::detach`]
//! or on drop, and nothing is pinned.

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
use sg_common::maps::{PROG_TC_EGRESS, PROG_XDP, SESSION_ENTRIES, SESSIONS};

use crate::policy::Settings;

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
    #[error("more than {0} NICs: the data plane's tables are full")]
    TooManyNics(u32),
    #[error("pinning or opening pinned map {0}: {1}")]
    Pin(std::path::PathBuf, String),
    #[error("session capacity: must be at least 1")]
    SessionCapacity,
    #[error("counting CPUs: {0}")]
    Cpus(#[source] std::io::Error),
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Let the kernel choose (native where the driver supports it).
    #[default]
    Auto,
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Auto => XdpMode::Default,
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

struct Attachment {
    iface: String,
    xdp: XdpLinkId,
    tc: SchedClassifierLinkId,
    /// We added a clsact qdisc (kernel without tcx) and must remove it.
    own_clsact: bool,
}

/// The loaded programs and maps, attached to any number of interfaces of one
/// network namespace (interfaces are keyed by ifindex, which is per namespace).
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    attachments: std::collections::BTreeMap<String, Attachment>,
    pub(super) nics: super::writer::Nics,
}

impl Dataplane {
    /// Loads the object and both programs into the kernel (the verifier runs
    /// here), with the default session capacity. Nothing is attached yet.
    pub fn load() -> Result<Self, Error> {
        Self::load_with(SESSION_ENTRIES)
    }

    /// [`Dataplane::load`] with a session table of `session_capacity` entries.
    pub fn load_with(session_capacity: u32) -> Result<Self, Error> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        if session_capacity == 0 {
            return Err(Error::SessionCapacity);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(SESSIONS, session_capacity)
            .load(OBJECT)
            .map_err(Error::Load)?;
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
            nics: super::writer::Nics::default(),
        };
        dp.set_settings(&Settings::default())?;
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

    /// Attaches XDP (receive) and TC egress (transmit) to `iface`, resolved in
    /// the calling thread's network namespace.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), Error> {
        if self.attachments.contains_key(iface) {
            return Err(Error::AlreadyAttached(iface.to_owned()));
        }
        let name = CString::new(iface)
            .ok()
            .filter(|n| !n.is_empty() && n.as_bytes().len() < libc::IFNAMSIZ)
            .ok_or_else(|| Error::InterfaceName(iface.to_owned()))?;
        let xdp = self
            .xdp()?
            .attach(name.as_c_str(), mode.xdp_mode())
            .map_err(|source| Error::Program {
                prog: PROG_XDP,
                source,
            })?;
        // tcx needs no qdisc; older kernels need a clsact qdisc for the filter.
        let own_clsact = KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0));
        let attached = (|| {
            if own_clsact {
                tc::qdisc_add_clsact(name.as_c_str()).map_err(|source| Error::Qdisc {
                    iface: iface.to_owned(),
                    source,
                })?;
            }
            self.tc_egress()?
                .attach(name.as_c_str(), TcAttachType::Egress)
                .map_err(|source| Error::Program {
                    prog: PROG_TC_EGRESS,
                    source,
                })
        })();
        match attached {
            Ok(tc) => {
                self.attachments.insert(
                    iface.to_owned(),
                    Attachment {
                        iface: iface.to_owned(),
                        xdp,
                        tc,
                        own_clsact,
                    },
                );
                Ok(())
            }
            Err(e) => {
                // Leave nothing half-attached behind.
                let _ = self.xdp().map(|p| p.detach(xdp));
                Err(e)
            }
        }
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
        let tc_result = self
            .tc_egress()?
            .detach(a.tc)
            .map_err(|source| Error::Program {
                prog: PROG_TC_EGRESS,
                source,
            });
        let xdp_result = self.xdp()?.detach(a.xdp).map_err(|source| Error::Program {
            prog: PROG_XDP,
            source,
        });
        if a.own_clsact
            && let Ok(name) = CString::new(a.iface.clone())
        {
            // Removing the qdisc removes any filter still on it.
            let _ = remove_clsact(&name);
        }
        tc_result.and(xdp_result)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            log::warn!("detaching on drop: {e}");
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

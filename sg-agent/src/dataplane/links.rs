//! The links: which interfaces the programs are attached to, and how each
//! attachment is held: by the programs (detached when the agent detaches or
//! exits) or by pins in bpffs (they outlive the agent, and the next agent
//! swaps its programs into them; the pin layout is `pins.rs`).
//!
//! XDP (or, in attach mode `tc`, TC ingress) decides the receive side, TC
//! egress the transmit side; tcx where the kernel has it, else a clsact
//! qdisc of our own (whose links cannot be pinned).

use std::{
    collections::BTreeMap,
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        TcAttachType, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
    util::KernelVersion,
};
use sg_common::maps::{PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_TC_TAG_GUARD, PROG_XDP};

use super::{
    Error, faults,
    pins::{
        Kind, link_path, link_target, parse_link_name, pin_err, remove_stale_links, unpin_links,
    },
    programs,
};

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

/// The attachments of one data plane, by interface name.
pub(super) struct Links {
    by_iface: BTreeMap<String, Attachment>,
    /// Where link pins go (`links/` under the pin root), when links are pinned.
    dir: Option<PathBuf>,
}

impl Links {
    /// No attachments yet; links pinned under `dir` if given.
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            by_iface: BTreeMap::new(),
            dir,
        }
    }

    /// Attaches XDP (or, in mode [`AttachMode::Tc`], TC ingress) on the
    /// receive side and TC egress on the transmit side of `iface`, resolved
    /// in the calling thread's network namespace.
    pub(super) fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        iface: &str,
        mode: AttachMode,
    ) -> Result<(), Error> {
        if self.by_iface.contains_key(iface) {
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
            AttachMode::Auto if crate::iface::driver(iface).as_deref() == Some("veth") => {
                AttachMode::Tc
            }
            m => m,
        };
        if self.dir.is_some() {
            if !own_clsact {
                return self.attach_pinned(ebpf, iface, mode);
            }
            log::warn!(
                "{iface}: this kernel has no tcx, so its TC attachments cannot be pinned: \
                 enforcement on it stops when the agent stops"
            );
        }
        self.attach_owned(ebpf, iface, &name, mode, own_clsact)
    }

    /// Attaches without pins: the links live as long as this data plane.
    fn attach_owned(
        &mut self,
        ebpf: &mut Ebpf,
        iface: &str,
        name: &std::ffi::CStr,
        mode: AttachMode,
        own_clsact: bool,
    ) -> Result<(), Error> {
        let rx = match mode.xdp_mode() {
            Some(xdp_mode) => programs::xdp(ebpf)?
                .attach(name, xdp_mode)
                .map(Rx::Xdp)
                .map_err(|source| Error::Program {
                    prog: PROG_XDP,
                    source,
                }),
            None => programs::tc_ingress(ebpf).and_then(|p| {
                p.attach(name, TcAttachType::Ingress)
                    .map(Rx::Tc)
                    .map_err(|source| Error::Program {
                        prog: PROG_TC_INGRESS,
                        source,
                    })
            }),
        };
        let attached = rx.and_then(|rx| {
            match programs::tc_egress(ebpf)?.attach(name, TcAttachType::Egress) {
                Ok(tc) => Ok((rx, tc)),
                Err(source) => {
                    // Leave nothing half-attached behind.
                    let _ = detach_rx(ebpf, rx);
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
            match programs::tc_tag_guard(ebpf)?.attach(name, TcAttachType::Ingress) {
                Ok(guard) => Ok((rx, tc, Some(guard))),
                Err(source) => {
                    let _ = detach_rx(ebpf, rx);
                    let _ = programs::tc_egress(ebpf).map(|p| p.detach(tc));
                    Err(Error::Program {
                        prog: PROG_TC_TAG_GUARD,
                        source,
                    })
                }
            }
        });
        match attached {
            Ok((rx, tc, guard)) => {
                self.by_iface.insert(
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

    /// Attaches to `iface` with pinned links, adopting the links an earlier
    /// agent pinned for this very interface (same name and index).
    fn attach_pinned(
        &mut self,
        ebpf: &mut Ebpf,
        iface: &str,
        mode: AttachMode,
    ) -> Result<(), Error> {
        let dir = self.dir.clone().expect("links are pinned");
        std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, e))?;
        let ifindex = crate::iface::index(iface).ok_or_else(|| Error::Link {
            path: dir.clone(),
            reason: format!("no interface {iface} in this network namespace"),
        })?;
        remove_stale_links(&dir, iface, ifindex);
        // The receive side, and beside XDP the tag guard; what the other
        // attach mode had goes once these run.
        let (wanted, others): (&[Kind], &[Kind]) = match mode {
            AttachMode::Tc => (&[Kind::TcIngress], &[Kind::Xdp, Kind::TagGuard]),
            _ => (&[Kind::Xdp, Kind::TagGuard], &[Kind::TcIngress]),
        };
        let tx = link_for(ebpf, &dir, iface, ifindex, Kind::TcEgress, mode)?;
        faults::point("attach.tx");
        let mut links = vec![tx];
        for &kind in wanted {
            match link_for(ebpf, &dir, iface, ifindex, kind, mode) {
                Ok(p) => links.push(p),
                Err(e) => {
                    // Leave nothing half-attached behind (if the egress link
                    // was adopted, this stops what an earlier agent left
                    // running on an interface we cannot fully serve).
                    let _ = unpin_links(&links);
                    return Err(e);
                }
            }
        }
        faults::point("attach.rx");
        for &kind in others {
            let old = link_path(&dir, iface, ifindex, kind);
            if old.exists() {
                std::fs::remove_file(&old).map_err(|e| pin_err(&old, e))?;
            }
        }
        self.by_iface.insert(
            iface.to_owned(),
            Attachment {
                iface: iface.to_owned(),
                ifindex,
                held: Held::Pinned { links },
            },
        );
        Ok(())
    }

    /// The interface index `iface` had when the programs were attached to it.
    pub(super) fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.by_iface.get(iface).map(|a| a.ifindex)
    }

    /// Whether the programs are attached to `iface`.
    pub(super) fn is_attached(&self, iface: &str) -> bool {
        self.by_iface.contains_key(iface)
    }

    /// Detaches from every interface. The programs stay loaded; their maps keep
    /// their contents.
    pub(super) fn detach(&mut self, ebpf: &mut Ebpf) -> Result<(), Error> {
        let names: Vec<String> = self.by_iface.keys().cloned().collect();
        let mut result = Ok(());
        for name in names {
            result = result.and(self.detach_from(ebpf, &name));
        }
        result
    }

    /// Detaches both programs from `iface` (and removes our clsact qdisc, if
    /// we added one).
    pub(super) fn detach_from(&mut self, ebpf: &mut Ebpf, iface: &str) -> Result<(), Error> {
        let Some(a) = self.by_iface.remove(iface) else {
            return Ok(());
        };
        let (rx, tc, guard, own_clsact) = match a.held {
            Held::Owned {
                rx,
                tc,
                guard,
                own_clsact,
            } => (rx, tc, guard, own_clsact),
            Held::Pinned { links } => return unpin_links(&links),
        };
        let mut tc_result =
            programs::tc_egress(ebpf)?
                .detach(tc)
                .map_err(|source| Error::Program {
                    prog: PROG_TC_EGRESS,
                    source,
                });
        if let Some(g) = guard {
            tc_result = tc_result.and(programs::tc_tag_guard(ebpf)?.detach(g).map_err(|source| {
                Error::Program {
                    prog: PROG_TC_TAG_GUARD,
                    source,
                }
            }));
        }
        let xdp_result = detach_rx(ebpf, rx);
        if own_clsact && let Ok(name) = CString::new(a.iface.clone()) {
            // Removing the qdisc removes any filter still on it.
            let _ = remove_clsact(&name);
        }
        tc_result.and(xdp_result)
    }

    /// Forgets `iface` without detaching: for an interface that is gone,
    /// whose links the kernel already detached. Pins left by it are removed.
    pub(super) fn forget(&mut self, iface: &str) {
        if let Some(Attachment {
            held: Held::Pinned { links },
            ..
        }) = self.by_iface.remove(iface)
        {
            let _ = unpin_links(&links);
        }
    }

    /// Forgets `iface`'s attachment so that the next [`Dataplane::attach`]
    /// takes it again: pinned links that are still fine are adopted (our
    /// program swapped in), missing or detached ones made anew. Unpinned
    /// attachments are detached first.
    pub(super) fn reattach(&mut self, ebpf: &mut Ebpf, iface: &str) {
        let pinned = self
            .by_iface
            .get(iface)
            .is_some_and(|a| matches!(a.held, Held::Pinned { .. }));
        if pinned {
            self.by_iface.remove(iface);
        } else if let Err(e) = self.detach_from(ebpf, iface) {
            log::warn!("detaching from {iface} to attach again: {e}");
        }
    }

    /// Removes the link pins of every interface not in `keep`: after the
    /// first reconcile of a restarted agent, what it no longer serves.
    pub(super) fn prune(&self, keep: &[String]) -> Vec<String> {
        let Some(dir) = self.dir.as_ref() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some((name, _)) = parse_link_name(file) else {
                continue;
            };
            if !keep.contains(&name) && std::fs::remove_file(e.path()).is_ok() {
                removed.push(file.to_owned());
            }
        }
        removed
    }

    /// Checks that every pinned attachment is still there: both pins exist,
    /// and each link runs this agent's program on the interface it was made
    /// for. Whoever removed a pin (which detaches its link) or swapped a
    /// program, the NIC is reported for reattaching.
    pub(super) fn check(&self, ebpf: &Ebpf) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let ids: std::collections::BTreeMap<&str, u32> =
            [PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS]
                .into_iter()
                .filter_map(|p| Some((p, ebpf.program(p)?.info().ok()?.id())))
                .collect();
        for (name, a) in &self.by_iface {
            let Held::Pinned { links } = &a.held else {
                continue;
            };
            for path in links {
                let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                let kind = Kind::of_file(file).unwrap_or(Kind::Xdp);
                let problem = match link_target(path) {
                    Err(e) => Some(format!("link pin {}: {e}", path.display())),
                    Ok((prog, ifindex)) => {
                        if ids.get(kind.program()) != Some(&prog) {
                            Some(format!(
                                "link {} runs program {prog}, not this agent's",
                                path.display()
                            ))
                        } else if ifindex != a.ifindex {
                            Some(format!(
                                "link {} is attached to index {ifindex}, not {}",
                                path.display(),
                                a.ifindex
                            ))
                        } else {
                            None
                        }
                    }
                };
                if let Some(what) = problem {
                    out.push((name.clone(), what));
                }
            }
        }
        out
    }

    /// Detaches what the programs hold (pinned links stay: enforcement
    /// outlives the agent by design).
    pub(super) fn detach_owned(&mut self, ebpf: &mut Ebpf) {
        let owned: Vec<String> = self
            .by_iface
            .iter()
            .filter(|(_, a)| matches!(a.held, Held::Owned { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in owned {
            if let Err(e) = self.detach_from(ebpf, &name) {
                log::warn!("detaching from {name} on drop: {e}");
            }
        }
    }
}

fn detach_rx(ebpf: &mut Ebpf, rx: Rx) -> Result<(), Error> {
    match rx {
        Rx::Xdp(id) => programs::xdp(ebpf)?
            .detach(id)
            .map_err(|source| Error::Program {
                prog: PROG_XDP,
                source,
            }),
        Rx::Tc(id) => programs::tc_ingress(ebpf)?
            .detach(id)
            .map_err(|source| Error::Program {
                prog: PROG_TC_INGRESS,
                source,
            }),
    }
}

/// The pinned link of `kind` on `iface`: adopted (our program swapped
/// in) if pinned already, else attached fresh and pinned.
fn link_for(
    ebpf: &mut Ebpf,
    dir: &Path,
    iface: &str,
    ifindex: u32,
    kind: Kind,
    mode: AttachMode,
) -> Result<PathBuf, Error> {
    let path = link_path(dir, iface, ifindex, kind);
    if path.exists() {
        match adopt_link(ebpf, &path, kind) {
            // A link whose interface went away stays pinned, attached
            // to nothing: it must be made again, not adopted.
            Ok(()) if link_target(&path).is_ok_and(|(_, i)| i == ifindex) => {
                log::info!("adopted the pinned {} link of {iface}", kind.suffix());
                return Ok(path);
            }
            Ok(()) => {
                log::warn!(
                    "the pinned link {} is attached to no interface: attaching anew",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                log::warn!("cannot adopt {}: {e}; attaching anew", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let name = CString::new(iface).map_err(|_| Error::InterfaceName(iface.to_owned()))?;
    let prog = kind.program();
    let program = |source| Error::Program { prog, source };
    let fd: FdLink = match kind {
        Kind::Xdp => {
            let xdp_mode = mode.xdp_mode().unwrap_or(XdpMode::Default);
            let p = programs::xdp(ebpf)?;
            let id = p.attach(name.as_c_str(), xdp_mode).map_err(program)?;
            p.take_link(id)
                .map_err(program)?
                .try_into()
                .map_err(|e: LinkError| pin_err(&path, e))?
        }
        Kind::TcIngress | Kind::TcEgress | Kind::TagGuard => {
            let (p, at) = match kind {
                Kind::TcIngress => (programs::tc_ingress(ebpf)?, TcAttachType::Ingress),
                Kind::TagGuard => (programs::tc_tag_guard(ebpf)?, TcAttachType::Ingress),
                _ => (programs::tc_egress(ebpf)?, TcAttachType::Egress),
            };
            let id = p.attach(name.as_c_str(), at).map_err(program)?;
            p.take_link(id)
                .map_err(program)?
                .try_into()
                .map_err(|e: LinkError| pin_err(&path, e))?
        }
    };
    // Dropping the returned handle closes our fd; the pin holds the link.
    fd.pin(&path).map_err(|e| pin_err(&path, e))?;
    Ok(path)
}

/// Swaps our program into the pinned link at `path`.
fn adopt_link(ebpf: &mut Ebpf, path: &Path, kind: Kind) -> Result<(), Error> {
    let fd: FdLink = PinnedLink::from_pin(path)
        .map_err(|e| pin_err(path, e))?
        .into();
    let prog = kind.program();
    let program = |source| Error::Program { prog, source };
    match kind {
        Kind::Xdp => {
            let link = XdpLink::try_from(fd).map_err(|e| pin_err(path, e))?;
            let p = programs::xdp(ebpf)?;
            let id = p.attach_to_link(link).map_err(program)?;
            drop(p.take_link(id).map_err(program)?);
        }
        Kind::TcIngress | Kind::TcEgress | Kind::TagGuard => {
            let link = SchedClassifierLink::try_from(fd).map_err(|e| pin_err(path, e))?;
            let p = match kind {
                Kind::TcIngress => programs::tc_ingress(ebpf)?,
                Kind::TagGuard => programs::tc_tag_guard(ebpf)?,
                _ => programs::tc_egress(ebpf)?,
            };
            let id = p.attach_to_link(link).map_err(program)?;
            drop(p.take_link(id).map_err(program)?);
        }
    }
    Ok(())
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

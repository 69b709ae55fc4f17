//! Enforcement that outlives the agent: maps and links pinned in bpffs, and
//! their adoption by the next agent (SPEC §6: "programs and maps stay
//! attached and pinned; the agent takes them over again").
//!
//! Layout under a namespace's pin root (`/sys/fs/bpf/sg/ns-<netns inode>`):
//! - `maps/<MAP>`: every map that holds policy, sessions or counters. A new
//!   agent loads its programs against these same maps, so the tables,
//!   sessions and counters in force carry over untouched.
//! - `links/<iface>:<ifindex>:<kind>`, kind `xdp`, `tc-ingress` or
//!   `tc-egress`: the attachment links. While they are pinned the kernel
//!   keeps running the programs in them, agent or no agent. A new agent
//!   swaps its freshly loaded program into each link with one
//!   `BPF_LINK_UPDATE` (atomic: no packet sees no program), so a restart
//!   has no gap even when the new agent's programs differ.
//!
//! Removing a link's pin (with no other holder) detaches it; `cleanup`
//! removes every pin the agent made.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{
        TcAttachType, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use sg_common::maps::{
    ADDR4, ADDR6, AGENT, BITS, BOUNDS, COUNTERS, FRAGS, IFACES, OWN, PLAT4, PLAT6, PROG_TC_EGRESS,
    PROG_TC_INGRESS, PROG_TC_TAG_GUARD, PROG_XDP, REASONS, RULE_STATS, SESSION_EVENTS, SESSIONS,
    SETTINGS, TABLES,
};

use super::{
    AttachMode, Dataplane, Error,
    loader::{Attachment, Held},
};

/// The maps that carry state across a restart. Scratch space and the
/// last-decision map (tests only) start fresh.
pub(super) const PINNED_MAPS: [&str; 17] = [
    AGENT,
    COUNTERS,
    IFACES,
    TABLES,
    BITS,
    BOUNDS,
    ADDR4,
    ADDR6,
    OWN,
    PLAT4,
    PLAT6,
    SETTINGS,
    FRAGS,
    RULE_STATS,
    REASONS,
    SESSIONS,
    SESSION_EVENTS,
];

/// Where the agent serving the network namespace with inode `netns_inode`
/// pins its maps and links.
pub fn pin_root(netns_inode: u64) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/sg/ns-{netns_inode}"))
}

fn pin_err(path: &Path, e: impl std::error::Error) -> Error {
    // The syscall's own error is the cause: say it.
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    Error::Pin(path.to_path_buf(), text)
}

/// Points `loader` at the pinned maps under `dir`; returns whether an earlier
/// agent's maps are there to adopt.
pub(super) fn prepare(loader: &mut EbpfLoader<'_>, dir: &Path) -> Result<bool, Error> {
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).map_err(|e| pin_err(&maps, e))?;
    let adopting = maps.join(IFACES).exists();
    for name in PINNED_MAPS {
        loader.map_pin_path(name, maps.join(name));
    }
    Ok(adopting)
}

/// Removes map pins under `dir/maps` of names this agent does not use: maps
/// of an older layout (a layout change renames its map). A program still
/// running in a link keeps its own maps alive; the pin only kept them for
/// an agent that would read them with that layout, and none will.
pub(super) fn prune_old_map_pins(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("maps")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !PINNED_MAPS.contains(&name) && std::fs::remove_file(e.path()).is_ok() {
            log::info!("removed the pin of {name}, a map of an older layout");
        }
    }
}

/// Which program a link runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Xdp,
    TcIngress,
    TcEgress,
    /// TC ingress beside XDP (`sg_tc_tag_guard`).
    TagGuard,
}

impl Kind {
    const ALL: [Self; 4] = [Self::Xdp, Self::TcIngress, Self::TcEgress, Self::TagGuard];

    fn suffix(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::TcIngress => "tc-ingress",
            Self::TcEgress => "tc-egress",
            Self::TagGuard => "tc-tag-guard",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Self::Xdp => PROG_XDP,
            Self::TcIngress => PROG_TC_INGRESS,
            Self::TcEgress => PROG_TC_EGRESS,
            Self::TagGuard => PROG_TC_TAG_GUARD,
        }
    }

    /// The kind of a link pin's file name.
    fn of_file(file: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| file.ends_with(&format!(":{}", k.suffix())))
    }
}

/// A link pin's file name: `<iface>:<ifindex>:<kind>`. bpffs refuses names
/// with a dot, which interface names may have (`eth0.100`): dots are written
/// `%2e` (and `%` as `%25`). Interface names never hold a colon.
fn link_path(dir: &Path, iface: &str, ifindex: u32, kind: Kind) -> PathBuf {
    let name = iface.replace('%', "%25").replace('.', "%2e");
    dir.join(format!("{name}:{ifindex}:{}", kind.suffix()))
}

/// `(iface, ifindex)` of a link pin's file name.
fn parse_link_name(file: &str) -> Option<(String, u32)> {
    let mut parts = file.rsplitn(3, ':');
    let _kind = parts.next()?;
    let ifindex = parts.next()?.parse().ok()?;
    let name = parts.next()?.replace("%2e", ".").replace("%25", "%");
    Some((name, ifindex))
}

/// Removes an attachment's pins, which detaches its links.
pub(super) fn unpin_links(links: &[PathBuf]) -> Result<(), Error> {
    let mut result = Ok(());
    for p in links {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            result = Err(pin_err(p, e));
        }
    }
    result
}

impl Dataplane {
    /// Attaches to `iface` with pinned links, adopting the links an earlier
    /// agent pinned for this very interface (same name and index).
    pub(super) fn attach_pinned(&mut self, iface: &str, mode: AttachMode) -> Result<(), Error> {
        let dir = self.pins.clone().expect("loaded pinned").join("links");
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
        let tx = self.link_for(&dir, iface, ifindex, Kind::TcEgress, mode)?;
        super::faults::point("attach.tx");
        let mut links = vec![tx];
        for &kind in wanted {
            match self.link_for(&dir, iface, ifindex, kind, mode) {
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
        super::faults::point("attach.rx");
        for &kind in others {
            let old = link_path(&dir, iface, ifindex, kind);
            if old.exists() {
                std::fs::remove_file(&old).map_err(|e| pin_err(&old, e))?;
            }
        }
        self.attachments.insert(
            iface.to_owned(),
            Attachment {
                iface: iface.to_owned(),
                ifindex,
                held: Held::Pinned { links },
            },
        );
        Ok(())
    }

    /// The pinned link of `kind` on `iface`: adopted (our program swapped
    /// in) if pinned already, else attached fresh and pinned.
    fn link_for(
        &mut self,
        dir: &Path,
        iface: &str,
        ifindex: u32,
        kind: Kind,
        mode: AttachMode,
    ) -> Result<PathBuf, Error> {
        let path = link_path(dir, iface, ifindex, kind);
        if path.exists() {
            match self.adopt_link(&path, kind) {
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
                let p = self.xdp()?;
                let id = p.attach(name.as_c_str(), xdp_mode).map_err(program)?;
                p.take_link(id)
                    .map_err(program)?
                    .try_into()
                    .map_err(|e: LinkError| pin_err(&path, e))?
            }
            Kind::TcIngress | Kind::TcEgress | Kind::TagGuard => {
                let (p, at) = match kind {
                    Kind::TcIngress => (self.tc_ingress()?, TcAttachType::Ingress),
                    Kind::TagGuard => (self.tc_tag_guard()?, TcAttachType::Ingress),
                    _ => (self.tc_egress()?, TcAttachType::Egress),
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
    fn adopt_link(&mut self, path: &Path, kind: Kind) -> Result<(), Error> {
        let fd: FdLink = PinnedLink::from_pin(path)
            .map_err(|e| pin_err(path, e))?
            .into();
        let prog = kind.program();
        let program = |source| Error::Program { prog, source };
        match kind {
            Kind::Xdp => {
                let link = XdpLink::try_from(fd).map_err(|e| pin_err(path, e))?;
                let p = self.xdp()?;
                let id = p.attach_to_link(link).map_err(program)?;
                drop(p.take_link(id).map_err(program)?);
            }
            Kind::TcIngress | Kind::TcEgress | Kind::TagGuard => {
                let link = SchedClassifierLink::try_from(fd).map_err(|e| pin_err(path, e))?;
                let p = match kind {
                    Kind::TcIngress => self.tc_ingress()?,
                    Kind::TagGuard => self.tc_tag_guard()?,
                    _ => self.tc_egress()?,
                };
                let id = p.attach_to_link(link).map_err(program)?;
                drop(p.take_link(id).map_err(program)?);
            }
        }
        Ok(())
    }

    /// Forgets `iface`'s attachment so that the next [`Dataplane::attach`]
    /// takes it again: pinned links that are still fine are adopted (our
    /// program swapped in), missing or detached ones made anew. Unpinned
    /// attachments are detached first.
    pub fn reattach(&mut self, iface: &str) {
        let pinned = self
            .attachments
            .get(iface)
            .is_some_and(|a| matches!(a.held, Held::Pinned { .. }));
        if pinned {
            self.attachments.remove(iface);
        } else if let Err(e) = self.detach_from(iface) {
            log::warn!("detaching from {iface} to attach again: {e}");
        }
    }

    /// Removes the link pins of every interface not in `keep`: after the
    /// first reconcile of a restarted agent, what it no longer serves.
    pub fn prune_links(&mut self, keep: &[String]) -> Vec<String> {
        let Some(dir) = self.pins.as_ref().map(|p| p.join("links")) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
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
}

/// The program a pinned link runs and the interface index it is attached
/// to (0 once its interface is gone), from `BPF_OBJ_GET_INFO_BY_FD`.
fn link_target(path: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let c = CString::new(path.as_os_str().as_bytes())?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 4];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: the attr buffer is larger than the kernel's struct for this
    // command and zeroed past the fields set; the path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: a file descriptor the kernel just gave us; closed on drop.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // struct bpf_link_info: type, id, prog_id, then (8-byte aligned) the
    // union whose xdp and tcx members start with the ifindex.
    let mut info = [0u32; 64];
    let mut attr = [0u64; 2];
    attr[0] = u64::from(u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap_or(0))
        | (u64::try_from(size_of_val(&info)).unwrap_or(0) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: info is a zeroed buffer of the size we pass; fd is a link.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((info[2], info[4]))
}

impl Dataplane {
    /// Checks that the pin directory is still the one this agent locked and
    /// that every map pin in it names this agent's map: a pin removed (or a
    /// directory removed by hand) would let the next agent start over fresh
    /// maps, blind to what is enforced.
    pub(super) fn check_map_pins(&self) -> Vec<super::Drift> {
        let (Some(root), Some(lock)) = (&self.pins, &self.lock) else {
            return Vec::new();
        };
        let drift = |what: String| super::Drift {
            nic: None,
            what,
            repair: super::verify::Repair::Repin,
        };
        if !lock.still_holds() {
            return vec![drift(format!(
                "the pin directory {} was removed or replaced",
                root.display()
            ))];
        }
        let mut out = Vec::new();
        for name in PINNED_MAPS {
            let path = root.join("maps").join(name);
            let (ours, pinned) = self.map_ids(name, &path);
            if pinned.is_none() || pinned != ours {
                out.push(drift(format!(
                    "map pin {} {}",
                    path.display(),
                    if pinned.is_none() {
                        "is missing"
                    } else {
                        "names another map"
                    }
                )));
            }
        }
        out
    }

    /// The kernel ids of this agent's map `name` and of the map pinned at
    /// `path` (`None` where there is none).
    fn map_ids(&self, name: &str, path: &Path) -> (Option<u32>, Option<u32>) {
        let ours = self
            .ebpf
            .map(name)
            .and_then(|m| map_data(m).info().ok())
            .map(|i| i.id());
        let pinned = aya::maps::MapData::from_pin(path)
            .ok()
            .and_then(|m| m.info().ok())
            .map(|i| i.id());
        (ours, pinned)
    }

    /// Puts the pin directory and the map pins back: takes the namespace's
    /// lock again if the directory was made anew, pins every map whose pin
    /// is missing or names another map. Links are put back by reattaching
    /// (`check_links`).
    pub fn repin(&mut self) -> Result<(), Error> {
        let Some(root) = self.pins.clone() else {
            return Ok(());
        };
        if !self
            .lock
            .as_ref()
            .is_some_and(super::NamespaceLock::still_holds)
        {
            let lock = super::NamespaceLock::acquire(&root).map_err(|e| Error::Link {
                path: root.clone(),
                reason: e.to_string(),
            })?;
            self.lock = Some(lock);
        }
        let dir = root.join("maps");
        std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, e))?;
        for name in PINNED_MAPS {
            let path = dir.join(name);
            let (ours, pinned) = self.map_ids(name, &path);
            let Some(map) = self.ebpf.map(name) else {
                continue;
            };
            if pinned.is_some() && pinned == ours {
                continue;
            }
            if pinned.is_some() {
                std::fs::remove_file(&path).map_err(|e| pin_err(&path, e))?;
            }
            map_data(map).pin(&path).map_err(|e| pin_err(&path, e))?;
            log::warn!("pinned {} again", path.display());
        }
        Ok(())
    }

    /// Checks that every pinned attachment is still there: both pins exist,
    /// and each link runs this agent's program on the interface it was made
    /// for. Whoever removed a pin (which detaches its link) or swapped a
    /// program, the NIC is reported for reattaching.
    pub(super) fn check_links(&self) -> Vec<super::Drift> {
        let mut out = Vec::new();
        let ids: std::collections::BTreeMap<&str, u32> =
            [PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS]
                .into_iter()
                .filter_map(|p| Some((p, self.ebpf.program(p)?.info().ok()?.id())))
                .collect();
        for (name, a) in &self.attachments {
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
                    out.push(super::Drift {
                        nic: Some(name.clone()),
                        what,
                        repair: super::verify::Repair::Reattach,
                    });
                }
            }
        }
        out
    }
}

/// The map data of any kind of map.
fn map_data(m: &aya::maps::Map) -> &aya::maps::MapData {
    use aya::maps::Map;
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d)
        | Map::ProgramArray(d)
        | Map::PerfEventArray(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::BloomFilter(d)
        | Map::Unsupported(d) => d,
        _ => unreachable!("sg pins only the kinds above"),
    }
}

/// Removes link pins of `iface` made for another interface index: that
/// interface was deleted, and the kernel detached its links already.
fn remove_stale_links(dir: &Path, iface: &str, ifindex: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else { continue };
        if let Some((name, idx)) = parse_link_name(file)
            && name == iface
            && idx != ifindex
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    /// Link pins: each one an attachment that is now gone.
    pub links: Vec<String>,
    /// Map pins.
    pub maps: Vec<String>,
    /// Directories removed.
    pub dirs: Vec<String>,
}

/// Removes every pin under the namespace's pin root that `lock` holds:
/// detaches every program an agent left attached there and frees its maps.
/// Holding the lock, no agent can be serving the namespace meanwhile. The
/// agent adds no qdisc on kernels with tcx; on older ones its clsact qdiscs
/// go with the agent that made them (no links are pinned there).
pub fn cleanup(lock: &super::NamespaceLock) -> Result<CleanupReport, Error> {
    let root = lock.root();
    let mut report = CleanupReport::default();
    for (sub, out) in [("links", &mut report.links), ("maps", &mut report.maps)] {
        let dir = root.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            std::fs::remove_file(e.path()).map_err(|err| pin_err(&e.path(), err))?;
            out.push(e.file_name().to_string_lossy().into_owned());
            super::faults::point("cleanup.pin");
        }
        out.sort();
        if std::fs::remove_dir(&dir).is_ok() {
            report.dirs.push(dir.display().to_string());
        }
    }
    // Pins of `sg-agent attach` (sessions for the CLI) live in the root itself.
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.path().is_file() || e.file_type().is_ok_and(|t| !t.is_dir()) {
                std::fs::remove_file(e.path()).map_err(|err| pin_err(&e.path(), err))?;
                report
                    .maps
                    .push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    if std::fs::remove_dir(root).is_ok() {
        report.dirs.push(root.display().to_string());
    }
    // The parent is shared by every namespace's agent: it goes with the last.
    if let Some(parent) = root.parent()
        && std::fs::remove_dir(parent).is_ok()
    {
        report.dirs.push(parent.display().to_string());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip_with_dots_in_the_interface_name() {
        let p = link_path(Path::new("/x"), "eth0.100", 7, Kind::TcEgress);
        let file = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(file, "eth0%2e100:7:tc-egress");
        assert!(!file.contains('.'), "bpffs refuses dots");
        assert_eq!(parse_link_name(file), Some(("eth0.100".to_owned(), 7)));
        let odd = link_path(Path::new("/x"), "a%2e", 3, Kind::Xdp);
        let odd = odd.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_link_name(odd), Some(("a%2e".to_owned(), 3)));
        assert_eq!(parse_link_name("garbage"), None);
        assert_eq!(parse_link_name("a:x:xdp"), None);
    }
}

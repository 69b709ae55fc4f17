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

use aya::EbpfLoader;
use sg_common::maps::{
    ADDR4, ADDR6, AGENT, BITS, BOUNDS, COUNTERS, FRAGS, IFACES, OWN, PLAT4, PLAT6, PROG_TC_EGRESS,
    PROG_TC_INGRESS, PROG_TC_TAG_GUARD, PROG_XDP, REASONS, RULE_STATS, SESSION_EVENTS, SESSIONS,
    SETTINGS, TABLES,
};

use super::{Error, NamespaceLock, faults};

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

pub(super) fn pin_err(path: &Path, e: impl std::error::Error) -> Error {
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
pub(super) enum Kind {
    Xdp,
    TcIngress,
    TcEgress,
    /// TC ingress beside XDP (`sg_tc_tag_guard`).
    TagGuard,
}

impl Kind {
    const ALL: [Self; 4] = [Self::Xdp, Self::TcIngress, Self::TcEgress, Self::TagGuard];

    pub(super) fn suffix(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::TcIngress => "tc-ingress",
            Self::TcEgress => "tc-egress",
            Self::TagGuard => "tc-tag-guard",
        }
    }

    pub(super) fn program(self) -> &'static str {
        match self {
            Self::Xdp => PROG_XDP,
            Self::TcIngress => PROG_TC_INGRESS,
            Self::TcEgress => PROG_TC_EGRESS,
            Self::TagGuard => PROG_TC_TAG_GUARD,
        }
    }

    /// The kind of a link pin's file name.
    pub(super) fn of_file(file: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| file.ends_with(&format!(":{}", k.suffix())))
    }
}

/// A link pin's file name: `<iface>:<ifindex>:<kind>`. bpffs refuses names
/// with a dot, which interface names may have (`eth0.100`): dots are written
/// `%2e` (and `%` as `%25`). Interface names never hold a colon.
pub(super) fn link_path(dir: &Path, iface: &str, ifindex: u32, kind: Kind) -> PathBuf {
    let name = iface.replace('%', "%25").replace('.', "%2e");
    dir.join(format!("{name}:{ifindex}:{}", kind.suffix()))
}

/// `(iface, ifindex)` of a link pin's file name.
pub(super) fn parse_link_name(file: &str) -> Option<(String, u32)> {
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

/// The program a pinned link runs and the interface index it is attached
/// to (0 once its interface is gone), from `BPF_OBJ_GET_INFO_BY_FD`.
pub(super) fn link_target(path: &Path) -> std::io::Result<(u32, u32)> {
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

/// The map data of any kind of map.
pub(super) fn map_data(m: &aya::maps::Map) -> &aya::maps::MapData {
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
pub(super) fn remove_stale_links(dir: &Path, iface: &str, ifindex: u32) {
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
pub fn cleanup(lock: &NamespaceLock) -> Result<CleanupReport, Error> {
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
            faults::point("cleanup.pin");
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

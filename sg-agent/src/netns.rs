//! Network namespaces: entering one by path, for the calling thread only.

use std::{fs::File, io, os::fd::AsRawFd as _, path::Path};

/// Moves the calling thread into the network namespace at `path` (for example
/// `/var/run/netns/NAME` or `/proc/PID/ns/net`). Threads started afterwards
/// from this thread inherit it.
pub fn enter(path: &Path) -> io::Result<()> {
    let ns = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // SAFETY: setns on a valid namespace fd affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setns {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// The path of a namespace created by `ip netns add NAME`.
pub fn named(name: &str) -> std::path::PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// Moves the calling thread into namespace `ns`: a name made by `ip netns
/// add`, or a path (anything with a `/`, such as `/proc/PID/ns/net`).
pub fn enter_named_or_path(ns: &str) -> io::Result<()> {
    if ns.contains('/') {
        enter(Path::new(ns))
    } else {
        enter(&named(ns))
    }
}

/// The inode of the calling thread's network namespace: what tells two
/// namespaces apart (the pin root of each agent is named after it).
pub fn current_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

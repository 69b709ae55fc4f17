//! One agent per network namespace, enforced by the kernel: whoever serves a
//! namespace (the daemon, `sg-agent attach`) or tears its data plane down
//! (`sg-agent cleanup`) holds an exclusive `flock` on the namespace's pin
//! directory (`/sys/fs/bpf/sg/ns-<netns inode>`) for as long as it runs.
//!
//! The lock lives with the open file, not with a socket or a file an agent
//! might forget to remove: a process that dies, however it dies, releases it,
//! and a second agent (whatever its socket or store) or a cleanup is refused
//! while the first one lives, with the holder's pid and command line (read
//! from `/proc/locks`).
//!
//! bpffs holds only directories and pinned objects, so the lock is taken on
//! the directory itself. A directory removed and made again between `open`
//! and `flock` (a cleanup racing a start) would leave the lock on an inode
//! nobody else opens: after locking, the path must still name the locked
//! inode, else the lock is taken again on the new one.

use std::{
    fs::File,
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, MetadataExt as _},
    },
    path::{Path, PathBuf},
};

/// Who holds a namespace's lock, as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, arguments joined by blanks (empty if unreadable).
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.command.is_empty() {
            write!(f, "pid {}", self.pid)
        } else {
            write!(f, "pid {} ({})", self.pid, self.command)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another sg-agent serves this network namespace: {} holds {}; stop it first (one agent per namespace)",
        .holder.as_ref().map_or_else(|| "a process".to_owned(), ToString::to_string),
        .root.display()
    )]
    Held {
        root: PathBuf,
        holder: Option<Holder>,
    },
    #[error("locking {}: {source}", .root.display())]
    Io {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The exclusive lock on one namespace's pin directory; released on drop.
#[derive(Debug)]
pub struct NamespaceLock {
    /// The locked directory, open (closing it releases the lock).
    dir: File,
    root: PathBuf,
}

/// How often the lock is taken again when the directory was replaced meanwhile.
const ATTEMPTS: usize = 20;

impl NamespaceLock {
    /// Takes the lock on `root` (made, mode 0700, if missing), without
    /// waiting: refused with the holder if another process has it.
    pub fn acquire(root: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            root: root.to_path_buf(),
            source,
        };
        for _ in 0..ATTEMPTS {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(io)?;
            let dir = match File::open(root) {
                Ok(d) => d,
                // Removed between mkdir and open: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(LockError::Held {
                        root: root.to_path_buf(),
                        holder: holder_of(&dir),
                    });
                }
                return Err(io(e));
            }
            let locked = dir.metadata().map_err(io)?;
            match std::fs::metadata(root) {
                Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {
                    return Ok(Self {
                        dir,
                        root: root.to_path_buf(),
                    });
                }
                // A cleanup removed (and maybe someone made again) the
                // directory after we opened it: our lock guards nothing.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(io::Error::other(
            "the directory kept being removed and made again while locking it",
        )))
    }

    /// The locked pin directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Releases the lock, removing the directory (and its parent, shared by
    /// every namespace) if nothing is left in them.
    pub fn remove_if_empty(self) {
        let _ = std::fs::remove_dir(&self.root);
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Whether `root` is still the directory this lock holds (a cleanup
    /// with `--force`, or anyone with root, may have removed it).
    pub fn still_holds(&self) -> bool {
        match (self.dir.metadata(), std::fs::metadata(&self.root)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }
}

/// The process holding a `flock` on `file`, from `/proc/locks` (lines such
/// as `1: FLOCK  ADVISORY  WRITE 10896 00:27:15115 0 EOF`).
fn holder_of(file: &File) -> Option<Holder> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid: u32 = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts with `->`; it holds nothing.
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(Holder { pid, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_its_holder() {
        // Any filesystem serves for the lock's logic; bpffs is tested by the
        // daemon tests.
        let root = std::env::temp_dir().join(format!("sg-lock-{}", std::process::id()));
        let first = NamespaceLock::acquire(&root).unwrap();
        match NamespaceLock::acquire(&root) {
            Err(LockError::Held { holder, .. }) => {
                let holder = holder.expect("the holder is named");
                assert_eq!(holder.pid, std::process::id());
                assert!(holder.command.contains("sg_agent"), "{holder}");
            }
            other => panic!("second lock: {other:?}"),
        }
        assert!(first.still_holds());
        drop(first);
        let again = NamespaceLock::acquire(&root).unwrap();
        std::fs::remove_dir(&root).unwrap();
        assert!(!again.still_holds());
    }
}

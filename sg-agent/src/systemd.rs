//! The service manager's notification protocol (`sd_notify(3)`), spoken
//! without libsystemd: one datagram of `KEY=VALUE` lines to the Unix socket
//! `$NOTIFY_SOCKET` names (a path, or with a leading `@` a name in the
//! abstract namespace). Not under systemd (the variable unset) every call
//! is a no-op; an error is logged once and never stops the agent.
//!
//! [`init`] opens the socket. Call it before entering another network
//! namespace: an abstract name is looked up in the namespace of the socket,
//! so the one made in the agent's own namespace still reaches the manager
//! from the served one (a path is found through the file system anyway).

use std::{
    ffi::OsStr,
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixDatagram},
        },
    },
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// The socket and where its datagrams go; `None` when there is none to use.
static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// Whether a failure was logged already (the next ones are not).
static FAILED: AtomicBool = AtomicBool::new(false);

struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

/// Where `$NOTIFY_SOCKET` says notifications go.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(std::path::PathBuf),
    /// A name in the abstract namespace (given as `@name`).
    Abstract(Vec<u8>),
}

/// Reads `$NOTIFY_SOCKET`: `None` for an empty value; an error for what
/// this agent cannot send to (a relative path, systemd's `vsock:`).
pub fn parse_target(value: &OsStr) -> Result<Option<Target>, String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        None => Ok(None),
        Some(b'@') => Ok(Some(Target::Abstract(bytes[1..].to_vec()))),
        Some(b'/') => Ok(Some(Target::Path(value.into()))),
        Some(_) => Err(format!(
            "NOTIFY_SOCKET={}: neither an absolute path nor @name",
            value.to_string_lossy()
        )),
    }
}

/// Opens the notification socket if `$NOTIFY_SOCKET` names one (once; later
/// calls do nothing). [`notify`] calls it too, if nothing did before.
pub fn init() {
    NOTIFIER.get_or_init(open);
}

fn open() -> Option<Notifier> {
    let target = match parse_target(&std::env::var_os("NOTIFY_SOCKET")?) {
        Ok(t) => t?,
        Err(e) => {
            failed(&e);
            return None;
        }
    };
    let to = match &target {
        Target::Path(p) => SocketAddr::from_pathname(p),
        Target::Abstract(name) => SocketAddr::from_abstract_name(name),
    };
    match (UnixDatagram::unbound(), to) {
        (Ok(socket), Ok(to)) => Some(Notifier { socket, to }),
        (Err(e), _) | (_, Err(e)) => {
            failed(&format!("the notification socket {target:?}: {e}"));
            None
        }
    }
}

fn failed(why: &str) {
    if !FAILED.swap(true, Ordering::Relaxed) {
        log::warn!("cannot notify the service manager ({why}); going on without");
    }
}

/// Sends `state` (lines such as `READY=1`, `STATUS=…`) to the service
/// manager; nothing when not run by one.
pub fn notify(state: &str) {
    let Some(n) = NOTIFIER.get_or_init(open) else {
        return;
    };
    if let Err(e) = n.socket.send_to_addr(state.as_bytes(), &n.to) {
        failed(&format!("sending to {:?}: {e}", n.to));
    }
}

/// How often to send `WATCHDOG=1`, from the process's environment: half of
/// `$WATCHDOG_USEC`, when that is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    ping_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// Half of `usec` microseconds (the manager's deadline; `sd_watchdog_enabled(3)`
/// advises pinging at half of it), if the watchdog is meant for `own_pid`:
/// `pid` unset or equal to it (a child inherits the variables, not the
/// watchdog). `None` for a missing, zero or malformed value.
pub fn ping_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        let parse = |s: &str| parse_target(OsStr::new(s));
        assert_eq!(
            parse("/run/systemd/notify"),
            Ok(Some(Target::Path("/run/systemd/notify".into())))
        );
        assert_eq!(
            parse("@/org/freedesktop/systemd1/notify/42"),
            Ok(Some(Target::Abstract(
                b"/org/freedesktop/systemd1/notify/42".to_vec()
            )))
        );
        assert_eq!(parse(""), Ok(None));
        assert!(parse("run/notify").is_err());
        assert!(parse("vsock:2:1234").is_err());
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_deadline_when_it_is_ours() {
        let half = |usec, pid| ping_interval(usec, pid, 4242);
        assert_eq!(half(Some("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(
            half(Some("200000"), Some("4242")),
            Some(Duration::from_millis(100))
        );
        // Another process's watchdog (inherited variables) is not ours.
        assert_eq!(half(Some("200000"), Some("1")), None);
        assert_eq!(half(Some("200000"), Some("x")), None);
        for off in [None, Some("0"), Some(""), Some("-5"), Some("soon")] {
            assert_eq!(half(off, None), None, "{off:?}");
        }
    }
}

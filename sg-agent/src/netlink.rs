//! Interfaces appearing and disappearing, from the kernel's routing netlink.
//!
//! [`LinkWatcher`] listens to the `RTMGRP_LINK` multicast group; [`links`]
//! dumps the interfaces that exist now. The daemon reconciles everything from
//! a dump at start and after [`LinkEvent::Resync`], and one name per
//! [`LinkEvent::Added`] or [`LinkEvent::Removed`].
//!
//! Both work in the network namespace of the thread that opens their socket; a
//! socket stays in that namespace wherever it is used afterwards.
//!
//! Netlink messages arrive in host byte order. Everything read from the kernel
//! goes through bounds-checked accessors: a message that is too short, or whose
//! lengths point outside the datagram, is skipped, never trusted.

use std::{
    collections::HashMap,
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use tokio::io::{Interest, unix::AsyncFd};

/// A change to the set of interfaces in the watcher's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkEvent {
    /// An `RTM_NEWLINK`: the interface was created, or changed (flags, up or
    /// down, MTU, a rename). The kernel does not say which, so treat it as
    /// "reconcile this name".
    Added { ifindex: u32, name: String },
    /// The interface is gone (deleted or moved to another namespace), or a
    /// rename took this name away from it (then an `Added` with the new name
    /// follows).
    Removed { ifindex: u32, name: String },
    /// Events were lost (the receive buffer overran): reconcile everything
    /// from a fresh [`links`] dump.
    Resync,
}

/// The receive buffer [`LinkWatcher::new`] asks for. Link events are rare, but
/// a burst (hundreds of containers starting at once) can bring several per
/// interface; an overrun is recovered by [`LinkEvent::Resync`], at the price
/// of a full reconcile.
pub const DEFAULT_RECEIVE_BUFFER: usize = 4 << 20;

// From uapi/linux/netlink.h and rtnetlink.h (libc has them, but as `c_int`).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const RTMGRP_LINK: u32 = 0x1;
const NLA_TYPE_MASK: u16 = !0xc000;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const RTA_HDRLEN: usize = 4;

/// How many datagrams one [`LinkWatcher::next`] reads at most, so a flood of
/// events cannot keep the runtime's thread to itself.
const BATCH: usize = 64;
/// How many times a dump the kernel marks inconsistent (an interface changed
/// while it ran) is restarted before the last one is taken as it is.
const DUMP_ATTEMPTS: usize = 5;
/// A dump that does not finish within this fails instead of hanging.
const DUMP_TIMEOUT_SECS: libc::time_t = 5;

/// A `NETLINK_ROUTE` socket subscribed to link events, non-blocking and
/// close-on-exec, in the namespace of the thread that made it.
///
/// It keeps a map from ifindex to name, seeded from a dump when it is made,
/// so that a rename can report the old name as [`LinkEvent::Removed`].
pub struct LinkWatcher {
    /// The event socket until the first [`LinkWatcher::next`] registers it
    /// with the runtime (so that `new` works outside one).
    unregistered: Option<OwnedFd>,
    events: Option<AsyncFd<OwnedFd>>,
    /// A second socket, made alongside the first so it is in the same
    /// namespace, for refreshing `names` after an overrun.
    dump: OwnedFd,
    dump_seq: u32,
    names: HashMap<u32, String>,
    buf: Vec<u8>,
}

impl LinkWatcher {
    /// Opens the socket in the calling thread's network namespace, with a
    /// receive buffer of [`DEFAULT_RECEIVE_BUFFER`] bytes.
    pub fn new() -> io::Result<Self> {
        Self::with_receive_buffer(DEFAULT_RECEIVE_BUFFER)
    }

    /// Like [`LinkWatcher::new`], asking for a receive buffer of `bytes`
    /// (`SO_RCVBUFFORCE` when allowed, else `SO_RCVBUF`, which
    /// `net.core.rmem_max` caps; the kernel has a minimum of a few KiB). A
    /// small buffer makes overruns easy to provoke in tests.
    pub fn with_receive_buffer(bytes: usize) -> io::Result<Self> {
        let events = open(libc::SOCK_NONBLOCK, RTMGRP_LINK)?;
        set_receive_buffer(events.as_fd(), bytes)?;
        let dump = open_for_dump()?;
        let mut watcher = Self {
            unregistered: Some(events),
            events: None,
            dump,
            dump_seq: 0,
            names: HashMap::new(),
            buf: vec![0; 32 << 10],
        };
        // Subscribed before dumping: an interface that changes in between
        // also shows up as an event, so nothing falls in the gap.
        watcher.names = dump_links(
            watcher.dump.as_fd(),
            &mut watcher.dump_seq,
            &mut watcher.buf,
        )?
        .into_iter()
        .collect();
        Ok(watcher)
    }

    /// Waits for the next batch of events (never an empty one).
    ///
    /// Every `RTM_NEWLINK` is reported as [`LinkEvent::Added`], including the
    /// ones for flag changes; a rename reports `Removed` for the old name,
    /// then `Added` for the new one. When the receive buffer overran, the
    /// batch contains [`LinkEvent::Resync`] (and this call dumps the links, a
    /// short blocking read, to re-learn names).
    ///
    /// Cancel-safe: events are read from the socket only after the last await
    /// point, so dropping this future loses nothing.
    pub async fn next(&mut self) -> io::Result<Vec<LinkEvent>> {
        let Self {
            unregistered,
            events: registered,
            dump,
            dump_seq,
            names,
            buf,
        } = self;
        // Registered here rather than in `new`, which may run outside a
        // runtime (AsyncFd needs one).
        let socket = if let Some(socket) = registered {
            &*socket
        } else {
            let fd = unregistered
                .take()
                .expect("the socket is either registered or not yet");
            // SAFETY: an OwnedFd is open and always returns the same fd; the
            // AsyncFd owns it from here on and closes it only after
            // deregistering.
            let result = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            match result {
                Ok(socket) => &*registered.insert(socket),
                Err(e) => {
                    // Kept, so that a later call can try again.
                    let (fd, e) = e.into_parts();
                    *unregistered = Some(fd);
                    return Err(e);
                }
            }
        };
        loop {
            let mut guard = socket.readable().await?;
            let mut events = Vec::new();
            let mut overrun = false;
            for _ in 0..BATCH {
                match guard.try_io(|s| recv_datagram(s.get_ref().as_fd(), buf)) {
                    Err(_would_block) => break,
                    Ok(Ok((len, sender))) => {
                        // Only the kernel (port 0) speaks for the kernel; a
                        // privileged process could send to the group too.
                        if sender == 0 {
                            let datagram = buf.get(..len).unwrap_or_default();
                            for message in messages(datagram) {
                                overrun |= apply(names, &message, &mut events);
                            }
                        }
                    }
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => overrun = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => return Err(e),
                }
            }
            if overrun {
                // Events were dropped, renames among them perhaps: re-learn
                // the names (on the dump socket, in the watcher's namespace
                // whichever thread runs this). Events still queued are newer
                // and are applied on top.
                match dump_links(dump.as_fd(), dump_seq, buf) {
                    Ok(now) => *names = now.into_iter().collect(),
                    Err(e) => log::warn!("netlink: re-reading links after an overrun: {e}"),
                }
                events.push(LinkEvent::Resync);
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

/// The interfaces in the calling thread's network namespace, as (ifindex,
/// name) sorted by ifindex: one `RTM_GETLINK` dump. Blocks until the kernel
/// has answered (fails after a few seconds rather than hang).
pub fn links() -> io::Result<Vec<(u32, String)>> {
    let socket = open_for_dump()?;
    let mut seq = 0;
    dump_links(socket.as_fd(), &mut seq, &mut vec![0; 32 << 10])
}

/// A netlink message: its header fields and the bytes after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages in one datagram. Stops at the first header that is short or
/// whose length is below a header's or beyond the datagram: after that there
/// is no telling where the next message starts.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let message = message_at(buf);
        buf = match message {
            // The next message starts at the 4-byte boundary after this one
            // (NLMSG_ALIGN); the last one need not be padded.
            Some(m) => buf
                .get(align4(NLMSG_HDRLEN + m.payload.len())..)
                .unwrap_or_default(),
            None => &[],
        };
        message
    })
}

/// The message at the start of `buf`, if its header is whole and its length
/// is at least a header's and within `buf`.
fn message_at(buf: &[u8]) -> Option<Message<'_>> {
    let len = usize::try_from(u32_at(buf, 0)?).ok()?;
    Some(Message {
        kind: u16_at(buf, 4)?,
        flags: u16_at(buf, 6)?,
        seq: u32_at(buf, 8)?,
        // None when `len` is below a header's (start after end) or too long.
        payload: buf.get(NLMSG_HDRLEN..len)?,
    })
}

/// The ifindex and name in an `RTM_NEWLINK` or `RTM_DELLINK` payload: a
/// `struct ifinfomsg`, then attributes. `None` if the payload is shorter than
/// an `ifinfomsg` or the index is not positive; the name is `None` when no
/// well-formed `IFLA_IFNAME` comes before the attributes end or turn
/// malformed.
fn parse_link(payload: &[u8]) -> Option<(u32, Option<String>)> {
    let ifindex = i32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let ifindex = u32::try_from(ifindex).ok().filter(|&i| i != 0)?;
    let mut attrs = payload.get(IFINFOMSG_LEN..)?;
    let mut name = None;
    while let (Some(len), Some(kind)) = (u16_at(attrs, 0), u16_at(attrs, 2)) {
        let len = usize::from(len);
        let Some(value) = attrs.get(RTA_HDRLEN..len).filter(|_| len >= RTA_HDRLEN) else {
            break;
        };
        if kind & NLA_TYPE_MASK == libc::IFLA_IFNAME {
            name = ifname(value);
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    Some((ifindex, name))
}

/// An `IFLA_IFNAME` value: a NUL-terminated string (the NUL is not trusted to
/// be there). Linux allows any bytes but `/`, `:` and white space in a name;
/// one that is not UTF-8 is converted lossily (it can match no bound name).
fn ifname(value: &[u8]) -> Option<String> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    let name = value.get(..end)?;
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

/// Turns one multicast message into events and keeps `names` current.
/// Returns whether the message says events were lost.
fn apply(names: &mut HashMap<u32, String>, message: &Message, events: &mut Vec<LinkEvent>) -> bool {
    match message.kind {
        libc::RTM_NEWLINK => {
            let Some((ifindex, Some(name))) = parse_link(message.payload) else {
                return false;
            };
            if let Some(old) = names.insert(ifindex, name.clone())
                && old != name
            {
                events.push(LinkEvent::Removed { ifindex, name: old });
            }
            events.push(LinkEvent::Added { ifindex, name });
        }
        libc::RTM_DELLINK => {
            let Some((ifindex, name)) = parse_link(message.payload) else {
                return false;
            };
            // The name known for the index may differ from the kernel's if a
            // rename was missed: then both names are gone.
            if let Some(known) = names.remove(&ifindex).filter(|k| name.as_ref() != Some(k)) {
                events.push(LinkEvent::Removed {
                    ifindex,
                    name: known,
                });
            }
            if let Some(name) = name {
                events.push(LinkEvent::Removed { ifindex, name });
            }
        }
        // Linux reports overruns as ENOBUFS from recv, not with this type;
        // honour it anyway, it costs nothing.
        NLMSG_OVERRUN => return true,
        _ => {}
    }
    false
}

/// Folds one datagram of the reply to dump request `seq` into `out`. Returns
/// whether the dump is finished; sets `interrupted` if the kernel says it saw
/// interfaces change while dumping. Messages of other sequence numbers (from
/// an abandoned earlier dump) are ignored.
fn fold_dump(
    datagram: &[u8],
    seq: u32,
    out: &mut Vec<(u32, String)>,
    interrupted: &mut bool,
) -> io::Result<bool> {
    for message in messages(datagram).filter(|m| m.seq == seq) {
        *interrupted |= message.flags & NLM_F_DUMP_INTR != 0;
        match message.kind {
            libc::RTM_NEWLINK => {
                if let Some((ifindex, Some(name))) = parse_link(message.payload) {
                    out.push((ifindex, name));
                }
            }
            // DONE carries the dump's own error code, if the kernel has room
            // for one; ERROR carries one always (0 is an acknowledgement).
            NLMSG_DONE => {
                return match i32_at(message.payload, 0) {
                    Some(e) if e < 0 => Err(io::Error::from_raw_os_error(e.saturating_neg())),
                    _ => Ok(true),
                };
            }
            NLMSG_ERROR => {
                return match i32_at(message.payload, 0) {
                    Some(0) => Ok(true),
                    Some(e) => Err(io::Error::from_raw_os_error(e.saturating_neg())),
                    None => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink: truncated error message in a link dump",
                    )),
                };
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Dumps the links over `socket` (blocking, with a receive timeout), sorted by
/// ifindex. Restarts a dump the kernel marks inconsistent, a few times.
fn dump_links(
    socket: BorrowedFd,
    seq: &mut u32,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for _ in 0..DUMP_ATTEMPTS {
        *seq = seq.wrapping_add(1);
        send_to_kernel(socket, &dump_request(*seq))?;
        out.clear();
        let mut interrupted = false;
        loop {
            let (len, sender) = match recv_datagram(socket, buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "netlink: no answer to a link dump",
                    ));
                }
                Err(e) => return Err(e),
            };
            if sender != 0 {
                continue;
            }
            let datagram = buf.get(..len).unwrap_or_default();
            if fold_dump(datagram, *seq, &mut out, &mut interrupted)? {
                break;
            }
        }
        if !interrupted {
            break;
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// An `RTM_GETLINK` dump request: a header and an all-zero `ifinfomsg`
/// (family `AF_UNSPEC`, every interface).
fn dump_request(seq: u32) -> Vec<u8> {
    const LEN: usize = NLMSG_HDRLEN + IFINFOMSG_LEN;
    let mut req = Vec::with_capacity(LEN);
    req.extend_from_slice(&u32::try_from(LEN).unwrap_or(u32::MAX).to_ne_bytes());
    req.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    // Port 0: let the kernel fill in ours.
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.resize(LEN, 0);
    req
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        buf.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        buf.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn i32_at(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(
        buf.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// `NLMSG_ALIGN` and `RTA_ALIGN`: up to a multiple of 4, saturating (a length
/// that large is past the end of any buffer anyway).
const fn align4(len: usize) -> usize {
    match len.checked_add(3) {
        Some(n) => n & !3,
        None => usize::MAX,
    }
}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("netlink {what}: {e}"))
}

fn sockaddr_nl(groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers (and padding); all zeroes is a
    // valid value, and port 0 means "the kernel" or "assign one".
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).unwrap_or_default();
    addr.nl_groups = groups;
    addr
}

fn sockaddr_nl_len() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<libc::sockaddr_nl>()).unwrap_or(libc::socklen_t::MAX)
}

/// A close-on-exec `NETLINK_ROUTE` socket in the calling thread's namespace,
/// bound to the multicast `groups`.
fn open(flags: libc::c_int, groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(last_error("socket"));
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sockaddr_nl(groups);
    // SAFETY: `addr` is a valid sockaddr_nl and the length is its size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            sockaddr_nl_len(),
        )
    };
    if rc != 0 {
        return Err(last_error("bind"));
    }
    Ok(socket)
}

/// A blocking socket for dumps, that gives up waiting after a few seconds.
fn open_for_dump() -> io::Result<OwnedFd> {
    let socket = open(0, 0)?;
    let timeout = libc::timeval {
        tv_sec: DUMP_TIMEOUT_SECS,
        tv_usec: 0,
    };
    setsockopt(socket.as_fd(), libc::SO_RCVTIMEO, &timeout)?;
    Ok(socket)
}

fn set_receive_buffer(socket: BorrowedFd, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SO_RCVBUFFORCE (CAP_NET_ADMIN) goes past net.core.rmem_max, which is
    // often only 208 KiB; without the capability, take what SO_RCVBUF gives.
    match setsockopt(socket, libc::SO_RCVBUFFORCE, &bytes) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            setsockopt(socket, libc::SO_RCVBUF, &bytes)
        }
        other => other,
    }
}

fn setsockopt<T>(socket: BorrowedFd, option: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: `value` points to a live T of `len` bytes; the kernel only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send_to_kernel(socket: BorrowedFd, message: &[u8]) -> io::Result<()> {
    let kernel = sockaddr_nl(0);
    loop {
        // SAFETY: `message` and `kernel` are live for the call, with their
        // true lengths.
        let n = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const kernel).cast(),
                sockaddr_nl_len(),
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = last_error("send");
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one datagram into `buf`, growing `buf` to fit it first; returns
/// its length and the sender's port id (0 for the kernel).
///
/// A netlink datagram cut short loses the messages in its tail for good, so
/// it is peeked at first: with `MSG_TRUNC` the kernel returns its full length.
fn recv_datagram(socket: BorrowedFd, buf: &mut Vec<u8>) -> io::Result<(usize, u32)> {
    let (len, _) = recv(socket, buf, libc::MSG_PEEK | libc::MSG_TRUNC)?;
    if len > buf.len() {
        buf.resize(len, 0);
    }
    let (len, sender) = recv(socket, buf, 0)?;
    Ok((len.min(buf.len()), sender))
}

fn recv(socket: BorrowedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<(usize, u32)> {
    let mut from = sockaddr_nl(0);
    let mut from_len = sockaddr_nl_len();
    // SAFETY: `buf` is writable for its length; `from` is a sockaddr_nl of
    // `from_len` bytes, and the kernel writes at most that many.
    let n = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            (&raw mut from).cast(),
            &raw mut from_len,
        )
    };
    // Negative means failure; anything else fits in a usize.
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok((n, from.nl_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: u32 = 1;

    /// A netlink message with the given header fields, padded to 4 bytes.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap();
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(RTA_HDRLEN + value.len()).unwrap();
        let mut a = Vec::new();
        a.extend_from_slice(&len.to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    /// An `ifinfomsg` for `ifindex`, then `attrs` as they are.
    fn link_payload(ifindex: i32, attrs: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        p.extend_from_slice(attrs);
        p
    }

    /// A link message as the kernel sends it: `IFLA_MTU` before the name, as
    /// an attribute to skip over.
    fn link(kind: u16, ifindex: i32, name: &str) -> Vec<u8> {
        let mut attrs = attr(libc::IFLA_MTU, &1500u32.to_ne_bytes());
        attrs.extend(attr(libc::IFLA_IFNAME, format!("{name}\0").as_bytes()));
        message(kind, 0, 0, &link_payload(ifindex, &attrs))
    }

    fn added(ifindex: u32, name: &str) -> LinkEvent {
        LinkEvent::Added {
            ifindex,
            name: name.into(),
        }
    }

    fn removed(ifindex: u32, name: &str) -> LinkEvent {
        LinkEvent::Removed {
            ifindex,
            name: name.into(),
        }
    }

    /// What a datagram turns into, starting from `names`.
    fn events_of(names: &mut HashMap<u32, String>, datagram: &[u8]) -> (Vec<LinkEvent>, bool) {
        let mut events = Vec::new();
        let mut overrun = false;
        for m in messages(datagram) {
            overrun |= apply(names, &m, &mut events);
        }
        (events, overrun)
    }

    fn fresh(datagram: &[u8]) -> Vec<LinkEvent> {
        events_of(&mut HashMap::new(), datagram).0
    }

    #[test]
    fn newlink_and_dellink_become_added_and_removed() {
        let mut names = HashMap::new();
        let (events, _) = events_of(&mut names, &link(libc::RTM_NEWLINK, 7, "veth0"));
        assert_eq!(events, vec![added(7, "veth0")]);
        assert_eq!(names.get(&7).map(String::as_str), Some("veth0"));
        let (events, _) = events_of(&mut names, &link(libc::RTM_DELLINK, 7, "veth0"));
        assert_eq!(events, vec![removed(7, "veth0")]);
        assert_eq!(names, HashMap::new());
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut datagram = link(libc::RTM_NEWLINK, 7, "a");
        datagram.extend(link(libc::RTM_NEWLINK, 8, "bb"));
        datagram.extend(link(libc::RTM_DELLINK, 7, "a"));
        assert_eq!(
            fresh(&datagram),
            vec![added(7, "a"), added(8, "bb"), removed(7, "a")]
        );
    }

    #[test]
    fn flag_change_is_reported_as_added_again() {
        let mut names = HashMap::new();
        events_of(&mut names, &link(libc::RTM_NEWLINK, 7, "a"));
        let (events, _) = events_of(&mut names, &link(libc::RTM_NEWLINK, 7, "a"));
        assert_eq!(events, vec![added(7, "a")]);
    }

    #[test]
    fn rename_removes_the_old_name() {
        let mut names = HashMap::from([(7, "old".to_string())]);
        let (events, _) = events_of(&mut names, &link(libc::RTM_NEWLINK, 7, "new"));
        assert_eq!(events, vec![removed(7, "old"), added(7, "new")]);
        assert_eq!(names.get(&7).map(String::as_str), Some("new"));
    }

    #[test]
    fn dellink_after_a_missed_rename_removes_both_names() {
        let mut names = HashMap::from([(7, "old".to_string())]);
        let (events, _) = events_of(&mut names, &link(libc::RTM_DELLINK, 7, "new"));
        assert_eq!(events, vec![removed(7, "old"), removed(7, "new")]);
    }

    #[test]
    fn dellink_without_a_name_uses_the_known_one() {
        let mut names = HashMap::from([(7, "a".to_string())]);
        let no_name = message(libc::RTM_DELLINK, 0, 0, &link_payload(7, &[]));
        assert_eq!(events_of(&mut names, &no_name).0, vec![removed(7, "a")]);
        // Unknown index and no name: nothing to report.
        assert_eq!(fresh(&no_name), vec![]);
    }

    #[test]
    fn newlink_without_a_name_is_skipped() {
        let no_name = message(libc::RTM_NEWLINK, 0, 0, &link_payload(7, &[]));
        assert_eq!(fresh(&no_name), vec![]);
        let empty_name = message(
            libc::RTM_NEWLINK,
            0,
            0,
            &link_payload(7, &attr(libc::IFLA_IFNAME, b"\0")),
        );
        assert_eq!(fresh(&empty_name), vec![]);
    }

    #[test]
    fn name_without_nul_is_taken_whole() {
        let m = message(
            libc::RTM_NEWLINK,
            0,
            0,
            &link_payload(7, &attr(libc::IFLA_IFNAME, b"eth0")),
        );
        assert_eq!(fresh(&m), vec![added(7, "eth0")]);
    }

    #[test]
    fn nested_flag_bits_in_the_attribute_type_are_ignored() {
        let m = message(
            libc::RTM_NEWLINK,
            0,
            0,
            &link_payload(7, &attr(libc::IFLA_IFNAME | 0x8000, b"x\0")),
        );
        assert_eq!(fresh(&m), vec![added(7, "x")]);
    }

    #[test]
    fn non_positive_ifindex_is_skipped() {
        assert_eq!(fresh(&link(libc::RTM_NEWLINK, 0, "a")), vec![]);
        assert_eq!(fresh(&link(libc::RTM_NEWLINK, -3, "a")), vec![]);
    }

    #[test]
    fn other_message_types_are_ignored() {
        // RTM_NEWADDR (20) with a link-shaped payload.
        assert_eq!(fresh(&link(20, 7, "a")), vec![]);
        assert_eq!(fresh(&message(NLMSG_DONE, 0, 0, &[0; 4])), vec![]);
    }

    #[test]
    fn overrun_message_asks_for_a_resync() {
        let (events, overrun) = events_of(&mut HashMap::new(), &message(NLMSG_OVERRUN, 0, 0, &[]));
        assert_eq!(events, vec![]);
        assert!(overrun);
    }

    #[test]
    fn truncated_header_is_skipped() {
        let m = link(libc::RTM_NEWLINK, 7, "a");
        for cut in 0..NLMSG_HDRLEN {
            assert_eq!(fresh(&m[..cut]), vec![], "cut at {cut}");
        }
    }

    #[test]
    fn message_longer_than_the_datagram_is_skipped() {
        let m = link(libc::RTM_NEWLINK, 7, "a");
        // Every cut inside the message leaves nlmsg_len pointing past the end.
        for cut in NLMSG_HDRLEN..m.len() {
            assert_eq!(fresh(&m[..cut]), vec![], "cut at {cut}");
        }
    }

    #[test]
    fn length_below_a_header_stops_the_datagram() {
        let mut datagram = link(libc::RTM_NEWLINK, 7, "a");
        datagram[..4].copy_from_slice(&3u32.to_ne_bytes());
        datagram.extend(link(libc::RTM_NEWLINK, 8, "b"));
        // Where the next message would start is unknown: nothing is read.
        assert_eq!(fresh(&datagram), vec![]);
        let mut zero = vec![0u8; 16];
        zero.extend(link(libc::RTM_NEWLINK, 8, "b"));
        assert_eq!(fresh(&zero), vec![]);
    }

    #[test]
    fn short_ifinfomsg_is_skipped_and_the_next_message_read() {
        let mut datagram = message(libc::RTM_NEWLINK, 0, 0, &[0, 0, 0, 0, 7, 0, 0, 0]);
        datagram.extend(link(libc::RTM_NEWLINK, 8, "b"));
        assert_eq!(fresh(&datagram), vec![added(8, "b")]);
    }

    #[test]
    fn malformed_attribute_ends_the_attributes() {
        let mut name = attr(libc::IFLA_IFNAME, b"a\0");
        // Longer than what is left of the message.
        name[..2].copy_from_slice(&200u16.to_ne_bytes());
        let m = message(libc::RTM_NEWLINK, 0, 0, &link_payload(7, &name));
        assert_eq!(fresh(&m), vec![]);
        // Shorter than an attribute header (would never advance).
        let mut attrs = attr(libc::IFLA_MTU, &[0; 4]);
        attrs[..2].copy_from_slice(&2u16.to_ne_bytes());
        attrs.extend(attr(libc::IFLA_IFNAME, b"a\0"));
        let m = message(libc::RTM_NEWLINK, 0, 0, &link_payload(7, &attrs));
        assert_eq!(fresh(&m), vec![]);
        // A name before the bad attribute still counts.
        let mut attrs = attr(libc::IFLA_IFNAME, b"a\0");
        attrs.extend([0xff, 0xff, 0x01]);
        let m = message(libc::RTM_NEWLINK, 0, 0, &link_payload(7, &attrs));
        assert_eq!(fresh(&m), vec![added(7, "a")]);
    }

    #[test]
    fn non_utf8_name_is_converted_lossily() {
        let m = message(
            libc::RTM_NEWLINK,
            0,
            0,
            &link_payload(7, &attr(libc::IFLA_IFNAME, b"e\xfft\0")),
        );
        assert_eq!(fresh(&m), vec![added(7, "e\u{fffd}t")]);
    }

    fn fold(datagram: &[u8], seq: u32) -> (io::Result<bool>, Vec<(u32, String)>, bool) {
        let mut out = Vec::new();
        let mut interrupted = false;
        let done = fold_dump(datagram, seq, &mut out, &mut interrupted);
        (done, out, interrupted)
    }

    fn with_seq(kind: u16, flags: u16, seq: u32, ifindex: i32, name: &str) -> Vec<u8> {
        let attrs = attr(libc::IFLA_IFNAME, format!("{name}\0").as_bytes());
        message(kind, flags, seq, &link_payload(ifindex, &attrs))
    }

    #[test]
    fn dump_collects_links_until_done() {
        let mut datagram = with_seq(libc::RTM_NEWLINK, 2, 9, 1, "lo");
        datagram.extend(with_seq(libc::RTM_NEWLINK, 2, 9, 4, "eth0"));
        let (done, out, interrupted) = fold(&datagram, 9);
        assert!(!done.unwrap());
        assert_eq!(out, vec![(LO, "lo".into()), (4, "eth0".into())]);
        assert!(!interrupted);
        let (done, out, _) = fold(&message(NLMSG_DONE, 2, 9, &0i32.to_ne_bytes()), 9);
        assert!(done.unwrap());
        assert_eq!(out, vec![]);
        // A DONE with no room for an error code is a plain end.
        assert!(fold(&message(NLMSG_DONE, 2, 9, &[]), 9).0.unwrap());
    }

    #[test]
    fn dump_ignores_other_sequence_numbers() {
        let mut datagram = with_seq(libc::RTM_NEWLINK, 2, 8, 1, "lo");
        datagram.extend(message(NLMSG_DONE, 2, 8, &0i32.to_ne_bytes()));
        let (done, out, _) = fold(&datagram, 9);
        assert!(!done.unwrap());
        assert_eq!(out, vec![]);
    }

    #[test]
    fn dump_error_and_done_error_are_errors() {
        let mut error = (-libc::EPERM).to_ne_bytes().to_vec();
        // nlmsgerr carries the request's header after the code.
        error.extend(dump_request(9));
        let (done, _, _) = fold(&message(NLMSG_ERROR, 0, 9, &error), 9);
        assert_eq!(done.unwrap_err().raw_os_error(), Some(libc::EPERM));
        let (done, _, _) = fold(&message(NLMSG_DONE, 2, 9, &(-libc::EINTR).to_ne_bytes()), 9);
        assert_eq!(done.unwrap_err().raw_os_error(), Some(libc::EINTR));
        let (done, _, _) = fold(&message(NLMSG_ERROR, 0, 9, &[0; 2]), 9);
        assert_eq!(done.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Error code 0 is an acknowledgement: the end.
        assert!(fold(&message(NLMSG_ERROR, 0, 9, &[0; 4]), 9).0.unwrap());
    }

    #[test]
    fn dump_interrupted_flag_is_noticed() {
        let datagram = with_seq(libc::RTM_NEWLINK, 2 | NLM_F_DUMP_INTR, 9, 1, "lo");
        assert!(fold(&datagram, 9).2);
    }

    #[test]
    fn dump_request_layout() {
        let req = dump_request(0x0102_0304);
        assert_eq!(req.len(), 32);
        let m: Vec<_> = messages(&req).collect();
        assert_eq!(
            m,
            vec![Message {
                kind: libc::RTM_GETLINK,
                flags: NLM_F_REQUEST | NLM_F_DUMP,
                seq: 0x0102_0304,
                payload: &[0; IFINFOMSG_LEN],
            }]
        );
    }

    #[test]
    fn align4_saturates() {
        assert_eq!(align4(0), 0);
        assert_eq!(align4(13), 16);
        assert_eq!(align4(16), 16);
        assert_eq!(align4(usize::MAX - 1), usize::MAX);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Garbage never panics, whatever it is fed to.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let mut names = HashMap::new();
                events_of(&mut names, &bytes);
                let _ = fold(&bytes, 0);
                let _ = parse_link(&bytes);
            }

            /// A valid datagram with one byte changed or cut short either
            /// parses or is skipped, never panics, and yields at most what
            /// the datagram could hold.
            #[test]
            fn corrupted_datagram_never_panics(
                at in 0usize..200,
                byte in any::<u8>(),
                cut in 0usize..200,
            ) {
                let mut datagram = link(libc::RTM_NEWLINK, 7, "veth0");
                datagram.extend(link(libc::RTM_DELLINK, 8, "veth1"));
                let n = datagram.len();
                datagram[at % n] = byte;
                datagram.truncate(cut.max(1) % (n + 1));
                let (events, _) = events_of(&mut HashMap::new(), &datagram);
                // Two messages: at most Added, then Removed twice (a rename missed).
                prop_assert!(events.len() <= 3);
                let _ = fold(&datagram, 0);
            }
        }
    }
}

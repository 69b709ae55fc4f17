//! Traffic probes between namespaces: TCP connect + echo, UDP request/reply and
//! ping, each with a short timeout, each reporting allowed or blocked.

use std::{
    fmt,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::topology::Netns;

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request reached the server and its reply came back.
    Allowed,
    /// It did not; the text says how it failed.
    Blocked(String),
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowed => f.write_str("allowed"),
            Self::Blocked(_) => f.write_str("blocked"),
        }
    }
}

/// How long a probe waits for an answer before calling the path blocked.
pub const TIMEOUT: Duration = Duration::from_millis(700);

/// Echo servers (TCP and UDP, IPv4 and IPv6 on one dual-stack socket each) in a
/// namespace; they stop when dropped.
pub struct Servers {
    pub tcp_port: u16,
    pub udp_port: u16,
    stop: Arc<AtomicBool>,
    tcp: Option<(i32, JoinHandle<()>)>,
    udp: Option<(i32, JoinHandle<()>)>,
}

impl Servers {
    /// Binds both sockets inside `ns` (on `[::]`, port chosen by the kernel)
    /// and serves them from background threads.
    pub fn start(ns: &Netns) -> anyhow::Result<Self> {
        Self::start_on(ns, 0)
    }

    /// Echo servers on TCP and UDP port `port` (0: the kernel chooses).
    pub fn start_on(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        let (tcp, udp) = ns.exec(|| -> anyhow::Result<_> {
            let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            Ok((TcpListener::bind(any)?, UdpSocket::bind(any)?))
        })??;
        let (tcp_port, udp_port) = (tcp.local_addr()?.port(), udp.local_addr()?.port());
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_fd = tcp.as_raw_fd();
        let udp_fd = udp.as_raw_fd();
        let stop_tcp = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            for conn in tcp.incoming() {
                if stop_tcp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 2048];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let stop_udp = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop_udp.load(Ordering::Relaxed) {
                match udp.recv_from(&mut buf) {
                    Ok((n, from)) if n > 0 => {
                        let _ = udp.send_to(&buf[..n], from);
                    }
                    Ok(_) | Err(_) => {}
                }
            }
        });
        Ok(Self {
            tcp_port,
            udp_port,
            stop,
            tcp: Some((tcp_fd, tcp_thread)),
            udp: Some((udp_fd, udp_thread)),
        })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (fd, thread) in [self.tcp.take(), self.udp.take()].into_iter().flatten() {
            // shutdown() wakes a thread blocked in accept() or recvfrom().
            // SAFETY: the fd is still owned by the socket its thread holds.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            let _ = thread.join();
        }
    }
}

const PAYLOAD: &[u8] = b"sg-probe";

/// TCP: connect from `from` to `to`, send a few bytes, expect them echoed.
pub fn tcp(from: &Netns, to: SocketAddr) -> Outcome {
    tcp_from(from, None, to)
}

/// TCP from a given source address (one of `from`'s).
pub fn tcp_from(from: &Netns, source: Option<IpAddr>, to: SocketAddr) -> Outcome {
    let attempt = || -> std::io::Result<()> {
        let mut s = match source {
            None => TcpStream::connect_timeout(&to, TIMEOUT)?,
            Some(src) => connect_from(src, to)?,
        };
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(PAYLOAD)?;
        let mut back = [0u8; PAYLOAD.len()];
        s.read_exact(&mut back)?;
        if back != PAYLOAD {
            return Err(std::io::Error::other("echo differs"));
        }
        Ok(())
    };
    outcome(from.exec(attempt))
}

/// UDP: send one datagram from `from` to `to`, expect it echoed.
pub fn udp(from: &Netns, to: SocketAddr) -> Outcome {
    udp_from(from, None, to)
}

/// UDP from a given source address (one of `from`'s).
pub fn udp_from(from: &Netns, source: Option<IpAddr>, to: SocketAddr) -> Outcome {
    let attempt = || -> std::io::Result<()> {
        let local: SocketAddr = match (source, to.is_ipv4()) {
            (Some(src), _) => (src, 0).into(),
            (None, true) => (IpAddr::from([0, 0, 0, 0]), 0).into(),
            (None, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let s = UdpSocket::bind(local)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send_to(PAYLOAD, to)?;
        let mut back = [0u8; 64];
        let (n, peer) = s.recv_from(&mut back)?;
        if &back[..n] != PAYLOAD || peer != to {
            return Err(std::io::Error::other("echo differs"));
        }
        Ok(())
    };
    outcome(from.exec(attempt))
}

/// Ping: `count` echo requests from `from` to `to`; allowed if every one was
/// answered.
pub fn ping(from: &Netns, to: IpAddr, count: u32) -> Outcome {
    ping_from(from, None, to, count)
}

/// Ping from a given source address (one of `from`'s).
pub fn ping_from(from: &Netns, source: Option<IpAddr>, to: IpAddr, count: u32) -> Outcome {
    let count = count.to_string();
    let wait = format!("{:.1}", TIMEOUT.as_secs_f32());
    let target = to.to_string();
    let src = source.map(|s| s.to_string());
    let mut args = vec!["-n", "-q", "-c", &count, "-i", "0.05", "-W", &wait];
    if let Some(src) = &src {
        args.extend_from_slice(&["-I", src]);
    }
    args.push(&target);
    let out = from.cmd("ping", &args).output();
    match out {
        Ok(o) if o.status.success() => Outcome::Allowed,
        Ok(o) => Outcome::Blocked(format!("ping exited {}", o.status)),
        Err(e) => Outcome::Blocked(format!("running ping: {e}")),
    }
}

/// A TCP connection from `src` (bound before connecting), with the probe timeout.
fn connect_from(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::{FromRawFd as _, IntoRawFd as _};
    let family = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a fresh socket whose fd moves into the TcpStream at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own fd.
    let sock = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let bind_to = socket2_addr(SocketAddr::new(src, 0));
    // SAFETY: bind with a sockaddr of the stated length.
    if unsafe { libc::bind(fd, bind_to.0.as_ptr().cast(), bind_to.1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Connect with a timeout: non-blocking connect, then wait for writability.
    sock.set_nonblocking(true)?;
    let target = socket2_addr(to);
    // SAFETY: connect with a sockaddr of the stated length.
    let r = unsafe { libc::connect(fd, target.0.as_ptr().cast(), target.1) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = i32::try_from(TIMEOUT.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        if let Some(e) = sock.take_error()? {
            return Err(e);
        }
    }
    sock.set_nonblocking(false)?;
    let fd = sock.into_raw_fd();
    // SAFETY: ownership moves back into a TcpStream.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// A `sockaddr_in`/`sockaddr_in6` as bytes and its length.
fn socket2_addr(a: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: zeroed plain C struct.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = u16::try_from(libc::AF_INET).expect("fits");
            sa.sin_port = v4.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            let len = size_of::<libc::sockaddr_in>();
            // SAFETY: viewing the struct's bytes.
            let bytes = unsafe { std::slice::from_raw_parts((&raw const sa).cast::<u8>(), len) };
            (
                bytes.to_vec(),
                libc::socklen_t::try_from(len).expect("fits"),
            )
        }
        SocketAddr::V6(v6) => {
            // SAFETY: zeroed plain C struct.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = u16::try_from(libc::AF_INET6).expect("fits");
            sa.sin6_port = v6.port().to_be();
            sa.sin6_addr.s6_addr = v6.ip().octets();
            let len = size_of::<libc::sockaddr_in6>();
            // SAFETY: viewing the struct's bytes.
            let bytes = unsafe { std::slice::from_raw_parts((&raw const sa).cast::<u8>(), len) };
            (
                bytes.to_vec(),
                libc::socklen_t::try_from(len).expect("fits"),
            )
        }
    }
}

fn outcome(r: anyhow::Result<std::io::Result<()>>) -> Outcome {
    match r {
        Ok(Ok(())) => Outcome::Allowed,
        Ok(Err(e)) => Outcome::Blocked(e.to_string()),
        Err(e) => Outcome::Blocked(format!("{e:#}")),
    }
}

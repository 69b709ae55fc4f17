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
        let (tcp, udp) = ns.exec(|| -> anyhow::Result<_> {
            let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
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
    let attempt = || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
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
    let attempt = || -> std::io::Result<()> {
        let local: SocketAddr = if to.is_ipv4() {
            (IpAddr::from([0, 0, 0, 0]), 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
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
    let count = count.to_string();
    let wait = format!("{:.1}", TIMEOUT.as_secs_f32());
    let target = to.to_string();
    let out = from
        .cmd(
            "ping",
            &["-n", "-q", "-c", &count, "-i", "0.05", "-W", &wait, &target],
        )
        .output();
    match out {
        Ok(o) if o.status.success() => Outcome::Allowed,
        Ok(o) => Outcome::Blocked(format!("ping exited {}", o.status)),
        Err(e) => Outcome::Blocked(format!("running ping: {e}")),
    }
}

fn outcome(r: anyhow::Result<std::io::Result<()>>) -> Outcome {
    match r {
        Ok(Ok(())) => Outcome::Allowed,
        Ok(Err(e)) => Outcome::Blocked(e.to_string()),
        Err(e) => Outcome::Blocked(format!("{e:#}")),
    }
}

//! Long-lived flows for session tests: a TCP connection that can be asked to
//! echo again later, and UDP sockets whose every datagram the test sends by
//! hand. Sockets are made inside a namespace and stay in it.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use crate::{probe::TIMEOUT, topology::Netns};

/// A TCP connection from one namespace to an echo server.
pub struct TcpConn {
    stream: TcpStream,
    sent: u32,
}

impl TcpConn {
    /// Connects from `from` to `to` (the handshake must pass the data plane).
    pub fn open(from: &Netns, to: SocketAddr) -> anyhow::Result<Self> {
        let stream = from.exec(|| TcpStream::connect_timeout(&to, TIMEOUT))??;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, sent: 0 })
    }

    /// Sends a numbered message and waits for its echo. `false` if the echo
    /// does not come back in time (the connection is then of no further use:
    /// its bytes may still arrive out of turn).
    pub fn echo(&mut self) -> bool {
        self.sent += 1;
        let msg = format!("msg-{:06}", self.sent);
        if self.stream.write_all(msg.as_bytes()).is_err() {
            return false;
        }
        let mut buf = vec![0u8; msg.len()];
        self.stream.read_exact(&mut buf).is_ok() && buf == msg.as_bytes()
    }
}

/// A UDP socket bound to `addr` inside `ns`, with the probe timeout on reads.
pub fn udp_socket(ns: &Netns, addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let s = ns.exec(|| UdpSocket::bind(addr))??;
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

/// Whether `sock` receives `want` (from anyone) before its read timeout.
pub fn receives(sock: &UdpSocket, want: &[u8]) -> bool {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == want => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A read timeout for sockets whose silence is the point of the test.
pub const SILENCE: Duration = TIMEOUT;

/// Collects the sequence numbers (8-byte big-endian datagrams) received on
/// `sock` until `stop`, counting them in `count` as they arrive.
pub fn numbered_receiver(
    sock: UdpSocket,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<std::collections::BTreeSet<u64>> {
    use std::sync::atomic::Ordering;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a read timeout");
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = [0u8; 64];
        loop {
            match sock.recv(&mut buf) {
                Ok(8) => {
                    seen.insert(u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")));
                    count.fetch_add(1, Ordering::Relaxed);
                }
                // A timeout: stop once asked to and nothing more is queued.
                Err(_) if stop.load(Ordering::Relaxed) => break,
                Ok(_) | Err(_) => {}
            }
        }
        seen
    })
}

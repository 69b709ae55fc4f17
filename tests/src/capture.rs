//! An `AF_PACKET` capture on one interface: every frame it sent and received,
//! classified by [`crate::classify`], as an independent count to check the data
//! plane's counters against.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use sg_common::counter::SLOTS;

use crate::{classify::classify, topology::Host};

/// Per-counter totals of captured frames, by direction on the captured interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub received: Vec<u64>,
    pub sent: Vec<u64>,
}

pub struct Capture {
    fd: OwnedFd,
    tally: Tally,
}

const ETH_P_ALL: u16 = 0x0003;

impl Capture {
    /// Opens a capture on `host`'s interface, in its namespace.
    pub fn start(host: &Host) -> anyhow::Result<Self> {
        let ifindex = i32::try_from(host.ifindex()?)?;
        let fd = host.ns.exec(move || -> io::Result<OwnedFd> {
            // SAFETY: plain socket(2)/bind(2) calls on a fresh fd we own.
            unsafe {
                let raw = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from(ETH_P_ALL.to_be()),
                );
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(raw);
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = u16::try_from(libc::AF_PACKET).expect("fits");
                sll.sll_protocol = ETH_P_ALL.to_be();
                sll.sll_ifindex = ifindex;
                let len = u32::try_from(size_of::<libc::sockaddr_ll>()).expect("fits");
                if libc::bind(raw, (&raw const sll).cast(), len) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(fd)
            }
        })??;
        let mut c = Self {
            fd,
            tally: Tally {
                received: vec![0; SLOTS as usize],
                sent: vec![0; SLOTS as usize],
            },
        };
        // Frames of other interfaces may have queued before bind(): discard.
        c.drain()?;
        c.reset();
        Ok(c)
    }

    /// Forgets what was counted so far.
    pub fn reset(&mut self) {
        self.tally = Tally {
            received: vec![0; SLOTS as usize],
            sent: vec![0; SLOTS as usize],
        };
    }

    /// Reads every queued frame into the tally and returns the totals so far.
    pub fn drain(&mut self) -> io::Result<&Tally> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: recvfrom into our buffer with a sockaddr_ll of the right size.
            let (n, sll) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = u32::try_from(size_of::<libc::sockaddr_ll>()).expect("fits");
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut sll).cast(),
                    &raw mut len,
                );
                (n, sll)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(&self.tally);
                }
                return Err(e);
            }
            let frame = &buf[..usize::try_from(n).expect("non-negative")];
            let side = if sll.sll_pkttype == libc::PACKET_OUTGOING {
                &mut self.tally.sent
            } else {
                &mut self.tally.received
            };
            for (total, d) in side.iter_mut().zip(classify(frame).deltas()) {
                *total += d;
            }
        }
    }
}

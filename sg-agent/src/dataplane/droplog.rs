//! The drop log's user-space half: turning it on and off, reading its
//! counters, and reading its records from the ring buffer.
//!
//! The kernel does the rate limiting (a token bucket per CPU, see
//! `sg_common::droplog`), so a flood of drops costs the reader nothing beyond
//! the configured rate. The reader is a plain, non-blocking object with a
//! file descriptor: the daemon registers it with `tokio::io::unix::AsyncFd`
//! and calls [`DropLogReader::drain`] when it is readable.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
};

use aya::maps::{MapData, PerCpuValues, RingBuf};
use sg_common::{
    droplog::{
        DropLogBucket, DropLogConfig, DropRecord, MAX_RATE, family, hook,
        stat::{self, LOGGED, RINGBUF_FULL, SUPPRESSED},
    },
    maps::{DROPLOG_BUCKET, DROPLOG_CFG, DROPLOG_STATS},
    policy::{DIR_INGRESS, NO_RANK},
    reason,
};

use super::{Error, Maps};

/// How many drops the kernel logs: per CPU, `per_sec` records a second on
/// average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropLogRate {
    /// Records per second per CPU: 1 to [`MAX_RATE`].
    pub per_sec: u32,
    /// Records a CPU logs back to back after a quiet spell: 1 to [`MAX_RATE`].
    pub burst: u32,
}

impl DropLogRate {
    /// Checks both fields against their limits.
    pub fn validate(&self) -> Result<(), DropLogError> {
        if !(1..=MAX_RATE).contains(&self.per_sec) {
            return Err(DropLogError::PerSec(self.per_sec));
        }
        if !(1..=MAX_RATE).contains(&self.burst) {
            return Err(DropLogError::Burst(self.burst));
        }
        Ok(())
    }
}

/// What can go wrong with the drop log.
#[derive(Debug, thiserror::Error)]
pub enum DropLogError {
    #[error("drop_log.per_sec: {0} is out of range (1 to {MAX_RATE} records per second)")]
    PerSec(u32),
    #[error("drop_log.burst: {0} is out of range (1 to {MAX_RATE} records)")]
    Burst(u32),
    #[error("the drop log reader was already taken (there is one per data plane)")]
    ReaderTaken,
    #[error(transparent)]
    Dataplane(#[from] Error),
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DropLogError {
    move |source| DropLogError::Dataplane(Error::Map { map, source })
}

/// The drop log's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropLogStats {
    /// Records written to the ring buffer.
    pub logged: u64,
    /// Drops not logged because the CPU's bucket was empty.
    pub suppressed: u64,
    /// Drops not logged because the ring buffer was full (not read fast enough).
    pub ringbuf_full: u64,
}

impl DropLogStats {
    /// `(name, value)` in `sg_common::droplog::stat` order: `logged`,
    /// `suppressed`, `ringbuf_full`.
    pub fn rows(&self) -> [(&'static str, u64); 3] {
        [
            (stat::NAMES[LOGGED as usize], self.logged),
            (stat::NAMES[SUPPRESSED as usize], self.suppressed),
            (stat::NAMES[RINGBUF_FULL as usize], self.ringbuf_full),
        ]
    }
}

impl Maps {
    /// Turns the drop log on at `rate`, or off with `None` (the state after
    /// loading). Turning it on refills every CPU's bucket.
    pub fn set_drop_log(&mut self, rate: Option<DropLogRate>) -> Result<(), DropLogError> {
        let config = match rate {
            Some(r) => {
                r.validate()?;
                DropLogConfig {
                    enabled: 1,
                    per_sec: r.per_sec,
                    burst: r.burst,
                    pad: 0,
                }
            }
            None => DropLogConfig::default(),
        };
        if rate.is_some() {
            // A zeroed bucket is a full one (see `DropLogBucket`). Written
            // before the switch, so the new rate starts from a full burst.
            let cpus = aya::util::nr_cpus()
                .map_err(|(_, e)| DropLogError::Dataplane(Error::Cpus(e)))?
                .get() as usize;
            let zero = PerCpuValues::try_from(vec![DropLogBucket::default(); cpus])
                .map_err(|e| DropLogError::Dataplane(Error::Cpus(e)))?;
            self.droplog_bucket
                .set(0, zero, 0)
                .map_err(map_err(DROPLOG_BUCKET))?;
        }
        self.droplog_cfg
            .set(0, &config, 0)
            .map_err(map_err(DROPLOG_CFG))?;
        Ok(())
    }

    /// The drop log's counters, summed over CPUs.
    pub fn drop_log_stats(&self) -> Result<DropLogStats, DropLogError> {
        super::mapio::injected_read(DROPLOG_STATS, None)?;
        let read = |i: u32| -> Result<u64, DropLogError> {
            let v = self
                .droplog_stats
                .get(&i, 0)
                .map_err(map_err(DROPLOG_STATS))?;
            Ok(v.iter().sum())
        };
        Ok(DropLogStats {
            logged: read(LOGGED)?,
            suppressed: read(SUPPRESSED)?,
            ringbuf_full: read(RINGBUF_FULL)?,
        })
    }

    /// Takes the ring buffer out of the data plane, as a reader. There is one:
    /// a second call fails with [`DropLogError::ReaderTaken`]. The programs
    /// keep writing to the buffer whoever holds the reader.
    pub fn take_drop_log(&mut self) -> Result<DropLogReader, DropLogError> {
        let ring = self.droplog.take().ok_or(DropLogError::ReaderTaken)?;
        Ok(DropLogReader { ring })
    }
}

/// The reading end of the drop log's ring buffer. Non-blocking: its file
/// descriptor turns readable when records are waiting (register it with
/// `tokio::io::unix::AsyncFd`, then [`DropLogReader::drain`]).
pub struct DropLogReader {
    ring: RingBuf<MapData>,
}

impl DropLogReader {
    /// Appends every record waiting in the ring buffer to `out`, oldest
    /// first; returns how many. Records of an unexpected size (never written
    /// by this object's programs) are skipped.
    pub fn drain(&mut self, out: &mut Vec<DropEvent>) -> usize {
        let before = out.len();
        while let Some(item) = self.ring.next() {
            if let Some(event) = DropEvent::from_bytes(&item) {
                out.push(event);
            }
        }
        out.len() - before
    }
}

impl AsFd for DropLogReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for DropLogReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl fmt::Debug for DropLogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropLogReader")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// One dropped packet, as the kernel logged it. Fields are raw (ids and
/// numbers); [`fmt::Display`] makes a log line of them, and
/// [`DropEvent::line`] one with names the caller knows (NIC name, rule id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    /// `CLOCK_MONOTONIC_COARSE` at the drop, in nanoseconds.
    pub ktime_ns: u64,
    /// The NIC id of the binding (the agent's, not a name).
    pub nic: u32,
    pub ifindex: u32,
    /// Which program: `sg_common::droplog::hook`.
    pub hook: u8,
    /// Policy direction of the workload: 0 = ingress, 1 = egress.
    pub dir: u8,
    /// Why: `sg_common::reason`.
    pub reason: u32,
    /// Rank of the deciding rule, when a rule decided.
    pub rank: Option<u32>,
    /// What the frame carried: `sg_common::droplog::family`.
    pub family: u8,
    /// IP protocol (0 unless IP).
    pub proto: u8,
    /// Source and destination, when the frame had them (IP; ARP has a source).
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// Host order; 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 type and code, TCP flags; 0 where they do not apply.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub tcp_flags: u8,
    /// The frame's length in bytes.
    pub frame_len: u32,
}

fn addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == family::V6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]))
    }
}

impl DropEvent {
    /// Parses a ring-buffer record; `None` if `bytes` is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<DropRecord>() {
            return None;
        }
        // SAFETY: exactly a record's size; `DropRecord` is plain integers
        // (every bit pattern valid); the read is unaligned.
        let r = unsafe { bytes.as_ptr().cast::<DropRecord>().read_unaligned() };
        Some(Self::from_record(&r))
    }

    /// The event of a record.
    pub fn from_record(r: &DropRecord) -> Self {
        let (src, dst) = match r.family {
            family::V4 | family::V6 => (Some(addr(r.family, r.src)), Some(addr(r.family, r.dst))),
            family::ARP => (Some(addr(family::V4, r.src)), None),
            _ => (None, None),
        };
        Self {
            ktime_ns: r.ktime_ns,
            nic: r.nic,
            ifindex: r.ifindex,
            hook: r.hook,
            dir: r.dir,
            reason: r.reason,
            rank: (r.rank != NO_RANK).then_some(r.rank),
            family: r.family,
            proto: r.proto,
            src,
            dst,
            sport: r.sport,
            dport: r.dport,
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            tcp_flags: r.tcp_flags,
            frame_len: r.frame_len,
        }
    }

    /// `ingress` or `egress`.
    pub fn direction(&self) -> &'static str {
        if u32::from(self.dir) == DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        }
    }

    /// The reason's name (`sg_common::reason::NAMES`), or its number.
    pub fn reason_name(&self) -> String {
        reason::NAMES
            .get(self.reason as usize)
            .map_or_else(|| self.reason.to_string(), |n| (*n).to_owned())
    }

    /// The program's name (`xdp`, `tc_egress`, `tc_ingress`), or its number.
    pub fn hook_name(&self) -> String {
        hook::NAMES
            .get(usize::from(self.hook))
            .map_or_else(|| self.hook.to_string(), |n| (*n).to_owned())
    }

    /// A log line naming the NIC `nic` and, when a rule decided, that rule
    /// as `rule` (the caller maps [`DropEvent::nic`] and [`DropEvent::rank`]
    /// to them): `drop nic=web-1 ifindex=7 hook=xdp dir=ingress reason=rule
    /// rule=r-12 TCP 10.0.0.1:40000 -> 10.0.0.2:22 len=74`.
    pub fn line(&self, nic: &str, rule: Option<&str>) -> String {
        let decided_by = match rule {
            Some(r) => format!(" rule={r}"),
            None => String::new(),
        };
        self.render(nic, &decided_by)
    }

    fn render(&self, nic: &str, decided_by: &str) -> String {
        format!(
            "drop nic={nic} ifindex={} hook={} dir={} reason={}{decided_by} {} len={}",
            self.ifindex,
            self.hook_name(),
            self.direction(),
            self.reason_name(),
            self.packet(),
            self.frame_len,
        )
    }

    /// The packet part of a line: protocol and endpoints.
    fn packet(&self) -> String {
        let (Some(src), dst) = (self.src, self.dst) else {
            return "non-IP".to_owned();
        };
        if self.family == family::ARP {
            return format!("ARP from {src}");
        }
        let dst = dst.unwrap_or(src);
        let end = |a: IpAddr, port: u16| match a {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        match self.proto {
            6 | 17 => format!(
                "{} {} -> {}",
                if self.proto == 6 { "TCP" } else { "UDP" },
                end(src, self.sport),
                end(dst, self.dport)
            ),
            1 | 58 => format!(
                "{} {src} -> {dst} type={} code={}",
                if self.proto == 1 { "ICMP" } else { "ICMPv6" },
                self.icmp_type,
                self.icmp_code
            ),
            47 => format!("GRE {src} -> {dst}"),
            p => format!("proto={p} {src} -> {dst}"),
        }
    }
}

impl fmt::Display for DropEvent {
    /// `drop nic=<id> ifindex=7 hook=xdp dir=ingress reason=rule rank=3 TCP
    /// 10.0.0.1:40000 -> 10.0.0.2:22 len=74` (no `rank=` when no rule decided).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decided_by = match self.rank {
            Some(r) => format!(" rank={r}"),
            None => String::new(),
        };
        f.write_str(&self.render(&self.nic.to_string(), &decided_by))
    }
}

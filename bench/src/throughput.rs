//! `sg-bench throughput` (`cargo xtask throughput`): packets per second of
//! 64-byte UDP frames through a veth pair between two namespaces, with no
//! filter, with sg, and with nftables and iptables holding the equivalent
//! rules, side by side in one run. The table (median, min and max of the
//! rounds, and each round's ratio to the same round's no-filter rate) is
//! printed and written to `target/throughput.md`.
//!
//! How:
//! - `trafgen` (netsniff-ng) in namespace `a` sends on `a`'s veth end, pinned
//!   to one CPU, as fast as it can: 60-byte frames (64 on a wire with the
//!   FCS), Ethernet + IPv4 (header checksum computed) + UDP (checksum 0) +
//!   18 bytes of zeros, from `10.77.0.1:40000` to `b`'s address and MAC, UDP
//!   port 5201. The "every packet a new flow" case draws the UDP source port
//!   at random and counts the last byte of the source address through
//!   10..=250, so nearly every packet misses the session table.
//! - On veth the receiving side runs on the sender's CPU (the transmit path
//!   hands the frame to `b`'s backlog or, with XDP attached, to its NAPI
//!   ring, processed in the same softirq), so the rate is set by the cost of
//!   sending plus the cost of deciding: a cheaper filter shows as more
//!   packets per second. A UDP socket bound on `b`'s port is drained by a
//!   thread on the other CPU, so nothing answers with ICMP errors.
//! - Counted, in `b`'s namespace, over a window after a short warm-up:
//!   *delivered* = UDP `InDatagrams` + `RcvbufErrors` (`/proc/net/snmp`:
//!   datagrams that got through the filter to the socket, read or dropped
//!   for a full buffer); *received* = `rx_packets` of `b`'s veth end (every
//!   frame `b` took in and decided; on veth this includes frames an XDP
//!   program dropped). Allow rows report delivered, drop rows received.
//!   Every measurement also compares `b`'s `rx_packets` over trafgen's whole
//!   run with the count trafgen reports; the table lists any that differ by
//!   more than 1%.
//! - Configurations are measured round-robin, each round setting every
//!   configuration up afresh, so machine noise hits them alike; ratios are
//!   taken within a round.
//!
//! Rule sets, all equivalent: n − 1 non-matching UDP rules (ports 1000..,
//! from `192.0.2.0/24`), then one deciding rule for UDP to port 5201 from
//! `10.0.0.0/8`, accept (allow path) or drop (drop path), and nothing else
//! passes (default drop). sg enforces them in XDP (native) on `b`'s veth end
//! and is stateful: the first accepted packet of a flow opens a session, the
//! rest ride on it. nftables (`inet` table, base chain on `prerouting` at
//! priority `filter`, after conntrack) and iptables (`iptables-nft`,
//! `mangle PREROUTING`, also after conntrack) put `ct state
//! established,related accept` first, as a stateful firewall does; but
//! conntrack calls a UDP flow established only after a reply, and this
//! traffic is one-way, so every one of their packets walks the rules.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, UdpSocket},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use sg_agent::{
    dataplane::{AttachMode, Dataplane},
    reconcile::Reconciler,
};
use sg_common::{counter::DIR_INGRESS, reason};
use sg_policy::{BindingMode, GroupSpec, NicBinding, RuleSpec, State};
use sg_tests::{
    topology::{Netns, Pair},
    workspace::target_dir,
};

const ROUNDS: usize = 5;
const WARMUP: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_secs(3);
/// The test traffic's destination port (the deciding rule's port).
const PORT: u16 = 5201;
/// The first non-matching rule's port; the others follow.
const OTHER_PORTS: u16 = 1000;
/// Where the non-matching rules' peers are.
const OTHER_PEER: &str = "192.0.2.0/24";
/// Where the deciding rule's peer is (the sender's addresses are in it).
const PEER: &str = "10.0.0.0/8";
/// trafgen's CPU; the socket drainer gets the other one.
const GEN_CPU: usize = 0;
const DRAIN_CPU: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Every packet accepted by the last rule.
    Allow,
    /// Every packet dropped by the last rule.
    Drop,
}

#[derive(Clone, Copy)]
enum Filter {
    None,
    /// sg's programs attached, the interface not bound: they pass every
    /// packet (what XDP on veth costs before any rule).
    SgUnbound,
    Sg,
    NftLinear,
    NftMap,
    Iptables,
}

struct Case {
    filter: Filter,
    rules: usize,
    path: Path,
    /// Every packet from a new source address and port.
    new_flows: bool,
    /// How sg's receive side is attached.
    mode: AttachMode,
}

/// An attach mode's name in the table.
const fn mode_name(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Auto => "XDP auto",
        AttachMode::Native => "XDP native",
        AttachMode::Generic => "XDP generic",
        AttachMode::Tc => "TC ingress",
    }
}

impl Case {
    const fn new(filter: Filter, rules: usize, path: Path) -> Self {
        Self {
            filter,
            rules,
            path,
            new_flows: false,
            mode: AttachMode::Native,
        }
    }

    fn label(&self) -> String {
        let mode = mode_name(self.mode);
        let sg = format!("sg ({mode})");
        let what = match self.filter {
            Filter::None => return "no filter".to_owned(),
            Filter::SgUnbound => {
                return format!("sg attached ({mode}), interface not bound: passes all");
            }
            Filter::Sg => sg.as_str(),
            Filter::NftLinear => "nftables, linear chain",
            Filter::NftMap => "nftables, `ip saddr . udp dport` verdict map",
            Filter::Iptables => "iptables-nft, linear chain",
        };
        let path = match self.path {
            Path::Allow => "allow",
            Path::Drop => "drop",
        };
        let flows = if self.new_flows {
            ", every packet a new flow"
        } else {
            ""
        };
        format!("{what}, {path}{flows}")
    }

    /// What the row counts.
    const fn counted(&self) -> &'static str {
        match self.path {
            Path::Allow => "delivered",
            Path::Drop => "received",
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        Case::new(Filter::None, 0, Path::Allow),
        Case::new(Filter::SgUnbound, 0, Path::Allow),
    ];
    for path in [Path::Allow, Path::Drop] {
        for n in [10, 100, 1000] {
            v.push(Case::new(Filter::Sg, n, path));
        }
    }
    v.push(Case {
        new_flows: true,
        ..Case::new(Filter::Sg, 1000, Path::Allow)
    });
    for filter in [Filter::NftLinear, Filter::NftMap, Filter::Iptables] {
        for path in [Path::Allow, Path::Drop] {
            v.push(Case::new(filter, 1000, path));
        }
    }
    // The other ways to attach sg's receive side on veth.
    for mode in [AttachMode::Generic, AttachMode::Tc] {
        v.push(Case {
            mode,
            ..Case::new(Filter::SgUnbound, 0, Path::Allow)
        });
        for path in [Path::Allow, Path::Drop] {
            v.push(Case {
                mode,
                ..Case::new(Filter::Sg, 1000, path)
            });
        }
    }
    v
}

/// sg's policy: `n` ingress UDP rules on `nic`, the last in order (priority
/// 100, the others 1) deciding the test traffic.
fn policy(n: usize, path: Path, nic: &str, addr: IpAddr) -> anyhow::Result<State> {
    let mut s = State::with_seed(1);
    let g = s.create_group(GroupSpec::basic("throughput"))?;
    let mut rules = Vec::new();
    for port in other_ports(n) {
        let ports = format!("{port}/{port}");
        rules.push(RuleSpec::from_text(
            "ingress", "Allow", "1", "UDP", &ports, OTHER_PEER,
        )?);
    }
    let action = match path {
        Path::Allow => "Allow",
        Path::Drop => "Deny",
    };
    let ports = format!("{PORT}/{PORT}");
    rules.push(RuleSpec::from_text(
        "ingress", action, "100", "UDP", &ports, PEER,
    )?);
    s.authorize_all(&g, rules)?;
    s.bind_nic(NicBinding::new(
        nic,
        BindingMode::Local,
        vec![addr],
        vec![g],
    ))?;
    Ok(s)
}

/// The non-matching rules' ports, `n - 1` of them.
fn other_ports(n: usize) -> impl Iterator<Item = u16> {
    (OTHER_PORTS..).take(n.saturating_sub(1))
}

const fn verdict(path: Path) -> &'static str {
    match path {
        Path::Allow => "accept",
        Path::Drop => "drop",
    }
}

/// The nftables ruleset (for `nft -f -`): a linear chain, or one lookup in
/// a verdict map keyed by source address and destination port.
fn nft(n: usize, path: Path, map: bool) -> String {
    let mut s = String::from("table inet sgbench {\n");
    if map {
        s.push_str(
            "  map rules {\n    type ipv4_addr . inet_service : verdict\n    flags interval\n    elements = {\n",
        );
        for port in other_ports(n) {
            let _ = writeln!(s, "      {OTHER_PEER} . {port} : accept,");
        }
        let _ = writeln!(s, "      {PEER} . {PORT} : {}\n    }}\n  }}", verdict(path));
    }
    s.push_str(
        "  chain pre {\n    type filter hook prerouting priority filter; policy drop;\n    ct state established,related accept\n",
    );
    if map {
        s.push_str("    ip saddr . udp dport vmap @rules\n");
    } else {
        for port in other_ports(n) {
            let _ = writeln!(s, "    ip saddr {OTHER_PEER} udp dport {port} accept");
        }
        let _ = writeln!(s, "    ip saddr {PEER} udp dport {PORT} {}", verdict(path));
    }
    s.push_str("  }\n}\n");
    s
}

/// The iptables ruleset (for `iptables-restore`).
fn iptables(n: usize, path: Path) -> String {
    let mut s = String::from(
        "*mangle\n:PREROUTING DROP [0:0]\n-A PREROUTING -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
    );
    for port in other_ports(n) {
        let _ = writeln!(
            s,
            "-A PREROUTING -s {OTHER_PEER} -p udp --dport {port} -j ACCEPT"
        );
    }
    let target = match path {
        Path::Allow => "ACCEPT",
        Path::Drop => "DROP",
    };
    let _ = writeln!(
        s,
        "-A PREROUTING -s {PEER} -p udp --dport {PORT} -j {target}\nCOMMIT"
    );
    s
}

/// A trafgen packet: Ethernet, IPv4 (checksum computed by trafgen), UDP
/// (checksum 0, none), 18 bytes of zeros: 60 bytes.
fn trafgen_config(dst_mac: &str, src_mac: &str, new_flows: bool) -> String {
    let mac = |m: &str| {
        m.split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A fixed flow, or a source address 10.77.0.10..=250 (a counter) and a
    // random source port: about 15 million flows, far more than the
    // session table holds.
    let (src_last, sport) = if new_flows {
        ("dinc(10, 250, 1)", "drnd(2)")
    } else {
        ("1", "c16(40000)")
    };
    format!(
        "{{\n  {}, {}, c16(0x0800),\n  0x45, 0x00, c16(46), c16(0), c16(0x4000), 64, 17, csumip(14, 33),\n  10, 77, 0, {src_last},  10, 77, 0, 2,\n  {sport}, c16({PORT}), c16(26), c16(0),\n  fill(0, 18)\n}}\n",
        mac(dst_mac),
        mac(src_mac),
    )
}

/// Runs `cmd` with `input` on its stdin, failing with its stderr.
fn run_with_input(mut cmd: Command, input: &str) -> anyhow::Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn mac_of(ns: &Netns, ifname: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["address"].as_str().context("MAC address")?.to_owned())
}

/// `rx_packets` of `ifname` in `ns`.
fn rx_packets(ns: &Netns, ifname: &str) -> anyhow::Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("rx packets in ip -s -j link output")
}

/// UDP `InDatagrams + RcvbufErrors` of the calling thread's namespace.
fn udp_delivered() -> anyhow::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        udp.next().context("Udp header")?,
        udp.next().context("Udp values")?,
    );
    let field = |name: &str| -> anyhow::Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("Udp {name}"))?;
        Ok(values
            .split_whitespace()
            .nth(i)
            .with_context(|| format!("Udp {name} value"))?
            .parse()?)
    };
    Ok(field("InDatagrams")? + field("RcvbufErrors")?)
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    received: u64,
    delivered: u64,
}

fn sample(pair: &Pair) -> anyhow::Result<Sample> {
    let before = Instant::now();
    let received = rx_packets(&pair.b.ns, &pair.b.ifname)?;
    let delivered = pair.b.ns.exec(udp_delivered)??;
    // The two reads take a few milliseconds; stamp their midpoint.
    Ok(Sample {
        at: before + before.elapsed() / 2,
        received,
        delivered,
    })
}

/// Packets per second between two samples: (received, delivered).
fn rates(a: Sample, b: Sample) -> (f64, f64) {
    let secs = (b.at - a.at).as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
    let per_sec = |x: u64, y: u64| (y - x) as f64 / secs;
    (
        per_sec(a.received, b.received),
        per_sec(a.delivered, b.delivered),
    )
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    ensure!(
        rc == 0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A thread reading (and discarding) every datagram `sock` receives, until
/// the returned flag is set.
fn drain(sock: UdpSocket) -> anyhow::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        if let Err(e) = pin(DRAIN_CPU) {
            eprintln!("warning: drainer not pinned: {e:#}");
        }
        let mut buf = [0u8; 2048];
        while !flag.load(Ordering::Relaxed) {
            let _ = sock.recv(&mut buf);
        }
    });
    Ok((stop, handle))
}

/// trafgen sending on `a`'s end until stopped. It forks a worker, so it
/// runs in a process group of its own and is signalled as a group (as a
/// terminal's Ctrl-C would): the parent alone would wait for its worker
/// forever. Dropped without [`Trafgen::stop`], the group is killed.
struct Trafgen {
    child: Option<Child>,
}

impl Trafgen {
    fn start(pair: &Pair, cfg: &std::path::Path) -> anyhow::Result<Self> {
        let cpu = GEN_CPU.to_string();
        let cfg = cfg.to_str().context("config path")?;
        // -P 1: one worker; -Q: leave IRQ affinity alone; --no-sock-mem:
        // leave the system's socket buffer settings alone.
        let child = pair
            .a
            .ns
            .cmd(
                "taskset",
                &[
                    "-c",
                    &cpu,
                    "trafgen",
                    "-i",
                    cfg,
                    "-o",
                    &pair.a.ifname,
                    "-P",
                    "1",
                    "-Q",
                    "--no-sock-mem",
                ],
            )
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen")?;
        Ok(Self { child: Some(child) })
    }

    fn signal(child: &Child, sig: libc::c_int) -> anyhow::Result<()> {
        let group = libc::pid_t::try_from(child.id())?;
        // SAFETY: signalling the process group our own child leads; the
        // child has not been reaped, so the id is still ours.
        let rc = unsafe { libc::kill(-group, sig) };
        ensure!(rc == 0, "kill trafgen: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Interrupts trafgen and returns how many packets it says it sent.
    fn stop(mut self) -> anyhow::Result<u64> {
        let mut child = self.child.take().context("trafgen already stopped")?;
        Self::signal(&child, libc::SIGINT)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                Self::signal(&child, libc::SIGKILL)?;
                child.wait()?;
                bail!("trafgen did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains("packets outgoing"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| {
                format!(
                    "trafgen's count not found ({}): {}{}",
                    out.status,
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Self::signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// What the receiving side runs.
struct Receiver<'a> {
    pair: &'a Pair,
    reconciler: Reconciler,
    /// Nothing bound: applying it detaches sg.
    empty: State,
}

impl Receiver<'_> {
    fn set_up(&mut self, case: &Case) -> anyhow::Result<()> {
        let b = &self.pair.b;
        match case.filter {
            Filter::None => {}
            Filter::SgUnbound => {
                let dp = self.reconciler.dataplane();
                b.ns.exec(|| dp.attach(&b.ifname, case.mode))??;
            }
            Filter::Sg => {
                let state = policy(case.rules, case.path, &b.ifname, IpAddr::V4(b.v4))?;
                let reconciler = &mut self.reconciler;
                reconciler.set_attach_mode(Some(case.mode));
                b.ns.exec(|| reconciler.reconcile(&state))??;
            }
            Filter::NftLinear | Filter::NftMap => {
                let map = matches!(case.filter, Filter::NftMap);
                run_with_input(
                    b.ns.cmd("nft", &["-f", "-"]),
                    &nft(case.rules, case.path, map),
                )?;
            }
            Filter::Iptables => {
                run_with_input(
                    b.ns.cmd("iptables-nft-restore", &[]),
                    &iptables(case.rules, case.path),
                )?;
            }
        }
        Ok(())
    }

    fn tear_down(&mut self, case: &Case) -> anyhow::Result<()> {
        let b = &self.pair.b;
        match case.filter {
            Filter::None => {}
            Filter::SgUnbound => {
                let dp = self.reconciler.dataplane();
                b.ns.exec(|| dp.detach_from(&b.ifname))??;
            }
            Filter::Sg => {
                let (reconciler, empty) = (&mut self.reconciler, &self.empty);
                b.ns.exec(|| reconciler.reconcile(empty))??;
            }
            Filter::NftLinear | Filter::NftMap | Filter::Iptables => {
                let out = b.ns.cmd("nft", &["flush", "ruleset"]).output()?;
                ensure!(
                    out.status.success(),
                    "nft flush ruleset: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }
}

/// One measurement: (received, delivered) packets per second; trafgen's
/// count and what `b` received over trafgen's whole run; sg's ingress
/// decisions by reason over the window.
struct Measured {
    received: f64,
    delivered: f64,
    sent: u64,
    received_total: u64,
    reasons: BTreeMap<u32, u64>,
}

impl Receiver<'_> {
    /// sg's ingress decisions on `b`'s NIC so far, by reason (none when the
    /// NIC is not bound).
    fn decisions(&mut self) -> anyhow::Result<BTreeMap<u32, u64>> {
        let counts = self
            .reconciler
            .dataplane()
            .reason_counts(&self.pair.b.ifname)?;
        Ok(counts
            .into_iter()
            .filter(|&(dir, _, _)| dir == DIR_INGRESS)
            .map(|(_, reason, n)| (reason, n))
            .collect())
    }

    fn measure(&mut self, cfg: &std::path::Path) -> anyhow::Result<Measured> {
        let pair = self.pair;
        let rx0 = rx_packets(&pair.b.ns, &pair.b.ifname)?;
        let trafgen = Trafgen::start(pair, cfg)?;
        std::thread::sleep(WARMUP);
        let first = sample(pair);
        let before = self.decisions();
        std::thread::sleep(WINDOW);
        let last = sample(pair);
        let after = self.decisions();
        let sent = trafgen.stop()?;
        let (first, last, before, after) = (first?, last?, before?, after?);
        let received_total = rx_packets(&pair.b.ns, &pair.b.ifname)? - rx0;
        let (received, delivered) = rates(first, last);
        let reasons = after
            .into_iter()
            .map(|(r, n)| (r, n - before.get(&r).copied().unwrap_or(0)))
            .filter(|&(_, n)| n > 0)
            .collect();
        Ok(Measured {
            received,
            delivered,
            sent,
            received_total,
            reasons,
        })
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    crate::report::stats(v.to_vec())
}

fn tool_version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn check_tools() -> anyhow::Result<()> {
    for tool in ["trafgen", "nft", "iptables-nft-restore", "taskset"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !found {
            bail!("{tool} not found (Debian: netsniff-ng, nftables, iptables, util-linux)");
        }
    }
    Ok(())
}

/// Every case's (received, delivered) rates, one per round, and the
/// measurements where trafgen's count and `b`'s disagree.
struct Results {
    rates: Vec<Vec<(f64, f64)>>,
    /// sg's ingress decisions by reason over every round's window.
    reasons: Vec<BTreeMap<u32, u64>>,
    mismatches: Vec<String>,
}

/// Measures every case `ROUNDS` times, round-robin.
fn measure_all(pair: &Pair, cases: &[Case]) -> anyhow::Result<Results> {
    let dir = target_dir().join("throughput");
    std::fs::create_dir_all(&dir)?;
    let (dst, src) = (
        mac_of(&pair.b.ns, &pair.b.ifname)?,
        mac_of(&pair.a.ns, &pair.a.ifname)?,
    );
    let one_flow = dir.join("one-flow.trafgen");
    let new_flows = dir.join("new-flows.trafgen");
    std::fs::write(&one_flow, trafgen_config(&dst, &src, false))?;
    std::fs::write(&new_flows, trafgen_config(&dst, &src, true))?;

    let sock = pair.b.ns.exec(|| UdpSocket::bind(("0.0.0.0", PORT)))??;
    let (stop, drainer) = drain(sock)?;
    let mut receiver = Receiver {
        pair,
        reconciler: Reconciler::new(Dataplane::load()?, Some(AttachMode::Native)),
        empty: State::with_seed(1),
    };
    let mut results = Results {
        rates: cases.iter().map(|_| Vec::new()).collect(),
        reasons: cases.iter().map(|_| BTreeMap::new()).collect(),
        mismatches: Vec::new(),
    };
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}");
        for (i, (case, rates)) in cases.iter().zip(&mut results.rates).enumerate() {
            receiver.set_up(case)?;
            let cfg = if case.new_flows {
                &new_flows
            } else {
                &one_flow
            };
            let m = receiver.measure(cfg);
            receiver.tear_down(case)?;
            let m = m?;
            // Every frame trafgen sent should have reached b's counter.
            #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
            let off = m.sent.abs_diff(m.received_total) as f64 / m.sent.max(1) as f64;
            if off > 0.01 {
                results.mismatches.push(format!(
                    "{} (round {round}): trafgen sent {}, b received {}",
                    case.label(),
                    m.sent,
                    m.received_total
                ));
            }
            rates.push((m.received, m.delivered));
            for (reason, n) in m.reasons {
                *results.reasons[i].entry(reason).or_default() += n;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drainer
        .join()
        .map_err(|_| anyhow::anyhow!("drainer panicked"))?;
    Ok(results)
}

/// The caption above the table.
fn caption() -> String {
    format!(
        "Packets per second through a veth pair between two namespaces: 64-byte \
         UDP frames (60 bytes + FCS) from trafgen pinned to one CPU (`b`'s receive \
         processing runs on that CPU too), {ROUNDS} rounds of {:.1} s per \
         configuration, interleaved; median, min and max of the rounds.\n\n\
         - *delivered*: UDP datagrams that reached the socket bound on `b` \
         (`InDatagrams + RcvbufErrors` in `b`), i.e. got through the filter; \
         allow rows count this.\n\
         - *received*: frames `b`'s veth end took in and the filter decided \
         (`rx_packets`; on veth it also counts frames XDP dropped); drop rows \
         count this. `× no filter`: each round's rate over the same round's \
         no-filter rate (delivered), median, min and max of the rounds.\n\
         - Rules: n − 1 non-matching UDP rules (ports 1000.., from \
         {OTHER_PEER}), then the deciding one (UDP to {PORT} from {PEER}, accept \
         or drop), default drop.\n\
         - One flow unless said otherwise. sg is stateful: the first accepted \
         packet opens a session and the rest ride on it; \"every packet a new \
         flow\" (random source port and a counted source address) makes nearly \
         every packet meet the rules and insert a session. nftables and iptables \
         put `ct state established,related accept` first, but conntrack calls a \
         UDP flow established only once it has seen a reply, and this traffic is \
         one-way: every packet of theirs walks the rules, allowed or dropped. \
         *sg decided by*: sg's ingress decisions in the windows, by reason \
         (`session`: a live session's packet; `rule`: decided by the rules).\n\
         - {}: `inet` table, base chain on prerouting at priority filter (after \
         conntrack); a linear chain, or one `ip saddr . udp dport vmap` lookup in \
         an interval map. {} (the nft backend): `mangle PREROUTING` (after \
         conntrack), a linear chain.\n\n",
        WINDOW.as_secs_f64(),
        tool_version("nft"),
        tool_version("iptables-nft"),
    )
}

/// sg's decisions by reason as shares, largest first: "session 99.9%, rule 0.1%".
fn shares(reasons: &BTreeMap<u32, u64>) -> String {
    let total: u64 = reasons.values().sum();
    if total == 0 {
        return "-".to_owned();
    }
    let mut v: Vec<(u32, u64)> = reasons.iter().map(|(&r, &n)| (r, n)).collect();
    v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    v.iter()
        .map(|&(r, n)| {
            let name = reason::NAMES.get(r as usize).copied().unwrap_or("?");
            #[expect(clippy::cast_precision_loss, reason = "a share for display")]
            let pct = 100.0 * n as f64 / total as f64;
            format!("{name} {pct:.1}%")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The markdown: caption, table, targets, and any counting mismatches.
fn render(cases: &[Case], results: &Results) -> String {
    let counted = |case: &Case, r: &[(f64, f64)]| -> Vec<f64> {
        r.iter()
            .map(|&(rx, del)| match case.path {
                Path::Allow => del,
                Path::Drop => rx,
            })
            .collect()
    };
    // Each round's rate against the same round's no-filter rate, so that
    // load changing between rounds cancels out.
    let base = counted(&cases[0], &results.rates[0]);
    let mut out = caption();
    out.push_str(
        "| configuration | rules | counted | pps (median) | min | max | × no filter (median) | min | max | received (median) | delivered (median) | sg decided by |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut ratio_of = Vec::new();
    for ((case, r), reasons) in cases.iter().zip(&results.rates).zip(&results.reasons) {
        let pps = counted(case, r);
        let (med, min, max) = stats(&pps);
        let ratios: Vec<f64> = pps.iter().zip(&base).map(|(x, b)| x / b).collect();
        let (ratio, rmin, rmax) = stats(&ratios);
        let rx = stats(&r.iter().map(|p| p.0).collect::<Vec<_>>()).0;
        let del = stats(&r.iter().map(|p| p.1).collect::<Vec<_>>()).0;
        let rules = if case.rules == 0 {
            "-".to_owned()
        } else {
            case.rules.to_string()
        };
        let _ = writeln!(
            out,
            "| {} | {rules} | {} | {med:.0} | {min:.0} | {max:.0} | {ratio:.2} | {rmin:.2} | {rmax:.2} | {rx:.0} | {del:.0} | {} |",
            case.label(),
            case.counted(),
            shares(reasons),
        );
        ratio_of.push(ratio);
    }
    let sg_1000 = |path: Path, mode: AttachMode| {
        cases
            .iter()
            .position(|c| {
                matches!(c.filter, Filter::Sg)
                    && c.rules == 1000
                    && c.path == path
                    && !c.new_flows
                    && c.mode == mode
            })
            .map_or(f64::NAN, |i| ratio_of[i])
    };
    let _ = writeln!(
        out,
        "\n| target | attach mode | measured | |\n| --- | --- | --- | --- |"
    );
    // TC ingress is what `auto`, the default, picks on veth; native XDP is
    // shown too.
    for mode in [AttachMode::Tc, AttachMode::Native] {
        for (what, path, goal) in [
            (
                "sg, allow path at 1,000 rules ≥ 0.85 × no filter",
                Path::Allow,
                0.85,
            ),
            (
                "sg, drop path at 1,000 rules ≥ 1.3 × no-filter pps",
                Path::Drop,
                1.3,
            ),
        ] {
            let ratio = sg_1000(path, mode);
            let verdict = if ratio >= goal { "met" } else { "missed" };
            let _ = writeln!(
                out,
                "| {what} | {} | {ratio:.3} × | {verdict} |",
                mode_name(mode)
            );
        }
    }
    if !results.mismatches.is_empty() {
        let _ = writeln!(
            out,
            "\nMeasurements where trafgen's count and `b`'s `rx_packets` differ by over 1%:"
        );
        for m in &results.mismatches {
            let _ = writeln!(out, "- {m}");
        }
    }
    out
}

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let out = tables()?;
    print!("{out}");
    let file = target_dir().join("throughput.md");
    std::fs::write(&file, &out)?;
    println!(
        "written to {} ({:.0} s)",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Measures every configuration and renders the tables.
pub fn tables() -> anyhow::Result<String> {
    check_tools()?;
    let pair = Pair::new()?;
    let cases = cases();
    let results = measure_all(&pair, &cases)?;
    Ok(render(&cases, &results))
}

//! Network namespaces, veth pairs and fabrics (hosts on one switch) with RAII
//! cleanup.
//!
//! Names carry the process id and a per-process counter (`sgt-<pid>-<n>-<tag>`),
//! so tests running in parallel, and test binaries running side by side, never
//! collide. Veth pairs are created inside their namespaces, so their names never
//! appear in the root namespace. A namespace left behind by a process that was
//! killed is removed by the next [`Netns::new`] that notices its owner is gone.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Output},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

const PREFIX: &str = "sgt-";
static NEXT: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace made by `ip netns add`, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh, uniquely named namespace with loopback up.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        REAP.call_once(reap_orphans);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.quiet_ipv6()?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new interface talks on its own for a second or two (duplicate
    /// address detection, router solicitations, MLD reports retransmitted at
    /// random delays), and that chatter would land in exact counts. For
    /// interfaces made in this namespace from now on: no DAD, no router
    /// solicitations, and MLD reports sent at once instead of spread out.
    fn quiet_ipv6(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
            (
                "net.ipv6.conf.default.mldv1_unsolicited_report_interval",
                "0",
            ),
            (
                "net.ipv6.conf.default.mldv2_unsolicited_report_interval",
                "0",
            ),
        ] {
            self.sysctl(key, value)?;
        }
        Ok(())
    }

    /// Sets sysctl `key` to `value` inside the namespace.
    fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let out = self
            .cmd("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .output()?;
        if !out.status.success() {
            bail!(
                "sysctl {key}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The namespace's bind mount, for `setns`.
    pub fn path(&self) -> PathBuf {
        sg_agent::netns::named(&self.name)
    }

    /// `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace (through `nsenter`, which unlike
    /// `ip netns exec` leaves `/sys` and bpffs alone).
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
            .args(args);
        c
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets made there
    /// stay in the namespace wherever they are used afterwards.
    pub fn exec<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                sg_agent::netns::enter(&path)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: removing namespace {}: {e:#}", self.name);
        }
    }
}

/// Removes namespaces whose creating process no longer exists.
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

/// One end of a veth pair, or one host of a [`Fabric`]: its namespace,
/// interface and addresses.
pub struct Host {
    pub ns: Netns,
    pub ifname: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Host {
    /// The interface's index inside its namespace.
    pub fn ifindex(&self) -> anyhow::Result<u32> {
        let out = self.ns.ip(&["-j", "link", "show", "dev", &self.ifname])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let idx = text
            .split("\"ifindex\":")
            .nth(1)
            .and_then(|r| {
                r.split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())
            })
            .context("ifindex not found in ip -j link output")?;
        Ok(idx.parse()?)
    }

    /// `ip -d link show` of the interface, for checking what is attached.
    pub fn link_details(&self) -> anyhow::Result<String> {
        let out = self.ns.ip(&["-d", "link", "show", "dev", &self.ifname])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `tc qdisc show` of the interface.
    pub fn qdiscs(&self) -> anyhow::Result<String> {
        let out = self
            .ns
            .cmd("tc", &["qdisc", "show", "dev", &self.ifname])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Two namespaces joined by a veth pair: `a` (`10.77.0.1`, `fd77::1`) and `b`
/// (`10.77.0.2`, `fd77::2`). Each pair has its own namespaces, so every pair can
/// use the same addresses.
pub struct Pair {
    pub a: Host,
    pub b: Host,
}

impl Pair {
    pub fn new() -> anyhow::Result<Self> {
        let ns_a = Netns::new("a")?;
        let ns_b = Netns::new("b")?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (if_a, if_b) = (format!("sg{n}a"), format!("sg{n}b"));
        ns_a.ip(&[
            "link",
            "add",
            &if_a,
            "type",
            "veth",
            "peer",
            "name",
            &if_b,
            "netns",
            ns_b.name(),
        ])?;
        let a = Host {
            ns: ns_a,
            ifname: if_a,
            v4: Ipv4Addr::new(10, 77, 0, 1),
            v6: "fd77::1".parse()?,
        };
        let b = Host {
            ns: ns_b,
            ifname: if_b,
            v4: Ipv4Addr::new(10, 77, 0, 2),
            v6: "fd77::2".parse()?,
        };
        for h in [&a, &b] {
            h.ns.ip(&["addr", "add", &format!("{}/24", h.v4), "dev", &h.ifname])?;
            // nodad: the address is usable at once, not after duplicate detection.
            h.ns.ip(&[
                "addr",
                "add",
                &format!("{}/64", h.v6),
                "dev",
                &h.ifname,
                "nodad",
            ])?;
            h.ns.ip(&["link", "set", &h.ifname, "up"])?;
        }
        let pair = Self { a, b };
        pair.wait_up(Duration::from_secs(5))?;
        Ok(pair)
    }

    /// Makes the veth pair again, with the same names and IPv4 addresses,
    /// after it was deleted: created, addressed, then up, each step a
    /// command of its own, as an orchestrator does it.
    pub fn recreate(&self) -> anyhow::Result<()> {
        let (a, b) = (&self.a, &self.b);
        a.ns.ip(&[
            "link",
            "add",
            &a.ifname,
            "type",
            "veth",
            "peer",
            "name",
            &b.ifname,
            "netns",
            b.ns.name(),
        ])?;
        for h in [a, b] {
            h.ns.ip(&["addr", "add", &format!("{}/24", h.v4), "dev", &h.ifname])?;
            h.ns.ip(&["link", "set", &h.ifname, "up"])?;
        }
        Ok(())
    }

    /// Gives `a` one more address, `addr`, reachable from `b` over the link (a
    /// host route on `b`): for probes that must come from a given source.
    pub fn add_client_address(&self, addr: std::net::IpAddr) -> anyhow::Result<()> {
        let (host_len, nodad): (&str, &[&str]) = if addr.is_ipv4() {
            ("32", &[])
        } else {
            ("128", &["nodad"])
        };
        let cidr = format!("{addr}/{host_len}");
        let mut args = vec!["addr", "add", &cidr, "dev", &self.a.ifname];
        args.extend_from_slice(nodad);
        self.a.ns.ip(&args)?;
        self.b
            .ns
            .ip(&["route", "add", &cidr, "dev", &self.b.ifname])?;
        Ok(())
    }

    /// Polls until both ends report operational state UP.
    fn wait_up(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_up(&[&self.a, &self.b], timeout, "veth pair")
    }
}

/// `n` host namespaces joined by one switch: each host has one interface, a
/// veth whose other end is a port of a bridge in a fabric namespace of its
/// own. Host `i` (from 0) is `10.78.0.<i + 1>/24` (clear of [`Pair`]'s
/// `10.77.0.0/24`) and `fd78::<i + 1>/64`, so every host reaches every other
/// on one link. Like a [`Pair`], each fabric has its own namespaces, so every
/// fabric can use the same addresses; its interfaces live only inside them,
/// and go with them on drop.
pub struct Fabric {
    /// The hosts, in order: their namespaces, interfaces and addresses.
    pub hosts: Vec<Host>,
    /// The switch: the bridge and the host-facing ends of the veths.
    pub switch: Netns,
    /// The bridge's name inside [`Fabric::switch`].
    pub bridge: String,
}

impl Fabric {
    /// The most hosts a fabric has: one /24 and one interface number each.
    pub const MAX_HOSTS: usize = 250;

    /// Makes `n` hosts (2 to [`Fabric::MAX_HOSTS`]) on one switch and waits
    /// until every host's interface is up.
    pub fn new(n: usize) -> anyhow::Result<Self> {
        if !(2..=Self::MAX_HOSTS).contains(&n) {
            bail!("a fabric has 2 to {} hosts, not {n}", Self::MAX_HOSTS);
        }
        let switch = Netns::new("fabric")?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let bridge = format!("sg{id}br");
        // Quiet for the same reason as the hosts (no IPv6 chatter of the
        // switch's own in a host's counts): the switch only forwards, so
        // it needs no addresses; and no multicast snooping, so neighbour
        // discovery is flooded whether or not a host's MLD report was heard.
        for scope in ["all", "default"] {
            switch.sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "1")?;
        }
        switch.ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        switch.ip(&["link", "set", &bridge, "up"])?;
        let mut hosts = Vec::with_capacity(n);
        for i in 0..n {
            let ns = Netns::new(&format!("h{}", i + 1))?;
            let (ifname, port) = (format!("sg{id}h{i}"), format!("sg{id}f{i}"));
            ns.ip(&[
                "link",
                "add",
                &ifname,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                switch.name(),
            ])?;
            // STP is off on a new bridge, so a port forwards as soon as it
            // is up: no learning delay before the first frame.
            switch.ip(&["link", "set", &port, "master", &bridge, "up"])?;
            let last = u8::try_from(i + 1).context("host number")?;
            let host = Host {
                ns,
                ifname,
                v4: Ipv4Addr::new(10, 78, 0, last),
                v6: Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, u16::from(last)),
            };
            host.ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", host.v4),
                "dev",
                &host.ifname,
            ])?;
            // nodad: the address is usable at once, not after duplicate detection.
            host.ns.ip(&[
                "addr",
                "add",
                &format!("{}/64", host.v6),
                "dev",
                &host.ifname,
                "nodad",
            ])?;
            host.ns.ip(&["link", "set", &host.ifname, "up"])?;
            hosts.push(host);
        }
        let fabric = Self {
            hosts,
            switch,
            bridge,
        };
        fabric.wait_up(Duration::from_secs(5))?;
        Ok(fabric)
    }

    /// Polls until every host's interface reports operational state UP.
    fn wait_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let hosts: Vec<&Host> = self.hosts.iter().collect();
        wait_up(&hosts, timeout, "the fabric's interfaces")
    }
}

/// Polls until every one of `hosts`' interfaces reports operational state
/// UP; `what` names them in the error.
fn wait_up(hosts: &[&Host], timeout: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut up = true;
        for h in hosts {
            let out = h.ns.ip(&["-j", "link", "show", "dev", &h.ifname])?;
            up &= String::from_utf8_lossy(&out.stdout).contains("\"operstate\":\"UP\"");
        }
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not come up within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

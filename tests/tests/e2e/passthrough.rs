//! End to end, with real traffic between two namespaces: with the programs
//! attached to one end of a veth pair, TCP, UDP and ping pass both ways over
//! IPv4 and IPv6; the counters match, counter by counter, an independent
//! capture on the other end; after detach nothing of ours remains (what
//! other agents on the host attached and pinned is theirs, and not looked at).

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    time::{Duration, Instant},
};

use sg_agent::dataplane::{AttachMode, Counters, Dataplane, Limits};
use sg_common::counter::{DIR_EGRESS, DIR_INGRESS, ICMP, ICMPV6, SLOTS, TCP, UDP};
use sg_tests::{
    capture::Capture,
    probe::{self, Servers},
    topology::{Host, Pair},
};

/// Attaches `dp` to `host`'s interface from inside its namespace.
fn attach(dp: &mut Dataplane, host: &Host, mode: AttachMode) {
    let ifname = host.ifname.clone();
    host.ns
        .exec(|| dp.attach(&ifname, mode))
        .expect("enter ns")
        .expect("attach");
}

fn our_program_ids(dp: &mut Dataplane) -> HashSet<u32> {
    let xdp = dp.xdp().unwrap().info().unwrap().id();
    let tc = dp.tc_egress().unwrap().info().unwrap().id();
    let tc_in = dp.tc_ingress().unwrap().info().unwrap().id();
    HashSet::from([xdp, tc, tc_in])
}

const UDP_PROBES: u64 = 3;
const PINGS: u64 = 3;

/// Runs every probe from `from` to `to`, asserting each is allowed.
fn probe_all(from: &Host, to: &Host, servers: &Servers) {
    for addr in [IpAddr::V4(to.v4), IpAddr::V6(to.v6)] {
        let tcp = probe::tcp(&from.ns, SocketAddr::new(addr, servers.tcp_port));
        assert!(tcp.allowed(), "TCP {addr}: {tcp:?}");
        for _ in 0..UDP_PROBES {
            let udp = probe::udp(&from.ns, SocketAddr::new(addr, servers.udp_port));
            assert!(udp.allowed(), "UDP {addr}: {udp:?}");
        }
        let ping = probe::ping(&from.ns, addr, u32::try_from(PINGS).unwrap());
        assert!(ping.allowed(), "ping {addr}: {ping:?}");
    }
}

fn check_traffic(mode: AttachMode) {
    let pair = Pair::new().expect("topology");
    let mut dp = Dataplane::load_for_tests(Limits::default()).expect("load");
    let servers_a = Servers::start(&pair.a.ns).expect("servers in a");
    let servers_b = Servers::start(&pair.b.ns).expect("servers in b");
    let mut capture = Capture::start(&pair.a).expect("capture on a");
    attach(&mut dp, &pair.b, mode);
    let before = quiet_baseline(&dp, &mut capture);

    probe_all(&pair.a, &pair.b, &servers_b);
    probe_all(&pair.b, &pair.a, &servers_a);

    // What a sent, b received (XDP); what b sent (TC egress), a received.
    // Poll until the last frames (FINs, ACKs) have crossed and both agree.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (rx, tx, tally) = loop {
        let c = Counters::read(dp.maps()).expect("counters").since(&before);
        let rx: Vec<u64> = (0..SLOTS).map(|i| c.get(DIR_INGRESS, i)).collect();
        let tx: Vec<u64> = (0..SLOTS).map(|i| c.get(DIR_EGRESS, i)).collect();
        let tally = capture.drain().expect("capture").clone();
        if (rx == tally.sent && tx == tally.received) || Instant::now() > deadline {
            break (rx, tx, tally);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(rx, tally.sent, "b's ingress counters vs frames a sent");
    assert_eq!(
        tx, tally.received,
        "b's egress counters vs frames a received"
    );

    // The traffic we made ourselves, counted exactly: each UDP probe is one
    // datagram each way, each ping one echo each way, in both directions of
    // probing and over both families.
    let udp = 2 * 2 * UDP_PROBES;
    assert_eq!(rx[UDP as usize], udp, "UDP received by b");
    assert_eq!(tx[UDP as usize], udp, "UDP sent by b");
    assert_eq!(
        rx[ICMP as usize],
        2 * PINGS,
        "ICMP echo requests and replies received by b"
    );
    assert_eq!(tx[ICMP as usize], 2 * PINGS, "ICMP sent by b");
    // ICMPv6 also carries neighbour discovery, TCP its handshakes and ACKs.
    assert!(rx[ICMPV6 as usize] >= 2 * PINGS && tx[ICMPV6 as usize] >= 2 * PINGS);
    assert!(rx[TCP as usize] >= 4 * 3 && tx[TCP as usize] >= 4 * 2);

    // Detach: nothing of ours may remain on the interface or in the kernel.
    let ids = our_program_ids(&mut dp);
    let maps = our_map_ids(&mut dp);
    dp.detach().expect("detach");
    assert_nothing_attached(&pair.b, &ids, &maps);
    drop(dp);
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || !sg_tests::any_loaded(&ids)),
        "programs {ids:?} still loaded 5 s after drop"
    );
}

/// Waits until the link is quiet (a new interface sends MLD reports and the
/// like on its own for a second or two), then starts both counts there: a
/// frame in flight at the baseline would be counted by one side only.
fn quiet_baseline(dp: &Dataplane, capture: &mut Capture) -> Counters {
    let read = || {
        let seen = capture.drain().expect("capture").clone();
        (seen, Counters::read(dp.maps()).expect("counters"))
    };
    let (_, counted) = sg_tests::steady(Duration::from_secs(10), Duration::from_millis(100), read)
        .expect("the link never went quiet");
    capture.reset();
    counted
}

/// No XDP program, no clsact qdisc and no BPF link of ours on `host`, and
/// nothing of ours pinned: neither the pin directory of `host`'s namespace
/// nor a pin anywhere in bpffs that holds one of our programs (`ids`), one
/// of their maps (`maps`) or a link to one of our programs. Scoped to what
/// this test made: other agents may run on the host, with pins of their own.
fn assert_nothing_attached(host: &Host, ids: &HashSet<u32>, maps: &HashSet<u32>) {
    let link = host.link_details().expect("ip link");
    assert!(!link.contains("xdp"), "XDP still attached: {link}");
    let qdiscs = host.qdiscs().expect("tc qdisc");
    assert!(!qdiscs.contains("clsact"), "clsact left behind: {qdiscs}");
    // Link objects are freed after an RCU grace period: poll.
    assert!(
        sg_tests::eventually(Duration::from_secs(5), || sg_tests::links_of(ids) == 0),
        "links of our programs remain"
    );
    let inode = std::fs::metadata(host.ns.path()).expect("netns").ino();
    let root = sg_agent::dataplane::pin_root(inode);
    assert!(
        !root.exists(),
        "pins of our namespace left: {}",
        root.display()
    );
    let ours: Vec<String> = bpffs_pins()
        .into_iter()
        .filter_map(|path| {
            let held = pinned(&path)?;
            let mine = match held {
                Pinned::Program(id) | Pinned::Link { program: id } => ids.contains(&id),
                Pinned::Map(id) => maps.contains(&id),
            };
            mine.then(|| format!("{} ({held:?})", path.display()))
        })
        .collect();
    assert!(ours.is_empty(), "pins of ours left: {ours:?}");
}

/// The map ids of our programs.
fn our_map_ids(dp: &mut Dataplane) -> HashSet<u32> {
    let infos = [
        dp.xdp().unwrap().info().unwrap(),
        dp.tc_egress().unwrap().info().unwrap(),
        dp.tc_ingress().unwrap().info().unwrap(),
    ];
    infos
        .iter()
        .flat_map(|i| i.map_ids().unwrap().unwrap_or_default())
        .collect()
}

/// Every file under /sys/fs/bpf (an agent pins its maps and links there,
/// under `/sys/fs/bpf/sg/ns-<inode>`, for as long as it enforces).
fn bpffs_pins() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/bpf"), &mut out);
    out
}

/// What a pin holds, by the kernel's ids.
#[derive(Debug, Clone, Copy)]
enum Pinned {
    Program(u32),
    Map(u32),
    Link { program: u32 },
}

/// Opens the pin at `path` (`BPF_OBJ_GET`, which changes nothing) and reads
/// what it holds from the fd's `/proc/self/fdinfo`: a link shows `link_id`
/// and its `prog_id`, a program `prog_id`, a map `map_id`. `None` when it
/// cannot be opened (gone meanwhile, not a BPF object).
fn pinned(path: &std::path::Path) -> Option<Pinned> {
    /// `union bpf_attr` for `BPF_OBJ_GET`, padding explicit and zeroed (the
    /// kernel refuses non-zero bytes past the fields it knows).
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let attr = ObjGet {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_OBJ_GET, and
    // `name` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGet>(),
        )
    };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
    // SAFETY: `fd` is ours, opened just above, and closed once.
    unsafe { libc::close(fd) };
    let info = info.ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u32>().ok())
    };
    match (field("link_id:"), field("prog_id:"), field("map_id:")) {
        (Some(_), Some(program), _) => Some(Pinned::Link { program }),
        (None, Some(id), _) => Some(Pinned::Program(id)),
        (None, None, Some(id)) => Some(Pinned::Map(id)),
        _ => None,
    }
}

#[test]
fn traffic_passes_both_ways_and_counters_match_capture_native_xdp() {
    check_traffic(AttachMode::Native);
}

#[test]
fn traffic_passes_both_ways_and_counters_match_capture_generic_xdp() {
    check_traffic(AttachMode::Generic);
}

#[test]
fn traffic_passes_both_ways_and_counters_match_capture_tc_ingress() {
    check_traffic(AttachMode::Tc);
}

#[test]
fn dropping_the_dataplane_detaches_everything() {
    for mode in [AttachMode::Native, AttachMode::Auto] {
        let pair = Pair::new().expect("topology");
        let mut dp = Dataplane::load_for_tests(Limits::default()).expect("load");
        attach(&mut dp, &pair.b, mode);
        let ids = our_program_ids(&mut dp);
        let maps = our_map_ids(&mut dp);
        // Auto on a veth means TC ingress (see `AttachMode::Auto`).
        let xdp = mode == AttachMode::Native;
        assert_eq!(
            pair.b.link_details().unwrap().contains("xdp"),
            xdp,
            "{mode:?}: XDP attached?"
        );
        assert_eq!(
            sg_tests::links_of(&ids),
            2,
            "{mode:?}: expected two links (XDP or tcx ingress, and tcx egress)"
        );
        drop(dp);
        assert_nothing_attached(&pair.b, &ids, &maps);
    }
}

#[test]
fn the_driver_of_a_veth_is_veth() {
    let pair = Pair::new().expect("topology");
    let name = pair.b.ifname.clone();
    let driver = pair.b.ns.exec(|| sg_agent::iface::driver(&name)).unwrap();
    assert_eq!(driver.as_deref(), Some("veth"));
    let none = pair
        .b
        .ns
        .exec(|| sg_agent::iface::driver("nosuch0"))
        .unwrap();
    assert_eq!(none, None);
}

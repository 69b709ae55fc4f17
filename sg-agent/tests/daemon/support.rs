//! Helpers that several of these tests wrote alike.

use std::net::{IpAddr, SocketAddr};

use sg_tests::{probe, topology::Pair};

/// The agent binary under test.
pub fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_sg-agent"))
}

/// Writes `text` to `dir/name`; returns the path, for the command line.
pub fn doc(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The allowed TCP port opens and the denied UDP port does not.
pub fn enforced(pair: &Pair, servers: &probe::Servers) -> bool {
    let b = IpAddr::V4(pair.b.v4);
    probe::tcp(&pair.a.ns, SocketAddr::new(b, servers.tcp_port)).allowed()
        && !probe::udp(&pair.a.ns, SocketAddr::new(b, servers.udp_port)).allowed()
}

/// The denied UDP port answers: nothing filters.
pub fn open(pair: &Pair, servers: &probe::Servers) -> bool {
    probe::udp(
        &pair.a.ns,
        SocketAddr::new(IpAddr::V4(pair.b.v4), servers.udp_port),
    )
    .allowed()
}

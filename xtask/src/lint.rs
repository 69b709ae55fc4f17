//! `cargo xtask lint`.

use crate::cargo;

/// The crates whose modules must not import each other in a cycle.
const CRATES: [&str; 8] = [
    "sg-common",
    "sg-policy",
    "sg-ebpf",
    "sg-agent",
    "tests",
    "bench",
    "demo",
    "xtask",
];

/// The pure policy crate builds without the eBPF toolchain: none of these
/// may enter its dependencies.
const NOT_IN_POLICY: [&str; 4] = ["aya", "tokio", "rusqlite", "sg-agent"];

pub fn run() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    import_cycles()?;
    policy_is_pure()?;
    cargo(
        &[
            "clippy",
            "--locked",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The eBPF crate only builds for its own target, with core built from
    // source; a separate target dir keeps these flags from invalidating the
    // host build's fingerprints.
    let target_dir = crate::target_dir().join("ebpf-clippy");
    cargo(
        &[
            "clippy",
            "--locked",
            "--package",
            "sg-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--target-dir",
            target_dir.to_str().unwrap_or("target/ebpf-clippy"),
            "--",
            "-D",
            "warnings",
        ],
        &[("RUSTC_BOOTSTRAP", "1")],
    )
}

/// Fails on a module import cycle in any of [`CRATES`] (see `cycles.rs`).
fn import_cycles() -> anyhow::Result<()> {
    let root = crate::root();
    let mut found = Vec::new();
    for krate in CRATES {
        for cycle in crate::cycles::cycles(&root.join(krate).join("src"))? {
            found.push(format!("{krate}: {}", cycle.join(" <-> ")));
        }
    }
    anyhow::ensure!(
        found.is_empty(),
        "module import cycles (break them, or say in a comment of one module \
         why it is an import cycle by design):\n  {}",
        found.join("\n  ")
    );
    Ok(())
}

/// Fails if `sg-policy` depends on any of [`NOT_IN_POLICY`].
fn policy_is_pure() -> anyhow::Result<()> {
    let out = crate::cargo_command(&[
        "tree",
        "--locked",
        "-p",
        "sg-policy",
        "-e",
        "normal",
        "--prefix",
        "none",
    ])
    .output()?;
    anyhow::ensure!(out.status.success(), "cargo tree -p sg-policy failed");
    let tree = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| NOT_IN_POLICY.contains(name))
        .collect();
    anyhow::ensure!(
        bad.is_empty(),
        "sg-policy must build without the kernel side, but depends on {}",
        bad.join(", ")
    );
    Ok(())
}

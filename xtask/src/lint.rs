//! `cargo xtask lint`.

use crate::cargo;

pub fn run() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
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

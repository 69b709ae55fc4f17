//! Builds the eBPF object (crate `sg-ebpf`) for the BPF target and leaves it in
//! `OUT_DIR/sg`, where `dataplane` embeds it.
//!
//! The eBPF crate needs `-Z build-std=core`; on the pinned stable toolchain that
//! takes `RUSTC_BOOTSTRAP=1`, set here for the inner cargo only (in the outer shell
//! it would change every fingerprint and rebuild the world).
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../sg-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let toolchain = env::var("SG_EBPF_TOOLCHAIN").unwrap_or_else(|_| "1.99.1".to_owned());
    println!("cargo:rerun-if-env-changed=SG_EBPF_TOOLCHAIN");
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [Package {
            name: "sg-ebpf",
            root_dir: ebpf_dir,
            ..Package::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs (is bpf-linker installed? run scripts/setup.sh)")?;
    // With AYA_BUILD_SKIP=1 (pure-Rust work, no BPF toolchain) nothing was built:
    // leave an empty object so the crate compiles; loading it then fails clearly.
    let object = PathBuf::from(env::var("OUT_DIR")?).join("sg");
    if !object.exists() {
        fs::write(&object, b"")?;
    }
    Ok(())
}

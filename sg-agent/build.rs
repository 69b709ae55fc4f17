//! Builds the eBPF object (crate `sg-ebpf`) for the BPF target and leaves it in
//! `OUT_DIR/sg`, where `dataplane` embeds it.
//!
//! The eBPF crate needs `-Z build-std=core`; on the pinned stable toolchain that
//! takes `RUSTC_BOOTSTRAP=1`, set here for the inner cargo only (in the outer shell
//! it would change every fingerprint and rebuild the world).
//!
//! Also tells the agent what it was built from, for the `sg_build_info`
//! metric: the git commit, the compiler and the target.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../sg-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    build_info(&manifest_dir);
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

/// Sets `SG_AGENT_GIT_COMMIT`, `SG_AGENT_RUSTC` and `SG_AGENT_TARGET` for the
/// crate. Nothing here may fail the build: a source tarball has no `.git`
/// and a build host may have no `git`, so what cannot be found is "unknown".
fn build_info(manifest_dir: &Path) {
    println!(
        "cargo:rustc-env=SG_AGENT_GIT_COMMIT={}",
        git_commit(manifest_dir)
    );
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(
            || "unknown".to_owned(),
            |v| v.trim().trim_start_matches("rustc ").to_owned(),
        );
    println!("cargo:rustc-env=SG_AGENT_RUSTC={version}");
    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=SG_AGENT_TARGET={target}");
}

/// The commit being built: `SG_BUILD_COMMIT` if a packager set it, else
/// `git rev-parse HEAD` of the repository this workspace is the top of
/// (not of some repository a tarball was unpacked inside), else "unknown".
fn git_commit(manifest_dir: &Path) -> String {
    println!("cargo:rerun-if-env-changed=SG_BUILD_COMMIT");
    if let Ok(commit) = env::var("SG_BUILD_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let workspace = manifest_dir.parent().and_then(|p| p.canonicalize().ok());
    let top =
        git(&["rev-parse", "--show-toplevel"]).and_then(|t| Path::new(&t).canonicalize().ok());
    if top.is_none() || top != workspace {
        return "unknown".to_owned();
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // Run again when HEAD moves: a checkout changes HEAD, a commit the branch
    // it names (a loose ref, or packed-refs). Only files that exist: cargo
    // would run a build script watching a missing one on every build.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = manifest_dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    commit
}

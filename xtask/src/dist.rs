//! `cargo xtask dist`: a Debian package of the agent, built with dpkg-deb
//! alone (no cargo-deb): the binary, the systemd unit and its environment
//! file (`packaging/`), and the man pages and completions the binary makes
//! of its own command line (`sg-agent generate`).
//!
//! The maintainer scripts reload systemd and restart a running agent on an
//! upgrade, but never enable or start it: see docs/operations.md
//! ("Packaging").

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

/// Where each completion script goes, by shell: the file
/// `sg-agent generate completions` writes, and its place in the package.
const COMPLETIONS: [(&str, &str, &str); 3] = [
    (
        "bash",
        "sg-agent.bash",
        "usr/share/bash-completion/completions/sg-agent",
    ),
    (
        "zsh",
        "_sg-agent",
        "usr/share/zsh/vendor-completions/_sg-agent",
    ),
    (
        "fish",
        "sg-agent.fish",
        "usr/share/fish/vendor_completions.d/sg-agent.fish",
    ),
];

/// The environment file, a conffile: an upgrade keeps the operator's.
const CONFFILE: &str = "etc/default/sg-agent";

/// Builds the package; returns its path (`target/dist/sg-agent_V_ARCH.deb`).
/// `debug`: the dev-profile binary, for a quick test of the packaging.
pub fn run(debug: bool) -> anyhow::Result<PathBuf> {
    let mut cargo_args = vec![
        "build",
        "--locked",
        "--package",
        "sg-agent",
        "--bin",
        "sg-agent",
    ];
    if !debug {
        cargo_args.push("--release");
    }
    crate::cargo(&cargo_args, &[])?;
    let built = crate::target_dir()
        .join(if debug { "debug" } else { "release" })
        .join("sg-agent");
    let version = version(&built)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let dist = crate::target_dir().join("dist");
    let root = dist.join(format!("sg-agent_{version}_{arch}"));
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    lay_out(&root, &built)?;
    control(&root, &version, &arch)?;
    let deb = dist.join(format!("sg-agent_{version}_{arch}.deb"));
    // Owned by root whoever builds it; gzip, as dpkg-deb's xz takes
    // seconds more on a binary of this size for little gain.
    run_ok(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip", "-z9"])
            .arg(&root)
            .arg(&deb),
    )?;
    println!("{}", deb.display());
    Ok(deb)
}

/// `0.1.0` from `sg-agent --version` (`sg-agent 0.1.0`): the version of
/// the binary packaged, which is Cargo's.
fn version(bin: &Path) -> anyhow::Result<String> {
    let text = output(Command::new(bin).arg("--version"))?;
    text.strip_prefix("sg-agent ")
        .map(str::to_owned)
        .with_context(|| format!("{} --version said {text:?}", bin.display()))
}

/// Every file of the package under `root`, with its mode.
fn lay_out(root: &Path, built: &Path) -> anyhow::Result<()> {
    let packaging = crate::root().join("packaging");
    let bin = root.join("usr/bin/sg-agent");
    place(built, &bin, 0o755)?;
    // Debug information stays in the build (a dev binary is 200 MB of it).
    run_ok(Command::new("strip").arg("--strip-unneeded").arg(&bin))?;
    place(
        &packaging.join("sg-agent.service"),
        &root.join("lib/systemd/system/sg-agent.service"),
        0o644,
    )?;
    place(
        &packaging.join("sg-agent.default"),
        &root.join(CONFFILE),
        0o644,
    )?;
    let scratch = root
        .parent()
        .context("the package's directory")?
        .join("generated");
    let _ = std::fs::remove_dir_all(&scratch);
    let man = scratch.join("man");
    run_ok(quiet(
        Command::new(built).args(["generate", "man"]).arg(&man),
    ))?;
    let man1 = root.join("usr/share/man/man1");
    for entry in std::fs::read_dir(&man)? {
        let page = entry?.path();
        let plain = man1.join(page.file_name().context("a page")?);
        place(&page, &plain, 0o644)?;
        // -n: no name or time stamp inside, so the same pages make the same
        // package.
        run_ok(Command::new("gzip").args(["-9n", "--force"]).arg(&plain))?;
    }
    for (shell, file, dest) in COMPLETIONS {
        let dir = scratch.join(shell);
        run_ok(quiet(
            Command::new(built)
                .args(["generate", "completions", shell])
                .arg(&dir),
        ))?;
        place(&dir.join(file), &root.join(dest), 0o644)?;
    }
    std::fs::remove_dir_all(&scratch)?;
    let doc = root.join("usr/share/doc/sg-agent/copyright");
    write(&doc, COPYRIGHT, 0o644)
}

/// `DEBIAN/`: control, conffiles and the maintainer scripts.
fn control(root: &Path, version: &str, arch: &str) -> anyhow::Result<()> {
    let debian = root.join("DEBIAN");
    let size_kib = installed_kib(root)?;
    // libc6: the binary is linked against glibc (SQLite is built in).
    // iproute2: `sg-agent cleanup` runs `tc` to remove the clsact qdisc it
    // added on kernels without tcx.
    let control = format!(
        "Package: sg-agent\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: sg developers <sg-agent@users.invalid>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6, iproute2\n\
         Section: net\n\
         Priority: optional\n\
         Description: cloud-style security groups enforced by eBPF\n \
         sg-agent keeps security groups (prioritised allow and deny rules,\n \
         group-to-group rules, prefix and port lists, stateful sessions) and\n \
         enforces them on the host's interfaces with XDP and TC programs.\n \
         The policy stays in force while the agent restarts or is stopped.\n"
    );
    write(&debian.join("control"), &control, 0o644)?;
    write(&debian.join("conffiles"), &format!("/{CONFFILE}\n"), 0o644)?;
    write(&debian.join("postinst"), POSTINST, 0o755)?;
    write(&debian.join("prerm"), PRERM, 0o755)?;
    write(&debian.join("postrm"), POSTRM, 0o755)
}

/// The size of everything under `root`, in KiB as `Installed-Size` wants.
fn installed_kib(root: &Path) -> anyhow::Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(&entry.path(), total)?;
            } else {
                *total += meta.len().div_ceil(1024);
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(root, &mut total)?;
    Ok(total)
}

/// Copies `from` to `to` (its directories made) with `mode`.
fn place(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to).with_context(|| format!("{} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// `command` without its standard output (`generate` names what it wrote).
fn quiet(command: &mut Command) -> &mut Command {
    command.stdout(std::process::Stdio::null())
}

fn run_ok(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// What `command` printed, trimmed; an error if it failed.
fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sg
Comment: Built from the sg workspace by cargo xtask dist. The binary links
 Rust crates from crates.io under their own licences (MIT, Apache-2.0 and
 compatible ones) and SQLite, which is in the public domain.

Files: *
Copyright: the sg developers
License: MIT or Apache-2.0
 Licensed under either of the MIT licence or the Apache License, Version
 2.0, at your option. On Debian systems the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";

/// Reloads systemd's units; on an upgrade, restarts a running agent, which
/// adopts the pinned data plane and swaps its new programs in without a
/// gap. A first install neither enables nor starts the unit.
const POSTINST: &str = "\
#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
\tsystemctl daemon-reload || true
\tif [ -n \"$2\" ]; then
\t\tsystemctl try-restart sg-agent.service || true
\tfi
fi
exit 0
";

/// On removal, stops the agent (its binary goes), leaving the policy in
/// force, pinned; says how to remove that.
const PRERM: &str = "\
#!/bin/sh
set -e
if [ \"$1\" = remove ]; then
\tif [ -d /run/systemd/system ]; then
\t\tsystemctl stop sg-agent.service || true
\tfi
\techo 'sg-agent: the policy stays in force (pinned in /sys/fs/bpf/sg); to remove it, run sg-agent cleanup before removing the package' >&2
fi
exit 0
";

/// After removal or purge, reloads systemd's units. The policy store in
/// /var/lib/sg-agent is the operator's data: even a purge leaves it.
const POSTRM: &str = "\
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
\tsystemctl daemon-reload || true
fi
exit 0
";

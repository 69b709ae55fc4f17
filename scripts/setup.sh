#!/usr/bin/env bash
# Make a fresh Debian 12 machine (root, kernel >= 6.6) ready to build, test and demo sg.
# Idempotent: every step checks before it acts, so a second run takes seconds.
set -euo pipefail

RUST_VERSION=1.99.1
BPF_LINKER_VERSION=0.13.0
BPF_LINKER_LLVM_FEATURE=llvm-23
# etcd-server and etcd-client (etcd and etcdctl 3.4) for the fleet tests, which
# start their own members on ports of their own, never 2379 (where the package
# starts a system etcd on a machine with systemd); openssl makes their TLS
# certificates; protobuf-compiler and libprotobuf-dev (protoc and the
# well-known .proto files) build the etcd-client crate. man-db and systemd
# (systemd-analyze) for the packaging tests: the man pages read back after
# `dpkg -i`, the unit file verified.
APT_PACKAGES=(gcc libc6-dev iproute2 iputils-ping netcat-openbsd nftables iptables bpftool netsniff-ng jq procps
  etcd-server etcd-client openssl protobuf-compiler libprotobuf-dev man-db systemd)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# --- Rust toolchain, pinned by version ----------------------------------------------
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export PATH="$CARGO_HOME/bin:$PATH"
if ! command -v rustup >/dev/null; then
  log "rustup missing: installing it from the rustup-init in the toolchain server"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --no-modify-path --profile minimal --default-toolchain none
fi
if ! rustup run "$RUST_VERSION" rustc --version >/dev/null 2>&1 \
   || ! rustup component list --toolchain "$RUST_VERSION" --installed 2>/dev/null | grep -q '^rust-src'; then
  log "installing Rust $RUST_VERSION with rust-src, clippy, rustfmt"
  rustup toolchain install "$RUST_VERSION" --profile minimal -c rust-src -c clippy -c rustfmt
else
  log "Rust $RUST_VERSION present"
fi

# --- bpf-linker, built against the pinned toolchain's own libLLVM -----------------------
# No prebuilt binary is reachable here; building it against the toolchain's libLLVM
# guarantees the linker's LLVM reads the bitcode this rustc emits.
sysroot=$(rustup run "$RUST_VERSION" rustc --print sysroot)
# Look in this CARGO_HOME only: a linker elsewhere on PATH may be built against
# another toolchain's LLVM.
linker="$CARGO_HOME/bin/bpf-linker"
have_linker() {
  [ -x "$linker" ] && "$linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"
}
if ! have_linker; then
  log "building bpf-linker $BPF_LINKER_VERSION against $sysroot (about a minute)"
  llvm=$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n1)
  [ -n "$llvm" ] || { echo "no libLLVM in $sysroot/lib" >&2; exit 1; }
  shim=$(mktemp -d)
  ln -sfn "$llvm" "$shim/libLLVM.so"
  LLVM_PREFIX=$sysroot RUSTFLAGS="-L native=$shim" \
    cargo "+$RUST_VERSION" install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
      --no-default-features --features "$BPF_LINKER_LLVM_FEATURE" --root "$CARGO_HOME" --quiet
  rm -rf "$shim"
  have_linker || { echo "bpf-linker did not install" >&2; exit 1; }
else
  log "bpf-linker $BPF_LINKER_VERSION present"
fi

# --- bpffs ----------------------------------------------------------------------------
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi

# --- fetch crates so later builds need no network ---------------------------------------
if [ -f "$here/Cargo.lock" ]; then
  (cd "$here" && cargo "+$RUST_VERSION" fetch --locked -q)
fi
log "ready"

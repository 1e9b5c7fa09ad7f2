#!/usr/bin/env bash
# Build the peer programs of corio's side-by-side benchmark, offline, with
# Debian 12's own toolchains only:
#   Go     golang-go (1.19)          -> bench/peers/bin/seed-go
#   Tokio  cargo + rustc 1.63 from apt, crates from librust-tokio-dev
#          (/usr/share/cargo/registry, see tokio/.cargo/config.toml)
#                                     -> bench/peers/bin/seed-tokio
#   Python python3 (nothing to build; python/seed_asyncio.py, seed_pool.py)
#
# Idempotent: installs the apt packages only when missing, and the Go and
# Cargo caches under bench/peers/target/ make a rebuild quick. The toolchains
# are called by absolute path (/usr/bin/go, /usr/bin/cargo, /usr/bin/rustc)
# so a rustup or other toolchain earlier in PATH is never used: CI runs on a
# fresh Debian 12 without rustup, and this is what it will have.
#
# Prints one line per peer; on failure, the tail of the build log and then
# one line "build.sh: <reason>" on stderr, exit status 1.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/bin"
work="$here/target"
mkdir -p "$bin" "$work"

fail() {
    echo "build.sh: $*" >&2
    exit 1
}

# fail_log LOG REASON: show the end of a build log, then the one-line reason.
fail_log() {
    tail -n 25 "$1" >&2 || true
    fail "$2 (full log: $1)"
}

# --- apt packages, only the missing ones ------------------------------------
packages=(golang-go cargo librust-tokio-dev python3)
missing=()
for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || fail "missing packages ${missing[*]} and no apt-get (Debian 12 expected)"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || fail "missing packages ${missing[*]}: run as root or install sudo"
        sudo=(sudo)
    fi
    log="$work/apt.log"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        # A fresh container may have no package lists yet: update once, retry.
        "${sudo[@]}" apt-get update -qq >>"$log" 2>&1 || fail_log "$log" "apt-get update failed"
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
            fail_log "$log" "apt-get install ${missing[*]} failed"
    fi
    echo "installed: ${missing[*]}"
fi

# --- Go ---------------------------------------------------------------------
go=/usr/bin/go
[[ -x $go ]] || fail "$go not found (apt package golang-go)"
log="$work/go-build.log"
if ! (
    cd "$here/go" &&
        env GOPROXY=off GOFLAGS= GO111MODULE=on CGO_ENABLED=0 \
            GOCACHE="$work/go-cache" GOPATH="$work/gopath" GOMODCACHE="$work/gopath/pkg/mod" \
            "$go" build -trimpath -o "$bin/seed-go" .
) >"$log" 2>&1; then
    fail_log "$log" "Go peer failed to build"
fi
echo "built go: bench/peers/bin/seed-go ($("$go" env GOVERSION 2>/dev/null || echo go))"

# --- Tokio ------------------------------------------------------------------
cargo=/usr/bin/cargo
rustc=/usr/bin/rustc
[[ -x $cargo ]] || fail "$cargo not found (apt package cargo)"
[[ -x $rustc ]] || fail "$rustc not found (apt package rustc)"
[[ -d /usr/share/cargo/registry ]] || fail "/usr/share/cargo/registry missing (apt package librust-tokio-dev)"
log="$work/tokio-build.log"
# Cargo.lock is regenerated every time against whatever crate versions
# Debian currently ships (it is not committed). CARGO_HOME keeps any
# ~/.cargo/config of a developer machine out of the build.
rm -f "$here/tokio/Cargo.lock"
if ! (
    cd "$here/tokio" &&
        env -u RUSTUP_TOOLCHAIN -u CARGO_BUILD_TARGET \
            RUSTC="$rustc" RUSTDOC=/usr/bin/rustdoc \
            CARGO_HOME="$work/cargo-home" CARGO_TARGET_DIR="$work/tokio" \
            "$cargo" build --release --offline
) >"$log" 2>&1; then
    fail_log "$log" "Tokio peer failed to build with $cargo ($("$rustc" --version 2>/dev/null || echo 'no rustc'))"
fi
cp -f "$work/tokio/release/seed-tokio" "$bin/seed-tokio.tmp"
mv -f "$bin/seed-tokio.tmp" "$bin/seed-tokio"
tokio_ver="$(sed -n '/^name = "tokio"$/{n;s/^version = "\(.*\)"$/\1/p}' "$here/tokio/Cargo.lock")"
echo "built tokio: bench/peers/bin/seed-tokio ($("$rustc" --version | cut -d' ' -f1-2), tokio ${tokio_ver:-?})"

# --- Python -----------------------------------------------------------------
py=/usr/bin/python3
[[ -x $py ]] || fail "$py not found (apt package python3)"
"$py" -c 'import asyncio, concurrent.futures' 2>/dev/null || fail "$py cannot import asyncio/concurrent.futures"
echo "python: bench/peers/python/seed_asyncio.py, seed_pool.py ($("$py" -V 2>&1)), nothing to build"

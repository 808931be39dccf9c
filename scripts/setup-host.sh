#!/usr/bin/env bash
# Sets up this host for the tests and the demo (Debian 12, x86-64): installs
# the Debian packages of scripts/host-packages.txt that are missing (apt-get
# update first: a fresh machine's lists may be months old) and checks the
# Rust toolchain. When everything is there it only checks (dpkg-query), in
# well under a second. scripts/test.sh, scripts/demo.sh, scripts/bench.sh
# and .ci/run call it.
#   scripts/setup-host.sh [--bench] [--check] [--list]
#     --bench   also the benchmarks' packages
#     --check   install nothing: name what is missing, exit 1 if anything is
#     --list    print the package names, one a line, and exit
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sets="all"
check=0
list=0
for a in "$@"; do
    case "$a" in
        --bench) sets="all bench" ;;
        --check) check=1 ;;
        --list) list=1 ;;
        -h | --help)
            sed -n '2,12s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            echo "setup-host: unknown option '$a' (see --help)" >&2
            exit 2
            ;;
    esac
done

say() { echo "setup-host: $*" >&2; }
fail() {
    say "error: $*"
    exit 1
}

packages=()
while read -r name set _; do
    case "$name" in '' | '#'*) continue ;; esac
    for s in $sets; do
        [ "$set" = "$s" ] && packages+=("$name")
    done
done <"$root/scripts/host-packages.txt"
if [ "$list" = 1 ]; then
    printf '%s\n' "${packages[@]}"
    exit 0
fi

command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
    fail "this is not a Debian system (no dpkg-query or apt-get); dmvx's scripts need Debian 12 (bookworm)"

# Installed means dpkg's status "install ok installed" (ii); anything else
# (not installed, removed with its configuration left, half-installed) is missing.
not_installed() {
    local ok
    ok=" $(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "$@" 2>/dev/null | sed -n 's/^ii  *//p' | tr '\n' ' ' || true) "
    for p in "$@"; do
        [[ "$ok" == *" $p "* ]] || echo "$p"
    done
}
mapfile -t missing < <(not_installed "${packages[@]}")

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$check" = 1 ]; then
        say "missing Debian packages: ${missing[*]}"
        say "install them with: scripts/setup-host.sh (as root), or apt-get install ${missing[*]}"
        exit 1
    fi
    [ "$(id -u)" = 0 ] || fail "missing Debian packages: ${missing[*]}; run scripts/setup-host.sh as root (it installs them), or: sudo apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    say "installing ${missing[*]} (apt-get update first)"
    # Another apt run may hold the locks for a while: wait for it.
    apt-get update -q -o DPkg::Lock::Timeout=300 >&2 ||
        fail "apt-get update failed (see above): check the network and /etc/apt/sources.list*"
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >&2 ||
        fail "apt-get install ${missing[*]} failed (see above): check the network, /etc/apt/sources.list*, and that this is Debian 12"
    mapfile -t still < <(not_installed "${missing[@]}")
    [ ${#still[@]} -eq 0 ] || fail "apt-get install finished, but these are still not installed: ${still[*]}"
    say "installed ${missing[*]}"
fi

# Rust: the workspace's rust-version (Debian 12's own rustc is too old).
want="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$root/Cargo.toml")"
command -v cargo >/dev/null ||
    fail "cargo is missing: install Rust $want or later (rustup, https://rustup.rs); Debian 12's rustc is too old"
have="$(cargo --version | sed -n 's/^cargo \([0-9][0-9.]*\).*/\1/p')"
if [ -n "$want" ] && [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
    fail "cargo $have is older than the workspace's rust-version $want: update Rust (rustup update)"
fi
say "ok: ${#packages[@]} Debian packages present$([ ${#missing[@]} -gt 0 ] && echo " (${#missing[@]} just installed)"), cargo $have"

#!/usr/bin/env bash
# The dmvx demo on this machine: sets up what it needs (Debian packages
# through scripts/setup-host.sh, a release build, the lighttpd image), then
# runs real Debian programs as two variants, each in its own KVM microVM,
# joined by the authenticated link, shows a divergence being stopped, and a
# real ROP exploit stopped by diversity. Runs as root.
#   scripts/demo.sh [--setup-only]     --setup-only: set up, run nothing
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
setup_only=0
case "${1:-}" in
    "") ;;
    --setup-only) setup_only=1 ;;
    *)
        echo "usage: scripts/demo.sh [--setup-only]" >&2
        exit 2
        ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "demo: run as root (it installs Debian packages, and building the Debian image needs root)" >&2
    exit 1
fi
scripts/setup-host.sh || {
    echo "demo: setting up the host failed (see above)" >&2
    exit 1
}
if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "demo: /dev/kvm is missing or not accessible; dmvx needs KVM (load kvm_intel or kvm_amd, or run on a machine with nested virtualisation)" >&2
    exit 1
fi
cargo build --release --workspace --locked -q
images/build-rootfs.sh lighttpd >/dev/null
[ "$setup_only" = 1 ] && exit 0
vmm="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/dmvx-vmm"
work="$(mktemp -d /tmp/dmvx-demo.XXXXXX)"
# The VMMs run jailed as uid/gid 65534 (docs/security.md): their report
# directories must be theirs to write.
chown 65534:65534 "$work"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== 1. Debian's busybox as 2 variants (every system call trapped, compared, the output released once):"
"$vmm" --variants 2 --stats -- /bin/busybox sha256sum /etc/os-release
echo "   natively:"
/bin/busybox sha256sum /etc/os-release

echo
echo "== 2. lighttpd from Debian packages as 2 variants; only the leader's answers reach the client"
image=images/out/rootfs-lighttpd
port=18080
"$vmm" --variants 2 --report-dir "$work" --rootfs "$image" \
    --env DMVX_HTTP_ADDR=127.0.0.1 --env DMVX_HTTP_PORT=$port \
    -- /usr/sbin/lighttpd -D -f /etc/lighttpd/lighttpd-env.conf 2>"$work/server.err" &
server=$!
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
done
curl -s -D - -o "$work/4k.bin" "http://127.0.0.1:$port/4k.bin" | sed 's/^/   /'
cmp "$work/4k.bin" "$image/srv/www/4k.bin" && echo "   body identical to the image's /srv/www/4k.bin"
echo "   wrk -t1 -c10 -d5s:"
wrk -t1 -c10 -d5s "http://127.0.0.1:$port/4k.bin" | sed 's/^/   /'
# Let the server close wrk's connections before stopping it.
for _ in $(seq 100); do
    [ -z "$(ss -Htn state established "( sport = :$port )")" ] && break
    sleep 0.1
done
kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
echo "   SIGTERM: both variants stopped, status $status, $(ls "$work"/dmvx-divergence-* 2>/dev/null | wc -l) divergence reports"

echo
echo "== 3. A program that prints an address (as a leak or an exploit would) diverges:"
gcc -O2 -static -o "$work/divergent" tests/programs/divergent.c
status=0
"$vmm" --variants 2 --report-dir "$work" -- "$work/divergent" address || status=$?
echo "   exit status $status (121: the variants diverged); the address never left the VMM."
python3 - "$work"/dmvx-divergence-variant0.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("   report: kind=%s seq=%s variant=%s policy=%s/%s" % (
    r["kind"], r["seq"], r["variant"], r["policy"]["class"], r["policy"]["check"]))
print("   " + r["message"])
PY

echo
echo "== 4. Two variants started as an operator starts them on two hosts: a key pair each, one cluster file"
"$vmm" keygen "$work/a.key" 2>/dev/null | sed 's/^/   variant 0: /'
"$vmm" keygen "$work/b.key" 2>/dev/null | sed 's/^/   variant 1: /'
cluster() { # leader port, variant 1's public key
    cat <<TOML
[cluster]
name = "demo"
[[variant]]
id = 0
address = "127.0.0.1:$1"
role = "leader"
public_key = "$(cat "$work/a.key.pub")"
private_key_file = "$work/a.key"
[[variant]]
id = 1
address = "127.0.0.1:0"
role = "follower"
public_key = "$2"
private_key_file = "$work/b.key"
TOML
}
cluster 17700 "$(cat "$work/b.key.pub")" >"$work/cluster.toml"
joined=(/bin/busybox echo "   both variants joined, each with its own key, and agreed")
"$vmm" --cluster "$work/cluster.toml" --variant 1 --report-dir "$work" -- "${joined[@]}" &
"$vmm" --cluster "$work/cluster.toml" --variant 0 --report-dir "$work" -- "${joined[@]}"
wait
echo "   a follower whose key the leader's file does not list is refused:"
"$vmm" keygen "$work/c.key" >/dev/null 2>&1
cluster 17701 "$(cat "$work/b.key.pub")" >"$work/leader.toml"
cluster 17701 "$(cat "$work/c.key.pub")" | sed "s|$work/b.key|$work/c.key|" >"$work/stranger.toml"
"$vmm" --cluster "$work/stranger.toml" --variant 1 -- /bin/busybox true 2>&1 | sed 's/^/   stranger: /' &
"$vmm" --cluster "$work/leader.toml" --variant 0 -- /bin/busybox true 2>&1 | sed 's/^/   leader:   /' || true
wait
echo "== 5. A real exploit: a stack overflow in a PIE server (tests/programs/vulnserver.c), a ROP chain"
echo "   through its libc (gadgets found by tests/exploit/rop.py) that opens a secret file and sends it back."
gcc -O1 -fPIE -pie -fno-stack-protector -o "$work/vulnserver" tests/programs/vulnserver.c
echo "dmvx-demo-secret-$RANDOM$RANDOM" >"$work/secret"
exploit() { python3 tests/exploit/rop.py --port "$1" --secret "$work/secret" "${@:2}" 2>/dev/null | tr -d '\0' | grep -av '^ok$' | head -n1 | tr -cd '[:print:]' || true; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
echo "   a) natively, ASLR off (setarch -R: the attacker knows the layout):"
setarch -R "$work/vulnserver" 18181 >/dev/null & server=$!
wait_port 18181
echo "      attacker got: $(exploit 18181 --maps-of "$server")"
wait "$server" 2>/dev/null || true; server=""
echo "   b) under dmvx, the chain built from a --trace run of one variant, against a later run:"
"$vmm" --trace -- "$work/vulnserver" 18182 >/dev/null 2>"$work/trace.log" & server=$!
wait_port 18182
kill "$server"; wait "$server" 2>/dev/null || true; server=""
"$vmm" -- "$work/vulnserver" 18183 >/dev/null 2>"$work/later.err" & server=$!
wait_port 18183
echo "      attacker got: '$(exploit 18183 --trace "$work/trace.log")'"
wait "$server" 2>/dev/null || true; server=""
echo "      $(tail -1 "$work/later.err")"
echo "   c) 2 variants, the leader's layout known exactly (its --layout-seed is the traced run's):"
seed=$(sed -n 's/^dmvx: layout of variant 0 (seed \([0-9a-fx]*\),.*/\1/p' "$work/trace.log")
mkdir -p "$work/rop"
chown 65534:65534 "$work/rop"
"$vmm" --variants 2 --layout-seed "$seed" --report-dir "$work/rop" -- "$work/vulnserver" 18184 >/dev/null 2>"$work/mvx.err" & server=$!
wait_port 18184
echo "      attacker got: '$(exploit 18184 --trace "$work/trace.log")'"
status=0
wait "$server" 2>/dev/null || status=$?
server=""
echo "      exit status $status; $(grep -m1 'every variant stopped' "$work/mvx.err" | sed 's/^dmvx: //')"

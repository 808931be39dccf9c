#!/usr/bin/env python3
"""dmvx benchmarks, in one run on this machine (run through scripts/bench.sh).

Measures, each figure against a baseline measured in the same run:
  1. servers: lighttpd and nginx serving a 4 KiB file to wrk -t1 -c10 (req/s,
     p50, p99) natively, under strace -f, under gVisor's runsc on its ptrace
     platform (the peer; skipped, saying why, when runsc is missing or does
     not start), in dmvx as 1 variant, and as 2
     variants under the strict and the dmvx policy with 0, 0.1 and 1 ms added
     between the variants' hosts (network namespaces; the client reaches the
     leader's host without added delay);
  2. per-call costs (getppid, a 512-byte and a 4 KiB read of an image file,
     sched_yield, a lockstep call) at each delay, against the bare exit round
     trip, and natively and under runsc;
  3. scaling: 2, 3 and 4 variants under dmvx at 0.1 ms;
  4. startup (launch to first guest instruction) and VMM memory.
Writes OUT/benchmarks.md and OUT/benchmarks.png.
"""

import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "target/release/dmvx-vmm")
RELAY = os.path.join(ROOT, "target/release/dmvx-netdelay")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PORT = 8080
CLUSTER_PORT = 7700
DELAYS_US = (0, 100, 1000)
# The peer: gVisor's runsc on its ptrace platform, rootless, host network
# (its KVM platform hangs on nested PVM hosts), no cgroups (a network
# namespace of `ip netns exec` has a sysfs without them); `-root DIR` is the root.
RUNSC = ["runsc", "--rootless", "--network=host", "--platform=ptrace", "--ignore-cgroups", "do", "-quiet"]


def runsc_problem(work):
    """None if runsc runs a program here, else why it does not."""
    if shutil.which("runsc") is None:
        return "runsc is not installed (Debian package runsc: scripts/setup-host.sh --bench)"
    try:
        r = subprocess.run(RUNSC + [os.path.join(work, "percall"), "getppid", "10"], env={"PATH": GUEST_PATH},
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "runsc did not finish a trial run in 60 s"
    if r.returncode != 0 or not re.fullmatch(r"[\d.]+\s*", r.stdout):
        last = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
        return "runsc did not start: " + last
    return None


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def netem_available():
    ns = "dmvxb-probe-%d" % os.getpid()
    sh("ip", "netns", "add", ns)
    try:
        return sh("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "100us",
                  check=False).returncode == 0
    finally:
        sh("ip", "netns", "del", ns, check=False)


class Hosts:
    """n network-namespace hosts on a bridge in host 0; delay_us added each
    way between host 0 and every other host (netem, or dmvx-netdelay relays
    between each follower and the leader where the kernel has no netem)."""

    count = 0

    def __init__(self, n, delay_us, netem):
        Hosts.count += 1
        tag = "%d%d" % (os.getpid() % 10000, Hosts.count)
        self.names = ["dmvxb%s-%d" % (tag, i) for i in range(n)]
        self.addrs = ["10.234.0.%d" % (i + 1) for i in range(n)]
        self.delay_us, self.netem, self.relays = delay_us, netem, []
        for name in self.names:
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        h0 = self.names[0]
        sh("ip", "-n", h0, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", h0, "addr", "add", "10.234.0.1/24", "dev", "br0")
        sh("ip", "-n", h0, "link", "set", "br0", "up")
        for i in range(1, n):
            a, b = "dvb%sa%d" % (tag, i), "dvb%sb%d" % (tag, i)
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "netns", h0)
            sh("ip", "link", "set", b, "netns", self.names[i])
            sh("ip", "-n", h0, "link", "set", a, "master", "br0", "up")
            sh("ip", "-n", self.names[i], "addr", "add", self.addrs[i] + "/24", "dev", b)
            sh("ip", "-n", self.names[i], "link", "set", b, "up")
            if netem and delay_us:
                d = "%dus" % delay_us
                sh("tc", "-n", self.names[i], "qdisc", "add", "dev", b, "root", "netem", "delay", d)
                sh("tc", "-n", h0, "qdisc", "add", "dev", a, "root", "netem", "delay", d)

    def run(self, i, argv):
        return ["ip", "netns", "exec", self.names[i]] + list(argv)

    def leader_address(self, i):
        direct = "%s:%d" % (self.addrs[0], CLUSTER_PORT)
        if i == 0 or self.netem or not self.delay_us:
            return direct
        local = "127.0.0.1:%d" % (CLUSTER_PORT + 100 + i)
        p = subprocess.Popen(self.run(i, [RELAY, local, direct, str(self.delay_us)]),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        p.stdout.readline()
        self.relays.append(p)
        return local

    def close(self):
        for p in self.relays:
            p.kill()
            p.wait()
        for name in self.names:
            sh("ip", "netns", "del", name, check=False)


class Cluster:
    """n dmvx variants of argv, one per host, as an operator starts them."""

    def __init__(self, hosts, n, policy, vmm_args, work, stdout=subprocess.DEVNULL):
        self.procs = []
        # One key pair per variant, as an operator makes them.
        keys = []
        for j in range(n):
            key = os.path.join(work, "variant-%d.key" % j)
            sh(VMM, "keygen", key)
            with open(key + ".pub") as f:
                keys.append((key, f.read().strip()))
        for i in reversed(range(n)):
            leader = "%s:%d" % (hosts.addrs[0], CLUSTER_PORT) if i == 0 else hosts.leader_address(i)
            text = '[cluster]\nname = "bench"\ntimeout_ms = 20000\n\n'
            text += '[policy]\npreset = "%s"\n\n' % policy
            for j in range(n):
                role = "leader" if j == 0 else "follower"
                addr = leader if j == 0 else "%s:%d" % (hosts.addrs[j], CLUSTER_PORT)
                text += '[[variant]]\nid = %d\naddress = "%s"\nrole = "%s"\npublic_key = "%s"\nprivate_key_file = "%s"\n\n' % (
                    j, addr, role, keys[j][1], keys[j][0])
            path = os.path.join(work, "cluster-%d.toml" % i)
            with open(path, "w") as f:
                f.write(text)
            argv = [VMM, "--cluster", path, "--variant", str(i), "--report-dir", work] + vmm_args
            self.procs.append(subprocess.Popen(hosts.run(i, argv), stdin=subprocess.DEVNULL,
                                               stdout=stdout if i == 0 else subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True))
        self.procs.reverse()

    def leader(self):
        return self.procs[0]

    def wait(self, timeout):
        out = []
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            out.append(p.returncode)
        return out

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# ------------------------------------------------------------------ servers

def server_argv(pkg):
    if pkg == "lighttpd":
        return ["/usr/sbin/lighttpd", "-D", "-f", "/etc/lighttpd/lighttpd-env.conf"], \
            {"DMVX_HTTP_ADDR": "127.0.0.1", "DMVX_HTTP_PORT": str(PORT)}
    return ["/usr/sbin/nginx", "-g", "daemon off; master_process off;"], {}


def vmm_server_args(pkg, image):
    argv, env = server_argv(pkg)
    args = ["--rootfs", image]
    for k, v in env.items():
        args += ["--env", "%s=%s" % (k, v)]
    return args + ["--"] + argv


def cpu_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def unit_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]


def proc_cpu_us(pid):
    """CPU time (user + system, all threads) of a process so far; of every
    process in group -pid for a negative pid."""
    total = 0.0
    for d in ([str(pid)] if pid > 0 else [x for x in os.listdir("/proc") if x.isdigit()]):
        try:
            with open("/proc/%s/stat" % d) as f:
                v = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pid < 0 and int(v[2]) != -pid:
            continue
        total += (int(v[11]) + int(v[12])) * 1e6 / os.sysconf("SC_CLK_TCK")
    return total


def wrk(hosts, seconds, pids, conns=10):
    url = "http://127.0.0.1:%d/4k.bin" % PORT
    b0, t0 = cpu_busy()
    c0 = [proc_cpu_us(p) for p in pids]
    r = sh(*hosts.run(0, ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", url]))
    c1 = [proc_cpu_us(p) for p in pids]
    b1, t1 = cpu_busy()
    out = r.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = "Socket errors" in out or "Non-2xx" in out
    error_text = "; ".join(l.strip() for l in out.splitlines() if "Socket errors" in l or "Non-2xx" in l)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    # CPU microseconds per request of the server (or leader) and of each follower.
    per_req = [(b - a) / max(1, total) for a, b in zip(c0, c1)]
    return {"rps": rps, "p50": unit_ms(lat["50"]), "p99": unit_ms(lat["99"]), "errors": errors,
            "error_text": error_text,
            "cpu": 100.0 * (b1 - b0) / max(1, t1 - t0), "per_req": per_req, "raw": out}


def wait_serving(hosts, procs, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        if sh(*hosts.run(0, ["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d/" % PORT]),
              check=False).returncode == 0:
            return
        for p in procs:
            if p.poll() is not None:
                err = p.stderr.read() if p.stderr else ""
                raise RuntimeError("%s ended before serving (%s): %s" % (what, p.returncode, err))
        time.sleep(0.1)
    raise RuntimeError("%s never served" % what)


def wait_closed(hosts):
    deadline = time.time() + 30
    while time.time() < deadline:
        r = sh(*hosts.run(0, ["ss", "-Htn", "state", "established", "state", "close-wait",
                              "( sport = :%d )" % PORT]), check=False)
        if not r.stdout.strip():
            return
        time.sleep(0.05)


def bench_server(pkg, image, config, seconds, netem, work):
    """config: ("native",) ("strace",) ("runsc",) ("dmvx", n, policy, delay_us[, wrk connections])."""
    kind = config[0]
    cluster = None
    n = config[1] if kind == "dmvx" else 1
    delay = config[3] if kind == "dmvx" else 0
    hosts = Hosts(n, delay, netem)
    procs = []
    try:
        if kind in ("native", "strace", "runsc"):
            argv, env = server_argv(pkg)
            # As dmvx-vmm's jail identity, which owns the image's writable dirs.
            cmd = ["chroot", "--userspec=65534:65534", image] + argv
            if kind == "runsc":
                # Root inside its sandbox, writes to a tmpfs over the image.
                cmd = RUNSC + ["-root", image] + argv
            if kind == "strace":
                cmd = ["strace", "-f", "-o", "/dev/null"] + cmd
            e = {"PATH": GUEST_PATH}
            e.update(env)
            # Its own process group: strace and the server it traces get
            # the SIGTERM together, and both count as the server's CPU.
            procs = [subprocess.Popen(hosts.run(0, cmd), env=e, stdin=subprocess.DEVNULL, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
        else:
            d = tempfile.mkdtemp(dir=work)
            cluster = Cluster(hosts, n, config[2], vmm_server_args(pkg, image), d)
            procs = cluster.procs
        wait_serving(hosts, procs, "%s %s" % (pkg, config))
        conns = config[4] if len(config) > 4 else 10
        r = wrk(hosts, seconds, [p.pid for p in procs] if cluster else [-procs[0].pid], conns)
        if kind == "runsc":
            # Its sandbox and gofer leave the process group: CPU not counted.
            r["per_req"] = [None]
        wait_closed(hosts)
        if cluster:
            procs[0].send_signal(signal.SIGTERM)
        else:
            os.killpg(procs[0].pid, signal.SIGTERM)
        statuses = []
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            statuses.append(p.returncode)
        if cluster:
            reports = [f for f in os.listdir(d) if f.startswith("dmvx-divergence")]
            if reports:
                r["errors"] = True
                log("%s %s: DIVERGED: %s" % (pkg, config, reports))
        if any(s not in (0, -signal.SIGTERM) for s in statuses):
            log("%s %s: exit statuses %s" % (pkg, config, statuses))
        return r
    finally:
        for p in procs:
            if p.poll() is None:
                if cluster is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.kill()
                p.wait()
        hosts.close()


# ------------------------------------------------------------------ per call

CALLS = [
    ("getppid", "getppid (relaxed, answered by the VMM)"),
    ("read512", "512-byte read of an image file (local)"),
    ("read4k", "4 KiB read of an image file (local)"),
    ("yield", "sched_yield"),
    ("lockstep", "unlink of a missing file (lockstep, replicated)"),
]


def percall_n(call, policy, delay_us, quick):
    # Calls that wait for a round trip get fewer iterations as it grows.
    if call == "lockstep" or policy == "strict":
        n = {0: 2000, 100: 1000, 1000: 200}.get(delay_us, 2000)
    else:
        n = 20000
    return max(50, n // 10) if quick else n


def percall_root(work):
    root = os.path.join(work, "percall-root")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "tmp"))
    os.makedirs(os.path.join(root, "data"))
    shutil.copy(os.path.join(work, "percall"), os.path.join(root, "bin/percall"))
    with open(os.path.join(root, "data/file"), "wb") as f:
        f.write(bytes(range(256)) * 64)
    return root


def percall_args(call, n):
    return ["/bin/percall", call, str(n)] + (["/data/file"] if call.startswith("read") else [])


def run_percall_mvx(root, call, n, policy, delay, netem, work):
    hosts = Hosts(2, delay, netem)
    try:
        d = tempfile.mkdtemp(dir=work)
        c = Cluster(hosts, 2, policy, ["--rootfs", root, "--"] + percall_args(call, n), d, stdout=subprocess.PIPE)
        out = c.leader().stdout.read()
        st = c.wait(120)
        if st != [0, 0]:
            raise RuntimeError("percall %s %s at %d us: statuses %s: %s" % (call, policy, delay, st,
                                                                          c.procs[0].stderr.read()))
        return float(out.strip())
    finally:
        hosts.close()


def median_of(k, f):
    return statistics.median(f() for _ in range(k))


# ------------------------------------------------------------------ main

def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        mem = "%.0f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    virt = "nested KVM" if os.path.exists("/sys/module/kvm_intel/parameters/nested") or \
        "hypervisor" in open("/proc/cpuinfo").read() else "KVM"
    return "%s, %d CPUs, %s RAM, Linux %s (%s)" % (cpu, os.cpu_count(), mem, os.uname().release, virt)


def fmt_ratio(x):
    return "%.2f" % x if x < 10 else "%.1f" % x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--seconds", type=int, default=10, help="wrk duration (default 10)")
    ap.add_argument("--quick", action="store_true", help="short runs: checks the script, not the figures")
    ap.add_argument("--work", required=True, help="scratch directory (with the compiled helpers)")
    ap.add_argument("--images", required=True, help="directory holding rootfs-lighttpd and rootfs-nginx")
    a = ap.parse_args()
    seconds = 2 if a.quick else a.seconds
    netem = netem_available()
    how = "tc netem" if netem else "dmvx-netdelay, a delaying TCP relay between each follower and the leader " \
        "(this kernel has no netem: CONFIG_NET_SCH_NETEM is off)"
    log("delay added by " + how)
    started = datetime.datetime.now(datetime.timezone.utc)
    work = a.work

    # 1. servers
    runsc_skip = runsc_problem(work)
    if runsc_skip:
        log("runsc rows skipped: " + runsc_skip)
    configs = [("native",), ("strace",)] + ([] if runsc_skip else [("runsc",)]) + [("dmvx", 1, "dmvx", 0)]
    for policy in ("strict", "dmvx"):
        for d in DELAYS_US:
            configs.append(("dmvx", 2, policy, d))
    scaling = [("dmvx", n, "dmvx", 100) for n in (3, 4)]
    # With more requests in flight: is the 0.1 ms loss latency or CPU?
    deep = [("dmvx", 1, "dmvx", 0, 40), ("dmvx", 2, "dmvx", 100, 40)]
    servers = {}
    for pkg in ("lighttpd", "nginx"):
        image = os.path.join(a.images, "rootfs-" + pkg)
        for c in configs + scaling + (deep if pkg == "lighttpd" else []):
            log("%s %s ..." % (pkg, c))
            r = bench_server(pkg, image, c, seconds, netem, work)
            servers[(pkg, c)] = r
            log("  %.0f req/s, p50 %.2f ms, p99 %.2f ms, CPU %.0f%%%s" % (
                r["rps"], r["p50"], r["p99"], r["cpu"], ", ERRORS" if r["errors"] else ""))
            for line in r["raw"].splitlines():
                if "errors" in line or "Non-2xx" in line:
                    log("  wrk: " + line.strip())

    # 2. per-call costs
    reps = 1 if a.quick else 3
    floor_n = 2000 if a.quick else 20000
    floor = median_of(reps, lambda: float(sh(VMM, "--bench-exit-loop", str(floor_n), "--bench-cpl", "3").stdout))
    root = percall_root(work)
    percall = {}
    for call, _ in CALLS:
        n = percall_n(call, "dmvx", 0, a.quick)
        percall[(call, "native")] = median_of(reps, lambda: float(sh(
            "chroot", root, *percall_args(call, n * 10)).stdout))
        if not runsc_skip:
            percall[(call, "runsc")] = median_of(reps, lambda: float(sh(
                *RUNSC, "-root", root, *percall_args(call, n)).stdout))
        percall[(call, "1v")] = median_of(reps, lambda: float(sh(
            VMM, "--rootfs", root, "--", *percall_args(call, n)).stdout))
        for policy in ("dmvx", "strict"):
            for d in DELAYS_US:
                n = percall_n(call, policy, d, a.quick)
                percall[(call, policy, d)] = median_of(
                    reps, lambda: run_percall_mvx(root, call, n, policy, d, netem, work))
        log("per call %s: %s" % (call, {k[1:]: round(v) for k, v in percall.items() if k[0] == call}))

    # 4. startup and memory
    launch = statistics.median(float(re.search(r"first guest instruction ([\d.]+) ms", sh(
        os.path.join(work, "launch"), VMM, "--stats", "--", "/bin/busybox", "true").stderr).group(1))
        for _ in range(5 if a.quick else 21))
    mem1 = sh(VMM, "--stats", "--", "/bin/busybox", "true").stderr
    mem2 = sh(VMM, "--variants", "2", "--stats", "--", "/bin/busybox", "true").stderr
    over = lambda text: [int(x) for x in re.findall(r"VMM overhead (\d+) KiB", text)]
    startup = {"launch_ms": launch, "mem1": over(mem1)[0], "mem2": over(mem2)}
    t0 = time.time()
    sh(VMM, "--variants", "2", "--", "/bin/busybox", "true")
    startup["mvx2_true_ms"] = (time.time() - t0) * 1000
    t0 = time.time()
    sh(VMM, "--", "/bin/busybox", "true")
    startup["one_true_ms"] = (time.time() - t0) * 1000

    write_report(a.out, started, how, seconds, servers, configs, percall, floor, startup, a.quick, runsc_skip)
    plot(a.out, servers, configs, percall, floor)


def config_name(c):
    if c[0] == "native":
        return "native"
    if c[0] == "strace":
        return "native under `strace -f`"
    if c[0] == "runsc":
        return "gVisor `runsc --platform=ptrace`"
    if c[1] == 1:
        return "dmvx, 1 variant"
    return "dmvx, %d variants, `%s`, %s ms" % (c[1], c[2], ("%g" % (c[3] / 1000)))


def write_report(out, started, how, seconds, servers, configs, percall, floor, startup, quick, runsc_skip):
    L = []
    L.append("# dmvx benchmarks")
    L.append("")
    L.append("Generated by `scripts/bench.sh`%s on %s, %s." % (
        " --quick (short runs: NOT representative)" if quick else "", machine(),
        started.strftime("%Y-%m-%d %H:%M UTC")))
    L.append("Every figure is from this one run; ratios are against baselines measured in it.")
    L.append("Variants run on separate network-namespace hosts joined by veth; the delay between")
    L.append("them is added by %s. The client (`wrk -t1 -c10 -d%ds --latency`, 4 KiB file) reaches" % (how, seconds))
    L.append("the leader's host without added delay. All variants share this machine's CPUs.")
    if runsc_skip:
        L.append("The gVisor rows are missing: " + runsc_skip + ".")
    else:
        L.append("The peer, gVisor, is `%s -root IMAGE` (root in its sandbox, writes to a tmpfs" % " ".join(RUNSC))
        L.append("over the image; its KVM platform hangs on this nested host; its CPU per request is not counted).")
    L.append("")
    L.append("## 1. Servers")
    L.append("")
    for pkg in ("lighttpd", "nginx"):
        nat = servers[(pkg, ("native",))]["rps"]
        one = servers[(pkg, ("dmvx", 1, "dmvx", 0))]["rps"]
        L.append("### %s" % pkg)
        L.append("")
        L.append("| configuration | requests/s | vs native | vs dmvx 1 variant | p50 ms | p99 ms "
                 "| machine CPU busy | CPU us/request: server or leader | each follower |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        notes = []
        for c in configs:
            r = servers[(pkg, c)]
            if r["errors"]:
                notes.append("%s: wrk reported %s" % (config_name(c), r.get("error_text") or "errors"))
            L.append("| %s | %.0f%s | %s | %s | %.2f | %.2f | %.0f%% | %s | %s |" % (
                config_name(c), r["rps"], " (%d)" % len(notes) if r["errors"] else "", fmt_ratio(r["rps"] / nat),
                fmt_ratio(r["rps"] / one) if c[0] == "dmvx" else "", r["p50"], r["p99"], r["cpu"],
                "%.0f" % r["per_req"][0] if r["per_req"][0] is not None else "n/a",
                " ".join("%.0f" % x for x in r["per_req"][1:])))
        L.append("")
        for i, n in enumerate(notes):
            L.append("(%d) %s." % (i + 1, n))
        if notes:
            L.append("")
        row = []
        for d in DELAYS_US:
            s = servers[(pkg, ("dmvx", 2, "strict", d))]["rps"]
            m = servers[(pkg, ("dmvx", 2, "dmvx", d))]["rps"]
            row.append("%g ms: %s x" % (d / 1000, fmt_ratio(m / s)))
        L.append("`dmvx` policy against `strict`, 2 variants: " + "; ".join(row) + ".")
        if (pkg, ("runsc",)) in servers:
            L.append("dmvx, 1 variant, against gVisor: %s x." % fmt_ratio(one / servers[(pkg, ("runsc",))]["rps"]))
        L.append("")
    L.append("## 2. Per-call costs")
    L.append("")
    L.append("Microseconds per call, timed inside the program (the leader's clock); in brackets,")
    L.append("the ratio to the bare exit round trip of a guest that only exits (%.1f us, CPL3)." % (floor / 1000))
    L.append("")
    peer = not runsc_skip
    head = "| call | native |" + (" gVisor ptrace |" if peer else "") + " dmvx 1 variant |" + "".join(
        " 2 variants `%s`, %g ms |" % (p, d / 1000) for p in ("dmvx", "strict") for d in DELAYS_US)
    L.append(head)
    L.append("|---" * (3 + peer + 2 * len(DELAYS_US)) + "|")
    for call, desc in CALLS:
        cell = lambda ns: "%.2f (%s)" % (ns / 1000, fmt_ratio(ns / floor))
        nat = percall[(call, "native")]
        row = "| %s | %.3f |" % (desc, nat / 1000)
        if peer:
            row += " %.2f (%s x native) |" % (percall[(call, "runsc")] / 1000, fmt_ratio(percall[(call, "runsc")] / nat))
        row += " %s |" % cell(percall[(call, "1v")])
        for p in ("dmvx", "strict"):
            for d in DELAYS_US:
                row += " %s |" % cell(percall[(call, p, d)])
        L.append(row)
    L.append("")
    L.append("## 3. Scaling (`dmvx` policy, 0.1 ms)")
    L.append("")
    L.append("| variants | lighttpd req/s | vs 1 variant | nginx req/s | vs 1 variant |")
    L.append("|---:|---:|---:|---:|---:|")
    for n in (1, 2, 3, 4):
        cells = []
        for pkg in ("lighttpd", "nginx"):
            one = servers[(pkg, ("dmvx", 1, "dmvx", 0))]["rps"]
            r = servers[(pkg, ("dmvx", n, "dmvx", 100 if n > 1 else 0))]["rps"]
            cells += ["%.0f" % r, fmt_ratio(r / one)]
        L.append("| %d | %s |" % (n, " | ".join(cells)))
    L.append("")
    L.append("## 4. Startup and memory")
    L.append("")
    L.append("| measure | value |")
    L.append("|---|---:|")
    L.append("| launch to first guest instruction (median) | %.2f ms |" % startup["launch_ms"])
    L.append("| `busybox true`, 1 variant, whole run | %.1f ms |" % startup["one_true_ms"])
    L.append("| `busybox true`, 2 variants (`--variants 2`), whole run | %.1f ms (%s x) |" % (
        startup["mvx2_true_ms"], fmt_ratio(startup["mvx2_true_ms"] / startup["one_true_ms"])))
    L.append("| VMM resident memory beyond guest pages, 1 variant | %d KiB |" % startup["mem1"])
    L.append("| the same, each of 2 variants (link, I/O thread, buffers) | %s KiB |" % (
        " and ".join(str(x) for x in startup["mem2"])))
    L.append("")
    # A section written by hand from other runs (between its markers) stays.
    doc = os.path.join(out, "benchmarks.md")
    kept = open(doc).read() if os.path.exists(doc) else ""
    begin, end = "<!-- syscall-path:begin -->", "<!-- syscall-path:end -->"
    if begin in kept and end in kept:
        L.append(kept[kept.index(begin):kept.index(end) + len(end)])
        L.append("")
    L.append("## Targets")
    L.append("")
    for pkg in ("lighttpd", "nginx"):
        one = servers[(pkg, ("dmvx", 1, "dmvx", 0))]["rps"]
        two = servers[(pkg, ("dmvx", 2, "dmvx", 100))]["rps"]
        st1 = servers[(pkg, ("dmvx", 2, "strict", 1000))]["rps"]
        dm1 = servers[(pkg, ("dmvx", 2, "dmvx", 1000))]["rps"]
        r4 = servers[(pkg, ("dmvx", 4, "dmvx", 100))]["rps"]
        per = (1 - (r4 / two) ** (1 / 2)) * 100
        L.append("- %s: 2 variants at 0.1 ms lose %.1f%% against 1 variant (target <= 3%%): %s; "
                 "`dmvx` is %s x `strict` at 1 ms (target >= 5): %s; each variant beyond 2 costs %.1f%% "
                 "(target <= 2%%): %s." % (
                     pkg, (1 - two / one) * 100, "met" if two / one >= 0.97 else "missed",
                     fmt_ratio(dm1 / st1), "met" if dm1 / st1 >= 5 else "missed", per,
                     "met" if per <= 2 else "missed"))
    L.append("")
    L.append("## What limits the missed figures")
    L.append("")
    def cfg(pkg, n, delay):
        return servers[(pkg, ("dmvx", n, "dmvx", delay))]

    lt, l0, l1 = cfg("lighttpd", 1, 0), cfg("lighttpd", 2, 0), cfg("lighttpd", 2, 100)
    d1, d2 = servers[("lighttpd", ("dmvx", 1, "dmvx", 0, 40))], servers[("lighttpd", ("dmvx", 2, "dmvx", 100, 40))]
    per = lambda r, i: r["per_req"][i] if len(r["per_req"]) > i else 0.0
    L.append("- **All variants share this machine's %d CPUs.** One variant of lighttpd needs %.0f us of CPU "
             "per request, most of it the 4-5 VM exits a request makes (%.1f us each here, the bare exit "
             "above); two variants without added delay need %.0f + %.0f us and keep the machine %.0f%% busy, "
             "so they reach %.2f of one variant's throughput; each further variant takes its share of the "
             "same CPUs (section 3). The paper's variants each had a machine of their own."
             % (os.cpu_count(), per(lt, 0), floor / 1000, per(l0, 0), per(l0, 1), l0["cpu"],
                l0["rps"] / lt["rps"]))
    L.append("- **With added delay the run is bound by latency, not CPU**: at 0.1 ms the machine is only "
             "%.0f%% busy. wrk keeps 10 requests in flight and each response is held by the leader until "
             "the follower reached the same write and acknowledged it; the follower trails the leader by "
             "its own work on the shared CPUs (preempted about once per request), the relay's delay each "
             "way, and up to 200 us each of batching and acknowledgement delay. p50 latency goes from "
             "%.2f ms (1 variant) to %.2f ms, and with only 10 requests in flight throughput follows. "
             "With 40 connections (`wrk -c40`, same run) 2 variants at 0.1 ms reach %.0f req/s against "
             "%.0f for 1 variant (%.2f), the machine %.0f%% busy."
             % (l1["cpu"], lt["p50"], l1["p50"], d2["rps"], d1["rps"], d2["rps"] / d1["rps"], d2["cpu"]))
    proj = []
    for pkg in ("lighttpd", "nginx"):
        one, two = per(cfg(pkg, 1, 0), 0), per(cfg(pkg, 2, 0), 0)
        proj.append("%s %.0f us against %.0f us alone, a projected loss of %.0f%%"
                    % (pkg, two, one, max(0.0, 1 - one / two) * 100))
    L.append("- **With a CPU per variant** (separate hosts) the leader's own work per request decides "
             "throughput: measured here without added delay, %s. That is the engine's and the link's share "
             "(building and hashing records, sealing and writing batches from the vCPU thread itself, "
             "reading acknowledgements on the I/O thread), measured while the variants compete for the "
             "CPUs, so an upper bound. The remaining cost per request is the VM exits themselves."
             % "; ".join(proj))
    L.append("- **`strict`** waits for a round trip at every call, so its throughput falls with the delay; "
             "where wrk reports timeouts, lighttpd kept serving one keep-alive connection (its next "
             "request was always already there after the lockstep wait) until its 1000-request limit, "
             "starving the other connections for that long.")
    L.append("")
    L.append("![benchmarks](benchmarks.png)")
    L.append("")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "benchmarks.md"), "w") as f:
        f.write("\n".join(L))
    log("wrote " + os.path.join(out, "benchmarks.md"))


def plot(out, servers, configs, percall, floor):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6))
    names = [config_name(c).replace("`", "").replace("dmvx, 1 variant", "dmvx 1v")
             .replace("dmvx, 2 variants, ", "2v ").replace("native under ", "") for c in configs]
    x = range(len(configs))
    w = 0.4
    for k, pkg in enumerate(("lighttpd", "nginx")):
        ax1.bar([i + (k - 0.5) * w for i in x], [servers[(pkg, c)]["rps"] for c in configs], w, label=pkg)
    ax1.set_yscale("log")
    ax1.set_xticks(list(x))
    ax1.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
    ax1.set_ylabel("requests/s (log)")
    ax1.set_title("servers: wrk -t1 -c10, 4 KiB file")
    ax1.legend()
    cols = [("1 variant", "1v")] + [("%s %g ms" % (p, d / 1000), (p, d)) for p in ("dmvx", "strict") for d in DELAYS_US]
    x = range(len(cols))
    w = 0.8 / len(CALLS)
    for k, (call, _) in enumerate(CALLS):
        vals = [percall[(call, c[1])] if c[1] == "1v" else percall[(call,) + c[1]] for c in cols]
        ax2.bar([i + (k - len(CALLS) / 2 + 0.5) * w for i in x], [v / 1000 for v in vals], w, label=call)
    ax2.axhline(floor / 1000, color="black", linewidth=0.8, linestyle="--", label="bare exit")
    ax2.set_yscale("log")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels([c[0] for c in cols], rotation=40, ha="right", fontsize=8)
    ax2.set_ylabel("microseconds per call (log)")
    ax2.set_title("per-call cost, 2 variants unless noted")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "benchmarks.png"), dpi=100)
    log("wrote " + os.path.join(out, "benchmarks.png"))


if __name__ == "__main__":
    main()

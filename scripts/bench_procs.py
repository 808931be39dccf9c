#!/usr/bin/env python3
"""Process and thread benchmarks: fork+exit+wait, fork+execve+wait, a 3-stage
shell pipeline, thread create+join and a mutex ping-pong, per operation, natively, in 1 variant and in 2 variants
(`--variants 2` on this host), timed inside the program (scripts/bench/procs.c;
in 2 variants the leader's clock); and redis-server (threaded) under
redis-benchmark, requests per second. Each figure is the median of RUNS runs;
the ratios compare with native measured in the same run.

Writes its section into docs/benchmarks.md between its markers (appended the
first time); scripts/bench.sh runs it after scripts/bench.py.
  scripts/bench_procs.py [--runs K] [--quick] [--no-doc] [--vmm PATH]
"""
import argparse
import csv
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs/benchmarks.md")
BEGIN, END = "<!-- bench-procs:begin -->", "<!-- bench-procs:end -->"
# (mode, operations per run natively, in dmvx), what it is.
CASES = [
    ("fork", 400, 40, "fork, the child _exits, the parent waits"),
    ("spawn", 200, 20, "fork, the child execs /bin/true, the parent waits"),
    ("thread", 2000, 200, "pthread_create of a thread that returns, then pthread_join"),
    ("pingpong", 20000, 2000, "a contended mutex and condition variable hand-over between 2 threads (per hand-over pair)"),
    ("pipeline", 40, 5, "3-stage pipeline `sh -c 'echo x \\| cat \\| cat >/dev/null'`, started and waited for"),
]
# Arguments of dmvx-vmm (None: natively).
MODES = [("native", None), ("1 variant", []), ("2 variants", ["--variants", "2"])]


def once(vmm, mode_args, prog, case, n):
    argv = [prog, case, str(n)]
    if mode_args is not None:
        argv = [vmm] + mode_args + ["--"] + argv
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s: status %d: %s" % (" ".join(argv), r.returncode, r.stderr.strip()[-400:]))
    return float(r.stdout.strip().splitlines()[-1])


def measure(vmm, prog, runs, quick):
    res = {}
    for case, n_native, n_vmm, _ in CASES:
        for name, args in MODES:
            n = n_native if name == "native" else n_vmm
            if quick:
                n = max(2, n // 4)
            vals = [once(vmm, args, prog, case, n) for _ in range(runs)]
            res[(case, name)] = statistics.median(vals)
            print("bench-procs: %-8s %-10s %10.1f us (median of %d)" % (case, name, res[(case, name)], runs),
                  file=sys.stderr)
    return res


REDIS_TESTS = ["SET", "GET", "INCR", "LPUSH"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_once(vmm, mode_args, n):
    """Requests per second of each REDIS_TESTS under redis-benchmark (10 clients)."""
    port = free_port()
    argv = ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no"]
    if mode_args is not None:
        reports = tempfile.mkdtemp(prefix="bench-redis-")
        os.chmod(reports, 0o777)
        argv = [vmm] + mode_args + ["--report-dir", reports, "--"] + argv
    srv = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if time.time() > deadline or srv.poll() is not None:
                raise RuntimeError("redis-server did not start: %s" % srv.stderr.read().decode()[-400:])
            time.sleep(0.1)
        r = subprocess.run(["redis-benchmark", "-p", str(port), "-t", ",".join(t.lower() for t in REDIS_TESTS),
                            "-c", "10", "-n", str(n), "-q", "--csv"], capture_output=True, text=True, timeout=600)
        rows = {row["test"]: float(row["rps"]) for row in csv.DictReader(io.StringIO(r.stdout))}
        if r.returncode != 0 or any(t not in rows for t in REDIS_TESTS):
            raise RuntimeError("redis-benchmark failed: %s%s" % (r.stdout[-300:], r.stderr[-300:]))
        return rows
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def measure_redis(vmm, runs, quick):
    res = {}
    if not (shutil.which("redis-benchmark") and os.path.exists("/usr/bin/redis-server")):
        print("bench-procs: SKIPPED redis: redis-server or redis-benchmark is not installed", file=sys.stderr)
        return res
    n = 2000 if quick else 20000
    for name, args in MODES:
        vals = [redis_once(vmm, args, n) for _ in range(runs)]
        for t in REDIS_TESTS:
            res[(t, name)] = statistics.median(v[t] for v in vals)
            print("bench-procs: redis %-6s %-10s %10.0f requests/s" % (t, name, res[(t, name)]), file=sys.stderr)
    return res


def section(res, redis, runs):
    L = [BEGIN, "", "## 5. Processes and threads", "",
         "Microseconds per operation, timed inside the program (scripts/bench/procs.c; in 2 variants the "
         "leader's clock), median of %d runs measured on %s by `scripts/bench_procs.py`; in brackets the "
         "ratio to native in the same run. Every new process of a variant is a new microVM (the VMM forks "
         "on the host and the child builds a VM over the inherited memory), which the figures include. "
         "A variant's threads share its one vCPU and switch at system calls (docs/policy.md), so a "
         "contended hand-over costs the calls it makes (futex wait and wake) plus a switch: the "
         "serialisation's price, stated here."
         % (runs, time.strftime("%Y-%m-%d")), "",
         "| operation | native | dmvx 1 variant | dmvx 2 variants |", "|---|---:|---:|---:|"]
    for case, _, _, what in CASES:
        nat = res[(case, "native")]
        cells = ["%.1f" % nat] + ["%.1f (%.1f x)" % (res[(case, m)], res[(case, m)] / nat)
                                 for m in ("1 variant", "2 variants")]
        L.append("| %s | %s |" % (what, " | ".join(cells)))
    if redis:
        L += ["", "redis-server (Debian, with its background threads) under `redis-benchmark -c 10`, "
              "requests per second, median of %d runs; in brackets the ratio to native in the same run "
              "(client, variants and relays share this host's CPUs)." % runs, "",
              "| test | native | dmvx 1 variant | dmvx 2 variants |", "|---|---:|---:|---:|"]
        for t in REDIS_TESTS:
            nat = redis[(t, "native")]
            cells = ["%.0f" % nat] + ["%.0f (%.2f x)" % (redis[(t, m)], redis[(t, m)] / nat)
                                     for m in ("1 variant", "2 variants")]
            L.append("| %s | %s |" % (t, " | ".join(cells)))
    L += ["", END]
    return "\n".join(L)


def write_doc(text):
    doc = open(DOC).read() if os.path.exists(DOC) else ""
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    with open(DOC, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer operations per run")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--vmm", default=os.path.join(ROOT, "target/release/dmvx-vmm"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        # The jailed VMM runs as an unprivileged uid: the program must be reachable.
        os.chmod(d, 0o755)
        prog = os.path.join(d, "procs")
        subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", prog, os.path.join(ROOT, "scripts/bench/procs.c")], check=True)
        res = measure(a.vmm, prog, a.runs, a.quick)
    redis = measure_redis(a.vmm, a.runs, a.quick)
    text = section(res, redis, a.runs)
    print(text)
    if not a.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()

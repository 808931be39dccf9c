#!/usr/bin/env python3
"""Layout diversity, measured: the entropy of each base over many launches
and what randomisation costs at launch.

Launches tests/programs/addrs.c (PIE, dynamically linked; prints its
program, interpreter, mmap, stack and heap addresses) N times per variant
under dmvx-vmm, N times with --fixed-layout (the layout before per-run
randomisation) interleaved with the variant-0 runs, and N times natively
(Linux's ASLR, the baseline). For each base it reports bits of randomness,
log2 of the number of positions its values spanned (span / step, the step
being the gcd of their differences: 4 KiB for page-granular bases), and how
many of the N values were distinct (at most N: 1,000 launches can show
distinctness up to about 10 bits, the span shows the rest); and the launch time (wall clock
of one whole run of the program) with and without randomisation, as a ratio
of medians measured in the same run.

Writes the figures into docs/diversity.md between its markers.
   scripts/bench-layout.py [--launches N] [--variants 0,1] [--no-doc]
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "target/release/dmvx-vmm")
DOC = os.path.join(ROOT, "docs/diversity.md")
BEGIN, END = "<!-- bench-layout:begin -->", "<!-- bench-layout:end -->"
BASES = ["program", "interpreter", "mmap", "stack", "heap"]


def build():
    out = os.path.join(ROOT, "target/release/dmvx-bench-addrs")
    src = os.path.join(ROOT, "tests/programs/addrs.c")
    subprocess.run(["gcc", "-O1", "-fPIE", "-pie", "-o", out, src], check=True)
    return out


def launch(cmd):
    t = time.perf_counter()
    o = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    dt = time.perf_counter() - t
    if o.returncode != 0:
        raise SystemExit("bench-layout: %s failed (%d): %s" % (" ".join(cmd), o.returncode, o.stderr.decode()))
    vals = dict(kv.split("=") for kv in o.stdout.decode().split())
    return {k: int(vals[k], 16) for k in BASES}, dt


def entropy(samples, key):
    """log2 of the number of positions the values span (the span divided
    by the step, the gcd of their differences), and how many were distinct."""
    vals = [s[key] for s in samples]
    step = 0
    for v in vals:
        step = math.gcd(step, v - vals[0])
    if step == 0:
        return 0.0, 1, 0
    return math.log2((max(vals) - min(vals)) // step + 1), len(set(vals)), step


def cell(samples, key):
    bits, distinct, step = entropy(samples, key)
    if step == 0:
        return "0 (1)"
    return "%.1f (%d; %s)" % (bits, distinct, "%d KiB" % (step // 1024) if step >= 1024 else "%d B" % step)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--launches", type=int, default=1000)
    ap.add_argument("--variants", default="0,1")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/diversity.md alone")
    a = ap.parse_args()
    if not os.path.exists(VMM):
        raise SystemExit("bench-layout: build first: cargo build --release --workspace")
    prog = build()
    variants = [int(v) for v in a.variants.split(",")]
    runs = {("dmvx", v): [] for v in variants}
    runs[("fixed", 0)] = []
    runs[("native", None)] = []
    times = {"random": [], "fixed": []}
    for i in range(a.launches):
        # Random and fixed alternate (and swap order) so drift hits both alike.
        order = [("random", 0), ("fixed", 0)] if i % 2 == 0 else [("fixed", 0), ("random", 0)]
        for kind, v in order:
            opts = ["--fixed-layout"] if kind == "fixed" else []
            s, dt = launch([VMM, "--variant", str(v)] + opts + ["--", prog])
            times[kind].append(dt)
            runs[("dmvx" if kind == "random" else "fixed", 0)].append(s)
        for v in variants:
            if v != 0:
                runs[("dmvx", v)].append(launch([VMM, "--variant", str(v), "--", prog])[0])
        runs[("native", None)].append(launch([prog])[0])
        if (i + 1) % 100 == 0:
            print("bench-layout: %d/%d launches" % (i + 1, a.launches), file=sys.stderr)

    cols = [("dmvx", v) for v in variants] + [("fixed", 0), ("native", None)]
    head = ["dmvx variant %d" % v for v in variants] + ["dmvx --fixed-layout", "Linux (native ASLR)"]
    lines = [
        "Measured by `scripts/bench-layout.py` on %s: %d launches per column of"
        % (time.strftime("%Y-%m-%d"), a.launches),
        "tests/programs/addrs.c (PIE, dynamically linked). Each cell: bits of randomness",
        "(log2 of span / step over the launches), then how many values were distinct and the step.",
        "",
        "| base | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for key in BASES:
        lines.append("| %s | %s |" % (key, " | ".join(cell(runs[c], key) for c in cols)))
    med_r, med_f = statistics.median(times["random"]), statistics.median(times["fixed"])
    lines += [
        "",
        "Launch time (one whole run: VMM start, VM, loader, program, exit; median of %d each):" % a.launches,
        "randomised %.2f ms, fixed %.2f ms, ratio **%.3f**." % (med_r * 1e3, med_f * 1e3, med_r / med_f),
    ]
    # Variants stay disjoint: no address of one variant lies in another's span.
    spans = {}
    for v in variants:
        vals = [s[k] for s in runs[("dmvx", v)] for k in BASES]
        spans[v] = (min(vals), max(vals))
    overlap = [(x, y) for x in variants for y in variants if x < y
               and not (spans[x][1] < spans[y][0] or spans[y][1] < spans[x][0])]
    lines.append("")
    lines.append("Spans of every address seen per variant: " + ", ".join(
        "variant %d %#x-%#x" % (v, spans[v][0], spans[v][1]) for v in variants)
        + ("; disjoint." if not overlap else "; OVERLAP: %s" % overlap))
    text = "\n".join(lines)
    print(text)
    if not a.no_doc:
        doc = open(DOC).read()
        if BEGIN not in doc or END not in doc:
            raise SystemExit("bench-layout: %s lacks the markers %s ... %s" % (DOC, BEGIN, END))
        pre, rest = doc.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        open(DOC, "w").write(pre + BEGIN + "\n" + text + "\n" + END + post)
        print("bench-layout: wrote %s" % DOC, file=sys.stderr)
    if overlap:
        sys.exit(1)


if __name__ == "__main__":
    main()

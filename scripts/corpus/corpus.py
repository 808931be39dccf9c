#!/usr/bin/env python3
"""The workload corpus: real Debian programs run natively, in 1 variant and in
2 variants of dmvx, compared on stdout, exit status and the files they write.

    corpus.py [--fast] [--case GLOB]... [--modes 1,2] [--json FILE]
              [--markdown FILE] [--no-install] [--trace DIR] [--vmm PATH]

Cases are in cases.toml beside this script; the reviewed known failures (each
with its class, reason and owning issue) in known.toml. A case passes in a mode
when its stdout, exit status and compared files (or its `verify` command's
output) equal the native run's. The runner prints a table, then one line per
unexpected result, then `N passed, M failed` (failed = cases that fail in any
mode, known or not). Exit status: 0 when every result is as expected (passes,
or fails exactly as known.toml says), 1 otherwise, 2 for a setup error.

Cases with `root = "scratch"` run in a fresh writable root per mode: an
overlay mount whose lower layer is the host's / (so the program and its
libraries are there) and whose upper layer starts with /case (the case's work
directory, with its `inputs` copied in and its `setup` run natively), device
nodes and an empty /tmp. Native runs chroot into their own such overlay (with
/proc mounted). Scratch cases need root; without it they are reported as
skipped.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
WORKSPACE = os.path.dirname(os.path.dirname(HERE))
DEB_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MODES = ("native", "1", "2")
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}
EXIT_DIVERGED = 121
CLASSES = {
    "a": "processes and threads (fork/clone/vfork return ENOSYS; issues 11, 12)",
    "b": "a missing or wrong system call in the VMM",
    "c": "a false divergence or a wrong result in 2 variants (1 variant is right)",
    "d": "a true nondeterminism of the program",
}


class SetupError(Exception):
    pass


def note(msg):
    sys.stderr.write("corpus: %s\n" % msg)
    sys.stderr.flush()


def load_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SetupError("cannot read %s: %s" % (path, e))


CASE_KEYS = {"name", "cmd", "fast", "root", "packages", "stdin", "stdin_file", "env", "inputs", "setup",
             "files", "verify", "timeout", "server", "group", "normalize", "signal", "status", "helper", "note",
             "native_netns"}


def load_cases(path):
    doc = load_toml(path)
    cases, seen = [], set()
    for c in doc.get("case", []):
        unknown = set(c) - CASE_KEYS
        if unknown:
            raise SetupError("case %s: unknown keys %s" % (c.get("name"), sorted(unknown)))
        if c["name"] in seen:
            raise SetupError("case %s appears twice in cases.toml" % c["name"])
        seen.add(c["name"])
        if c.get("root", "host") not in ("host", "scratch"):
            raise SetupError("case %s: root must be host or scratch" % c["name"])
        cases.append(c)
    return doc, cases


def load_known(path, case_names):
    known = {}
    for k in load_toml(path).get("known", []):
        for key in ("case", "modes", "class", "issue", "reason"):
            if key not in k:
                raise SetupError("known.toml entry %s lacks %s" % (k.get("case"), key))
        if k["case"] not in case_names:
            raise SetupError("known.toml names case %s, which cases.toml does not have" % k["case"])
        if k["class"] not in CLASSES:
            raise SetupError("known.toml %s: class must be one of %s" % (k["case"], "".join(CLASSES)))
        known[k["case"]] = k
    return known


# ---------------------------------------------------------------- packages


def missing_packages(pkgs):
    missing = []
    for p in sorted(set(pkgs)):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, universal_newlines=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    return missing


def install(pkgs):
    missing = missing_packages(pkgs)
    if not missing:
        return
    if os.geteuid() != 0:
        raise SetupError("Debian packages missing and not root to install them: %s" % " ".join(missing))
    note("installing %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Services must not start at install (redis-server, lighttpd): policy-rc.d says no.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing, check=True,
                       env=env, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as e:
        raise SetupError("apt-get failed (%s) installing %s" % (e, " ".join(missing)))
    finally:
        if made_policy:
            os.unlink(policy)
    still = missing_packages(missing)
    if still:
        raise SetupError("still missing after apt-get install: %s" % " ".join(still))


# ---------------------------------------------------------------- data


def prepare_data(out, doc):
    """target/corpus/data: the fixtures, generated inputs and what prep makes."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    shutil.copytree(os.path.join(HERE, "data"), out, symlinks=True)
    gen_dir = os.path.join(out, "gen")
    os.makedirs(gen_dir, exist_ok=True)
    # Deterministic generated inputs (a linear congruential generator).
    x = 12345
    words = []
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu", "an", "el", "or", "is"]
    for _ in range(5000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        n = 1 + x % 4
        w = ""
        for _ in range(n):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            w += syll[x % len(syll)]
        words.append(w)
    with open(os.path.join(out, "words.txt"), "w") as f:
        for i in range(0, len(words), 8):
            f.write(" ".join(words[i:i + 8]) + "\n")
    with open(os.path.join(out, "numbers.txt"), "w") as f:
        for i in range(3000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            f.write("%d\n" % (x % 100000 - 50000))
    with open(os.path.join(out, "big.bin"), "wb") as f:
        h = hashlib.sha256(b"dmvx corpus")
        for _ in range(1 << 14):  # 512 KiB of pseudo-random bytes
            h = hashlib.sha256(h.digest())
            f.write(h.digest())
    with open(os.path.join(out, "big.json"), "w") as f:
        json.dump({"items": [{"id": i, "name": words[i % len(words)], "v": [i, 2 * i, 3 * i]}
                             for i in range(20000)]}, f)
    with open(os.path.join(out, "table.tsv"), "w") as f:
        for i in range(400):
            f.write("%s\t%d\t%d\n" % (words[i], i % 17, (i * 7919) % 1000))
    items = [{"id": i, "name": words[i], "tags": words[i + 1:i + 1 + i % 3], "score": (i * 37) % 101}
             for i in range(200)]
    with open(os.path.join(out, "items.json"), "w") as f:
        json.dump({"version": 3, "items": items}, f, indent=1)
        f.write("\n")
    # Tree for find/du/ls/tar: fixed mtimes so every listing is stable.
    tree = os.path.join(out, "tree")
    for i in range(40):
        d = os.path.join(tree, "d%d" % (i % 5), "s%d" % (i % 3))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%02d.txt" % i), "w") as f:
            f.write(" ".join(words[i * 10:i * 10 + 10 + i]) + "\n")
    os.symlink("d0/s0/f00.txt", os.path.join(tree, "link"))
    prep = os.path.join(HERE, "prep.sh")
    r = subprocess.run(["/bin/bash", prep], cwd=out, env=base_env({}), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        raise SetupError("prep.sh failed (%d):\n%s" % (r.returncode, r.stdout))
    for dirpath, dirnames, filenames in os.walk(out):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            os.utime(p, (1704067200, 1704067200), follow_symlinks=False)
    os.utime(out, (1704067200, 1704067200))


def base_env(extra):
    env = {"PATH": DEB_PATH}
    env.update(extra)
    return env


# ---------------------------------------------------------------- roots


# The host uid and gid dmvx-vmm runs as by default (its jail's).
JAIL_ID = 65534


class Scratch:
    """A fresh writable root: an overlay over the host's /."""

    def __init__(self, base, case, mode, data):
        self.dir = os.path.join(base, case["name"], mode)
        if os.path.exists(self.dir):
            force_rmtree(self.dir)
        self.upper = os.path.join(self.dir, "u")
        self.work = os.path.join(self.dir, "w")
        self.mnt = os.path.join(self.dir, "m")
        self.data = data
        self.mounted = []
        for d in (self.upper, self.work, self.mnt):
            os.makedirs(d)
        dev = os.path.join(self.upper, "dev")
        os.makedirs(dev)
        os.setxattr(dev, "trusted.overlay.opaque", b"y")
        for name, (ma, mi) in DEVICES.items():
            os.mknod(os.path.join(dev, name), 0o666 | stat.S_IFCHR, os.makedev(ma, mi))
            os.chmod(os.path.join(dev, name), 0o666)
        for d in ("tmp", "case", "root"):
            p = os.path.join(self.upper, d)
            os.makedirs(p)
            os.setxattr(p, "trusted.overlay.opaque", b"y")
        os.chmod(os.path.join(self.upper, "tmp"), 0o1777)
        self.case_dir = os.path.join(self.upper, "case")
        for src in case.get("inputs", []):
            s = os.path.join(data, src)
            dst = os.path.join(self.case_dir, os.path.basename(src.rstrip("/")))
            if os.path.isdir(s):
                shutil.copytree(s, dst, symlinks=True)
            else:
                shutil.copy2(s, dst)
        if case.get("setup"):
            r = subprocess.run(["/bin/bash", "-euc", case["setup"]], cwd=self.case_dir,
                               env=base_env(dict(case.get("env", {}), DATA=data)), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
            if r.returncode != 0:
                raise SetupError("case %s: setup failed (%d):\n%s" % (case["name"], r.returncode, r.stdout))
        # dmvx-vmm writes as its jail identity (nobody): the writable
        # directories must let it, as an operator gives a writable root to the
        # VMM's uid. They stay root's (the program, root inside, sees its own
        # files; git refuses a repository of another owner), writable by all,
        # natively too (the modes are compared).
        for d in ("case", "root"):
            for dirpath, dirnames, filenames in os.walk(os.path.join(self.upper, d)):
                for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
                    st = os.lstat(n)
                    if not stat.S_ISLNK(st.st_mode):
                        os.chmod(n, stat.S_IMODE(st.st_mode) | (0o777 if stat.S_ISDIR(st.st_mode) else 0o666))

    def mount(self, with_proc):
        opts = "lowerdir=/,upperdir=%s,workdir=%s" % (self.upper, self.work)
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, self.mnt], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        if r.returncode != 0:
            raise SetupError("overlay mount of %s failed: %s" % (self.mnt, r.stdout.strip()))
        self.mounted.append(self.mnt)
        # The root's /tmp is empty: a checkout under /tmp (a CI clone) keeps
        # its data where the cases name it, read-only.
        if os.path.realpath(self.data).startswith("/tmp/"):
            inside = os.path.join(self.mnt, os.path.realpath(self.data).lstrip("/"))
            os.makedirs(inside, exist_ok=True)
            subprocess.run(["mount", "--bind", "-o", "ro", self.data, inside], check=True)
            self.mounted.append(inside)
        if with_proc:
            proc = os.path.join(self.mnt, "proc")
            subprocess.run(["mount", "-t", "proc", "proc", proc], check=True)
            self.mounted.append(proc)

    def unmount(self):
        while self.mounted:
            m = self.mounted.pop()
            subprocess.run(["umount", m], check=False)


def force_rmtree(p):
    subprocess.run(["umount", "-R", os.path.join(p, "m")], stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(p, ignore_errors=True)


def tree_digest(top):
    """What a case wrote: paths, types, permission bits, sizes and contents."""
    lines = []
    if not os.path.isdir(top):
        return lines
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            mode = "%o" % stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                lines.append("%s l -> %s" % (rel, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                lines.append("%s d %s" % (rel, mode))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()[:16]
                lines.append("%s f %s %d %s" % (rel, mode, st.st_size, h))
            else:
                lines.append("%s ? %o" % (rel, st.st_mode))
    return lines


def selected_files(case_dir, patterns):
    lines = tree_digest(case_dir)
    if patterns == ["*"]:
        return lines
    return [ln for ln in lines if any(fnmatch.fnmatch(ln.split(" ")[0], p) for p in patterns)]


# ---------------------------------------------------------------- running


def resolve(prog, root="/"):
    if "/" in prog:
        return prog
    for d in DEB_PATH.split(":"):
        p = os.path.join(d, prog)
        if os.access(os.path.join(root, p.lstrip("/")), os.X_OK):
            return p
    raise SetupError("program %s is not in %s" % (prog, DEB_PATH))


def subst(s, ctx):
    for k, v in ctx.items():
        s = s.replace("{%s}" % k, str(v))
    return s


class Run:
    def __init__(self):
        self.status = None
        self.stdout = b""
        self.stderr = b""
        self.files = []
        self.verify = None
        self.timed_out = False
        self.report = None
        self.seconds = 0.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def isolated_network():
    """Moves this process into a network namespace of its own whose one
    interface, lo, is up: the network dmvx shows a program (its virtual
    netlink socket answers with lo alone). Run in the child before exec."""
    import ctypes
    import fcntl
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifr)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def spawn(argv, env, cwd, stdin_bytes, chroot=None, netns=False):
    """Starts argv in its own session; with `chroot`, inside that root at `cwd`
    (no shell in between: nothing else runs with the case's environment);
    with `netns`, in a network namespace of its own with lo up."""
    def enter():
        if netns:
            isolated_network()
        if chroot:
            os.chroot(chroot)
            os.chdir(cwd)

    p = subprocess.Popen(argv, cwd=None if chroot else cwd, env=env, preexec_fn=enter if chroot or netns else None,
                         stdin=subprocess.PIPE if stdin_bytes is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    return p


def communicate(p, stdin_bytes, timeout):
    try:
        out, err = p.communicate(stdin_bytes, timeout=timeout)
        return out, err, False
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        return out, err, True


def wait_port(port, proc, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Runner:
    def __init__(self, args):
        self.vmm = args.vmm
        self.data = os.path.join(args.out, "data")
        self.scratch = os.path.join(args.out, "scratch")
        self.reports = os.path.join(args.out, "reports")
        self.trace = args.trace
        self.keep = args.keep
        self.dump = args.dump

    def argv_for(self, case, mode, root, cwd, env, ctx, cmd):
        prog = resolve(subst(cmd[0], ctx), root or "/")
        rest = [subst(a, ctx) for a in cmd[1:]]
        if mode == "native":
            return [prog] + rest
        argv = [self.vmm]
        if mode == "2":
            rdir = os.path.join(self.reports, case["name"])
            shutil.rmtree(rdir, ignore_errors=True)
            os.makedirs(rdir)
            if os.geteuid() == 0:
                os.chown(rdir, JAIL_ID, JAIL_ID)  # the VMMs write it as their jail identity
            argv += ["--variants", "2", "--report-dir", rdir]
        if root:
            argv += ["--rootfs", root]
        argv += ["--cwd", cwd]
        if case.get("helper"):
            # A client of a native helper: the one destination it may reach.
            argv += ["--net", "allow=127.0.0.1:%d" % ctx["port"]]
        if self.trace and mode != "native":
            argv += ["--trace"]
        for k, v in env.items():
            argv += ["--env", "%s=%s" % (k, v)]
        return argv + ["--", prog] + rest

    def run(self, case, mode):
        r = Run()
        scratch = None
        root = None
        ctx = {"data": self.data}
        if case.get("server") or case.get("helper"):
            ctx["port"] = free_port()
        env = base_env({k: subst(v, ctx) for k, v in case.get("env", {}).items()})
        stdin = None
        if "stdin" in case:
            stdin = case["stdin"].encode()
        elif "stdin_file" in case:
            with open(os.path.join(self.data, case["stdin_file"]), "rb") as f:
                stdin = f.read()
        helper = None
        try:
            if case.get("helper"):
                # A native peer for a client under test (a server on {port}).
                helper = spawn([subst(a, ctx) for a in case["helper"]], base_env({}), self.data, None)
                if not wait_port(ctx["port"], helper, 20):
                    raise SetupError("case %s: its helper did not listen on %d" % (case["name"], ctx["port"]))
            if case.get("root", "host") == "scratch":
                scratch = Scratch(self.scratch, case, mode, self.data)
                scratch.mount(with_proc=(mode == "native"))
                root = scratch.mnt
                cwd = "/case"
            else:
                cwd = self.data
            host_cwd = self.data if root is None else root
            server = case.get("server")
            cmd = case["cmd"]
            argv = self.argv_for(case, mode, root, cwd, env, ctx, cmd)
            native_env = env if mode == "native" else dict(os.environ)
            t0 = time.time()
            chroot = root if mode == "native" else None
            netns = mode == "native" and case.get("native_netns", False)
            p = spawn(argv, native_env, cwd if chroot else host_cwd, stdin, chroot, netns)
            if server:
                self.drive_server(case, server, p, ctx, r)
            elif "signal" in case:
                # Sent to the process we started (the program, or dmvx-vmm,
                # which passes it on), as a user's kill would be.
                time.sleep(case["signal"].get("after", 1.0))
                os.kill(p.pid, getattr(signal, "SIG" + case["signal"]["sig"]))
                r.stdout, r.stderr, r.timed_out = communicate(p, stdin, case.get("timeout", 60))
                r.status = p.returncode
            else:
                r.stdout, r.stderr, r.timed_out = communicate(p, stdin, case.get("timeout", 60))
                r.status = p.returncode
            r.seconds = time.time() - t0
            if r.status is not None and r.status < 0:
                r.status = 128 - r.status  # killed by a signal: as a shell reports it
            for pattern, repl in case.get("normalize", []):
                r.stdout = re.sub(pattern.encode(), repl.encode(), r.stdout)
            if mode == "2" and r.status == EXIT_DIVERGED:
                r.report = read_report(os.path.join(self.reports, case["name"]))
            if scratch:
                scratch.unmount()
                if "files" in case:
                    r.files = selected_files(scratch.case_dir, case["files"])
                if "verify" in case:
                    # The files of a dmvx run belong to the jail's uid on the
                    # host: native git run as root would call the repository
                    # "dubious" and refuse to look at it.
                    venv = dict(env, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
                    v = subprocess.run(["/bin/bash", "-c", case["verify"]], cwd=scratch.case_dir, env=venv,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    r.verify = v.stdout + b"[status %d]" % v.returncode
        finally:
            if helper:
                kill_group(helper)
                helper.communicate()
            if scratch:
                scratch.unmount()
                if not self.keep:
                    force_rmtree(scratch.dir)
        if self.dump:
            os.makedirs(self.dump, exist_ok=True)
            for what, data in (("stdout", r.stdout), ("stderr", r.stderr), ("verify", r.verify or b""),
                               ("files", "\n".join(r.files).encode())):
                with open(os.path.join(self.dump, "%s.%s.%s" % (case["name"], mode, what)), "wb") as f:
                    f.write(data)
        if self.trace and mode != "native":
            os.makedirs(self.trace, exist_ok=True)
            with open(os.path.join(self.trace, "%s.%sv.trace" % (case["name"], mode)), "wb") as f:
                f.write(r.stderr)
        return r

    def drive_server(self, case, server, p, ctx, r):
        """Waits for the server's port, runs its clients natively, stops it."""
        up = wait_port(ctx["port"], p, server.get("ready_timeout", 20))
        out = b""
        if up:
            for client in server["clients"]:
                argv = [subst(a, ctx) for a in client]
                c = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=server.get("client_timeout", 30), env=base_env({}))
                out += b"$ %s\n" % " ".join(client).encode() + c.stdout + b"[status %d]\n" % c.returncode
        else:
            out = b"server did not listen\n"
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        _, err, r.timed_out = communicate(p, None, 10)
        r.stderr = err
        r.stdout = out
        # A server's own exit status after SIGTERM is not compared: only that it listened.
        r.status = 0 if up else -1


def read_report(rdir):
    try:
        for n in sorted(os.listdir(rdir)):
            if n.endswith(".json"):
                with open(os.path.join(rdir, n)) as f:
                    j = json.load(f)
                pol = j.get("policy") or {}
                return "%s (%s): %s" % (j.get("kind"), pol.get("class", "?"), j.get("message", "")[:400])
    except (OSError, ValueError):
        pass
    return None


def compare(native, other):
    """Why `other` differs from the native run (None when it does not)."""
    why = []
    if other.timed_out:
        why.append("timeout")
    elif other.status == EXIT_DIVERGED and native.status != EXIT_DIVERGED:
        why.append("diverged")
    elif other.status != native.status:
        why.append("exit %s, native %s" % (other.status, native.status))
    if other.stdout != native.stdout and "timeout" not in why:
        why.append("stdout")
    if other.files != native.files:
        why.append("files")
    if other.verify != native.verify:
        why.append("verify")
    return ", ".join(why) or None


def first_line(b):
    for ln in b.decode(errors="replace").splitlines():
        if ln.strip():
            return ln.strip()[:300]
    return ""


def diagnose(r):
    """A short hint from the VMM's stderr: its own messages first."""
    if r.report:
        return r.report
    text = r.stderr.decode(errors="replace").splitlines()
    vmm = [ln for ln in text if ln.startswith("dmvx")]
    pick = vmm[:3] or text[:2]
    return " | ".join(ln.strip()[:200] for ln in pick)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="only the cases marked fast")
    ap.add_argument("--case", action="append", default=[], help="glob of case names (repeatable)")
    ap.add_argument("--group", action="append", default=[], help="cases of this group (repeatable; adds to --case)")
    ap.add_argument("--modes", default="1,2", help="variant counts to run besides native (default 1,2)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write docs/workloads.md-style results here")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing packages")
    ap.add_argument("--trace", help="run dmvx with --trace; write each case's VMM stderr into this directory")
    ap.add_argument("--dump", help="write each run's stdout, stderr, verify output and file list into this directory")
    ap.add_argument("--keep", action="store_true", help="keep scratch roots (target/corpus/scratch)")
    ap.add_argument("--out", default=os.path.join(WORKSPACE, "target", "corpus"))
    ap.add_argument("--vmm", default=os.path.join(WORKSPACE, "target", "release", "dmvx-vmm"))
    ap.add_argument("--cases", default=os.path.join(HERE, "cases.toml"), help="the cases (default: cases.toml here)")
    ap.add_argument("--known", default=os.path.join(HERE, "known.toml"), help="the known failures (default: known.toml here)")
    ap.add_argument("--from-json", help="render --markdown from the results of an earlier --json run (reasons "
                    "and verdicts from the current known.toml) instead of running anything")
    ap.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = ap.parse_args()
    try:
        return run_corpus(args)
    except SetupError as e:
        note("error: %s" % e)
        return 2


def run_corpus(args):
    doc, cases = load_cases(args.cases)
    known = load_known(args.known, {c["name"] for c in cases})
    if args.from_json:
        return render_saved(args, known)
    def picked(c):
        if not args.case and not args.group:
            return True
        return any(fnmatch.fnmatch(c["name"], g) for g in args.case) or c.get("group") in args.group

    sel = [c for c in cases if (not args.fast or c.get("fast")) and picked(c)]
    if args.list:
        for c in sel:
            print(c["name"])
        return 0
    modes = ["native"] + [m for m in args.modes.split(",") if m]
    if not os.access(args.vmm, os.X_OK):
        raise SetupError("%s is missing: build it first (cargo build --release)" % args.vmm)
    pkgs = set(doc.get("packages", []))
    for c in sel:
        pkgs.update(c.get("packages", []))
    if not args.no_install:
        install(pkgs)
    prepare_data(os.path.join(args.out, "data"), doc)
    is_root = os.geteuid() == 0
    runner = Runner(args)
    results = []
    t_start = time.time()
    for c in sel:
        res = {"name": c["name"], "group": c.get("group", ""), "root": c.get("root", "host"),
               "cmd": " ".join(c["cmd"]), "modes": {}}
        if c.get("root") == "scratch" and not is_root:
            res["skipped"] = "scratch roots need root (overlay mounts)"
            results.append(res)
            continue
        native = runner.run(c, "native")
        res["native_status"] = native.status
        # A case whose native run fails is broken: comparing two failures
        # would pass without testing anything.
        if native.timed_out:
            res["broken"] = "the native run timed out"
        elif c.get("server") and native.status != 0:
            res["broken"] = "the native server did not listen: %s" % first_line(native.stderr)
        elif native.status != c.get("status", 0):
            res["broken"] = "the native run exited %s, not %s: %s" % (native.status, c.get("status", 0),
                                                                      first_line(native.stderr))
        for m in modes[1:]:
            if "broken" in res:
                break
            r = runner.run(c, m)
            why = compare(native, r)
            res["modes"][m] = {"ok": why is None, "why": why, "status": r.status, "seconds": round(r.seconds, 2),
                               "hint": None if why is None else diagnose(r)}
        expect(res, known.get(c["name"]))
        results.append(res)
        print_row(res)
    report(results, modes, known, time.time() - t_start, args)
    bad = [r for r in results if r.get("outcome") in ("unexpected failure", "now passes", "broken")]
    return 1 if bad else 0


def render_saved(args, known):
    """Re-renders a saved run: verdicts and reasons from the current known.toml."""
    if not args.markdown:
        raise SetupError("--from-json needs --markdown FILE")
    try:
        with open(args.from_json) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise SetupError("cannot read %s: %s" % (args.from_json, e))
    for res in saved["results"]:
        res.pop("known", None)
        if "broken" not in res and "skipped" not in res:
            expect(res, known.get(res["name"]))
    with open(args.markdown, "w") as f:
        f.write(markdown(saved["results"], saved["modes"], known))
    unexplained = [r["name"] for r in saved["results"] if r.get("failing") and not r.get("known")]
    if unexplained:
        note("failures without a known.toml entry: %s" % " ".join(unexplained))
        return 1
    return 0


def expect(res, k):
    if "skipped" in res:
        res["outcome"] = "skipped"
        return
    if "broken" in res:
        res["outcome"] = "broken"
        res["failing"] = ["native"]
        return
    failing = sorted(m for m, v in res["modes"].items() if not v["ok"])
    res["failing"] = failing
    if k is None:
        res["outcome"] = "pass" if not failing else "unexpected failure"
        return
    res["known"] = {"class": k["class"], "issue": k["issue"], "reason": k["reason"]}
    want = sorted(str(m) for m in k["modes"])
    ran = set(res["modes"])
    want_ran = [m for m in want if m in ran]
    if failing == want_ran:
        res["outcome"] = "known failure"
    elif k.get("flaky") and set(failing) <= set(want_ran):
        res["outcome"] = "known failure (flaky)" if failing else "pass (known flaky)"
    elif set(failing) < set(want_ran):
        res["outcome"] = "now passes"
    else:
        res["outcome"] = "unexpected failure"


def mode_cell(v):
    return "ok" if v["ok"] else v["why"]


def print_row(res):
    if "skipped" in res or "broken" in res:
        print("%-28s %s: %s" % (res["name"], "SKIPPED" if "skipped" in res else "BROKEN",
                                res.get("skipped") or res.get("broken")), flush=True)
        return
    cells = ["%sv: %-22s" % (m, mode_cell(v)) for m, v in sorted(res["modes"].items())]
    print("%-28s %s %s" % (res["name"], " ".join(cells), res["outcome"]), flush=True)


def report(results, modes, known, seconds, args):
    counted = [r for r in results if "skipped" not in r]
    passed = [r for r in counted if not r["failing"]]
    ran = [r for r in counted if "broken" not in r]
    print()
    for r in results:
        if r.get("outcome") == "broken":
            print("BROKEN CASE: %s: %s" % (r["name"], r["broken"]))
        if r.get("outcome") in ("unexpected failure", "now passes"):
            print("%s: %s" % (r["outcome"].upper(), r["name"]))
            for m, v in sorted(r["modes"].items()):
                if not v["ok"]:
                    print("    %sv: %s; %s" % (m, v["why"], v["hint"]))
            if r.get("known"):
                print("    known.toml expects it to fail in %s: %s" % (known[r["name"]]["modes"],
                                                                      r["known"]["reason"]))
    for m in modes[1:]:
        ok = sum(1 for r in ran if r["modes"].get(m, {}).get("ok"))
        print("%sv: %d of %d cases identical to native (%.1f%%)" % (m, ok, len(ran), 100.0 * ok / max(1, len(ran))))
    if "1" in modes and "2" in modes:
        false_alarms = [r["name"] for r in ran if r["modes"]["1"]["ok"] and not r["modes"]["2"]["ok"]]
        print("pass in 1 variant but not in 2: %d %s" % (len(false_alarms), " ".join(false_alarms)))
    skipped = len(results) - len(counted)
    print("corpus took %.0f s" % seconds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"modes": modes, "results": results}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results, modes, known))
    line = "%d passed, %d failed" % (len(passed), len(counted) - len(passed))
    if skipped:
        line += ", %d skipped" % skipped
    print(line)


def markdown(results, modes, known):
    out = ["# Workloads: the corpus of Debian programs", "",
           "Generated by `scripts/corpus/corpus.py --markdown docs/workloads.md` (the whole corpus; "
           "`--fast` is the subset tests/corpus.rs runs). Each case runs natively, in 1 variant and in "
           "2 variants of dmvx; a cell is `ok` when stdout, exit status and the compared files equal the "
           "native run's, else what differed. Reasons come from scripts/corpus/known.toml; root causes and "
           "proposed fixes are in scripts/corpus/FINDINGS.md.", ""]
    ran = [r for r in results if "skipped" not in r and "broken" not in r]
    for m in modes[1:]:
        ok = sum(1 for r in ran if r["modes"].get(m, {}).get("ok"))
        out.append("- %s variant%s: %d of %d identical to native (%.1f%%)" %
                   (m, "" if m == "1" else "s", ok, len(ran), 100.0 * ok / max(1, len(ran))))
    not_a = [r for r in ran if (r.get("known") or {}).get("class") != "a"]
    for m in modes[1:]:
        ok = sum(1 for r in not_a if r["modes"].get(m, {}).get("ok"))
        out.append("- %s variant%s, not counting class a (issues 11, 12): %d of %d (%.1f%%)" %
                   (m, "" if m == "1" else "s", ok, len(not_a), 100.0 * ok / max(1, len(not_a))))
    if "1" in modes and "2" in modes:
        fa = [r["name"] for r in ran if r["modes"]["1"]["ok"] and not r["modes"]["2"]["ok"]]
        out.append("- pass in 1 variant but not in 2 (false divergences): %d%s" %
                   (len(fa), (" (" + ", ".join(fa) + ")") if fa else ""))
    own = {}
    for r in ran:
        if r["failing"] and r.get("known"):
            own.setdefault(r["known"]["class"], []).append(r["name"])
    for cl, names in sorted(own.items()):
        out.append("- class %s, %s: %d (%s)" % (cl, CLASSES[cl], len(names), ", ".join(names)))
    out += ["", "| case | group | command | %s | reason |" % " | ".join("%sv" % m for m in modes[1:]),
            "|---|---|---|%s---|" % ("---|" * len(modes[1:]))]
    for r in results:
        if "skipped" in r or "broken" in r:
            why = ("skipped: " + r["skipped"]) if "skipped" in r else ("BROKEN CASE: " + r["broken"])
            out.append("| %s | %s | `%s` | %s | %s |" % (r["name"], r["group"], r["cmd"][:60],
                                                          " | ".join("-" for _ in modes[1:]), why))
            continue
        cells = [mode_cell(r["modes"][m]) if m in r["modes"] else "-" for m in modes[1:]]
        reason = ""
        if r["failing"]:
            k = r.get("known")
            reason = ("(%s, issue %s) %s" % (k["class"], k["issue"], k["reason"])) if k else "UNEXPLAINED"
        cmd = r["cmd"].replace("|", "\\|")
        if len(cmd) > 70:
            cmd = cmd[:67] + "..."
        out.append("| %s | %s | `%s` | %s | %s |" % (r["name"], r["group"], cmd, " | ".join(cells),
                                                     reason.replace("|", "\\|")))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())

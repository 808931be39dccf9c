#!/usr/bin/env python3
"""Root filesystems for dmvx variants, built from Debian packages.

    rootfs.py build PACKAGE [--out DIR] [--force]
    rootfs.py verify DIR MANIFEST [--digest HEX]

`build` fetches PACKAGE and the packages that provide its shared libraries
with `apt-get download` (dependencies come from the .debs' own Depends fields,
nothing needs to be installed on the host), extracts them with `dpkg-deb -x`,
and assembles a merged-/usr tree that holds the package's files (minus docs,
man pages, locales and init-system glue), the DT_NEEDED closure of every ELF
in it (and the dynamic loader), a minimal /etc, device nodes, a document root
and, for known servers, a dmvx configuration (images/overlays/PACKAGE). The
tree is normalised (owner root:root unless a server needs otherwise, fixed
mtimes, sorted traversal), so two builds from the same package versions are
byte-identical, and described by DIR.manifest, whose sha256 is the image
digest (DIR.manifest.sha256). DIR.packages records the package versions used.

`verify` recomputes the manifest of DIR and compares it with MANIFEST.
"""

import argparse
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OVERLAYS = os.path.join(HERE, "overlays")
DEFAULT_OUT = os.path.join(HERE, "out")
DEB_CACHE = os.path.join(DEFAULT_OUT, "debs")

MANIFEST_HEADER = "# dmvx-rootfs-manifest v1: path type mode uid:gid mtime size data"
# 2024-01-01T00:00:00Z; SOURCE_DATE_EPOCH overrides it (and changes the digest).
DEFAULT_EPOCH = 1704067200
ARCH = "amd64"
TRIPLET = "x86_64-linux-gnu"
# Debian 12 merges these into /usr; the image does too.
MERGED = ("bin", "sbin", "lib", "lib64")
# Where ld.so looks after RPATH/RUNPATH (its cache and Debian's trusted dirs).
LIB_DIRS = ("usr/lib/" + TRIPLET, "usr/lib")
# Dropped from every package: documentation and locales (size), and glue for
# init systems, cron and logrotate (nothing runs them inside a variant).
DROP = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
    "usr/share/lintian", "usr/share/bug", "usr/share/doc-base",
    "usr/share/bash-completion", "usr/share/apport",
    "etc/init.d", "etc/default", "etc/cron.daily", "etc/logrotate.d",
    "etc/ufw", "usr/lib/systemd", "usr/lib/tmpfiles.d",
)
WWW_DATA = 33
# The host uid dmvx-vmm runs as by default (its jail's): the writable
# directories belong to it, so the VMM can write them without root.
JAIL = 65534


class Profile:
    """What a known package needs beyond its own files and libraries."""

    def __init__(self, companions=None, dirs=None):
        # package -> paths (canonical, relative) to take from it
        self.companions = companions or {}
        # writable directories: (path, mode, uid)
        self.dirs = dirs or []


def generic_dirs(pkg):
    return [("var/log/" + pkg, 0o755, JAIL), ("var/lib/" + pkg, 0o755, JAIL),
            ("var/cache/" + pkg, 0o755, JAIL)]


PROFILES = {
    "lighttpd": Profile(dirs=[("var/log/lighttpd", 0o755, JAIL),
                              ("var/cache/lighttpd", 0o755, JAIL)]),
    # Debian 12's `nginx` holds the binary (with the static module);
    # nginx-light/-core/-full only add dynamic modules to it.
    # nginx chowns its temp dirs to its `user` at startup unless they already
    # belong to it: they are created owned by www-data so a run never needs to.
    "nginx": Profile(
        companions={"nginx-common": ["etc/nginx/mime.types"]},
        dirs=[("var/log/nginx", 0o755, JAIL), ("var/lib/nginx", 0o755, JAIL)]
        + [("var/lib/nginx/" + d, 0o700, WWW_DATA)
           for d in ("body", "fastcgi", "proxy", "scgi", "uwsgi")]),
}


def die(msg):
    sys.stderr.write("build-rootfs: error: %s\n" % msg)
    sys.exit(1)


def note(msg):
    sys.stderr.write("build-rootfs: %s\n" % msg)
    sys.stderr.flush()


def sh(args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE,
                          universal_newlines=True, **kw).stdout


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_rel(path):
    return [c for c in path.split("/") if c not in ("", ".")]


def canon(parts):
    """The merged-/usr spelling of a relative path given as components."""
    if parts and parts[0] in MERGED:
        return ["usr"] + parts
    return parts


def dropped(rel):
    return any(rel == d or rel.startswith(d + "/") for d in DROP)


# ---------------------------------------------------------------- manifest

SAFE = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+,@:=~/-")


def esc(name):
    """Percent-escapes a path so a manifest line splits on spaces."""
    return "".join(chr(b) if b in SAFE else "%%%02X" % b for b in os.fsencode(name))


def entry_line(root, rel, volatile):
    path = os.path.join(root, rel) if rel else root
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    size, data = "-", "-"
    if stat.S_ISREG(st.st_mode):
        kind, size, data = "f", str(st.st_size), sha256_file(path)
    elif stat.S_ISDIR(st.st_mode):
        kind = "d"
    elif stat.S_ISLNK(st.st_mode):
        kind, data = "l", esc(os.readlink(path))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        data = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        kind = "s"
    mtime = "*" if rel in volatile else str(int(st.st_mtime))
    return "%s %s %04o %d:%d %s %s %s" % (
        esc("/" + rel), kind, mode, st.st_uid, st.st_gid, mtime, size, data)


def raise_it(err):
    raise err


def tree_paths(root):
    """Every path under root (relative, "" for root), sorted bytewise."""
    paths = [""]
    for dirpath, dirnames, filenames in os.walk(root, onerror=raise_it):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel + "/"
        paths.extend(rel + n for n in dirnames + filenames)
    return sorted(paths, key=os.fsencode)


def manifest(root, volatile=()):
    """The manifest text of a tree. Directories in `volatile` (relative
    paths: where a running server creates files) have mtime "*": their
    contents are still checked, their mtimes are not."""
    return "\n".join([MANIFEST_HEADER] + [entry_line(root, p, volatile)
                                           for p in tree_paths(root)]) + "\n"


def volatile_in(text):
    """The volatile directories a manifest names."""
    return {unesc(l.split(" ")[0])[1:] for l in text.splitlines()
            if not l.startswith("#") and l.split(" ")[4] == "*"}


def unesc(name):
    first, *rest = name.split("%")
    return os.fsdecode(first.encode() + b"".join(
        bytes.fromhex(part[:2]) + part[2:].encode() for part in rest))


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def verify(args):
    if not os.path.isdir(args.dir):
        sys.stderr.write("verify-rootfs: %s is not a directory\n" % args.dir)
        return 2
    try:
        with open(args.manifest) as f:
            want = f.read()
        volatile = volatile_in(want)
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as e:
        sys.stderr.write("verify-rootfs: %s is not a dmvx rootfs manifest (%s)\n" % (args.manifest, e))
        return 2
    try:
        got = manifest(args.dir, volatile)
    except OSError as e:
        sys.stderr.write("verify-rootfs: cannot read all of %s: %s\n" % (args.dir, e))
        return 2
    problems = []
    if args.digest and digest(want) != args.digest.lower():
        problems.append("manifest %s has digest %s, expected %s"
                        % (args.manifest, digest(want), args.digest))
    if got != want:
        def by_path(text):
            return {l.split(" ", 1)[0]: l for l in text.splitlines() if not l.startswith("#")}
        w, g = by_path(want), by_path(got)
        if want.splitlines()[:1] != [MANIFEST_HEADER]:
            problems.append("%s is not a v1 dmvx rootfs manifest" % args.manifest)
        for p in sorted(set(w) | set(g)):
            if p not in g:
                problems.append("missing  %s\n    want %s" % (p, w[p]))
            elif p not in w:
                problems.append("extra    %s\n    have %s" % (p, g[p]))
            elif w[p] != g[p]:
                problems.append("changed  %s\n    want %s\n    have %s" % (p, w[p], g[p]))
    if problems:
        sys.stderr.write("verify-rootfs: %s does NOT match %s:\n  %s\n"
                         % (args.dir, args.manifest, "\n  ".join(problems)))
        return 1
    print("verify-rootfs: OK %s matches %s (digest sha256:%s)"
          % (args.dir, args.manifest, digest(want)))
    return 0


# ---------------------------------------------------------------- packages

class Apt:
    """Versions and downloads through the ordinary apt client.

    A package's version is chosen from the archive's lists alone, as apt
    picks a candidate (highest pin priority, then highest version) but
    never the host's installed copy: that one has no .deb to download when
    the lists no longer carry it (stale lists), and a host's installed
    packages must not change the image it builds."""

    def __init__(self):
        self.updated = False
        self.info = {}

    def update(self):
        if not self.updated:
            note("apt-get update")
            r = subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
            if r.returncode != 0:
                die("apt-get update failed (exit status %d): the package lists cannot be "
                    "refreshed; check the network and /etc/apt/sources.list*:\n%s"
                    % (r.returncode, r.stdout))
            self.updated = True
            self.info.clear()

    def prefetch(self, names):
        """Looks up many packages with one `apt-cache policy` and one
        `apt-cache show` (each call parses every index: about 0.3 s)."""
        names = sorted({n for n in names if n not in self.info})
        if not names:
            return
        for name in names:
            self.info[name] = None
        chosen = archive_versions(run_text(["apt-cache", "policy"] + names))
        wanted = ["%s=%s" % (n, chosen[n]) for n in names if n in chosen]
        if not wanted:
            return
        for para in run_text(["apt-cache", "show"] + wanted).split("\n\n"):
            fields = parse_control(para)
            name = fields.get("Package")
            if name in chosen and self.info.get(name, 0) is None and downloadable(fields) \
                    and fields["Version"] == chosen[name] and fields.get("Architecture") in (ARCH, "all"):
                self.info[name] = fields

    def show(self, name, update=False):
        """The control fields of the version to use, or None if the lists
        carry no downloadable version (after an apt-get update, if `update`)."""
        self.prefetch([name])
        if self.info[name] is None and update and not self.updated:
            self.update()
            self.prefetch([name])
        return self.info[name]

    def cached(self, name):
        """Where the candidate's .deb is cached, and whether it is there."""
        fields = self.info[name]
        path = os.path.join(DEB_CACHE, os.path.basename(fields["Filename"]))
        return path, os.path.exists(path) and sha256_file(path) == fields["SHA256"]

    def fetch(self, names):
        """Downloads the candidates of `names` that are not cached yet, with
        one `apt-get download`; returns {name: (deb path, control fields)}."""
        self.prefetch(names)
        if any(self.info[n] is None for n in names) and not self.updated:
            self.update()  # partial or stale lists
            self.prefetch(names)
        unknown = [n for n in names if self.info[n] is None]
        if unknown:
            die("the package lists carry no downloadable version of %s (after apt-get update); "
                "check the names and /etc/apt/sources.list*" % ", ".join(unknown))
        os.makedirs(DEB_CACHE, exist_ok=True)
        for attempt in (1, 2):
            missing = [n for n in names if not self.cached(n)[1]]
            if not missing:
                break
            if attempt == 2:
                # Stale lists: the mirror no longer has those versions.
                self.update()
                self.prefetch(names)
                gone = [n for n in names if self.info[n] is None]
                if gone:
                    die("after apt-get update, the package lists carry no downloadable version "
                        "of %s; check /etc/apt/sources.list*" % ", ".join(gone))
                missing = [n for n in names if not self.cached(n)[1]]
            tmp = tempfile.mkdtemp(dir=DEB_CACHE, prefix=".dl-")
            try:
                r = subprocess.run(["apt-get", "download", "-q"]
                                   + ["%s=%s" % (n, self.info[n]["Version"]) for n in missing],
                                   cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   universal_newlines=True)
                by_sha = {self.info[n]["SHA256"]: n for n in missing}
                for f in os.listdir(tmp):
                    name = by_sha.get(sha256_file(os.path.join(tmp, f)))
                    if name:  # file names differ from the pool's for epochs
                        os.replace(os.path.join(tmp, f), self.cached(name)[0])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        missing = [n for n in names if not self.cached(n)[1]]
        if missing:
            die("apt-get download %s failed (after apt-get update); check the network and the "
                "mirror in /etc/apt/sources.list*:\n%s" % (" ".join(missing), r.stdout))
        return {n: (self.cached(n)[0], self.info[n]) for n in names}


def parse_control(text):
    fields, key = {}, None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def run_text(args):
    """stdout of an apt query; its complaints about unknown names are not
    errors here (the caller sees the name missing from the answer)."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          universal_newlines=True).stdout


def downloadable(fields):
    """Whether a record comes from an archive's list (the status file's
    records of installed packages have no Filename)."""
    return all(fields.get(k) for k in ("Version", "Filename", "SHA256", "Architecture"))


def archive_versions(policy):
    """{package: version} from `apt-cache policy` output: per package, the
    version of highest pin priority among those some archive list carries
    (the table is sorted by version, highest first); the installed-only
    version (source /var/lib/dpkg/status) is never chosen."""
    table, best, name, version = {}, {}, None, None
    for line in policy.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        words = line.split()
        if not words:
            continue
        if indent == 0 and line.endswith(":"):
            name, version = line[:-1].split(":")[0], None
        elif name is None or words[0] in ("Installed:", "Candidate:", "Version"):
            continue
        elif indent < 8:      # "     VERSION PRIO" or " *** VERSION PRIO"
            version = words[-2]
        elif version is not None and len(words) >= 2 and words[1] != "/var/lib/dpkg/status":
            prio = int(words[0]) if words[0].lstrip("-").isdigit() else 0
            if name not in best or prio > best[name]:
                best[name], table[name] = prio, version
    return table


def depends(fields):
    """Dependency groups: lists of alternative package names."""
    groups = []
    for field in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in fields.get(field, "").split(","))):
            alts = [a.strip().split(" ")[0].split("(")[0].split(":")[0] for a in group.split("|")]
            groups.append([a for a in alts if a])
    return groups


class Entry:
    __slots__ = ("kind", "src", "pkg", "target")

    def __init__(self, kind, src, pkg, target=None):
        self.kind, self.src, self.pkg, self.target = kind, src, pkg, target


class Pool:
    """Extracted packages and a merged-/usr view of their union."""

    def __init__(self, apt, workdir):
        self.apt = apt
        self.dir = os.path.join(workdir, "pool")
        self.entries = {}   # canonical relative path -> Entry
        self.files = {}     # package -> [canonical relative paths]
        self.fields = {}    # package -> control fields of the candidate
        self.deps = {}      # package -> dependency groups
        os.makedirs(self.dir)

    def add(self, names):
        names = [n for n in names if n not in self.fields]
        for name, (deb, fields) in sorted(self.apt.fetch(names).items()):
            self.extract(name, deb, fields)

    def extract(self, name, deb, fields):
        dest = os.path.join(self.dir, name)
        subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)
        self.fields[name] = fields
        self.deps[name] = depends(parse_control(sh(["dpkg-deb", "-f", deb])))
        mine = self.files[name] = []
        for dirpath, dirnames, filenames in os.walk(dest):
            dirnames.sort()
            for n in sorted(dirnames + filenames):
                src = os.path.join(dirpath, n)
                rel = "/".join(canon(split_rel(os.path.relpath(src, dest))))
                st = os.lstat(src)
                if stat.S_ISDIR(st.st_mode):
                    e = Entry("d", src, name)
                elif stat.S_ISLNK(st.st_mode):
                    e = Entry("l", src, name, os.readlink(src))
                elif stat.S_ISREG(st.st_mode):
                    e = Entry("f", src, name)
                else:
                    continue
                mine.append(rel)
                old = self.entries.setdefault(rel, e)
                if old is not e and old.kind != "d":
                    note("%s: /%s is also in %s; keeping that one" % (name, rel, old.pkg))

    def resolve(self, path, base=(), chain=None):
        """Follows `path` (absolute, or relative to `base`) through the
        view's symlinks; returns the canonical relative path of the final
        entry (None if absent) and appends every symlink passed to `chain`."""
        parts = split_rel(path)
        cur = [] if path.startswith("/") else list(base)
        for _ in range(64):
            if not parts:
                return "/".join(cur)
            c = parts.pop(0)
            if c == "..":
                cur = cur[:-1]
                continue
            nxt = canon(cur + [c])
            e = self.entries.get("/".join(nxt))
            if e is None:
                return None
            if e.kind == "l":
                if chain is not None:
                    chain.append("/".join(nxt))
                parts = split_rel(e.target) + parts
                if e.target.startswith("/"):
                    cur = []
            else:
                cur = nxt
        return None


def elf_info(path):
    """(interpreter, [NEEDED], [RUNPATH or RPATH dirs]) via readelf."""
    out = sh(["readelf", "-dlW", path], stderr=subprocess.DEVNULL)
    interp, needed, runpath, rpath = None, [], [], []
    for line in out.splitlines():
        if "Requesting program interpreter:" in line:
            interp = line.split(":", 1)[1].strip().rstrip("]")
        elif "(NEEDED)" in line:
            needed.append(line.split("[", 1)[1].rstrip("]"))
        elif "(RUNPATH)" in line:
            runpath = line.split("[", 1)[1].rstrip("]").split(":")
        elif "(RPATH)" in line:
            rpath = line.split("[", 1)[1].rstrip("]").split(":")
    return interp, needed, runpath or rpath


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


# ---------------------------------------------------------------- the build

class Build:
    def __init__(self, pkg, out, epoch):
        self.pkg, self.out, self.epoch = pkg, out, epoch
        self.profile = PROFILES.get(pkg, Profile(dirs=generic_dirs(pkg)))
        self.apt = Apt()
        self.keep = set()      # canonical relative paths taken from the pool
        # Directories a running server writes to: relative path -> (mode, owner).
        # The manifest does not pin their mtimes.
        self.writable = {"tmp": (0o1777, 0), "run": (0o755, JAIL)}
        self.writable.update((rel, (mode, uid)) for rel, mode, uid in self.profile.dirs)
        self.volatile = set(self.writable)

    def select(self, pool):
        for rel in pool.files[self.pkg]:
            if not dropped(rel):
                self.keep.add(rel)
        for comp, paths in self.profile.companions.items():
            for rel in paths:
                e = pool.entries.get(rel)
                if e is None or e.pkg != comp:
                    die("%s does not ship /%s" % (comp, rel))
                self.keep.add(rel)
        self.keep_path(pool, "/usr/share/zoneinfo/Etc/UTC")
        # Symlinks the package ships keep their targets when the pool has them.
        for rel in sorted(self.keep):
            e = pool.entries[rel]
            if e.kind == "l":
                target = self.keep_path(pool, e.target, rel.split("/")[:-1])
                if target is None:
                    note("dangling symlink /%s -> %s" % (rel, e.target))

    def keep_path(self, pool, path, base=()):
        chain = []
        final = pool.resolve(path, base, chain)
        if final is not None and not dropped(final):
            self.keep.update(chain)
            self.keep.add(final)
            return final
        return None

    def closure(self, pool):
        """Adds the interpreter and DT_NEEDED closure of every kept ELF, as
        far as the pool has it. Returns {soname: [needing paths]} missing."""
        done, missing = set(), {}
        todo = sorted(r for r in self.keep if pool.entries[r].kind == "f")
        while todo:
            rel = todo.pop()
            if rel in done:
                continue
            done.add(rel)
            src = pool.entries[rel].src
            if not is_elf(src):
                continue
            interp, needed, rpath = elf_info(src)
            origin = "/" + "/".join(rel.split("/")[:-1])
            wants = []
            if interp:
                wants.append((interp, [interp]))
            for soname in needed:
                if "/" in soname:
                    wants.append((soname, [soname]))
                    continue
                dirs = [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                        for d in rpath] + ["/" + d for d in LIB_DIRS]
                wants.append((soname, [d + "/" + soname for d in dirs]))
            for name, candidates in wants:
                for cand in candidates:
                    final = self.keep_path(pool, cand)
                    if final is not None and pool.entries[final].kind == "f":
                        todo.append(final)
                        break
                else:
                    missing.setdefault(name, []).append(rel)
        return missing

    def resolve_libraries(self, pool):
        """Closes the kept set over DT_NEEDED, fetching the Depends of the
        packages whose ELFs need what the pool lacks, until nothing is missing.
        Debian's shlibs make a library's provider a Depends of its user."""
        for _ in range(8):
            missing = self.closure(pool)
            if not missing:
                return
            owners = sorted({pool.entries[r].pkg for rels in missing.values() for r in rels})
            new = []
            self.apt.prefetch(a for o in owners for alts in pool.deps[o] for a in alts)
            for owner in owners:
                for alts in pool.deps[owner]:
                    if any(a in pool.fields for a in alts):
                        continue
                    # Partial or stale lists may lack it: update them once.
                    pick = next((a for a in alts if self.apt.show(a)), None) or \
                        next((a for a in alts if self.apt.show(a, update=True)), None)
                    if pick:
                        new.append(pick)
            if not new:
                break
            note("for %s: fetching the Depends of %s: %s"
                 % (", ".join(sorted(missing)), ", ".join(owners), ", ".join(sorted(set(new)))))
            pool.add(sorted(set(new)))
        die("no package provides: " + "; ".join(
            "%s (needed by /%s)" % (s, ", /".join(sorted(set(r)))) for s, r in sorted(missing.items())))

    def materialize(self, pool, root):
        def parent(rel):
            d = os.path.dirname(os.path.join(root, rel))
            if not os.path.isdir(d):
                os.makedirs(d, mode=0o755)
        for top in MERGED:
            os.makedirs(os.path.join(root, "usr", top), mode=0o755, exist_ok=True)
            os.symlink("usr/" + top, os.path.join(root, top))
        for rel in sorted(self.keep, key=os.fsencode):
            e, dst = pool.entries[rel], os.path.join(root, rel)
            if e.kind == "d":
                os.makedirs(dst, mode=0o755, exist_ok=True)
                continue
            parent(rel)
            if e.kind == "l":
                os.symlink(e.target, dst)
            else:
                shutil.copyfile(e.src, dst)
                os.chmod(dst, stat.S_IMODE(os.lstat(e.src).st_mode) & 0o777)

    def overlay(self, root, name):
        """Copies images/overlays/NAME into the tree (0644, or 0755 if executable)."""
        base = os.path.join(OVERLAYS, name)
        for dirpath, dirnames, filenames in os.walk(base):
            for n in filenames:
                src = os.path.join(dirpath, n)
                dst = os.path.join(root, os.path.relpath(src, base))
                os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
                if os.path.lexists(dst):
                    os.unlink(dst)
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o755 if os.stat(src).st_mode & 0o111 else 0o644)

    def system_files(self, pool, root):
        self.overlay(root, "common")
        if os.path.isdir(os.path.join(OVERLAYS, self.pkg)):
            self.overlay(root, self.pkg)
        os.symlink("/usr/share/zoneinfo/Etc/UTC", os.path.join(root, "etc/localtime"))
        www = os.path.join(root, "srv/www")
        for name, size in (("4k.bin", 4096), ("1m.bin", 1 << 20)):
            with open(os.path.join(www, name), "wb") as f:
                f.write(pattern(name, size))
            os.chmod(os.path.join(www, name), 0o644)
        for rel in self.writable:
            os.makedirs(os.path.join(root, rel), exist_ok=True)
        os.makedirs(os.path.join(root, "dev"), exist_ok=True)
        for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
            path = os.path.join(root, "dev", name)
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
            os.chmod(path, 0o666)
        # ld.so.cache from the image's own glibc (libc-bin's static ldconfig),
        # so the cache does not depend on the host's ldconfig.
        ldconfig = os.path.join(pool.dir, "libc-bin", "sbin", "ldconfig")
        before = set(tree_paths(root))
        subprocess.run([ldconfig, "-X", "-r", root], check=True)
        for rel in sorted(set(tree_paths(root)) - before - {"etc/ld.so.cache"}, reverse=True):
            path = os.path.join(root, rel)  # its aux-cache holds inode numbers
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)

    def normalize(self, root):
        """Owners root:root, directories 0755 (but the writable ones as the
        profile says), every mtime the epoch; children before parents."""
        for rel in sorted(tree_paths(root), key=os.fsencode, reverse=True):
            path = os.path.join(root, rel) if rel else root
            mode, uid = self.writable.get(rel, (0o755, 0))
            if stat.S_ISDIR(os.lstat(path).st_mode):
                os.chmod(path, mode)
            os.lchown(path, uid, uid)
            os.utime(path, ns=(self.epoch * 10**9,) * 2, follow_symlinks=False)

    def inputs(self, pool_fields):
        h = hashlib.sha256()
        for base in [os.path.abspath(__file__), OVERLAYS]:
            for p in tree_paths(base) if os.path.isdir(base) else [""]:
                full = os.path.join(base, p) if p else base
                if os.path.isfile(full):
                    h.update(p.encode() + b"\0" + open(full, "rb").read() + b"\0")
        lines = ["# builder sha256:%s SOURCE_DATE_EPOCH=%d" % (h.hexdigest(), self.epoch)]
        for name in sorted(pool_fields):
            f = pool_fields[name]
            lines.append("%s %s %s sha256:%s" % (name, f["Version"], f["Architecture"], f["SHA256"]))
        return "\n".join(lines) + "\n"

    def up_to_date(self):
        """True if the last build used the same builder and package versions
        and the tree still matches its manifest."""
        try:
            with open(self.out + ".packages") as f:
                old = f.read()
            with open(self.out + ".manifest") as f:
                want = f.read()
        except OSError:
            return False
        fields = {}
        self.apt.prefetch(line.split(" ")[0] for line in old.splitlines()[1:])
        for line in old.splitlines()[1:]:
            name = line.split(" ")[0]
            cur = self.apt.show(name)
            if cur is None:
                return False
            fields[name] = cur
        if self.inputs(fields) != old:
            return False
        return os.path.isdir(self.out) and manifest(self.out, self.volatile) == want

    def gather(self, work):
        """The extracted packages, with self.keep selected from them, all
        from one state of the package lists: when the lists had to be
        updated midway (a version could not be found or downloaded), the
        packages are gathered again from the updated lists."""
        for _ in range(2):
            lists_were_updated = self.apt.updated
            self.keep = set()
            shutil.rmtree(os.path.join(work, "pool"), ignore_errors=True)
            pool = Pool(self.apt, work)
            pool.add([self.pkg, "libc-bin", "tzdata"] + sorted(self.profile.companions))
            self.select(pool)
            self.resolve_libraries(pool)
            if self.apt.updated == lists_were_updated:
                break
            note("the package lists were updated during the build: gathering the packages again")
        return pool

    def run(self, force):
        if self.apt.show(self.pkg, update=True) is None:
            die("the package lists carry no downloadable version of %r (after apt-get update); "
                "check the name and /etc/apt/sources.list*" % self.pkg)
        if not force and self.up_to_date():
            note("%s is up to date (same package versions and builder; tree matches its manifest)" % self.out)
            return
        start = time.time()
        parent = os.path.dirname(self.out)
        work = tempfile.mkdtemp(dir=parent, prefix=".%s.build-" % os.path.basename(self.out))
        try:
            pool = self.gather(work)
            root = os.path.join(work, "root")
            os.makedirs(root)
            self.materialize(pool, root)
            self.system_files(pool, root)
            self.normalize(root)
            text = manifest(root, self.volatile)
            if os.path.lexists(self.out):
                shutil.rmtree(self.out)
            os.rename(root, self.out)
            write(self.out + ".manifest", text)
            write(self.out + ".manifest.sha256",
                  "%s  %s\n" % (digest(text), os.path.basename(self.out) + ".manifest"))
            write(self.out + ".packages", self.inputs(pool.fields))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        files = [l for l in text.splitlines()[1:] if l.split(" ")[1] == "f"]
        size = sum(int(l.split(" ")[5]) for l in files)
        note("built %s in %.1fs: %d entries, %d files, %.1f MiB; packages: %s"
             % (self.out, time.time() - start, len(text.splitlines()) - 1, len(files),
                size / 2**20, ", ".join(sorted(pool.fields))))


def pattern(name, size):
    """Deterministic, incompressible bytes: sha256 in counter mode."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(("dmvx %s %d" % (name, i)).encode()).digest()
        i += 1
    return bytes(out[:size])


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build(args):
    if os.geteuid() != 0:
        die("must run as root: the image holds device nodes (mknod) and root-owned "
            "files; run it as root (e.g. sudo images/build-rootfs.sh %s)" % args.package)
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "readelf"):
        if shutil.which(tool) is None:
            die("%s is missing (Debian packages apt, dpkg, binutils)" % tool)
    if sh(["dpkg", "--print-architecture"]).strip() != ARCH:
        die("images are x86-64 (amd64) only")
    out = os.path.abspath(args.out or os.path.join(DEFAULT_OUT, "rootfs-" + args.package))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    os.umask(0o022)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        Build(args.package, out, epoch).run(args.force)
    with open(out + ".manifest.sha256") as f:
        print("%s sha256:%s" % (out, f.read().split()[0]))
    return 0


def main():
    ap = argparse.ArgumentParser(prog="rootfs.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the rootfs of a Debian package")
    b.add_argument("package")
    b.add_argument("--out", help="tree directory (default images/out/rootfs-PACKAGE)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    v = sub.add_parser("verify", help="compare a tree with its manifest")
    v.add_argument("dir")
    v.add_argument("manifest")
    v.add_argument("--digest", help="also require the manifest's sha256 to be this")
    args = ap.parse_args()
    return build(args) if args.cmd == "build" else verify(args)


if __name__ == "__main__":
    sys.exit(main())

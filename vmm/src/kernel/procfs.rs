//! A virtual /proc, built from the VMM's own state: what programs commonly
//! read of it (their status, maps and descriptors; the system's memory,
//! CPUs, uptime and load), the same in every variant, and the few /sys
//! files glibc reads to count CPUs. The host's /proc and /sys stay refused
//! by the sandbox. Files are served from a sealed-in-memory copy
//! (memfd) made at open; /proc/self/fd is a directory listed by the VMM.

use std::io::Write as _;
use std::os::fd::{FromRawFd, OwnedFd};

use super::errno::{Errno, SysResult};
use super::file::{Extra, FileKind, OpenFile};
use super::mm::VmaKind;
use super::Kernel;

/// A node of the virtual /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Meminfo,
    Stat,
    Uptime,
    Cpuinfo,
    Loadavg,
    SelfStatus,
    SelfMaps,
    SelfStat,
    SelfComm,
    SelfFd,
    /// /sys/devices/system/cpu/{online,possible,present}.
    CpuList,
}

/// The node a normalised absolute guest path names, given the program's
/// pid. None: not a virtual /proc path (left to the sandbox).
fn node(path: &[u8], pid: u32) -> Option<Node> {
    if let Some(f) = path.strip_prefix(b"/sys/devices/system/cpu/") {
        return matches!(f, b"online" | b"possible" | b"present").then_some(Node::CpuList);
    }
    let rest = path.strip_prefix(b"/proc/")?;
    let (first, tail) = match rest.iter().position(|&c| c == b'/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let own = first == b"self" || first == b"thread-self" || first == pid.to_string().as_bytes();
    match (first, tail) {
        (b"meminfo", None) => Some(Node::Meminfo),
        (b"stat", None) => Some(Node::Stat),
        (b"uptime", None) => Some(Node::Uptime),
        (b"cpuinfo", None) => Some(Node::Cpuinfo),
        (b"loadavg", None) => Some(Node::Loadavg),
        (_, Some(b"status")) if own => Some(Node::SelfStatus),
        (_, Some(b"maps")) if own => Some(Node::SelfMaps),
        (_, Some(b"stat")) if own => Some(Node::SelfStat),
        (_, Some(b"comm")) if own => Some(Node::SelfComm),
        (_, Some(b"fd" | b"fd/")) if own => Some(Node::SelfFd),
        _ => None,
    }
}

/// Removes `.` and empty components and resolves `..` lexically.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The descriptor number of `/proc/self/fd/N` (normalised, absolute).
fn fd_link(path: &[u8], pid: u32) -> Option<u64> {
    let rest = path.strip_prefix(b"/proc/")?;
    let (who, n) = rest.split_at(rest.iter().position(|&c| c == b'/')?);
    let n = n.strip_prefix(b"/fd/")?;
    let own = who == b"self" || who == b"thread-self" || who == pid.to_string().as_bytes();
    if !own || n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

impl Kernel {
    /// For `/proc/self/fd/N` (relative to guest directory `base`): the
    /// host descriptor behind the program's descriptor N (EBADF if none).
    pub(crate) fn proc_fd_raw(&self, base: &[u8], path: &[u8]) -> Option<SysResult<i32>> {
        let full = if path.first() == Some(&b'/') { normalize(path) } else { normalize(&[base, b"/", path].concat()) };
        let n = fd_link(&full, self.task.tg.pid)?;
        Some(self.fds().file(n).map(|f| f.raw()).and_then(|r| if r < 0 { Err(Errno::EBADF) } else { Ok(r) }))
    }

    /// The virtual /proc file or directory at `path` (relative to `base`,
    /// both guest paths), opened with `flags`; None if the path is not one.
    pub(crate) fn open_proc(
        &mut self,
        base: &[u8],
        path: &[u8],
        flags: i32,
    ) -> Option<SysResult<std::sync::Arc<OpenFile>>> {
        let full = if path.first() == Some(&b'/') { normalize(path) } else { normalize(&[base, b"/", path].concat()) };
        let node = node(&full, self.task.tg.pid)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0 {
            return Some(Err(Errno::EACCES));
        }
        Some(if node == Node::SelfFd { self.proc_fd_dir() } else { self.proc_file(node, flags) })
    }

    fn proc_file(&mut self, node: Node, flags: i32) -> SysResult<std::sync::Arc<OpenFile>> {
        if flags & libc::O_DIRECTORY != 0 {
            return Err(Errno::ENOTDIR);
        }
        let text = self.proc_text(node);
        // SAFETY: the name is a NUL-terminated string; memfd_create has no
        // other memory preconditions.
        let raw = unsafe { libc::memfd_create(c"dmvx-proc".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Errno::last());
        }
        // SAFETY: raw is a new descriptor this code owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = std::fs::File::from(fd);
        file.write_all(&text).map_err(|_| Errno::EIO)?;
        // SAFETY: lseek on a descriptor this code owns.
        if unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&file), 0, libc::SEEK_SET) } < 0 {
            return Err(Errno::last());
        }
        Ok(OpenFile::make(Some(file.into()), FileKind::Regular, Extra::None, false))
    }

    /// /proc/self/fd: a directory whose entries are the open descriptors.
    fn proc_fd_dir(&mut self) -> SysResult<std::sync::Arc<OpenFile>> {
        let mut names: Vec<(Vec<u8>, u8)> = vec![(b".".to_vec(), libc::DT_DIR), (b"..".to_vec(), libc::DT_DIR)];
        // The open descriptors and the one this directory will get (the
        // lowest free), as Linux lists it.
        let mut open = self.fds().numbers();
        let next = (0u64..).find(|i| !open.contains(i)).unwrap_or(0);
        open.push(next);
        open.sort_unstable();
        for n in open {
            names.push((n.to_string().into_bytes(), libc::DT_LNK));
        }
        let mut ents = Vec::new();
        for (i, (name, ty)) in names.iter().enumerate() {
            // struct linux_dirent64: ino, off, reclen, type, name, NUL, padding to 8.
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            ents.extend_from_slice(&(i as u64 + 1).to_le_bytes());
            ents.extend_from_slice(&(i as u64 + 1).to_le_bytes());
            ents.extend_from_slice(&(reclen as u16).to_le_bytes());
            ents.push(*ty);
            ents.extend_from_slice(name);
            ents.resize(ents.len() + reclen - 19 - name.len(), 0);
        }
        // The root directory's descriptor stands in for fstat.
        let (fd, _) = self.sandbox.lookup(b"/", b"/", true)?;
        Ok(std::sync::Arc::new(OpenFile::proc_dir(fd, ents)))
    }

    fn proc_text(&mut self, node: Node) -> Vec<u8> {
        let total_kb = self.mm.mem.size() / 1024;
        let pid = self.task.tg.pid;
        let name = {
            let tg = self.tg();
            let n = tg.name;
            String::from_utf8_lossy(&n[..n.iter().position(|&c| c == 0).unwrap_or(n.len())]).into_owned()
        };
        let up = self.uptime_secs();
        let cpus = self.cpus();
        let s = match node {
            // Fixed shares of the guest's memory: the same in every variant.
            Node::Meminfo => format!(
                "MemTotal:       {total_kb:8} kB\nMemFree:        {:8} kB\nMemAvailable:   {:8} kB\nBuffers:               0 kB\nCached:                0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
                total_kb / 2,
                total_kb / 2
            ),
            Node::Stat => format!(
                "cpu  0 0 0 0 0 0 0 0 0 0\n{}intr 0\nctxt 0\nbtime 0\nprocesses {}\nprocs_running 1\nprocs_blocked 0\n",
                (0..cpus).map(|i| format!("cpu{i} 0 0 0 0 0 0 0 0 0 0\n")).collect::<String>(),
                pid
            ),
            Node::Uptime => format!("{up}.00 {up}.00\n"),
            Node::Loadavg => format!("0.00 0.00 0.00 1/1 {pid}\n"),
            Node::Cpuinfo => (0..cpus)
                .map(|i| format!("processor\t: {i}\nvendor_id\t: dmvx\nmodel name\t: dmvx virtual CPU\ncpu MHz\t\t: 1000.000\nphysical id\t: 0\ncore id\t\t: {i}\ncpu cores\t: {cpus}\nflags\t\t: fpu tsc sse sse2\n\n"))
                .collect(),
            Node::CpuList => super::cpus::list(cpus),
            Node::SelfComm => format!("{name}\n"),
            Node::SelfStatus => {
                let ppid = self.task.tg.ppid;
                let c = self.tg().creds.clone();
                format!(
                    "Name:\t{name}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{ppid}\nUid:\t{u}\t{u}\t{u}\t{u}\nGid:\t{g}\t{g}\t{g}\t{g}\nThreads:\t1\nCpus_allowed_list:\t{}",
                    self.fs().umask,
                    super::cpus::list(cpus),
                    u = c.uid,
                    g = c.gid
                )
            }
            Node::SelfStat => format!("{pid} ({name}) R {} {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0\n", self.task.tg.ppid),
            Node::SelfMaps => {
                let mut out = String::new();
                for v in self.mm.vmas() {
                    let p = |bit: u32, c: char| if v.prot & bit != 0 { c } else { '-' };
                    let what = match v.kind {
                        VmaKind::Heap => "[heap]",
                        VmaKind::Stack => "[stack]",
                        VmaKind::Program | VmaKind::Mapping => "",
                    };
                    out.push_str(&format!(
                        // Fixed width, so every variant's lines are as long.
                        "{:012x}-{:012x} {}{}{}{} 00000000 00:00 0 {what}\n",
                        v.start,
                        v.end,
                        p(libc::PROT_READ as u32, 'r'),
                        p(libc::PROT_WRITE as u32, 'w'),
                        p(libc::PROT_EXEC as u32, 'x'),
                        if v.shared { 's' } else { 'p' }
                    ));
                }
                out
            }
            Node::SelfFd => String::new(),
        };
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_virtual_nodes_only() {
        assert_eq!(node(b"/proc/meminfo", 2), Some(Node::Meminfo));
        assert_eq!(node(b"/proc/self/status", 2), Some(Node::SelfStatus));
        assert_eq!(node(b"/proc/2/maps", 2), Some(Node::SelfMaps));
        assert_eq!(node(b"/proc/thread-self/fd", 2), Some(Node::SelfFd));
        assert_eq!(node(b"/proc/3/maps", 2), None, "another process");
        assert_eq!(node(b"/proc/self/exe", 2), None, "answered elsewhere");
        assert_eq!(node(b"/procx/meminfo", 2), None);
        assert_eq!(node(b"/sys/devices/system/cpu/online", 2), Some(Node::CpuList));
        assert_eq!(node(b"/sys/devices/system/cpu/possible", 2), Some(Node::CpuList));
        assert_eq!(node(b"/sys/devices/system/cpu/cpu0", 2), None);
        assert_eq!(node(b"/sys/kernel/mm", 2), None);
        assert_eq!(normalize(b"/proc/./self//fd/../status"), b"/proc/self/status");
        assert_eq!(fd_link(b"/proc/self/fd/3", 2), Some(3));
        assert_eq!(fd_link(b"/proc/2/fd/12", 2), Some(12));
        assert_eq!(fd_link(b"/proc/3/fd/1", 2), None);
        assert_eq!(fd_link(b"/proc/self/fd/x", 2), None);
        assert_eq!(fd_link(b"/proc/self/fd/", 2), None);
    }
}

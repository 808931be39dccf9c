//! Open files: what a descriptor of the program refers to.
//!
//! An open file is shared by every descriptor that duplicates it (dup, fork
//! later), as Linux shares an open file description: one host descriptor,
//! one file offset. It is `Send` and `Sync`, so that fd tables can be shared
//! between tasks.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What kind of object a descriptor refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    CharDevice,
    Pipe,
    Socket,
    Epoll,
    EventFd,
    TimerFd,
    Other,
}

impl FileKind {
    /// The kind of a file with mode `st_mode`.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFIFO => FileKind::Pipe,
            libc::S_IFSOCK => FileKind::Socket,
            _ => FileKind::Other,
        }
    }
}

/// State the VMM keeps beside some kinds of open files.
#[derive(Debug, Default)]
pub enum Extra {
    #[default]
    None,
    /// An epoll instance: the program's `epoll_data` for each registered
    /// descriptor. The host epoll carries the descriptor number instead, so
    /// the program's data never depends on host state.
    Epoll(Mutex<HashMap<u32, u64>>),
    /// A Unix socket: the path the program bound it to (the host sees a
    /// sandbox-resolved path instead).
    Unix(Mutex<Option<Vec<u8>>>),
    /// A directory of the virtual /proc: its entries as getdents64 returns
    /// them, and how far the program has read.
    ProcDir(Mutex<(Vec<u8>, usize)>),
    /// A virtual netlink socket (`kernel::netlink`).
    Netlink(Mutex<super::netlink::NlSocket>),
}

/// Locks `m`; a poisoned lock (a panic elsewhere while held) still yields
/// its data, which every holder leaves consistent between statements.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const NONBLOCK_UNKNOWN: u8 = 0;
const NONBLOCK_NO: u8 = 1;
const NONBLOCK_YES: u8 = 2;

/// An open file: one host descriptor, or none for a *remote* file of a
/// follower variant (one that exists only on the leader, whose operations
/// the follower replays from the leader's results).
#[derive(Debug)]
pub struct OpenFile {
    fd: Option<OwnedFd>,
    pub kind: FileKind,
    pub extra: Extra,
    /// Operations on it are the leader's and replicated to followers
    /// (sockets, the standard descriptors, files being written, ...).
    pub remote: bool,
    /// Set when output held for it could not be delivered later (the errno).
    broken: AtomicI32,
    /// Whether the host descriptor is non-blocking, once looked up (the
    /// guest's F_SETFL and FIONBIO forget it).
    nonblock: AtomicU8,
    /// A pipe or socket pair between the program's own processes (made by
    /// pipe or socketpair): its data never leaves the variant.
    ipc: bool,
    /// A directory's canonical path inside the root: the same in every
    /// variant, whatever the host path or whether the variant holds the host
    /// descriptor, so that relative calls resolve and classify alike.
    path: Option<Box<[u8]>>,
    /// It names a file inside the program's root (opened through the
    /// sandbox): only such files may be modified through the descriptor.
    /// Inherited descriptors, sockets, pipes and the like may not.
    in_root: bool,
    /// F_SETOWN's process (or negated group): remembered for F_GETOWN.
    /// Signal-driven I/O is not supported: no SIGIO is ever sent.
    owner: AtomicI32,
}

impl OpenFile {
    /// A local open file over host descriptor `fd`.
    pub fn new(fd: OwnedFd, kind: FileKind) -> Arc<Self> {
        Self::make(Some(fd), kind, Extra::None, false)
    }

    /// An open file, local or remote, with extra state.
    pub fn make(fd: Option<OwnedFd>, kind: FileKind, extra: Extra, remote: bool) -> Arc<Self> {
        Arc::new(OpenFile {
            fd,
            kind,
            extra,
            remote,
            broken: AtomicI32::new(0),
            nonblock: AtomicU8::new(NONBLOCK_UNKNOWN),
            ipc: false,
            path: None,
            in_root: false,
            owner: AtomicI32::new(0),
        })
    }

    /// An open file the sandbox opened inside the root.
    pub fn rooted(fd: Option<OwnedFd>, kind: FileKind, remote: bool) -> Arc<Self> {
        Arc::new(OpenFile {
            fd,
            kind,
            extra: Extra::None,
            remote,
            broken: AtomicI32::new(0),
            nonblock: AtomicU8::new(NONBLOCK_UNKNOWN),
            ipc: false,
            path: None,
            in_root: true,
            owner: AtomicI32::new(0),
        })
    }

    /// Whether it names a file inside the root.
    pub fn in_root(&self) -> bool {
        self.in_root
    }

    /// One end of a pipe or socket pair the program made.
    pub fn ipc(fd: Option<OwnedFd>, kind: FileKind, extra: Extra, remote: bool) -> Arc<Self> {
        Arc::new(OpenFile {
            fd,
            kind,
            extra,
            remote,
            broken: AtomicI32::new(0),
            nonblock: AtomicU8::new(NONBLOCK_UNKNOWN),
            ipc: true,
            path: None,
            in_root: false,
            owner: AtomicI32::new(0),
        })
    }

    /// F_SETOWN's owner (0: none).
    pub fn owner(&self) -> i32 {
        self.owner.load(Ordering::Relaxed)
    }

    pub fn set_owner(&self, owner: i32) {
        self.owner.store(owner, Ordering::Relaxed);
    }

    /// Whether it is a pipe or socket pair between the program's processes.
    pub fn is_ipc(&self) -> bool {
        self.ipc
    }

    /// An open directory whose canonical path inside the root is `path`.
    /// A directory of the virtual /proc with its getdents64 records; `fd`
    /// (a real directory) answers fstat.
    pub fn proc_dir(fd: OwnedFd, ents: Vec<u8>) -> Self {
        OpenFile {
            fd: Some(fd),
            kind: FileKind::Directory,
            extra: Extra::ProcDir(Mutex::new((ents, 0))),
            remote: false,
            broken: AtomicI32::new(0),
            nonblock: AtomicU8::new(NONBLOCK_UNKNOWN),
            ipc: false,
            path: Some(b"/proc/self/fd".to_vec().into_boxed_slice()),
            in_root: true,
            owner: AtomicI32::new(0),
        }
    }

    pub fn directory(fd: Option<OwnedFd>, remote: bool, path: &[u8]) -> Arc<Self> {
        Arc::new(OpenFile {
            fd,
            kind: FileKind::Directory,
            extra: Extra::None,
            remote,
            broken: AtomicI32::new(0),
            nonblock: AtomicU8::new(NONBLOCK_UNKNOWN),
            ipc: false,
            path: Some(normalize(path).into_boxed_slice()),
            in_root: true,
            owner: AtomicI32::new(0),
        })
    }

    /// A directory's path as the program named it.
    pub fn path(&self) -> Option<&[u8]> {
        self.path.as_deref()
    }

    /// Whether a host call on it may block (not a regular file or
    /// directory, and not set non-blocking).
    pub fn may_block(&self) -> bool {
        if matches!(self.kind, FileKind::Regular | FileKind::Directory) {
            return false;
        }
        let known = self.nonblock.load(Ordering::Relaxed);
        let nonblock = if known == NONBLOCK_UNKNOWN {
            // SAFETY: F_GETFL on a descriptor this file owns (or -1: fails harmlessly).
            let fl = unsafe { libc::fcntl(self.raw(), libc::F_GETFL) };
            let v = fl >= 0 && fl & libc::O_NONBLOCK != 0;
            self.nonblock.store(if v { NONBLOCK_YES } else { NONBLOCK_NO }, Ordering::Relaxed);
            v
        } else {
            known == NONBLOCK_YES
        };
        !nonblock
    }

    /// Forgets the non-blocking flag (the program changed it).
    pub fn forget_flags(&self) {
        self.nonblock.store(NONBLOCK_UNKNOWN, Ordering::Relaxed);
    }

    /// The errno a delivery of held output failed with, or 0.
    pub fn broken(&self) -> i32 {
        self.broken.load(Ordering::Relaxed)
    }

    /// Records that held output could not be delivered.
    pub fn set_broken(&self, errno: i32) {
        self.broken.store(errno, Ordering::Relaxed);
    }

    /// The host descriptor, or -1 for a remote file of a follower.
    #[inline]
    pub fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// A new host descriptor for the same open file description.
    pub(crate) fn fd_clone(&self) -> Option<OwnedFd> {
        self.fd.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// The host descriptor.
    pub fn owned(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }
}

/// An absolute path with `.`, `..` and repeated slashes resolved lexically.
pub fn normalize(path: &[u8]) -> Vec<u8> {
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
    let mut out = Vec::with_capacity(path.len() + 1);
    for c in &parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize(b"/"), b"/");
        assert_eq!(normalize(b"/a//b/./c/"), b"/a/b/c");
        assert_eq!(normalize(b"/a/b/../../.."), b"/");
        assert_eq!(normalize(b"/tmp/x/../y"), b"/tmp/y");
    }
}

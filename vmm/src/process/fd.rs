//! The program's file descriptor table.
//!
//! Descriptor numbers are virtual: allocated lowest-first exactly as Linux
//! does, so they are the same in every variant whatever host descriptors
//! back them. Duplicates share one open file (one host descriptor), which is
//! closed when the last of them is.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use super::errno::{Errno, SysResult};

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
    Epoll(RefCell<HashMap<u32, u64>>),
    /// A Unix socket: the path the program bound it to (the host sees a
    /// sandbox-resolved path instead).
    Unix(RefCell<Option<Vec<u8>>>),
}

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
    pub broken: Cell<i32>,
    /// Whether the host descriptor is non-blocking, once looked up (the
    /// guest's F_SETFL and FIONBIO forget it).
    nonblock: Cell<Option<bool>>,
}

impl OpenFile {
    pub fn new(fd: OwnedFd, kind: FileKind) -> Rc<Self> {
        Rc::new(OpenFile {
            fd: Some(fd),
            kind,
            extra: Extra::None,
            remote: false,
            broken: Cell::new(0),
            nonblock: Cell::new(None),
        })
    }

    /// An open file with VMM-side state.
    pub fn with_extra(fd: OwnedFd, kind: FileKind, extra: Extra) -> Rc<Self> {
        Rc::new(OpenFile { fd: Some(fd), kind, extra, remote: false, broken: Cell::new(0), nonblock: Cell::new(None) })
    }

    /// Whether a read or accept on it can wait on the host: never for
    /// regular files and directories, else unless it is non-blocking
    /// (looked up once with F_GETFL, then remembered).
    pub fn may_block(&self) -> bool {
        if matches!(self.kind, FileKind::Regular | FileKind::Directory) {
            return false;
        }
        let nonblock = match self.nonblock.get() {
            Some(v) => v,
            None => {
                // SAFETY: plain call on a descriptor this file owns.
                let fl = unsafe { libc::fcntl(self.raw(), libc::F_GETFL) };
                let v = fl >= 0 && fl & libc::O_NONBLOCK != 0;
                self.nonblock.set(Some(v));
                v
            }
        };
        !nonblock
    }

    /// The guest changed the status flags: look them up again next time.
    pub fn forget_flags(&self) {
        self.nonblock.set(None);
    }

    /// A file with a host descriptor or none (a follower's remote file).
    pub fn make(fd: Option<OwnedFd>, kind: FileKind, extra: Extra, remote: bool) -> Rc<Self> {
        Rc::new(OpenFile { fd, kind, extra, remote, broken: Cell::new(0), nonblock: Cell::new(None) })
    }

    /// The host descriptor (-1 for a follower's remote file, which the VMM
    /// never passes to the host: its operations are replayed).
    #[inline]
    pub fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// A duplicate of the host descriptor, if any.
    fn fd_clone(&self) -> Option<OwnedFd> {
        self.fd.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// The owned host descriptor, if any.
    pub fn owned(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }
}

/// One slot of the table.
#[derive(Clone, Debug)]
pub struct FdEntry {
    pub file: Rc<OpenFile>,
    pub cloexec: bool,
}

/// The table.
#[derive(Debug)]
pub struct FdTable {
    slots: Vec<Option<FdEntry>>,
    /// RLIMIT_NOFILE of the program.
    pub limit: usize,
}

impl FdTable {
    pub fn new(limit: usize) -> Self {
        FdTable { slots: Vec::new(), limit }
    }

    /// The entry for `fd`, or EBADF.
    #[inline]
    pub fn get(&self, fd: u64) -> SysResult<&FdEntry> {
        let i = i32::try_from(fd as i64).map_err(|_| Errno::EBADF)?;
        if i < 0 {
            return Err(Errno::EBADF);
        }
        self.slots.get(i as usize).and_then(|s| s.as_ref()).ok_or(Errno::EBADF)
    }

    /// The open file behind `fd`.
    #[inline]
    pub fn file(&self, fd: u64) -> SysResult<&Rc<OpenFile>> {
        self.get(fd).map(|e| &e.file)
    }

    /// Installs `file` at the lowest free number >= `min`.
    pub fn insert(&mut self, file: Rc<OpenFile>, cloexec: bool, min: usize) -> SysResult<u64> {
        let start = min.min(self.slots.len());
        let free = (start..self.slots.len()).find(|&i| self.slots[i].is_none()).unwrap_or(self.slots.len().max(min));
        if free >= self.limit {
            return Err(Errno::EMFILE);
        }
        if free >= self.slots.len() {
            self.slots.resize(free + 1, None);
        }
        self.slots[free] = Some(FdEntry { file, cloexec });
        Ok(free as u64)
    }

    /// Installs `file` at exactly `fd`, closing what was there.
    pub fn insert_at(&mut self, fd: u64, file: Rc<OpenFile>, cloexec: bool) -> SysResult<u64> {
        let i = usize::try_from(fd).map_err(|_| Errno::EBADF)?;
        if i >= self.limit {
            return Err(Errno::EBADF);
        }
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        self.slots[i] = Some(FdEntry { file, cloexec });
        Ok(fd)
    }

    /// Removes `fd`.
    pub fn close(&mut self, fd: u64) -> SysResult<()> {
        self.get(fd)?;
        self.slots[fd as usize] = None;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Ok(())
    }

    /// Sets the close-on-exec flag.
    pub fn set_cloexec(&mut self, fd: u64, on: bool) -> SysResult<()> {
        self.get(fd)?;
        if let Some(Some(e)) = self.slots.get_mut(fd as usize) {
            e.cloexec = on;
        }
        Ok(())
    }

    /// Closes every close-on-exec descriptor (at execve).
    pub fn close_on_exec(&mut self) {
        for s in &mut self.slots {
            if s.as_ref().is_some_and(|e| e.cloexec) {
                *s = None;
            }
        }
    }

    /// Marks descriptors as remote: their operations are the leader's.
    pub fn mark_remote(&mut self, fds: &[u64]) {
        for &fd in fds {
            if let Some(Some(e)) = self.slots.get_mut(fd as usize) {
                let f = &e.file;
                e.file = OpenFile::make(f.fd_clone(), f.kind, Extra::None, true);
            }
        }
    }

    /// Number of open descriptors.
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Rc<OpenFile> {
        let f = std::fs::File::open("/dev/null").unwrap();
        OpenFile::new(OwnedFd::from(f), FileKind::CharDevice)
    }

    #[test]
    fn lowest_free_number_first() {
        let mut t = FdTable::new(8);
        assert_eq!(t.insert(file(), false, 0).unwrap(), 0);
        assert_eq!(t.insert(file(), false, 0).unwrap(), 1);
        assert_eq!(t.insert(file(), false, 0).unwrap(), 2);
        t.close(1).unwrap();
        assert_eq!(t.insert(file(), false, 0).unwrap(), 1);
        assert_eq!(t.insert(file(), false, 5).unwrap(), 5);
        assert_eq!(t.insert(file(), false, 0).unwrap(), 3);
        assert_eq!(t.get(u64::MAX).unwrap_err(), Errno::EBADF);
        assert_eq!(t.get(1 << 40).unwrap_err(), Errno::EBADF);
        assert_eq!(t.insert(file(), false, 8).unwrap_err(), Errno::EMFILE);
    }

    #[test]
    fn cloexec_closes_at_exec_only_marked() {
        let mut t = FdTable::new(8);
        t.insert(file(), true, 0).unwrap();
        t.insert(file(), false, 0).unwrap();
        t.close_on_exec();
        assert!(t.get(0).is_err());
        assert!(t.get(1).is_ok());
    }
}

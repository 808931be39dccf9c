//! The program's file descriptor table.
//!
//! Descriptor numbers are virtual: allocated lowest-first exactly as Linux
//! does, so they are the same in every variant whatever host descriptors
//! back them. Duplicates share one open file (one host descriptor), which is
//! closed when the last of them is. A table is shared by the tasks created
//! with CLONE_FILES and copied for the others.

use std::sync::Arc;

use super::errno::{Errno, SysResult};
use super::file::{Extra, OpenFile};

/// One descriptor: the open file and its close-on-exec flag.
#[derive(Clone, Debug)]
pub struct FdEntry {
    pub file: Arc<OpenFile>,
    pub cloexec: bool,
}

/// The table (cloned for a child without CLONE_FILES: the copies share
/// the open files).
#[derive(Clone, Debug)]
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
    pub fn file(&self, fd: u64) -> SysResult<&Arc<OpenFile>> {
        self.get(fd).map(|e| &e.file)
    }

    /// Installs `file` at the lowest free number >= `min`.
    pub fn insert(&mut self, file: Arc<OpenFile>, cloexec: bool, min: usize) -> SysResult<u64> {
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
    pub fn insert_at(&mut self, fd: u64, file: Arc<OpenFile>, cloexec: bool) -> SysResult<u64> {
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

    /// close_range: closes (or, with `cloexec`, marks) `first..=last`.
    pub fn close_range(&mut self, first: u64, last: u64, cloexec: bool) {
        let end = (last.min(self.slots.len().saturating_sub(1) as u64) as usize).saturating_add(1);
        for s in self.slots.iter_mut().take(end).skip(first as usize) {
            match s {
                Some(e) if cloexec => e.cloexec = true,
                _ => *s = None,
            }
        }
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
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

    /// The open descriptors' numbers, in order.
    pub fn numbers(&self) -> Vec<u64> {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i as u64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::file::FileKind;
    use std::os::fd::OwnedFd;

    fn file() -> Arc<OpenFile> {
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

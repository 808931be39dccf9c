//! Arguments and constants the file system calls share.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use super::super::errno::{Errno, SysResult};
use super::super::mm::Pod;

/// Linux caps one read or write at this many bytes.
pub(crate) const MAX_RW: u64 = 0x7fff_f000;

pub(super) const AT_FDCWD: i32 = -100;

pub(super) const AT_SYMLINK_NOFOLLOW: u64 = 0x100;

pub(super) const AT_REMOVEDIR: u64 = 0x200;

pub(super) const AT_SYMLINK_FOLLOW: u64 = 0x400;

pub(super) const AT_NO_AUTOMOUNT: u64 = 0x800;

pub(super) const AT_EMPTY_PATH: u64 = 0x1000;

pub(super) const AT_EACCESS: u64 = 0x200;

pub(super) const AT_STATX_SYNC_TYPE: u64 = 0x6000;

pub(super) const UIO_MAXIOV: u64 = 1024;

pub(super) const SELF_EXE: &[u8] = b"/proc/self/exe";

/// A descriptor argument: the kernel reads an `int`/`unsigned int`.
#[inline]
pub(super) fn fd_arg(a: u64) -> u64 {
    a as u32 as u64
}

#[inline]
pub(super) fn dirfd_arg(a: u64) -> i32 {
    a as u32 as i32
}

pub(super) fn cstr(b: &[u8]) -> SysResult<CString> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/N` of a host descriptor, for host calls that have no
/// descriptor-relative form for O_PATH descriptors.
pub(super) fn proc_fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a formatted number")
}

/// Size of `struct stat` on x86-64.
pub(super) const STAT_SIZE: usize = std::mem::size_of::<libc::stat>();

pub(super) fn stat_of(b: &[u8; STAT_SIZE]) -> libc::stat {
    let mut s: libc::stat = zeroed();
    s.as_bytes_mut().copy_from_slice(b);
    s
}

pub(super) fn zeroed<T: super::super::mm::Pod>() -> T {
    T::zeroed()
}

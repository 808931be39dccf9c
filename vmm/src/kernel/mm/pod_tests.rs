//! `Pod` types are copied to the program byte for byte, so none may have
//! implicit padding (uninitialised VMM bytes, different in every variant):
//! their fields, and the explicit padding their kernel layout names, cover
//! every byte.

use std::mem::{size_of, size_of_val};

use super::Pod;
use crate::kernel::signal::{SigAction, StackT};

/// Asserts that the public fields of `$t` and `$explicit` bytes of named
/// padding (private in libc) make up the whole type.
macro_rules! covered {
    ($t:ty, [$($f:ident),* $(,)?], $explicit:expr) => {{
        let v = <$t as Pod>::zeroed();
        let fields = 0 $(+ size_of_val(&v.$f))*;
        assert_eq!(fields + $explicit, size_of::<$t>(), "{} has implicit padding", stringify!($t));
    }};
}

#[test]
fn pod_types_have_no_implicit_padding() {
    covered!(libc::timespec, [tv_sec, tv_nsec], 0);
    covered!(libc::timeval, [tv_sec, tv_usec], 0);
    covered!(libc::iovec, [iov_base, iov_len], 0);
    covered!(libc::rlimit64, [rlim_cur, rlim_max], 0);
    covered!(libc::winsize, [ws_row, ws_col, ws_xpixel, ws_ypixel], 0);
    covered!(libc::itimerspec, [it_interval, it_value], 0);
    covered!(libc::itimerval, [it_interval, it_value], 0);
    covered!(libc::utsname, [sysname, nodename, release, version, machine, domainname], 0);
    // struct stat: __pad0 (an int) and __unused[3].
    covered!(
        libc::stat,
        [
            st_dev,
            st_ino,
            st_nlink,
            st_mode,
            st_uid,
            st_gid,
            st_rdev,
            st_size,
            st_blksize,
            st_blocks,
            st_atime,
            st_atime_nsec,
            st_mtime,
            st_mtime_nsec,
            st_ctime,
            st_ctime_nsec,
        ],
        4 + 3 * 8
    );
    // struct statfs: f_spare[5] (f_flags is spare in libc's view).
    covered!(
        libc::statfs,
        [f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_fsid, f_namelen, f_frsize],
        5 * 8
    );
    covered!(SigAction, [handler, flags, restorer, mask], 0);
    covered!(StackT, [sp, flags, _pad, size], 0);
}

#[test]
fn pod_types_have_the_kernels_sizes() {
    // x86-64 sizes of the kernel's structures, from its UAPI headers.
    assert_eq!(size_of::<libc::stat>(), 144);
    assert_eq!(size_of::<libc::statx>(), 256);
    assert_eq!(size_of::<libc::statfs>(), 120);
    assert_eq!(size_of::<libc::utsname>(), 6 * 65);
    assert_eq!(size_of::<SigAction>(), 32);
    assert_eq!(size_of::<StackT>(), 24);
}

#[test]
fn zeroed_pod_values_are_zero_bytes() {
    assert!(<libc::stat as Pod>::zeroed().as_bytes().iter().all(|&b| b == 0));
    assert!(<libc::statx as Pod>::zeroed().as_bytes().iter().all(|&b| b == 0));
    assert!(<StackT as Pod>::zeroed().as_bytes().iter().all(|&b| b == 0));
}

#[test]
fn the_padding_check_sees_padding() {
    // libc's struct sysinfo has 8 bytes of implicit padding (after `pad` and
    // at the end): why it is not Pod, and what the check above would catch.
    // SAFETY: sysinfo is plain integers; all zeroes is a valid value.
    let v: libc::sysinfo = unsafe { std::mem::zeroed() };
    let fields = size_of_val(&v.uptime)
        + size_of_val(&v.loads)
        + 6 * size_of_val(&v.totalram)
        + size_of_val(&v.procs)
        + size_of_val(&v.pad)
        + size_of_val(&v.totalhigh)
        + size_of_val(&v.freehigh)
        + size_of_val(&v.mem_unit)
        + size_of_val(&v._f);
    assert_eq!(size_of::<libc::sysinfo>() - fields, 8);
}

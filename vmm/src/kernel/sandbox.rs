//! The file-system sandbox: every path the program names resolves inside
//! the root directory and nowhere else.
//!
//! Resolution is the host kernel's `openat2` with `RESOLVE_IN_ROOT` (`..`
//! and absolute symlinks stop at the root) and `RESOLVE_NO_MAGICLINKS`
//! (no /proc/self/root, /proc/self/fd/N). The VMM joins relative paths to the
//! directory's canonical guest path itself, so `..` from a subdirectory works
//! as on Linux. Kernel pseudo file systems (proc, sys, debugfs, ...) and all
//! device nodes but a few harmless ones are refused, and a read-only root
//! refuses every modification with EROFS.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::errno::{Errno, SysResult};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// The longest path the program may pass (Linux's PATH_MAX).
pub const PATH_MAX: usize = 4096;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// File systems the program must not see into.
const DENIED_FS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x7363_6673, // securityfs
    0xcafe_4a11, // bpf
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x6265_6570, // configfs
    0x6165_676c, // pstore
    0xde5e_81e4, // efivarfs
    0x4249_4e4d, // binfmt_misc
    0x6573_5546, // fusectl
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x6e73_6673, // nsfs
    0x5049_4446, // pidfs
    0xf97c_ff8c, // selinuxfs
];

/// Character devices the program may open: (major, minor).
const ALLOWED_DEVICES: &[(u32, u32)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

/// Where the allowed devices are on the host, opened once by the VMM
/// before it enters its jail (whose mounts are nodev).
const DEVICE_PATHS: &[(&str, (u32, u32))] = &[
    ("/dev/null", (1, 3)),
    ("/dev/zero", (1, 5)),
    ("/dev/full", (1, 7)),
    ("/dev/random", (1, 8)),
    ("/dev/urandom", (1, 9)),
];

static DEVICES: std::sync::OnceLock<Vec<((u32, u32), OwnedFd)>> = std::sync::OnceLock::new();

/// Opens the host's allowed devices (once); the jail needs them open first.
pub fn open_devices() {
    DEVICES.get_or_init(|| {
        DEVICE_PATHS
            .iter()
            .filter_map(|(path, dev)| {
                let f = std::fs::OpenOptions::new().read(true).write(true).open(path).ok()?;
                Some((*dev, OwnedFd::from(f)))
            })
            .collect()
    });
}

/// A new descriptor for allowed device `rdev`: a duplicate of the VMM's.
fn device(rdev: libc::dev_t) -> SysResult<OwnedFd> {
    let dev = (libc::major(rdev), libc::minor(rdev));
    let fd = DEVICES.get().and_then(|v| v.iter().find(|(d, _)| *d == dev)).ok_or(Errno::EACCES)?;
    fd.1.try_clone().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EACCES)))
}

/// The host's /dev/null, for a closed standard descriptor.
pub fn null_device() -> std::io::Result<OwnedFd> {
    device(libc::makedev(1, 3)).map_err(|e| std::io::Error::from_raw_os_error(e.0))
}

fn fstat(fd: &OwnedFd) -> SysResult<libc::stat> {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid out-parameter.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Errno::last());
    }
    Ok(st)
}

/// Errors of sandbox setup.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("root directory {path}: {source}")]
    Root { path: PathBuf, source: std::io::Error },
    #[error("root directory {0} is not a directory")]
    NotDir(PathBuf),
    #[error("this host kernel lacks openat2 (Linux 5.6 or later is needed for the sandbox): {0}")]
    NoOpenat2(std::io::Error),
}

/// The root directory of a program.
pub struct Sandbox {
    root: OwnedFd,
    /// Canonical host path of the root, without a trailing slash ("" for /).
    root_host: Vec<u8>,
    writable: bool,
}

fn cstring(b: &[u8]) -> SysResult<CString> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// Splits a path into its parent and final component, for calls that act
/// on a directory entry. The final component keeps a trailing slash.
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = {
        let mut e = path.len();
        while e > 1 && path[e - 1] == b'/' {
            e -= 1;
        }
        &path[..e]
    };
    match trimmed.iter().rposition(|&c| c == b'/') {
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b".", path),
    }
}

/// The name without trailing slashes.
fn bare(name: &[u8]) -> &[u8] {
    let mut e = name.len();
    while e > 0 && name[e - 1] == b'/' {
        e -= 1;
    }
    &name[..e]
}

impl Sandbox {
    /// A sandbox rooted at `root`; writable or not.
    pub fn new(root: &Path, writable: bool) -> Result<Self, SandboxError> {
        open_devices();
        let canon = std::fs::canonicalize(root).map_err(|source| SandboxError::Root { path: root.into(), source })?;
        if !canon.is_dir() {
            return Err(SandboxError::NotDir(root.into()));
        }
        let c = CString::new(canon.as_os_str().as_encoded_bytes()).map_err(|_| SandboxError::NotDir(root.into()))?;
        // SAFETY: c is a valid NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(SandboxError::Root { path: root.into(), source: std::io::Error::last_os_error() });
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let root_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut root_host = canon.as_os_str().as_encoded_bytes().to_vec();
        if root_host == b"/" {
            root_host.clear();
        }
        let sb = Sandbox { root: root_fd, root_host, writable };
        // Probe openat2 once, so an old kernel is a clear startup error.
        sb.openat2(b"/", libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| SandboxError::NoOpenat2(std::io::Error::from_raw_os_error(e.0)))?;
        Ok(sb)
    }

    /// Whether modifications are allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn openat2(&self, path: &[u8], flags: i32, mode: u32) -> SysResult<OwnedFd> {
        let c = cstring(path)?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: mode as u64,
            resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        for _ in 0..8 {
            // SAFETY: c and how are valid for the call; the kernel reads
            // size_of::<OpenHow>() bytes of how.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh descriptor owned by nobody else.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            let e = Errno::last();
            // EAGAIN: a concurrent rename raced with `..` resolution; retry.
            if e != Errno::EAGAIN {
                return Err(match e {
                    // Magic links refused by RESOLVE_NO_MAGICLINKS.
                    Errno::ELOOP if flags & libc::O_NOFOLLOW == 0 && path.starts_with(b"/proc") => Errno::EACCES,
                    e => e,
                });
            }
        }
        Err(Errno::EAGAIN)
    }

    /// The full guest path for `path` relative to directory `base`.
    fn join(base: &[u8], path: &[u8]) -> SysResult<Vec<u8>> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if path[0] == b'/' {
            return Ok(path.to_vec());
        }
        let mut full = Vec::with_capacity(base.len() + 1 + path.len());
        full.extend_from_slice(base);
        if !full.ends_with(b"/") {
            full.push(b'/');
        }
        full.extend_from_slice(path);
        Ok(full)
    }

    /// Refuses pseudo file systems and devices outside the allow-list.
    fn vet(fd: &OwnedFd) -> SysResult<libc::stat> {
        // SAFETY: zeroed statfs/stat are valid out-parameters for the calls.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; sfs is a valid out-parameter.
        if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } == 0 && DENIED_FS.contains(&(sfs.f_type as i64)) {
            return Err(Errno::EACCES);
        }
        // SAFETY: as above.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; st is a valid out-parameter.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Errno::last());
        }
        let ft = st.st_mode & libc::S_IFMT;
        if ft == libc::S_IFBLK {
            return Err(Errno::EACCES);
        }
        if ft == libc::S_IFCHR {
            let dev = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            if !ALLOWED_DEVICES.contains(&dev) {
                return Err(Errno::EACCES);
            }
        }
        Ok(st)
    }

    /// Opens `path` (relative to guest directory `base`) with open(2)
    /// `flags` and `mode`. Returns the host descriptor and its stat.
    ///
    /// The path is looked up (O_PATH) and vetted first: a device node is
    /// never opened on the host (the jail's mounts are nodev); an allowed
    /// one gets a duplicate of the VMM's own descriptor for that device.
    pub fn open(&self, base: &[u8], path: &[u8], flags: i32, mode: u32) -> SysResult<(OwnedFd, libc::stat)> {
        let full = Self::join(base, path)?;
        let accmode = flags & libc::O_ACCMODE;
        let modifies = accmode != libc::O_RDONLY
            || flags & (libc::O_TRUNC | libc::O_CREAT) != 0
            || flags & libc::O_TMPFILE == libc::O_TMPFILE;
        let o_path = flags & libc::O_PATH != 0;
        let nofollow = flags & libc::O_NOFOLLOW;
        let mut probed = None;
        if flags & libc::O_TMPFILE != libc::O_TMPFILE {
            match self.openat2(&full, libc::O_PATH | nofollow, 0) {
                Ok(probe) => {
                    let st = Self::vet(&probe)?;
                    let chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
                    if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                        return Err(Errno::EEXIST);
                    }
                    if chr && !o_path {
                        return Ok((device(st.st_rdev)?, st));
                    }
                    if modifies && !self.writable && !o_path {
                        // O_CREAT of an existing file without writing is fine.
                        if accmode != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
                            return Err(Errno::EROFS);
                        }
                    }
                    probed = Some((st.st_dev, st.st_ino));
                }
                Err(Errno::ENOENT) if flags & libc::O_CREAT != 0 && !self.writable => return Err(Errno::EROFS),
                Err(Errno::ENOENT) if flags & libc::O_CREAT != 0 => {}
                Err(e) => return Err(e),
            }
        } else if !self.writable {
            return Err(Errno::EROFS);
        }
        let fd = self.openat2(&full, flags, mode)?;
        let st = match probed {
            Some(id) => {
                let st = fstat(&fd)?;
                if (st.st_dev, st.st_ino) == id {
                    st
                } else {
                    // Renamed under us since the lookup: vet afresh.
                    Self::vet(&fd)?
                }
            }
            None => Self::vet(&fd)?,
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFCHR && !o_path {
            return Err(Errno::EACCES);
        }
        Ok((fd, st))
    }

    /// An O_PATH descriptor for `path`, following a final symlink or not.
    pub fn lookup(&self, base: &[u8], path: &[u8], follow: bool) -> SysResult<(OwnedFd, libc::stat)> {
        let full = Self::join(base, path)?;
        let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
        let fd = self.openat2(&full, flags, 0)?;
        let st = Self::vet(&fd)?;
        Ok((fd, st))
    }

    /// The parent directory of `path` and the final component, for calls
    /// that create, remove or rename a directory entry. `.` and `..` as the
    /// final component get the error Linux gives for `op`.
    pub fn parent(&self, base: &[u8], path: &[u8], op: EntryOp) -> SysResult<(OwnedFd, CString)> {
        if !self.writable {
            // Look the path up first so a missing parent is ENOENT, as Linux.
            let (dir, _) = split_last(path);
            let full = Self::join(base, dir)?;
            self.openat2(&full, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            return Err(Errno::EROFS);
        }
        let full = Self::join(base, path)?;
        let (dir, name) = split_last(&full);
        match bare(name) {
            b"" | b"." | b".." => {
                return Err(match (op, bare(name)) {
                    (EntryOp::Create, _) => Errno::EEXIST,
                    (EntryOp::RemoveDir, b"..") => Errno::ENOTEMPTY,
                    (EntryOp::RemoveDir, _) => Errno::EINVAL,
                    (EntryOp::Unlink, _) => Errno::EISDIR,
                    (EntryOp::Rename, _) => Errno::EBUSY,
                })
            }
            _ => {}
        }
        let dirfd = self.openat2(dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Self::vet(&dirfd)?;
        Ok((dirfd, cstring(name)?))
    }

    /// The guest path of an absolute host path inside the root, or empty
    /// if it lies outside.
    pub fn guest_path_of_host(&self, host: &[u8]) -> Vec<u8> {
        match host.strip_prefix(self.root_host.as_slice()) {
            Some([]) => b"/".to_vec(),
            Some(rest) if rest.starts_with(b"/") => rest.to_vec(),
            _ => Vec::new(),
        }
    }

    /// The canonical guest path of an open host descriptor (a directory,
    /// for relative lookups), or "/" if it lies outside the root.
    pub fn guest_path(&self, fd: RawFd) -> Vec<u8> {
        let link = format!("/proc/self/fd/{fd}");
        let Ok(target) = std::fs::read_link(&link) else {
            return b"/".to_vec();
        };
        let g = self.guest_path_of_host(target.as_os_str().as_encoded_bytes());
        if g.is_empty() {
            b"/".to_vec()
        } else {
            g
        }
    }
}

/// The kind of directory-entry operation, for the errors of `.` and `..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryOp {
    Create,
    Unlink,
    RemoveDir,
    Rename,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_parents_right() {
        assert_eq!(split_last(b"/a/b"), (&b"/a"[..], &b"b"[..]));
        assert_eq!(split_last(b"/a"), (&b"/"[..], &b"a"[..]));
        assert_eq!(split_last(b"a"), (&b"."[..], &b"a"[..]));
        assert_eq!(split_last(b"/a/b/"), (&b"/a"[..], &b"b/"[..]));
        assert_eq!(Sandbox::join(b"/x", b"y").unwrap(), b"/x/y");
        assert_eq!(Sandbox::join(b"/", b"y").unwrap(), b"/y");
        assert_eq!(Sandbox::join(b"/x", b"").unwrap_err(), Errno::ENOENT);
    }

    #[test]
    fn escapes_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("dmvx-sb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/sub")).unwrap();
        std::fs::write(dir.join("secret"), b"outside").unwrap();
        std::fs::write(dir.join("root/inside"), b"inside").unwrap();
        std::os::unix::fs::symlink("../../secret", dir.join("root/sub/rel")).unwrap();
        std::os::unix::fs::symlink("/secret", dir.join("root/abs")).unwrap();
        let sb = Sandbox::new(&dir.join("root"), true).unwrap();
        for p in [&b"../secret"[..], b"/../secret", b"sub/rel", b"abs", b"/sub/../../secret"] {
            assert_eq!(
                sb.open(b"/", p, libc::O_RDONLY, 0).err(),
                Some(Errno::ENOENT),
                "{}",
                String::from_utf8_lossy(p)
            );
        }
        assert!(sb.open(b"/sub", b"../inside", libc::O_RDONLY, 0).is_ok());
        assert_eq!(sb.guest_path(sb.open(b"/", b"sub", libc::O_RDONLY, 0).unwrap().0.as_raw_fd()), b"/sub");
        let ro = Sandbox::new(&dir.join("root"), false).unwrap();
        assert_eq!(ro.open(b"/", b"inside", libc::O_WRONLY, 0).err(), Some(Errno::EROFS));
        assert_eq!(ro.open(b"/", b"new", libc::O_WRONLY | libc::O_CREAT, 0o644).err(), Some(Errno::EROFS));
        assert!(ro.open(b"/", b"inside", libc::O_RDONLY | libc::O_CREAT, 0o644).is_ok());
        assert_eq!(ro.parent(b"/", b"inside", EntryOp::Unlink).err(), Some(Errno::EROFS));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pseudo_file_systems_are_refused() {
        let sb = Sandbox::new(Path::new("/"), false).unwrap();
        assert_eq!(sb.open(b"/", b"/proc/self/maps", libc::O_RDONLY, 0).err(), Some(Errno::EACCES));
        assert_eq!(sb.lookup(b"/", b"/proc/self/root", true).err(), Some(Errno::EACCES));
        assert!(sb.open(b"/", b"/dev/null", libc::O_WRONLY, 0).is_ok());
        if Path::new("/dev/kvm").exists() {
            assert_eq!(sb.open(b"/", b"/dev/kvm", libc::O_RDWR, 0).err(), Some(Errno::EACCES));
        }
    }
}

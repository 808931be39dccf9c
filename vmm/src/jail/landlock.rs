//! Landlock: the VMM may reach files only beneath the program's root
//! directory (and its own /proc entries in the jail), never create device
//! nodes or issue ioctls on devices it opens later, and modify the root
//! only when it is writable. Where the kernel has scoping (ABI 6), it may
//! neither connect to abstract unix sockets nor signal processes outside
//! its own domain. Raw system calls: the ruleset ABI is small and fixed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SOCK: u64 = 1 << 9;
const MAKE_FIFO: u64 = 1 << 10;
const MAKE_BLOCK: u64 = 1 << 11;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// The file-system rights a ruleset of `abi` handles.
fn handled(abi: i64) -> u64 {
    let mut all = (1 << 13) - 1;
    if abi >= 2 {
        all |= REFER;
    }
    if abi >= 3 {
        all |= TRUNCATE;
    }
    if abi >= 5 {
        all |= IOCTL_DEV;
    }
    all
}

/// Restricts this process (and every process it forks) to `root`;
/// returns the kernel's Landlock ABI version.
pub(super) fn restrict(root: Option<&Path>, writable: bool, reports: Option<&OwnedFd>) -> Result<i64, String> {
    // SAFETY: the version query passes no attribute.
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, CREATE_RULESET_VERSION) };
    if abi < 1 {
        return Err(os_err("this kernel has no Landlock (landlock_create_ruleset)"));
    }
    let fs = handled(abi);
    let scoped = if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 };
    let attr = RulesetAttr { handled_access_fs: fs, handled_access_net: 0, scoped };
    // ABI 1-3 know only the first field, 4-5 the first two.
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: attr is valid for `size` bytes.
    let rs = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
    if rs < 0 {
        return Err(os_err("landlock_create_ruleset"));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let rs = unsafe { OwnedFd::from_raw_fd(rs as i32) };
    let read = EXECUTE | READ_FILE | READ_DIR;
    let write = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_SYM;
    let mut root_rights = read;
    if writable {
        root_rights |= write | REFER | TRUNCATE;
    }
    // Never device nodes, never device ioctls (the VMM's own devices are open already).
    root_rights &= fs & !(MAKE_CHAR | MAKE_BLOCK | IOCTL_DEV);
    if let Some(root) = root {
        add_rule(&rs, &open_path(root)?, root_rights)?;
    }
    let proc = Path::new("/proc");
    if root != Some(Path::new("/")) && proc.is_dir() {
        add_rule(&rs, &open_path(proc)?, READ_FILE | READ_DIR)?;
    }
    if let Some(dir) = reports {
        add_rule(&rs, dir, fs & (READ_FILE | WRITE_FILE | MAKE_REG | TRUNCATE))?;
    }
    // SAFETY: prctl/landlock_restrict_self with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_NO_NEW_PRIVS"));
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, rs.as_raw_fd(), 0u32) != 0 {
            return Err(os_err("landlock_restrict_self"));
        }
    }
    Ok(abi)
}

fn open_path(path: &Path) -> Result<OwnedFd, String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: c is a valid path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_err(&format!("open {} for a Landlock rule", path.display())));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn add_rule(rs: &OwnedFd, fd: &OwnedFd, rights: u64) -> Result<(), String> {
    let rule = PathBeneathAttr { allowed_access: rights, parent_fd: fd.as_raw_fd() };
    // SAFETY: rule is a valid landlock_path_beneath_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            rs.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        )
    };
    if r != 0 {
        return Err(os_err("landlock_add_rule"));
    }
    Ok(())
}

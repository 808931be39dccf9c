//! The jail's mount namespace: a private namespace whose root is a small
//! read-only tmpfs with two entries, the program's root directory (a
//! recursive bind, read-only unless writable, nosuid and nodev, without
//! the host's pseudo file systems) and a procfs that shows the VMM only
//! its own processes (it needs /proc/self/fd). The old root is detached,
//! so no other host path is reachable.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::JAIL_ROOT;

const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// The host file systems detached from the program's root in the jail
/// (a recursive bind of the host's / would otherwise bring them along).
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "pstore",
    "efivarfs",
    "binfmt_misc",
    "fusectl",
    "devpts",
    "mqueue",
    "nsfs",
    "hugetlbfs",
    "autofs",
    "rpc_pipefs",
    "selinuxfs",
];

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| format!("{} holds a NUL byte", p.display()))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<(), String> {
    let (s, t, f, d) = (
        CString::new(src).map_err(|e| e.to_string())?,
        cpath(target)?,
        CString::new(fstype).map_err(|e| e.to_string())?,
        CString::new(data).map_err(|e| e.to_string())?,
    );
    // SAFETY: all four are valid NUL-terminated strings for the call.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if r != 0 {
        return Err(os_err(&format!("mount {fstype} on {}", target.display())));
    }
    Ok(())
}

fn set_attr(target: &Path, flags: u32, set: u64) -> Result<(), String> {
    let t = cpath(target)?;
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: t is a valid path, attr a valid mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(os_err(&format!("mount_setattr {}", target.display())));
    }
    Ok(())
}

/// Undoes the octal escapes of /proc/self/mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of pseudo file systems under `under`, deepest first.
fn pseudo_mounts(mountinfo: &str, under: &str) -> Vec<String> {
    let prefix = format!("{under}/");
    let mut v: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let mut halves = l.splitn(2, " - ");
            let left = halves.next()?;
            let fstype = halves.next()?.split(' ').next()?;
            let point = unescape(left.split(' ').nth(4)?);
            (point.starts_with(&prefix) && PSEUDO_FS.contains(&fstype)).then_some(point)
        })
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.len()));
    v
}

/// Enters the namespace; returns where the program's root now is (none
/// without a root).
pub(super) fn enter(root: Option<&Path>, writable: bool, privileged: bool) -> Result<Option<PathBuf>, String> {
    if !privileged {
        return Err(
            "the VMM is not root, so it cannot make a mount namespace (start it as root; it drops to --uid)".into()
        );
    }
    // SAFETY: unshare with a flag only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(os_err("unshare(CLONE_NEWNS)"));
    }
    // Nothing done here propagates back to the host.
    mount("none", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    let tree = root.map(clone_tree).transpose()?;
    // The copy of the root is taken: the stage may cover any host path.
    let stage = ["/tmp", "/mnt", "/run"].iter().map(Path::new).find(|p| p.is_dir()).ok_or("no /tmp, /mnt or /run")?;
    mount(
        "dmvx-jail",
        stage,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "size=64k,nr_inodes=16,mode=0755",
    )?;
    let new_proc = stage.join("proc");
    std::fs::create_dir(&new_proc).map_err(|e| format!("mkdir {}: {e}", new_proc.display()))?;
    if let Some(tree) = tree {
        attach_root(tree, stage, writable)?;
    }
    mount(
        "proc",
        &new_proc,
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "hidepid=invisible,subset=pid",
    )?;
    std::env::set_current_dir(stage).map_err(|e| format!("chdir {}: {e}", stage.display()))?;
    let dot = c".";
    // SAFETY: both are valid paths; pivot_root(".", ".") stacks the old
    // root under the new one, detached below.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(os_err("pivot_root"));
    }
    // SAFETY: a valid path.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(os_err("detach the old root"));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    set_attr(Path::new("/"), 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)?;
    Ok(root.map(|_| PathBuf::from(JAIL_ROOT)))
}

/// A detached recursive copy of the mounts of `root`.
fn clone_tree(root: &Path) -> Result<OwnedFd, String> {
    let canon = std::fs::canonicalize(root).map_err(|e| format!("root directory {}: {e}", root.display()))?;
    let c = cpath(&canon)?;
    // SAFETY: c is a valid path; the result is checked.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE,
        )
    };
    if tree < 0 {
        return Err(os_err(&format!("open_tree {}", canon.display())));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as i32) })
}

/// Attaches `tree` at the stage's root directory: read-only unless
/// writable, nosuid, nodev, without the host's pseudo file systems.
fn attach_root(tree: OwnedFd, stage: &Path, writable: bool) -> Result<(), String> {
    let new_root = stage.join(JAIL_ROOT.trim_start_matches('/'));
    std::fs::create_dir(&new_root).map_err(|e| format!("mkdir {}: {e}", new_root.display()))?;
    let empty = CString::default();
    let target = cpath(&new_root)?;
    // SAFETY: tree is an open mount tree; the strings are valid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(os_err("move_mount of the root directory"));
    }
    drop(tree);
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    for p in pseudo_mounts(&info, &new_root.to_string_lossy()) {
        let cp = CString::new(p.as_str()).map_err(|e| e.to_string())?;
        // SAFETY: cp is a valid path.
        if unsafe { libc::umount2(cp.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(os_err(&format!("detach {p}")));
        }
    }
    let ro = if writable { 0 } else { MOUNT_ATTR_RDONLY };
    set_attr(&new_root, AT_RECURSIVE, ro | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_file_systems_under_the_root_are_found_deepest_first() {
        let info = "\
22 1 0:21 / /tmp/root rw - ext4 /dev/vda rw
23 22 0:22 / /tmp/root/proc rw,nosuid - proc proc rw
24 23 0:23 / /tmp/root/proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
25 22 0:24 / /tmp/root/dev rw - devtmpfs udev rw
26 22 0:25 / /tmp/root/my\\040dir rw - sysfs sysfs rw
27 1 0:26 / /proc rw - proc proc rw
";
        assert_eq!(
            pseudo_mounts(info, "/tmp/root"),
            vec!["/tmp/root/proc/sys/fs/binfmt_misc", "/tmp/root/my dir", "/tmp/root/proc"]
        );
    }
}

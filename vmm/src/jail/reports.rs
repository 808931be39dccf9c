//! The divergence report directory, opened before the jail (whose file
//! tree does not hold it) and written through that descriptor.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

static DIR: OnceLock<OwnedFd> = OnceLock::new();

/// Opens `dir` for reports written later (once per process).
pub fn open(dir: &Path) -> std::io::Result<()> {
    if DIR.get().is_some() {
        return Ok(());
    }
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: c is a valid path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let _ = DIR.set(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// The open report directory, if any (for the jail's Landlock rule).
pub(crate) fn fd() -> Option<&'static OwnedFd> {
    DIR.get()
}

/// Says at start, not at a divergence, when the VMM's identity (already
/// the jail's) may not write reports into the open directory.
pub(crate) fn warn_if_unwritable() {
    let Some(d) = DIR.get() else { return };
    // SAFETY: d is an open directory and "." a valid path.
    let r = unsafe { libc::faccessat(d.as_raw_fd(), c".".as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) };
    if r != 0 {
        log::warn!(
            "jail: --report-dir is not writable by uid {} gid {}: a divergence report will go to \
             stderr instead (give the directory to that uid, see docs/security.md)",
            // SAFETY: geteuid and getegid cannot fail.
            unsafe { libc::geteuid() },
            // SAFETY: as above.
            unsafe { libc::getegid() }
        );
    }
}

fn open_at(dir: &Path, name: &str, flags: i32) -> std::io::Result<std::fs::File> {
    let Some(d) = DIR.get() else {
        return std::fs::OpenOptions::new()
            .read(flags & libc::O_ACCMODE == libc::O_RDONLY)
            .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
            .create(flags & libc::O_CREAT != 0)
            .truncate(flags & libc::O_TRUNC != 0)
            .open(dir.join(name));
    };
    let c = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: d is an open directory, c a valid name; the result is checked.
    let fd = unsafe { libc::openat(d.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Writes report `name` into the report directory `dir`.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    open_at(dir, name, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?.write_all(data)
}

//! The jail's identity: an unprivileged uid and gid, no supplementary
//! groups, no capabilities in any set, no_new_privs, and not dumpable (no
//! process of the same uid, another run's VMM included, may ptrace it or
//! read its memory).

/// Securebits: root gets no capabilities from its uid (locked), nor may
/// ambient capabilities be raised (locked).
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Whether the VMM holds host root authority now.
pub(super) fn privileged() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Drops to `uid`/`gid` (only when root; otherwise they must be ours) and
/// clears every capability.
pub(super) fn drop_to(uid: u32, gid: u32, root: bool) -> Result<(), String> {
    // SAFETY: the prctl calls below take integer arguments only.
    unsafe {
        if root {
            // The bounding set first: dropping it needs CAP_SETPCAP.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                        break; // past the last capability this kernel has
                    }
                    return Err(os_err("drop the capability bounding set"));
                }
            }
            let bits = SECBIT_NOROOT
                | SECBIT_NOROOT_LOCKED
                | SECBIT_NO_SETUID_FIXUP_LOCKED
                | SECBIT_KEEP_CAPS_LOCKED
                | SECBIT_NO_CAP_AMBIENT_RAISE
                | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
            if libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) != 0 {
                return Err(os_err("set securebits"));
            }
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
            return Err(os_err("clear the ambient capabilities"));
        }
        if root {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(os_err("setgroups([])"));
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return Err(os_err(&format!("setresgid({gid})")));
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(os_err(&format!("setresuid({uid})")));
            }
        } else if libc::getuid() != uid || libc::getgid() != gid {
            return Err(format!(
                "the VMM runs as uid {} gid {}, not root: it cannot become uid {uid} gid {gid}",
                libc::getuid(),
                libc::getgid()
            ));
        }
        let hdr = CapHeader { version: CAP_V3, pid: 0 };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) != 0 {
            return Err(os_err("capset(0)"));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_NO_NEW_PRIVS"));
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(os_err("PR_SET_DUMPABLE 0"));
        }
    }
    Ok(())
}

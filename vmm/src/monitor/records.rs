//! Record parts too particular for the table's field kinds.

use dmvx_sync::record::RecordBuf;
use sha2::{Digest as _, Sha256};

use super::spec::{hash_iovs, read_u64, rec_bytes, rec_digest, rec_path, rec_sockaddr, CallView, UNREADABLE};

/// sendmsg: the data's digest and the destination, from the msghdr.
pub fn sendmsg(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    let mut raw = [0u8; 56];
    if v.read_user(a[1], &mut raw).is_err() {
        rec.int(UNREADABLE);
        return;
    }
    let w = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let d = hash_iovs(v, w(2), w(3));
    rec_digest(rec, d);
    if w(0) != 0 {
        rec_sockaddr(v, rec, w(0), w(1) & 0xffff_ffff);
    }
}

/// execve and execveat: the path, and digests of argv and envp.
pub fn execve(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    let (path, argv, envp) = (a[0], a[1], a[2]);
    exec_args(v, rec, path, argv, envp);
}

/// execveat (dirfd first; the flags are recorded by the table).
pub fn execveat(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    exec_args(v, rec, a[1], a[2], a[3]);
}

fn exec_args(v: &mut dyn CallView, rec: &mut RecordBuf, path: u64, argv: u64, envp: u64) {
    rec_path(v, rec, path);
    for (arr, is_argv) in [(argv, true), (envp, false)] {
        let mut h = Sha256::new();
        let mut i = 0u64;
        let mut ok = arr != 0;
        while ok {
            match read_u64(v, arr + i * 8) {
                Some(0) => break,
                Some(p) => match v.read_cstr(p, 128 * 1024) {
                    Ok(mut s) => {
                        if is_argv {
                            v.rewrite_arg(&mut s);
                        }
                        h.update(&s);
                        h.update([0]);
                    }
                    Err(_) => ok = false,
                },
                None => ok = false,
            }
            i += 1;
            if i > 65536 {
                break;
            }
        }
        rec.digest(h.finalize().into(), i);
    }
}

/// mmap: length, protection, flags; the file and offset of a file mapping.
pub fn mmap(_v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    rec.int(a[1]).int(a[2]).int(a[3]);
    if a[3] & libc::MAP_ANONYMOUS as u64 == 0 {
        rec.fd(a[4]).int(a[5]);
    }
}

/// epoll_ctl: the events, not the data (the program's pointers).
pub fn epoll_ctl(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    let mut b = [0u8; 4];
    let ev = v.read_user(a[3], &mut b).ok().map(|()| u32::from_le_bytes(b));
    match ev {
        Some(ev) if a[1] as i32 != libc::EPOLL_CTL_DEL => rec.int(ev as u64),
        _ => rec.int(0),
    };
}

/// poll and ppoll: the descriptors and events, not the revents.
pub fn poll(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    rec.int(a[1]);
    if a[1] <= 1024 {
        let mut b = vec![0u8; a[1] as usize * 8];
        if v.read_user(a[0], &mut b).is_ok() {
            for c in b.chunks_mut(8) {
                c[6] = 0;
                c[7] = 0;
            }
            rec.bytes(&b);
        }
    }
}

/// select and pselect6: the sets, each in its place (a missing set is
/// recorded as such, so a write set cannot pass for an exception set).
pub fn select(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    rec.int(a[0]);
    for &s in &a[1..4] {
        if s == 0 {
            rec.int(0);
        } else {
            rec_bytes(v, rec, s, (a[0].min(1024)).div_ceil(64) * 8);
        }
    }
}

/// rt_sigaction: the disposition's kind and flags, not the handler's address.
pub fn rt_sigaction(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    rec.int(a[0]);
    let mut b = [0u8; 32];
    if a[1] != 0 && v.read_user(a[1], &mut b).is_ok() {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        rec.int(w(0).min(2)).int(w(1)).int(w(3));
    }
}

/// rt_sigprocmask: how, and the new mask.
pub fn rt_sigprocmask(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    rec.int(a[0]);
    if a[1] != 0 {
        if let Some(m) = read_u64(v, a[1]) {
            rec.int(m);
        }
    }
}

/// utimensat: the two timespecs, if given, with the seconds of a UTIME_NOW
/// or UTIME_OMIT zeroed (the kernel ignores them, so a program may leave
/// them unset, and they differ between variants).
pub fn utimensat(v: &mut dyn CallView, rec: &mut RecordBuf, a: &[u64; 6]) {
    if a[2] == 0 {
        return;
    }
    let mut b = [0u8; 32];
    if v.read_user(a[2], &mut b).is_err() {
        rec.int(UNREADABLE);
        return;
    }
    for t in b.chunks_exact_mut(16) {
        let nsec = i64::from_le_bytes(t[8..].try_into().expect("8 bytes"));
        if nsec == libc::UTIME_NOW || nsec == libc::UTIME_OMIT {
            t[..8].fill(0);
        }
    }
    rec.bytes(&b);
}

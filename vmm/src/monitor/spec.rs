//! What the monitor needs to know of each system call, written beside its
//! handler in the kernel's syscall table: the call's class (which decides
//! its policy) and how its record is built.
//!
//! Records are normalised so that diversified variants compare equal and
//! different behaviour does not: descriptor numbers (virtual, the same in
//! every variant), integers, paths and input structures; digests of output
//! data; never addresses, padding or arguments a call ignores. Both sides of
//! a cluster derive class and record from the same facts — the arguments and
//! the virtual descriptor table — never from host state that differs between
//! variants.

use dmvx_sync::policy::Class;
use dmvx_sync::record::RecordBuf;
use sha2::{Digest as _, Sha256};

use crate::kernel::errno::SysResult;
use crate::kernel::file::FileKind;
use crate::kernel::mm::HostIov;

/// A pointer argument the VMM could not read (both variants must fail alike).
pub const UNREADABLE: u64 = u64::MAX - 1;
const AT_FDCWD: i32 = -100;
/// Data longer than this is hashed, not recorded whole.
const RECORD_BYTES_MAX: u64 = 4096;
/// At most this many bytes of output are hashed per call.
const HASH_MAX: u64 = 1 << 30;

/// What the monitor may ask the kernel about the current call: the narrow
/// interface between the two.
pub trait CallView {
    /// What is behind virtual descriptor `fd`.
    fn fd_info(&self, fd: u64) -> Option<FdFacts>;
    /// The guest path of the directory behind `dirfd` (the working directory
    /// for AT_FDCWD), as the program named it.
    fn dir_path(&self, dirfd: i32) -> Option<Vec<u8>>;
    /// Copies program memory.
    fn read_user(&mut self, va: u64, buf: &mut [u8]) -> SysResult<()>;
    /// A NUL-terminated string of program memory.
    fn read_cstr(&mut self, va: u64, max: usize) -> SysResult<Vec<u8>>;
    /// A path argument (bounded as the kernel bounds paths).
    fn path_arg(&mut self, va: u64) -> SysResult<Vec<u8>>;
    /// A program argument as the VMM passes it on (a follower's bound
    /// temporary names are the leader's).
    fn rewrite_arg(&self, arg: &mut Vec<u8>);
    /// A follower's fresh names bound to the leader's, if it has any: its
    /// output data is compared with them translated (`NameMap::translate`).
    fn bound_names(&self) -> Option<&dmvx_sync::tempname::NameMap>;
    /// Host iovecs over `len` bytes of program memory at `va` (readable).
    fn user_iov(&mut self, va: u64, len: u64, iov: &mut HostIov) -> SysResult<u64>;
}

/// What the monitor knows of a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdFacts {
    pub kind: FileKind,
    /// Remote: the leader's (followers replay its operations).
    pub remote: bool,
    /// A pipe or socket pair between the program's own processes.
    pub ipc: bool,
    /// It names a file inside the root (the program opened it there), not an
    /// inherited descriptor, whose host kind may differ between variants
    /// (the leader's stdout a file, a follower's /dev/null).
    pub in_root: bool,
}

/// How a call is classified.
#[derive(Clone, Copy, Debug)]
pub enum ClassRule {
    /// Always this class, on a local resource.
    Is(Class),
    /// Always this class, on a remote resource (the leader's: sockets, epoll...).
    Remote(Class),
    /// By the descriptor in argument `fd`: `remote` if it is remote, else
    /// `local` (a local character device read is randomness: /dev/urandom).
    OnFd { fd: u8, remote: Class, local: Class },
    /// Exec if argument `prot` has PROT_EXEC, else Memory.
    ProtExec { prot: u8 },
    /// An open: FileModify (remote) if it may write or the path is under a
    /// mutable path of the policy, else FileOpen.
    Open { flags: Flags, dirfd: Option<u8>, path: u8 },
    /// A futex wait without timeout is a sleep; other futex calls are
    /// process state.
    Futex,
    /// A call that closes descriptor argument `fd` (close, or dup2 onto
    /// it): closing a socket is seen by its peer (SocketSetup, lockstep);
    /// anything else is process state.
    Closes { fd: u8 },
    /// fcntl: taking or dropping a lock is a modification (the leader's,
    /// checked first), querying one file metadata (the leader's); the rest
    /// is descriptor state as `OnFd`.
    Fcntl,
}

/// Where an open's flags are.
#[derive(Clone, Copy, Debug)]
pub enum Flags {
    Arg(u8),
    Const(u64),
}

/// One field of a record.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    /// A virtual descriptor number.
    Fd(u8),
    /// An integer argument.
    Int(u8),
    /// A constant (for calls that share a layout).
    Const(u64),
    /// A directory descriptor (AT_FDCWD or a descriptor).
    DirFd(u8),
    /// A path argument.
    Path(u8),
    /// A path argument, if the pointer is not null.
    PathIf(u8),
    /// The path of an open: a fresh temporary name (compared with its random
    /// part masked, `dmvx_sync::tempname`) if the flags in argument `flags`
    /// are O_CREAT|O_EXCL.
    NewPath { path: u8, flags: u8 },
    /// The path of a mkdir: a fresh temporary name if argument `mode` is
    /// mkdtemp's 0700.
    NewDir { path: u8, mode: u8 },
    /// Bytes of an input structure: `len` bytes at the pointer (hashed
    /// length only if longer than a page).
    Bytes { ptr: u8, len: Len },
    /// The same, if the pointer is not null.
    BytesIf { ptr: u8, len: Len },
    /// A digest of output data: `len` bytes at `ptr`.
    Digest { ptr: u8, len: u8 },
    /// A digest of the data an iovec array describes.
    DigestIov { ptr: u8, cnt: u8 },
    /// A socket address (without padding), if the pointer is not null.
    SockAddrIf { ptr: u8, len: u8 },
    /// A socket address.
    SockAddr { ptr: u8, len: u8 },
    /// The mode of an open that creates (0 otherwise).
    CreateMode { flags: u8, mode: u8 },
    /// A record part too particular for the fields above.
    Custom(fn(&mut dyn CallView, &mut RecordBuf, &[u64; 6])),
}

/// A length: an argument, bounded, or a constant.
#[derive(Clone, Copy, Debug)]
pub enum Len {
    ArgMax(u8, u64),
    Const(u64),
}

/// The class of a call, whether it works on a remote resource, and the path
/// of an open that only the policy's mutable paths can make a modification.
#[derive(Debug, PartialEq, Eq)]
pub struct Classified {
    pub class: Class,
    pub remote: bool,
    pub open_path: Option<Vec<u8>>,
}

/// Whether open flags create a file (so the mode argument counts).
pub fn creates(flags: u64) -> bool {
    flags as i32 & libc::O_CREAT != 0 || flags as i32 & libc::O_TMPFILE == libc::O_TMPFILE
}

/// Classifies a call by its rule (`None`: a call without a table row).
pub fn classify(v: &mut dyn CallView, rule: Option<ClassRule>, a: &[u64; 6]) -> Classified {
    let simple = |class, remote| Classified { class, remote, open_path: None };
    let Some(rule) = rule else { return simple(Class::Other, false) };
    match rule {
        ClassRule::Is(c) => simple(c, false),
        ClassRule::Remote(c) => simple(c, true),
        ClassRule::OnFd { fd, remote, local } => match v.fd_info(a[fd as usize]) {
            // Data between the program's processes: replicated (its timing
            // decides what a read returns), never held (it stays inside).
            Some(f) if f.ipc && matches!(remote, Class::NetInput | Class::Output) => simple(Class::Ipc, true),
            // A write to a regular file modifies the file: checked before it
            // takes effect, then performed at once. Held back, it would land
            // at the offset of its release, and reads, seeks and sizes of the
            // file in between would not see it.
            Some(f) if f.remote && f.in_root && f.kind == FileKind::Regular && remote == Class::Output => {
                simple(Class::FileModify, true)
            }
            Some(f) if f.remote => simple(remote, true),
            Some(f) if f.kind == FileKind::CharDevice && remote == Class::NetInput => simple(Class::Random, false),
            _ => simple(local, false),
        },
        ClassRule::ProtExec { prot } => {
            simple(if a[prot as usize] & libc::PROT_EXEC as u64 != 0 { Class::Exec } else { Class::Memory }, false)
        }
        ClassRule::Open { flags, dirfd, path } => {
            let flags = match flags {
                Flags::Arg(i) => a[i as usize],
                Flags::Const(f) => f,
            };
            let writes = flags as i32 & (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) != 0;
            if writes {
                return simple(Class::FileModify, true);
            }
            // The full guest path, from the program's path and the directory's
            // guest path: the same facts in every variant.
            let open_path = v.path_arg(a[path as usize]).ok().and_then(|p| {
                if p.first() == Some(&b'/') {
                    return Some(p);
                }
                let dirfd = dirfd.map_or(AT_FDCWD, |i| a[i as usize] as u32 as i32);
                let base = v.dir_path(dirfd)?;
                Some([base, b"/".to_vec(), p].concat())
            });
            // Normalised, so the policy's mutable-path check sees `//tmp/x`,
            // `/etc/../tmp/x` and `tmp/x` from `/` as the `/tmp/x` they open
            // (lexical, as the sandbox resolves `..`; links are not followed).
            let open_path = open_path.map(|p| crate::kernel::file::normalize(&p));
            Classified { class: Class::FileOpen, remote: false, open_path }
        }
        ClassRule::Closes { fd } => match v.fd_info(a[fd as usize]) {
            // A socket of the leader's (not the VMM's own virtual netlink).
            Some(f) if f.kind == FileKind::Socket && !f.ipc && f.remote => simple(Class::SocketSetup, true),
            _ => simple(Class::Process, false),
        },
        ClassRule::Fcntl => {
            let locks = [libc::F_SETLK, libc::F_SETLKW, libc::F_OFD_SETLK, libc::F_OFD_SETLKW].contains(&(a[1] as i32));
            // Whose lock a query finds is the leader's host's business too.
            let query = [libc::F_GETLK, libc::F_OFD_GETLK].contains(&(a[1] as i32));
            match v.fd_info(a[0]) {
                _ if locks => simple(Class::FileModify, true),
                _ if query => simple(Class::FileMeta, true),
                Some(f) if f.remote => simple(Class::FdState, true),
                _ => simple(Class::Other, false),
            }
        }
        ClassRule::Futex => {
            // FUTEX_WAIT without a timeout: a sleep.
            simple(if a[1] & 0x7f == 0 && a[3] == 0 { Class::Sleep } else { Class::Process }, false)
        }
    }
}

/// Builds the record of call `nr` of class `class` from its fields; in a
/// process with threads, `thread` names the caller first, and `flag` (the
/// scheduler's decision about the call, when it made one) follows.
pub fn build_record(
    v: &mut dyn CallView,
    rec: &mut RecordBuf,
    call: (u64, Option<u32>, Option<u64>),
    class: Class,
    fields: &[Field],
    a: &[u64; 6],
) {
    let (nr, thread, flag) = call;
    rec.call(nr, class);
    if let Some(t) = thread {
        rec.thread(t);
        if let Some(f) = flag {
            rec.int(f);
        }
    }
    for f in fields {
        field(v, rec, *f, a);
    }
}

fn field(v: &mut dyn CallView, rec: &mut RecordBuf, f: Field, a: &[u64; 6]) {
    let arg = |i: u8| a[i as usize];
    let len = |l: Len| match l {
        Len::ArgMax(i, m) => arg(i).min(m),
        Len::Const(n) => n,
    };
    match f {
        Field::Fd(i) => {
            rec.fd(arg(i));
        }
        Field::Int(i) => {
            rec.int(arg(i));
        }
        Field::Const(c) => {
            rec.int(c);
        }
        Field::DirFd(i) => {
            if arg(i) as u32 as i32 == AT_FDCWD {
                rec.int(AT_FDCWD as u64);
            } else {
                rec.fd(arg(i));
            }
        }
        Field::Path(i) => rec_path(v, rec, arg(i)),
        Field::PathIf(i) => {
            if arg(i) != 0 {
                rec_path(v, rec, arg(i));
            }
        }
        Field::NewPath { path, flags } => {
            let excl = (libc::O_CREAT | libc::O_EXCL) as u64;
            rec_new_path(v, rec, arg(path), arg(flags) & excl == excl);
        }
        Field::NewDir { path, mode } => rec_new_path(v, rec, arg(path), arg(mode) & 0o7777 == 0o700),
        Field::Bytes { ptr, len: l } => rec_bytes(v, rec, arg(ptr), len(l)),
        Field::BytesIf { ptr, len: l } => {
            if arg(ptr) != 0 {
                rec_bytes(v, rec, arg(ptr), len(l));
            }
        }
        Field::Digest { ptr, len: l } => {
            let d = hash_user(v, arg(ptr), arg(l));
            rec_digest(rec, d);
        }
        Field::DigestIov { ptr, cnt } => {
            let d = hash_iovs(v, arg(ptr), arg(cnt));
            rec_digest(rec, d);
        }
        Field::SockAddr { ptr, len: l } => rec_sockaddr(v, rec, arg(ptr), arg(l)),
        Field::SockAddrIf { ptr, len: l } => {
            if arg(ptr) != 0 {
                rec_sockaddr(v, rec, arg(ptr), arg(l));
            }
        }
        Field::CreateMode { flags, mode } => {
            rec.int(if creates(arg(flags)) { arg(mode) } else { 0 });
        }
        Field::Custom(f) => f(v, rec, a),
    }
}

/// Reads a little-endian u64 of program memory.
pub fn read_u64(v: &mut dyn CallView, va: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    v.read_user(va, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// SHA-256 and length of `len` bytes of program memory at `va`, or None.
/// A follower's bound fresh names in them count as the leader's.
pub fn hash_user(v: &mut dyn CallView, va: u64, len: u64) -> Option<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut names = dmvx_sync::tempname::Translation::default();
    let mut done = 0u64;
    let len = len.min(HASH_MAX);
    while done < len {
        let mut iov = HostIov::default();
        // A short answer is a full host iovec list (how the variant's frames
        // lie in host memory, which differs between variants) or an
        // inaccessible page (which the next call reports): go on until then.
        let n = match v.user_iov(va + done, len - done, &mut iov) {
            Ok(n) => n,
            Err(_) if done > 0 => break,
            Err(_) => return None,
        };
        if n == 0 {
            break;
        }
        for s in iov.slices() {
            match v.bound_names() {
                Some(m) => m.translate(&mut names, s, &mut |b| h.update(b)),
                None => h.update(s),
            }
        }
        done += n;
    }
    if let Some(m) = v.bound_names() {
        m.finish(&mut names, &mut |b| h.update(b));
    }
    Some((h.finalize().into(), done))
}

/// A digest of the bytes the program's iovec array describes.
pub fn hash_iovs(v: &mut dyn CallView, iov_va: u64, cnt: u64) -> Option<([u8; 32], u64)> {
    if cnt > 1024 {
        return None;
    }
    let mut raw = vec![0u8; cnt as usize * 16];
    v.read_user(iov_va, &mut raw).ok()?;
    let mut h = Sha256::new();
    let mut total = 0;
    for c in raw.chunks_exact(16) {
        let base = u64::from_le_bytes(c[..8].try_into().ok()?);
        let len = u64::from_le_bytes(c[8..].try_into().ok()?);
        if len == 0 {
            continue;
        }
        let (d, n) = hash_user(v, base, len)?;
        h.update(d);
        total += n;
    }
    Some((h.finalize().into(), total))
}

/// A path, or the unreadable marker.
pub fn rec_path(v: &mut dyn CallView, rec: &mut RecordBuf, va: u64) {
    match v.path_arg(va) {
        Ok(p) => rec.str(&p),
        Err(_) => rec.int(UNREADABLE),
    };
}

/// A path that may be a fresh temporary name (`fresh`).
fn rec_new_path(v: &mut dyn CallView, rec: &mut RecordBuf, va: u64, fresh: bool) {
    match v.path_arg(va) {
        Ok(p) if fresh => rec.temp_name(&p),
        Ok(p) => rec.str(&p),
        Err(_) => rec.int(UNREADABLE),
    };
}

/// `len` bytes of an input structure (only the length beyond a page).
pub fn rec_bytes(v: &mut dyn CallView, rec: &mut RecordBuf, va: u64, len: u64) {
    if len > RECORD_BYTES_MAX {
        rec.int(len);
        return;
    }
    let mut b = vec![0u8; len as usize];
    match v.read_user(va, &mut b) {
        Ok(()) => rec.bytes(&b),
        Err(_) => rec.int(UNREADABLE),
    };
}

/// A socket address, without the padding and unused bytes a program may
/// leave uninitialised (they differ between variants).
pub fn rec_sockaddr(v: &mut dyn CallView, rec: &mut RecordBuf, va: u64, len: u64) {
    let len = len.min(128);
    let mut b = vec![0u8; len as usize];
    if v.read_user(va, &mut b).is_err() {
        rec.int(UNREADABLE);
        return;
    }
    rec.int(len).bytes(sockaddr_significant(&b));
}

/// The bytes of a socket address that carry meaning.
pub fn sockaddr_significant(b: &[u8]) -> &[u8] {
    let family = if b.len() >= 2 { u16::from_le_bytes([b[0], b[1]]) as i32 } else { -1 };
    let keep = match family {
        libc::AF_INET => 8,
        libc::AF_INET6 => 28,
        libc::AF_UNIX if b.get(2).is_some_and(|&c| c != 0) => {
            2 + b[2..].iter().position(|&c| c == 0).unwrap_or(b.len() - 2)
        }
        _ => b.len(),
    };
    &b[..keep.min(b.len())]
}

/// A digest, or the unreadable marker.
pub fn rec_digest(rec: &mut RecordBuf, d: Option<([u8; 32], u64)>) {
    match d {
        Some((d, n)) => rec.digest(d, n),
        None => rec.int(UNREADABLE),
    };
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;

//! Unit tests of call classification and record normalisation.
//!
//! Each test builds two "variants": fake program memories holding the same
//! data at different (diversified) addresses, and, where it matters, with
//! different garbage in the bytes a call ignores. Their records must be
//! equal; records of different data must not be. The rows come from the
//! real syscall table, so these tests check the table as deployed.

use std::collections::HashMap;

use dmvx_sync::policy::Class;
use dmvx_sync::record::RecordBuf;

use super::*;
use crate::kernel::errno::Errno;
use crate::kernel::syscall::{self, names};

const PAGE: u64 = 4096;

/// How a fake's pages lie in host memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backing {
    /// One page after the other (host iovecs merge into one).
    Contiguous,
    /// With a page-sized hole after each page (every page is its own host
    /// iovec, as frames allocated in a different order would be).
    Scattered,
}

/// One mapped range of program memory.
struct Region {
    /// Page-aligned start.
    va: u64,
    pages: u64,
    stride: u64,
    data: Vec<u8>,
}

impl Region {
    fn host_off(&self, va: u64) -> Option<usize> {
        if va < self.va || va >= self.va + self.pages * PAGE {
            return None;
        }
        let rel = va - self.va;
        Some(((rel / PAGE) * self.stride + rel % PAGE) as usize)
    }
}

/// A variant's program memory and descriptor table, as `CallView` serves
/// them.
struct Fake {
    regions: Vec<Region>,
    backing: Backing,
    fds: HashMap<u64, FdFacts>,
    dirs: HashMap<i32, Vec<u8>>,
    cwd: Vec<u8>,
    /// A follower's bound fresh names.
    names: Option<dmvx_sync::tempname::NameMap>,
}

impl Fake {
    fn new(backing: Backing) -> Self {
        Fake {
            regions: Vec::new(),
            backing,
            fds: HashMap::new(),
            dirs: HashMap::new(),
            cwd: b"/".to_vec(),
            names: None,
        }
    }

    /// Maps the pages covering `[va, va + len)` that are not mapped yet,
    /// zero-filled, each run of them as one region.
    fn map(&mut self, va: u64, len: u64) {
        let stride = if self.backing == Backing::Scattered { 2 * PAGE } else { PAGE };
        let mut run: Option<(u64, u64)> = None;
        for page in va / PAGE..(va + len).div_ceil(PAGE) {
            let mapped = self.regions.iter().any(|r| r.host_off(page * PAGE).is_some());
            match (&mut run, mapped) {
                (Some((_, n)), false) => *n += 1,
                (None, false) => run = Some((page * PAGE, 1)),
                (_, true) => {
                    if let Some((start, pages)) = run.take() {
                        self.regions.push(Region {
                            va: start,
                            pages,
                            stride,
                            data: vec![0; (pages * stride) as usize],
                        });
                    }
                }
            }
        }
        if let Some((start, pages)) = run {
            self.regions.push(Region { va: start, pages, stride, data: vec![0; (pages * stride) as usize] });
        }
    }

    /// Maps and fills program memory at `va` with `bytes` (other bytes of
    /// pages already mapped stay); returns `va`.
    fn put(&mut self, va: u64, bytes: &[u8]) -> u64 {
        self.map(va, bytes.len().max(1) as u64);
        for (i, &b) in bytes.iter().enumerate() {
            let p = self.host_ptr(va + i as u64).expect("just mapped");
            // SAFETY: host_ptr points at a live byte of a region's buffer.
            unsafe { *p = b };
        }
        va
    }

    fn host_ptr(&mut self, va: u64) -> Option<*mut u8> {
        let r = self.regions.iter_mut().find(|r| r.host_off(va).is_some())?;
        let off = r.host_off(va)?;
        Some(r.data[off..].as_mut_ptr())
    }

    fn byte(&mut self, va: u64) -> SysResult<u8> {
        // SAFETY: host_ptr points at a live byte of a region's buffer.
        self.host_ptr(va).map(|p| unsafe { *p }).ok_or(Errno::EFAULT)
    }
}

impl CallView for Fake {
    fn rewrite_arg(&self, _arg: &mut Vec<u8>) {}

    fn bound_names(&self) -> Option<&dmvx_sync::tempname::NameMap> {
        self.names.as_ref()
    }

    fn fd_info(&self, fd: u64) -> Option<FdFacts> {
        self.fds.get(&(fd as u32 as u64)).copied()
    }

    fn dir_path(&self, dirfd: i32) -> Option<Vec<u8>> {
        if dirfd == AT_FDCWD {
            return Some(self.cwd.clone());
        }
        self.dirs.get(&dirfd).cloned()
    }

    fn read_user(&mut self, va: u64, buf: &mut [u8]) -> SysResult<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(va.checked_add(i as u64).ok_or(Errno::EFAULT)?)?;
        }
        Ok(())
    }

    fn read_cstr(&mut self, va: u64, max: usize) -> SysResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let c = self.byte(va + out.len() as u64)?;
            if c == 0 {
                return Ok(out);
            }
            out.push(c);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
        }
    }

    fn path_arg(&mut self, va: u64) -> SysResult<Vec<u8>> {
        self.read_cstr(va, 4095)
    }

    /// As `Mm::user_iov`: page by page, stopping at an unmapped page or a
    /// full list; EFAULT if the first byte is unmapped.
    fn user_iov(&mut self, va: u64, len: u64, iov: &mut HostIov) -> SysResult<u64> {
        let mut done = 0;
        while done < len {
            let a = va + done;
            let n = (PAGE - a % PAGE).min(len - done);
            let Some(p) = self.host_ptr(a) else {
                if done == 0 && iov.total == 0 {
                    return Err(Errno::EFAULT);
                }
                break;
            };
            if !iov.push_host(p, n as usize) {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

/// Two variants: different backings, and bases that differ by more than a
/// page and within a page (as the layouts differ).
fn pair() -> (Fake, Fake) {
    (Fake::new(Backing::Contiguous), Fake::new(Backing::Scattered))
}

const BASE_A: u64 = 0x5555_1234_0000;
const BASE_B: u64 = 0x7f3a_9870_0000;

/// Classifies and records call `nr` as the run loop does, with its table row.
fn record(v: &mut Fake, nr: i64, a: [u64; 6]) -> (Classified, Vec<u8>) {
    let entry = syscall::entry(nr as u64);
    let c = classify(v, entry.map(|e| e.class), &a);
    let mut rec = RecordBuf::new();
    build_record(v, &mut rec, (nr as u64, None, None), c.class, entry.map_or(&[], |e| e.record), &a);
    (c, rec.as_bytes().to_vec())
}

fn sockaddr_in(port: u16, addr: [u8; 4], zero: [u8; 8]) -> Vec<u8> {
    let mut b = (libc::AF_INET as u16).to_le_bytes().to_vec();
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&addr);
    b.extend_from_slice(&zero);
    b
}

fn sockaddr_un(path: &[u8], tail: u8) -> Vec<u8> {
    let mut b = vec![tail; 110];
    b[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_le_bytes());
    b[2..2 + path.len()].copy_from_slice(path);
    b[2 + path.len()] = 0;
    b
}

fn socket() -> FdFacts {
    FdFacts { kind: FileKind::Socket, remote: true, ipc: false, in_root: false }
}

#[test]
fn connect_ignores_sockaddr_in_padding() {
    let (mut a, mut b) = pair();
    let pa = a.put(BASE_A + 0x10, &sockaddr_in(8080, [127, 0, 0, 1], [0xaa; 8]));
    let pb = b.put(BASE_B + 0xf38, &sockaddr_in(8080, [127, 0, 0, 1], [0x17; 8]));
    let (ca, ra) = record(&mut a, libc::SYS_connect, [3, pa, 16, 0, 0, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_connect, [3, pb, 16, 0, 0, 0]);
    assert_eq!(ca, cb);
    assert_eq!(ca.class, Class::SocketSetup);
    assert!(ca.remote);
    assert_eq!(ra, rb, "sin_zero differs between variants, nothing else");

    let pb = b.put(BASE_B + 0x2000, &sockaddr_in(8081, [127, 0, 0, 1], [0; 8]));
    let (_, rb) = record(&mut b, libc::SYS_connect, [3, pb, 16, 0, 0, 0]);
    assert_ne!(ra, rb, "another port");
    let pb = b.put(BASE_B + 0x3000, &sockaddr_in(8080, [10, 0, 0, 1], [0; 8]));
    let (_, rb) = record(&mut b, libc::SYS_connect, [3, pb, 16, 0, 0, 0]);
    assert_ne!(ra, rb, "another address");
    let (_, rb) = record(&mut b, libc::SYS_connect, [4, pa, 16, 0, 0, 0]);
    assert_ne!(ra, rb, "another descriptor");
}

#[test]
fn connect_ignores_bytes_after_a_unix_path() {
    let (mut a, mut b) = pair();
    let pa = a.put(BASE_A + 0x800, &sockaddr_un(b"/run/app.sock", 0x00));
    let pb = b.put(BASE_B + 0xff0, &sockaddr_un(b"/run/app.sock", 0xcc));
    let (_, ra) = record(&mut a, libc::SYS_connect, [5, pa, 110, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_connect, [5, pb, 110, 0, 0, 0]);
    assert_eq!(ra, rb);
    let pb = b.put(BASE_B + 0x4000, &sockaddr_un(b"/run/app.sok", 0x00));
    let (_, rb) = record(&mut b, libc::SYS_connect, [5, pb, 110, 0, 0, 0]);
    assert_ne!(ra, rb, "another path");
}

#[test]
fn sockaddr_in6_keeps_flow_info_and_scope() {
    let mut sa = vec![0u8; 28];
    sa[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_le_bytes());
    sa[8..24].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    sa[24] = 2;
    assert_eq!(sockaddr_significant(&sa), &sa[..]);
    let mut long = sa.clone();
    long.extend_from_slice(&[0xee; 4]);
    assert_eq!(sockaddr_significant(&long), &sa[..], "bytes beyond sockaddr_in6 are not meaning");
    assert_eq!(sockaddr_significant(&sa[..1]), &sa[..1], "a truncated address is kept whole");
    assert_eq!(sockaddr_significant(&sa[..6]), &sa[..6], "a short AF_INET6 address is not read beyond its end");
}

#[test]
fn sendto_records_data_and_destination_not_addresses() {
    let (mut a, mut b) = pair();
    let da = a.put(BASE_A + 0x123, b"datagram");
    let db = b.put(BASE_B + 0xabc, b"datagram");
    let sa = a.put(BASE_A + 0x5000, &sockaddr_in(53, [127, 0, 0, 53], [1; 8]));
    let sb = b.put(BASE_B + 0x9000, &sockaddr_in(53, [127, 0, 0, 53], [2; 8]));
    a.fds.insert(3, socket());
    b.fds.insert(3, socket());
    let (ca, ra) = record(&mut a, libc::SYS_sendto, [3, da, 8, 0, sa, 16]);
    let (cb, rb) = record(&mut b, libc::SYS_sendto, [3, db, 8, 0, sb, 16]);
    assert_eq!(ca.class, Class::Output);
    assert_eq!(ca, cb);
    assert_eq!(ra, rb);
    let db = b.put(BASE_B + 0x7000, b"datagrem");
    let (_, rb) = record(&mut b, libc::SYS_sendto, [3, db, 8, 0, sb, 16]);
    assert_ne!(ra, rb, "other data");
    let (_, rb) = record(&mut b, libc::SYS_sendto, [3, db, 8, 0, 0, 0]);
    assert_ne!(ra, rb, "no destination");
}

/// A pollfd array: (fd, events, revents) per entry.
fn pollfds(entries: &[(i32, i16, i16)]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|&(fd, ev, rev)| [&fd.to_le_bytes()[..], &ev.to_le_bytes(), &rev.to_le_bytes()].concat())
        .collect()
}

#[test]
fn poll_ignores_revents_on_entry() {
    let (mut a, mut b) = pair();
    let pa = a.put(BASE_A + 0xff8, &pollfds(&[(3, libc::POLLIN, 0), (4, libc::POLLOUT, 0x55)]));
    let pb = b.put(BASE_B + 0x040, &pollfds(&[(3, libc::POLLIN, 0x1234), (4, libc::POLLOUT, -1)]));
    let (ca, ra) = record(&mut a, libc::SYS_poll, [pa, 2, 1000, 0, 0, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_poll, [pb, 2, 1000, 0, 0, 0]);
    assert_eq!(ca.class, Class::Wait);
    assert_eq!(ca, cb);
    assert_eq!(ra, rb, "revents left over from an earlier poll differ");
    let pb = b.put(BASE_B + 0x3000, &pollfds(&[(3, libc::POLLIN, 0), (4, libc::POLLIN, 0)]));
    let (_, rb) = record(&mut b, libc::SYS_poll, [pb, 2, 1000, 0, 0, 0]);
    assert_ne!(ra, rb, "other events");
    let pb = b.put(BASE_B + 0x5000, &pollfds(&[(3, libc::POLLIN, 0), (5, libc::POLLOUT, 0)]));
    let (_, rb) = record(&mut b, libc::SYS_poll, [pb, 2, 1000, 0, 0, 0]);
    assert_ne!(ra, rb, "another descriptor");
}

#[test]
fn write_digest_is_of_the_data_not_its_address() {
    let (mut a, mut b) = pair();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let pa = a.put(BASE_A + 0x10, &data);
    let pb = b.put(BASE_B + 0xfff, &data);
    let (_, ra) = record(&mut a, libc::SYS_write, [1, pa, data.len() as u64, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_write, [1, pb, data.len() as u64, 0, 0, 0]);
    assert_eq!(ra, rb);
    let mut other = data.clone();
    other[9_999] ^= 1;
    let po = b.put(BASE_B + 0x10_0000, &other);
    let (_, rb) = record(&mut b, libc::SYS_write, [1, po, data.len() as u64, 0, 0, 0]);
    assert_ne!(ra, rb, "the last byte differs");
    let (_, rb) = record(&mut b, libc::SYS_write, [1, pb, data.len() as u64 - 1, 0, 0, 0]);
    assert_ne!(ra, rb, "a shorter write");
}

/// More pages than one host iovec list holds: the digest must not depend on
/// how the variant's frames lie in host memory.
#[test]
fn write_digest_of_a_large_buffer_ignores_frame_layout() {
    let (mut a, mut b) = pair();
    let len = (HostIov::MAX as u64 + 16) * PAGE + 123;
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let pa = a.put(BASE_A + 0x200, &data);
    let pb = b.put(BASE_B + 0x600, &data);
    let (_, ra) = record(&mut a, libc::SYS_write, [1, pa, len, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_write, [1, pb, len, 0, 0, 0]);
    assert_eq!(ra, rb, "contiguous and scattered frames");
    let mut want = RecordBuf::new();
    want.call(libc::SYS_write as u64, Class::Other).fd(1).digest_of(&data);
    assert_eq!(ra, want.as_bytes(), "every byte is hashed");
}

#[test]
fn write_digest_of_a_partly_unmapped_buffer_is_alike() {
    let (mut a, mut b) = pair();
    let pa = a.put(BASE_A + PAGE - 3, b"abc");
    let pb = b.put(BASE_B + PAGE - 3, b"abc");
    let (_, ra) = record(&mut a, libc::SYS_write, [1, pa, 100, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_write, [1, pb, 100, 0, 0, 0]);
    assert_eq!(ra, rb);
    let mut want = RecordBuf::new();
    want.call(libc::SYS_write as u64, Class::Other).fd(1).digest_of(b"abc");
    assert_eq!(ra, want.as_bytes(), "the readable part");
    let (_, ru) = record(&mut a, libc::SYS_write, [1, BASE_A + 0x40_0000, 100, 0, 0, 0]);
    let mut want = RecordBuf::new();
    want.call(libc::SYS_write as u64, Class::Other).fd(1).int(UNREADABLE);
    assert_eq!(ru, want.as_bytes(), "an unmapped buffer is marked, not hashed");
}

/// A follower that prints the fresh name it created (mktemp) writes what
/// the leader writes once its name is bound to the leader's, wherever the
/// name lies in its memory (here across a page boundary of scattered
/// frames); nothing else is translated.
#[test]
fn write_of_a_bound_fresh_name_compares_as_the_leaders() {
    let (mut leader, mut follower) = pair();
    let pa = leader.put(BASE_A + 0x10, b"/case/t.ZyXwVuTs\n");
    let pb = follower.put(BASE_B + PAGE - 10, b"/case/t.AbCdEfGh\n");
    let (_, ra) = record(&mut leader, libc::SYS_write, [1, pa, 17, 0, 0, 0]);
    let (_, rb) = record(&mut follower, libc::SYS_write, [1, pb, 17, 0, 0, 0]);
    assert_ne!(ra, rb, "unbound, the names differ");
    let mut names = dmvx_sync::tempname::NameMap::default();
    assert!(names.bind(b"/case/t.AbCdEfGh", b"/case/t.ZyXwVuTs"));
    follower.names = Some(names);
    let (_, rb) = record(&mut follower, libc::SYS_write, [1, pb, 17, 0, 0, 0]);
    assert_eq!(ra, rb, "bound, the follower's name stands for the leader's");
    let po = follower.put(BASE_B + 0x8000, b"/case/t.AbCdEfGX\n");
    let (_, rb) = record(&mut follower, libc::SYS_write, [1, po, 17, 0, 0, 0]);
    assert_ne!(ra, rb, "another name is not translated");
    let (_, rb) = record(&mut follower, libc::SYS_write, [1, pb, 16, 0, 0, 0]);
    assert_ne!(ra, rb, "a shorter write");
}

/// An iovec array: (base, len) per entry.
fn iovecs(entries: &[(u64, u64)]) -> Vec<u8> {
    entries.iter().flat_map(|&(base, len)| [base.to_le_bytes(), len.to_le_bytes()].concat()).collect()
}

#[test]
fn writev_digest_is_of_the_data_not_the_iovec_addresses() {
    let (mut a, mut b) = pair();
    let a1 = a.put(BASE_A + 0x100, b"HTTP/1.1 200 OK\r\n");
    let a2 = a.put(BASE_A + 0x7ff0, b"body");
    let b1 = b.put(BASE_B + 0xe00, b"HTTP/1.1 200 OK\r\n");
    let b2 = b.put(BASE_B + 0x2_0000, b"body");
    let va = a.put(BASE_A + 0x9000, &iovecs(&[(a1, 17), (0xdead_0000, 0), (a2, 4)]));
    let vb = b.put(BASE_B + 0x3_0008, &iovecs(&[(b1, 17), (0xbeef_0000, 0), (b2, 4)]));
    let (_, ra) = record(&mut a, libc::SYS_writev, [1, va, 3, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_writev, [1, vb, 3, 0, 0, 0]);
    assert_eq!(ra, rb, "the bases differ, and an empty entry's base too");
    let b3 = b.put(BASE_B + 0x4_0000, b"bodY");
    let vb = b.put(BASE_B + 0x5_0000, &iovecs(&[(b1, 17), (0, 0), (b3, 4)]));
    let (_, rb) = record(&mut b, libc::SYS_writev, [1, vb, 3, 0, 0, 0]);
    assert_ne!(ra, rb, "other data");
}

#[test]
fn sendmsg_records_data_and_destination_from_the_msghdr() {
    let (mut a, mut b) = pair();
    let (da, db) = (a.put(BASE_A + 0x10, b"ping"), b.put(BASE_B + 0x20, b"ping"));
    let ia = a.put(BASE_A + 0x1000, &iovecs(&[(da, 4)]));
    let ib = b.put(BASE_B + 0x2000, &iovecs(&[(db, 4)]));
    let sa = a.put(BASE_A + 0x3000, &sockaddr_in(7, [127, 0, 0, 1], [9; 8]));
    let sb = b.put(BASE_B + 0x4000, &sockaddr_in(7, [127, 0, 0, 1], [0; 8]));
    // msghdr: name, namelen (+ padding the program may leave), iov, iovlen,
    // control, controllen, flags.
    let msghdr = |name: u64, pad: u32, iov: u64| {
        [name.to_le_bytes(), (16u64 | ((pad as u64) << 32)).to_le_bytes(), iov.to_le_bytes(), 1u64.to_le_bytes()]
            .concat()
            .into_iter()
            .chain([0u8; 24])
            .collect::<Vec<u8>>()
    };
    let ma = a.put(BASE_A + 0x5000, &msghdr(sa, 0, ia));
    let mb = b.put(BASE_B + 0x6000, &msghdr(sb, 0xffff_ffff, ib));
    a.fds.insert(3, socket());
    b.fds.insert(3, socket());
    let (_, ra) = record(&mut a, libc::SYS_sendmsg, [3, ma, 0, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_sendmsg, [3, mb, 0, 0, 0, 0]);
    assert_eq!(ra, rb);
    let sb = b.put(BASE_B + 0x7000, &sockaddr_in(8, [127, 0, 0, 1], [0; 8]));
    let mb = b.put(BASE_B + 0x8000, &msghdr(sb, 0, ib));
    let (_, rb) = record(&mut b, libc::SYS_sendmsg, [3, mb, 0, 0, 0, 0]);
    assert_ne!(ra, rb, "another destination port");
}

#[test]
fn openat_relative_to_a_dirfd_classifies_alike() {
    let (mut a, mut b) = pair();
    for v in [&mut a, &mut b] {
        v.dirs.insert(5, b"/var/lib/app".to_vec());
    }
    let pa = a.put(BASE_A + 0xffe, b"state.db\0");
    let pb = b.put(BASE_B + 0x333, b"state.db\0");
    // O_RDONLY with a mode the call ignores (left over in the register).
    let (ca, ra) = record(&mut a, libc::SYS_openat, [5, pa, libc::O_RDONLY as u64, 0o644, 0, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_openat, [5, pb, libc::O_RDONLY as u64, 0o7777, 0, 0]);
    assert_eq!(ca.class, Class::FileOpen);
    assert!(!ca.remote);
    assert_eq!(ca.open_path.as_deref(), Some(&b"/var/lib/app/state.db"[..]));
    assert_eq!(ca, cb);
    assert_eq!(ra, rb, "only the ignored mode differs");

    let (_, rb) = record(&mut b, libc::SYS_openat, [6, pb, libc::O_RDONLY as u64, 0, 0, 0]);
    assert_ne!(ra, rb, "another directory descriptor");
    let pb = b.put(BASE_B + 0x5000, b"state.dc\0");
    let (cb, rb) = record(&mut b, libc::SYS_openat, [5, pb, libc::O_RDONLY as u64, 0, 0, 0]);
    assert_ne!(ca, cb, "another path");
    assert_ne!(ra, rb, "another path");
}

#[test]
fn openat_for_writing_is_a_modification_with_its_mode() {
    let (mut a, mut b) = pair();
    let pa = a.put(BASE_A, b"/tmp/out\0");
    let pb = b.put(BASE_B + 0x10, b"/tmp/out\0");
    let flags = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64;
    let (ca, ra) = record(&mut a, libc::SYS_openat, [AT_FDCWD as u32 as u64, pa, flags, 0o600, 0, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_openat, [AT_FDCWD as u32 as u64, pb, flags, 0o600, 0, 0]);
    assert_eq!(ca, Classified { class: Class::FileModify, remote: true, open_path: None });
    assert_eq!(ca, cb);
    assert_eq!(ra, rb);
    let (_, rb) = record(&mut b, libc::SYS_openat, [AT_FDCWD as u32 as u64, pb, flags, 0o666, 0, 0]);
    assert_ne!(ra, rb, "another creation mode");
}

#[test]
fn open_paths_are_normalised_for_the_mutable_check() {
    let mut v = Fake::new(Backing::Contiguous);
    v.dirs.insert(4, b"/".to_vec());
    v.dirs.insert(7, b"/etc/".to_vec());
    let cases: [(i32, &[u8], &[u8]); 7] = [
        (AT_FDCWD, b"tmp/x\0", b"/tmp/x"),
        (4, b"tmp/x\0", b"/tmp/x"),
        (7, b"../tmp/./x\0", b"/tmp/x"),
        (AT_FDCWD, b"//tmp//x\0", b"/tmp/x"),
        (AT_FDCWD, b"/etc/../tmp/x\0", b"/tmp/x"),
        (AT_FDCWD, b"/../../tmp/x/.\0", b"/tmp/x"),
        (AT_FDCWD, b".\0", b"/"),
    ];
    for (i, (dirfd, path, want)) in cases.into_iter().enumerate() {
        let p = v.put(BASE_A + i as u64 * PAGE, path);
        let (c, _) = record(&mut v, libc::SYS_openat, [dirfd as u32 as u64, p, 0, 0, 0, 0]);
        assert_eq!(c.open_path.as_deref(), Some(want), "{:?}", String::from_utf8_lossy(path));
    }
}

#[test]
fn an_unreadable_path_is_marked_alike() {
    let (mut a, mut b) = pair();
    let (ca, ra) = record(&mut a, libc::SYS_openat, [AT_FDCWD as u32 as u64, BASE_A, 0, 0, 0, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_openat, [AT_FDCWD as u32 as u64, BASE_B, 0, 0, 0, 0]);
    assert_eq!(ca, cb);
    assert_eq!(ca.open_path, None);
    assert_eq!(ra, rb);
    let p = b.put(BASE_B, b"\0");
    let (_, rb) = record(&mut b, libc::SYS_openat, [AT_FDCWD as u32 as u64, p, 0, 0, 0, 0]);
    assert_ne!(ra, rb, "an empty path is not an unreadable one");
}

#[test]
fn reads_are_classified_by_what_the_descriptor_is() {
    let mut v = Fake::new(Backing::Contiguous);
    v.fds.insert(3, socket());
    v.fds.insert(4, FdFacts { kind: FileKind::CharDevice, remote: false, ipc: false, in_root: false });
    v.fds.insert(5, FdFacts { kind: FileKind::Pipe, remote: true, ipc: true, in_root: false });
    v.fds.insert(6, FdFacts { kind: FileKind::Regular, remote: false, ipc: false, in_root: true });
    let class = |v: &mut Fake, fd: u64| {
        let c = record(v, libc::SYS_read, [fd, BASE_A, 10, 0, 0, 0]).0;
        (c.class, c.remote)
    };
    assert_eq!(class(&mut v, 3), (Class::NetInput, true));
    assert_eq!(class(&mut v, 4), (Class::Random, false), "/dev/urandom");
    assert_eq!(class(&mut v, 5), (Class::Ipc, true));
    assert_eq!(class(&mut v, 6), (Class::FileRead, false));
    assert_eq!(class(&mut v, 9), (Class::FileRead, false), "a bad descriptor fails locally");
    assert_eq!(class(&mut v, 3 | 0xffff_ffff_0000_0000), (Class::NetInput, true), "fds are 32-bit");
}

#[test]
fn memory_calls_classify_by_prot_exec_and_ignore_the_address_hint() {
    let (mut a, mut b) = pair();
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let (ca, ra) = record(&mut a, libc::SYS_mmap, [BASE_A, 8192, rw, anon, u64::MAX, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_mmap, [BASE_B, 8192, rw, anon, u64::MAX, 0]);
    assert_eq!(ca.class, Class::Memory);
    assert_eq!(ca, cb);
    assert_eq!(ra, rb);
    let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    let (cx, rx_rec) = record(&mut b, libc::SYS_mmap, [0, 8192, rx, libc::MAP_PRIVATE as u64, 3, 4096]);
    assert_eq!(cx.class, Class::Exec);
    assert_ne!(ra, rx_rec);
    assert_eq!(record(&mut a, libc::SYS_mprotect, [BASE_A, 4096, rx, 0, 0, 0]).0.class, Class::Exec);
}

#[test]
fn futex_wait_without_timeout_is_a_sleep() {
    let mut v = Fake::new(Backing::Contiguous);
    let class =
        |v: &mut Fake, op: i32, timeout: u64| record(v, libc::SYS_futex, [BASE_A, op as u64, 1, timeout, 0, 0]).0.class;
    assert_eq!(class(&mut v, libc::FUTEX_WAIT, 0), Class::Sleep);
    assert_eq!(class(&mut v, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, 0), Class::Sleep);
    assert_eq!(class(&mut v, libc::FUTEX_WAIT, BASE_A), Class::Process);
    assert_eq!(class(&mut v, libc::FUTEX_WAKE, 0), Class::Process);
}

#[test]
fn rt_sigaction_ignores_handler_and_restorer_addresses() {
    let (mut a, mut b) = pair();
    let act = |handler: u64, flags: u64, restorer: u64, mask: u64| {
        [handler, flags, restorer, mask].iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()
    };
    let sa_restorer = 0x0400_0000u64;
    let pa = a.put(BASE_A + 0x40, &act(BASE_A + 0x1111, sa_restorer, BASE_A + 0x2222, 1 << 14));
    let pb = b.put(BASE_B + 0xf80, &act(BASE_B + 0x9999, sa_restorer, BASE_B + 0x8888, 1 << 14));
    let (_, ra) = record(&mut a, libc::SYS_rt_sigaction, [libc::SIGTERM as u64, pa, 0, 8, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_rt_sigaction, [libc::SIGTERM as u64, pb, 0, 8, 0, 0]);
    assert_eq!(ra, rb);
    let pb = b.put(BASE_B + 0x3000, &act(1, sa_restorer, BASE_B + 0x8888, 1 << 14));
    let (_, rb) = record(&mut b, libc::SYS_rt_sigaction, [libc::SIGTERM as u64, pb, 0, 8, 0, 0]);
    assert_ne!(ra, rb, "SIG_IGN is not a handler");
    let pb = b.put(BASE_B + 0x4000, &act(BASE_B + 0x9999, sa_restorer, BASE_B + 0x8888, 1 << 15));
    let (_, rb) = record(&mut b, libc::SYS_rt_sigaction, [libc::SIGTERM as u64, pb, 0, 8, 0, 0]);
    assert_ne!(ra, rb, "another mask");
}

#[test]
fn execve_records_the_strings_not_the_arrays() {
    let (mut a, mut b) = pair();
    let strings = |v: &mut Fake, base: u64, list: &[&[u8]]| -> u64 {
        let ptrs: Vec<u64> = list.iter().enumerate().map(|(i, s)| v.put(base + 0x100 * i as u64 + 7, s)).collect();
        let arr: Vec<u8> = ptrs.iter().chain([&0u64]).flat_map(|p| p.to_le_bytes()).collect();
        v.put(base + 0x8000, &arr)
    };
    let path_a = a.put(BASE_A, b"/bin/sh\0");
    let path_b = b.put(BASE_B + 0x44, b"/bin/sh\0");
    let argv_a = strings(&mut a, BASE_A + 0x1_0000, &[b"sh\0", b"-c\0", b"true\0"]);
    let argv_b = strings(&mut b, BASE_B + 0x2_0000, &[b"sh\0", b"-c\0", b"true\0"]);
    let env_a = strings(&mut a, BASE_A + 0x3_0000, &[b"PATH=/bin\0"]);
    let env_b = strings(&mut b, BASE_B + 0x4_0000, &[b"PATH=/bin\0"]);
    let (_, ra) = record(&mut a, libc::SYS_execve, [path_a, argv_a, env_a, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_execve, [path_b, argv_b, env_b, 0, 0, 0]);
    assert_eq!(ra, rb);
    let argv_b = strings(&mut b, BASE_B + 0x5_0000, &[b"sh\0", b"-c\0", b"false\0"]);
    let (_, rb) = record(&mut b, libc::SYS_execve, [path_b, argv_b, env_b, 0, 0, 0]);
    assert_ne!(ra, rb, "another argument");
    let argv_b = strings(&mut b, BASE_B + 0x6_0000, &[b"sh\0", b"-ctrue\0"]);
    let (_, rb) = record(&mut b, libc::SYS_execve, [path_b, argv_b, env_b, 0, 0, 0]);
    assert_ne!(ra, rb, "the same bytes split into other arguments");
}

#[test]
fn epoll_ctl_ignores_the_programs_data() {
    let (mut a, mut b) = pair();
    let ev = |events: u32, data: u64| [&events.to_le_bytes()[..], &data.to_le_bytes()].concat();
    let pa = a.put(BASE_A + 0xffc, &ev(libc::EPOLLIN as u32, BASE_A + 0x77));
    let pb = b.put(BASE_B + 0x10, &ev(libc::EPOLLIN as u32, BASE_B + 0x99));
    let add = libc::EPOLL_CTL_ADD as u64;
    let (_, ra) = record(&mut a, libc::SYS_epoll_ctl, [7, add, 8, pa, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_epoll_ctl, [7, add, 8, pb, 0, 0]);
    assert_eq!(ra, rb);
    let pb = b.put(BASE_B + 0x2000, &ev(libc::EPOLLOUT as u32, BASE_B + 0x99));
    let (_, rb) = record(&mut b, libc::SYS_epoll_ctl, [7, add, 8, pb, 0, 0]);
    assert_ne!(ra, rb, "other events");
    let del = libc::EPOLL_CTL_DEL as u64;
    let (_, ra) = record(&mut a, libc::SYS_epoll_ctl, [7, del, 8, pa, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_epoll_ctl, [7, del, 8, 0, 0, 0]);
    assert_eq!(ra, rb, "EPOLL_CTL_DEL ignores its event");
}

#[test]
fn a_call_without_a_row_is_other() {
    let mut v = Fake::new(Backing::Contiguous);
    let (c, r) = record(&mut v, 440, [1, 2, 3, 4, 5, 6]);
    assert_eq!(c, Classified { class: Class::Other, remote: false, open_path: None });
    let mut want = RecordBuf::new();
    want.call(440, Class::Other);
    assert_eq!(r, want.as_bytes());
}

#[path = "spec_table_tests.rs"]
mod table;

/// Two timespecs (seconds, nanoseconds).
fn timespecs(t: [(i64, i64); 2]) -> Vec<u8> {
    t.iter().flat_map(|&(s, ns)| [s.to_le_bytes(), ns.to_le_bytes()].concat()).collect()
}

#[test]
fn utimensat_ignores_the_seconds_of_utime_now_and_omit() {
    let (mut a, mut b) = pair();
    let (pa, pb) = (a.put(BASE_A + 0x10, b"f\0"), b.put(BASE_B + 0x20, b"f\0"));
    let cwd = AT_FDCWD as u32 as u64;
    let ta = a.put(BASE_A + 0x1ff8, &timespecs([(0x5555_1234, libc::UTIME_NOW), (77, libc::UTIME_OMIT)]));
    let tb = b.put(BASE_B + 0x100, &timespecs([(0x7f3a_9876, libc::UTIME_NOW), (-1, libc::UTIME_OMIT)]));
    let (_, ra) = record(&mut a, libc::SYS_utimensat, [cwd, pa, ta, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_utimensat, [cwd, pb, tb, 0, 0, 0]);
    assert_eq!(ra, rb, "seconds the kernel ignores (stack garbage) differ");
    let tb = b.put(BASE_B + 0x3000, &timespecs([(5, 0), (77, libc::UTIME_OMIT)]));
    let (_, rb) = record(&mut b, libc::SYS_utimensat, [cwd, pb, tb, 0, 0, 0]);
    assert_ne!(ra, rb, "a time set, not now");
    let ta = a.put(BASE_A + 0x4000, &timespecs([(5, 0), (6, 7)]));
    let tb = b.put(BASE_B + 0x4000, &timespecs([(5, 0), (6, 8)]));
    let (_, ra) = record(&mut a, libc::SYS_utimensat, [cwd, pa, ta, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_utimensat, [cwd, pb, tb, 0, 0, 0]);
    assert_ne!(ra, rb, "other nanoseconds");
    let (_, ra) = record(&mut a, libc::SYS_utimensat, [cwd, pa, 0, 0, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_utimensat, [cwd, pb, 0, 0, 0, 0]);
    assert_eq!(ra, rb, "no times: now");
}

#[test]
fn select_and_sigprocmask_record_sets_not_addresses() {
    let (mut a, mut b) = pair();
    let set = |bits: u64| [bits.to_le_bytes(), 0u64.to_le_bytes()].concat();
    let (ra_set, wa_set) = (a.put(BASE_A + 0x100, &set(0b1001)), a.put(BASE_A + 0x200, &set(0b10)));
    let (rb_set, wb_set) = (b.put(BASE_B + 0xf00, &set(0b1001)), b.put(BASE_B + 0x5000, &set(0b10)));
    let (_, ra) = record(&mut a, libc::SYS_select, [70, ra_set, wa_set, 0, BASE_A + 0x300, 0]);
    let (_, rb) = record(&mut b, libc::SYS_select, [70, rb_set, wb_set, 0, BASE_B + 0x700, 0]);
    assert_eq!(ra, rb);
    let (_, rb) = record(&mut b, libc::SYS_select, [70, wb_set, rb_set, 0, BASE_B + 0x700, 0]);
    assert_ne!(ra, rb, "read and write sets swapped");
    let (_, rb) = record(&mut b, libc::SYS_select, [70, rb_set, 0, wb_set, 0, 0]);
    assert_ne!(ra, rb, "an exception set instead of a write set");

    let ma = a.put(BASE_A + 0x6000, &(1u64 << 16).to_le_bytes());
    let mb = b.put(BASE_B + 0x6ff8, &(1u64 << 16).to_le_bytes());
    let block = libc::SIG_BLOCK as u64;
    let (_, ra) = record(&mut a, libc::SYS_rt_sigprocmask, [block, ma, BASE_A + 0x7000, 8, 0, 0]);
    let (_, rb) = record(&mut b, libc::SYS_rt_sigprocmask, [block, mb, BASE_B + 0x7100, 8, 0, 0]);
    assert_eq!(ra, rb, "the old-mask pointers differ");
    let mb = b.put(BASE_B + 0x8000, &(1u64 << 17).to_le_bytes());
    let (_, rb) = record(&mut b, libc::SYS_rt_sigprocmask, [block, mb, 0, 8, 0, 0]);
    assert_ne!(ra, rb, "another mask");
}

#[test]
fn writes_to_inherited_descriptors_classify_alike_whatever_the_host_file() {
    // The leader's stdout a file, a follower's /dev/null: both outputs. A
    // file the program opened inside the root is a modification.
    let (mut a, mut b) = pair();
    a.fds.insert(1, FdFacts { kind: FileKind::Regular, remote: true, ipc: false, in_root: false });
    b.fds.insert(1, FdFacts { kind: FileKind::CharDevice, remote: true, ipc: false, in_root: false });
    let pa = a.put(BASE_A, b"hello\n");
    let pb = b.put(BASE_B + 0x40, b"hello\n");
    let (ca, ra) = record(&mut a, libc::SYS_write, [1, pa, 6, 0, 0, 0]);
    let (cb, rb) = record(&mut b, libc::SYS_write, [1, pb, 6, 0, 0, 0]);
    assert_eq!(ca, Classified { class: Class::Output, remote: true, open_path: None });
    assert_eq!(ca, cb);
    assert_eq!(ra, rb);
    a.fds.insert(5, FdFacts { kind: FileKind::Regular, remote: true, ipc: false, in_root: true });
    let (c, _) = record(&mut a, libc::SYS_write, [5, pa, 6, 0, 0, 0]);
    assert_eq!(c.class, Class::FileModify);
}

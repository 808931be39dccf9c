//! Memory system calls: the VMM edits the program's mappings and page tables.

use std::sync::Arc;

use std::os::fd::FromRawFd as _;

use super::super::errno::{self, Errno, SysResult};
use super::super::file::{FileKind, OpenFile};
use super::super::mm::{page_down, page_up, Area, Backing, Vma, VmaKind, PROT_EXEC, PROT_READ, PROT_WRITE};
use super::super::Kernel;
use crate::arch::x86_64::layout::{USER_END, USER_MIN};
use crate::memory::PAGE_SIZE;
use crate::monitor::{OpMode, Out};

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_TYPE: u64 = 0x0f;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_32BIT: u64 = 0x40;
const MAP_GROWSDOWN: u64 = 0x100;
const MAP_DENYWRITE: u64 = 0x800;
const MAP_EXECUTABLE: u64 = 0x1000;
const MAP_LOCKED: u64 = 0x2000;
const MAP_NORESERVE: u64 = 0x4000;
const MAP_POPULATE: u64 = 0x8000;
const MAP_NONBLOCK: u64 = 0x1_0000;
const MAP_STACK: u64 = 0x2_0000;
const MAP_HUGETLB: u64 = 0x4_0000;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MAP_KNOWN: u64 = MAP_TYPE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_32BIT
    | MAP_GROWSDOWN
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB
    | MAP_FIXED_NOREPLACE;
const PROT_GROWSDOWN: u64 = 0x0100_0000;
const PROT_GROWSUP: u64 = 0x0200_0000;
const PROT_KNOWN: u64 = (PROT_READ | PROT_WRITE | PROT_EXEC) as u64 | PROT_GROWSDOWN | PROT_GROWSUP;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;

pub fn brk(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mm = &mut k.mm;
    let want = a[0];
    if want < mm.brk_start || want >= USER_END {
        return Ok(mm.brk);
    }
    let (old_end, new_end) = (page_up(mm.brk), page_up(want));
    if new_end > old_end {
        if !mm.is_free(old_end, new_end) {
            return Ok(mm.brk);
        }
        if old_end > mm.brk_start {
            mm.resize_in_place(mm.brk_start, old_end, new_end);
        } else {
            mm.insert(Vma {
                start: mm.brk_start,
                end: new_end,
                prot: PROT_READ | PROT_WRITE,
                shared: false,
                backing: Backing::Anon,
                kind: VmaKind::Heap,
            });
        }
    } else if new_end < old_end {
        mm.unmap(new_end, old_end);
    }
    mm.brk = want;
    Ok(want)
}

pub fn mmap(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as u32 as u64, a[5]);
    if len == 0 || flags & !MAP_KNOWN != 0 || prot & !PROT_KNOWN != 0 || off & (PAGE_SIZE - 1) != 0 {
        return Err(Errno::EINVAL);
    }
    let shared = match flags & MAP_TYPE {
        MAP_SHARED | MAP_SHARED_VALIDATE => true,
        MAP_PRIVATE => false,
        _ => return Err(Errno::EINVAL),
    };
    if flags & MAP_HUGETLB != 0 {
        return Err(Errno::ENOMEM);
    }
    let len = page_up(len);
    if len == 0 || len > USER_END {
        return Err(Errno::ENOMEM);
    }
    let prot = (prot & 7) as u32;
    let backing = if flags & MAP_ANONYMOUS != 0 {
        Backing::Anon
    } else {
        let f = k.fds().file(fd)?.clone();
        if f.remote && k.op_mode(true) != OpMode::Direct {
            return map_remote(k, &f, (addr, len, prot, flags), shared, off);
        }
        // SAFETY: plain call on an open descriptor.
        let fl = unsafe { libc::fcntl(f.raw(), libc::F_GETFL) };
        if fl < 0 || fl & libc::O_ACCMODE == libc::O_WRONLY || fl & libc::O_PATH != 0 {
            return Err(Errno::EACCES);
        }
        match f.kind {
            FileKind::Regular => {}
            // /dev/zero maps as anonymous memory.
            FileKind::CharDevice => {}
            _ => return Err(Errno::ENODEV),
        }
        if f.kind == FileKind::CharDevice {
            Backing::Anon
        } else {
            // A shared mapping of a file open for writing is written back
            // (msync, munmap, the end); one of a file not open for writing
            // may not be writable, as on Linux.
            let writeback = shared && fl & libc::O_ACCMODE == libc::O_RDWR;
            if shared && prot & PROT_WRITE != 0 && !writeback {
                return Err(Errno::EACCES);
            }
            if off.checked_add(len).is_none_or(|e| e > i64::MAX as u64) {
                return Err(Errno::EOVERFLOW);
            }
            // A remote file (replicated from the leader) has no contents here.
            let own = f.owned().ok_or(Errno::ENODEV)?;
            let dup = own.try_clone().map_err(|e| Errno::from_io(&e))?;
            Backing::File { fd: Arc::new(dup), offset: off, writeback }
        }
    };
    place(k, addr, len, prot, flags, shared, backing)
}

/// Places a mapping of `len` bytes (page-aligned) as mmap's `addr` and
/// `flags` ask.
fn place(k: &mut Kernel, addr: u64, len: u64, prot: u32, flags: u64, shared: bool, backing: Backing) -> SysResult {
    let mm = &mut k.mm;
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        if addr & (PAGE_SIZE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if addr < USER_MIN || addr.checked_add(len).is_none_or(|e| e > USER_END) {
            return Err(if flags & MAP_FIXED != 0 { Errno::EPERM } else { Errno::ENOMEM });
        }
        if flags & MAP_FIXED == 0 && !mm.is_free(addr, addr + len) {
            return Err(Errno::EEXIST);
        }
        mm.unmap(addr, addr + len);
        addr
    } else {
        let area = if flags & MAP_32BIT != 0 {
            Area::Low32
        } else if flags & MAP_ANONYMOUS != 0 {
            Area::Anon
        } else {
            Area::File
        };
        mm.unmapped_area(len, addr, area).ok_or(Errno::ENOMEM)?
    };
    mm.insert(Vma { start, end: start + len, prot, shared, backing, kind: VmaKind::Mapping });
    if flags & MAP_POPULATE != 0 && prot != 0 {
        // Best effort, as Linux: failure leaves pages to fault in.
        let _ = mm.populate_range(start, start + len);
    }
    Ok(start)
}

/// The most of a remote file one mapping replicates: the bytes travel in
/// the call's entry, which must fit one message of the link.
const REMOTE_MAP_MAX: u64 = dmvx_sync::wire::MAX_ENTRY as u64 - (1 << 20);

/// A mapping of a remote file: one that exists only on the leader (a file
/// under a mutable path such as /tmp, or one the run writes), of which a
/// follower has no host descriptor. The leader checks the descriptor and
/// reads the mapped bytes (as far as the file goes) as one host operation
/// whose result is replicated; every variant, the leader included, then
/// maps a private copy of exactly those bytes, so a library that ld.so
/// loads from /tmp is the same in every variant and the follower's copy is
/// the leader's, not a file of its own host. Only private mappings: a
/// shared one must see the file's later writes, which a copy would not,
/// and a writable one's writes would reach the file with no call for the
/// monitor to compare (refused with ENODEV in every variant).
fn map_remote(k: &mut Kernel, f: &OpenFile, call: (u64, u64, u32, u64), shared: bool, off: u64) -> SysResult {
    let (addr, len, prot, flags) = call;
    if f.kind != FileKind::Regular && f.kind != FileKind::CharDevice {
        return Err(Errno::ENODEV);
    }
    let raw = f.raw();
    let (ret, bytes) = match k.op_mode(true) {
        OpMode::Replay => match k.monitor.as_mut() {
            Some(m) => m.replay_bytes(REMOTE_MAP_MAX as usize),
            None => return Err(Errno::EIO),
        },
        mode => {
            let (ret, mut bytes) = match read_mapped(raw, f.kind, shared, prot, off, len) {
                Ok(b) => (b.len() as i64, b),
                Err((e, why)) => {
                    if let Some(why) = why {
                        k.log_once(why);
                    }
                    (-(e.0 as i64), Vec::new())
                }
            };
            if mode == OpMode::Record {
                k.record_op(ret, &mut [Out::Buf(&mut bytes)]);
            }
            (ret, bytes)
        }
    };
    let n = errno::from_neg(ret)?;
    // The leader's bytes, checked: as many as it said, within the mapping.
    if n != bytes.len() as u64 || n > len {
        return Err(Errno::EIO);
    }
    let backing = if f.kind == FileKind::CharDevice {
        Backing::Anon
    } else {
        Backing::File { fd: Arc::new(copy_of(&bytes)?), offset: 0, writeback: false }
    };
    place(k, addr, len, prot, flags, shared, backing)
}

/// The leader's half of `map_remote`: the checks mmap makes of the
/// descriptor, then the file's bytes from `off` (at most `len`). Err: the
/// errno, and a line for the log where the refusal is dmvx's own.
fn read_mapped(
    raw: i32,
    kind: FileKind,
    shared: bool,
    prot: u32,
    off: u64,
    len: u64,
) -> Result<Vec<u8>, (Errno, Option<String>)> {
    // SAFETY: plain call on an open descriptor (or -1, which fails).
    let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if fl < 0 || fl & libc::O_ACCMODE == libc::O_WRONLY || fl & libc::O_PATH != 0 {
        return Err((Errno::EACCES, None));
    }
    if kind == FileKind::CharDevice {
        return Ok(Vec::new());
    }
    if shared {
        let why = if prot & PROT_WRITE != 0 {
            "refusing a writable shared file mapping of a file that is the leader's: its writes would be outputs no call shows (ENODEV in every variant)"
        } else {
            "refusing a shared mapping of a file that is the leader's (under a mutable path): ENODEV"
        };
        return Err((Errno::ENODEV, Some(why.into())));
    }
    if off.checked_add(len).is_none_or(|e| e > i64::MAX as u64) {
        return Err((Errno::EOVERFLOW, None));
    }
    // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live stat buffer.
    if unsafe { libc::fstat(raw, &mut st) } < 0 {
        return Err((Errno::last(), None));
    }
    let want = (st.st_size.max(0) as u64).saturating_sub(off).min(len);
    if want > REMOTE_MAP_MAX {
        let why = format!(
            "refusing to map {want} bytes of a file that is the leader's: at most {REMOTE_MAP_MAX} are replicated per mapping (ENODEV)"
        );
        return Err((Errno::ENODEV, Some(why)));
    }
    let mut out = vec![0u8; want as usize];
    let mut done = 0usize;
    while done < out.len() {
        // SAFETY: out has out.len() - done bytes from `done` on.
        let r = unsafe {
            libc::pread(raw, out[done..].as_mut_ptr().cast(), out.len() - done, (off + done as u64) as libc::off_t)
        };
        match r {
            0 => break,
            r if r < 0 && Errno::last().0 == libc::EINTR => continue,
            r if r < 0 => return Err((Errno::last(), None)),
            r => done += r as usize,
        }
    }
    out.truncate(done);
    Ok(out)
}

/// A host file holding `bytes` (a memfd the VMM alone holds), to back a
/// mapping.
fn copy_of(bytes: &[u8]) -> SysResult<std::os::fd::OwnedFd> {
    use std::io::Write as _;
    // SAFETY: the name is a NUL-terminated string; no other preconditions.
    let raw = unsafe { libc::memfd_create(c"dmvx-mapped".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: raw is a new descriptor this code owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(|e| Errno::from_io(&e))?;
    Ok(file.into())
}

fn check_range(addr: u64, len: u64) -> SysResult<u64> {
    if addr & (PAGE_SIZE - 1) != 0 {
        return Err(Errno::EINVAL);
    }
    let end = addr.checked_add(page_up(len)).filter(|&e| e <= USER_END && page_up(len) >= len).ok_or(Errno::EINVAL)?;
    Ok(end)
}

pub fn munmap(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[1] == 0 {
        return Err(Errno::EINVAL);
    }
    let end = check_range(a[0], a[1])?;
    k.mm.unmap(a[0], end);
    Ok(0)
}

pub fn mprotect(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[2] & !PROT_KNOWN != 0 {
        return Err(Errno::EINVAL);
    }
    let end =
        check_range(a[0], a[1]).map_err(|_| if a[0] & (PAGE_SIZE - 1) != 0 { Errno::EINVAL } else { Errno::ENOMEM })?;
    if end == a[0] {
        return Ok(0);
    }
    k.mm.protect(a[0], end, (a[2] & 7) as u32).map(|_| 0)
}

pub fn mremap(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (old, old_len, new_len, flags, new_addr) = (a[0], page_up(a[1]), page_up(a[2]), a[3], a[4]);
    if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0 || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0) {
        return Err(Errno::EINVAL);
    }
    if old & (PAGE_SIZE - 1) != 0 || new_len == 0 || old_len == 0 {
        return Err(Errno::EINVAL);
    }
    let mm = &mut k.mm;
    let old_end = old.checked_add(old_len).filter(|&e| e <= USER_END).ok_or(Errno::EFAULT)?;
    let v = mm.find(old).ok_or(Errno::EFAULT)?;
    if v.end < old_end {
        return Err(Errno::EFAULT);
    }
    let vma_end = v.end;
    let area = if matches!(v.backing, Backing::Anon) { Area::Anon } else { Area::File };
    if flags & MREMAP_FIXED != 0 {
        if new_addr & (PAGE_SIZE - 1) != 0
            || new_addr < USER_MIN
            || new_addr.checked_add(new_len).is_none_or(|e| e > USER_END)
        {
            return Err(Errno::EINVAL);
        }
        if new_addr < old_end && old < new_addr + new_len {
            return Err(Errno::EINVAL);
        }
        mm.unmap(new_addr, new_addr + new_len);
        let keep = old_len.min(new_len);
        mm.unmap(old + keep, old_end);
        mm.relocate(old, keep, new_addr)?;
        if new_len > keep {
            mm.resize_in_place(new_addr, new_addr + keep, new_addr + new_len);
        }
        return Ok(new_addr);
    }
    if new_len <= old_len {
        mm.unmap(old + new_len, old_end);
        return Ok(old);
    }
    if vma_end == old_end && mm.is_free(old_end, old + new_len) {
        mm.resize_in_place(old, old_end, old + new_len);
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(Errno::ENOMEM);
    }
    let to = mm.unmapped_area(new_len, 0, area).ok_or(Errno::ENOMEM)?;
    mm.relocate(old, old_len, to)?;
    mm.resize_in_place(to, to + old_len, to + new_len);
    Ok(to)
}

pub fn madvise(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const MADV_DONTNEED: u64 = 4;
    const MADV_FREE: u64 = 8;
    const MADV_REMOVE: u64 = 9;
    let end = check_range(a[0], a[1])?;
    if end == a[0] {
        return Ok(0);
    }
    match a[2] {
        MADV_DONTNEED | MADV_FREE => {
            if !k.mm.is_fully_mapped(a[0], end) {
                return Err(Errno::ENOMEM);
            }
            k.mm.discard(a[0], end);
            Ok(0)
        }
        MADV_REMOVE => Err(Errno::EINVAL),
        0..=3 | 10..=25 | 100..=101 => {
            if !k.mm.is_fully_mapped(a[0], end) {
                return Err(Errno::ENOMEM);
            }
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// msync: the shared file mappings in the range go back to their files
/// (MS_ASYNC as MS_SYNC: at once).
pub fn msync(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const MS_ASYNC: u64 = 1;
    const MS_INVALIDATE: u64 = 2;
    const MS_SYNC: u64 = 4;
    if a[2] & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 || a[2] & (MS_ASYNC | MS_SYNC) == MS_ASYNC | MS_SYNC {
        return Err(Errno::EINVAL);
    }
    let end = check_range(a[0], a[1])?;
    if !k.mm.is_fully_mapped(a[0], end) {
        return Err(Errno::ENOMEM);
    }
    k.mm.write_back(a[0], end).map(|()| 0)
}

pub fn mincore(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let end = check_range(a[0], a[1])?;
    if !k.mm.is_fully_mapped(a[0], end) {
        return Err(Errno::ENOMEM);
    }
    // In bounded chunks: a huge reservation must not grow the VMM (the
    // vector's size is the guest's to choose); the guest's buffer, which
    // must hold one byte per page, bounds the work.
    let pages = (end - a[0]) / PAGE_SIZE;
    let mut chunk = [0u8; 4096];
    let mut done = 0u64;
    while done < pages {
        let n = (pages - done).min(chunk.len() as u64);
        for (i, b) in chunk[..n as usize].iter_mut().enumerate() {
            let e = k.mm.page_tables().leaf(&k.mm.mem, a[0] + (done + i as u64) * PAGE_SIZE);
            *b = (e & crate::arch::x86_64::paging::pte::ADDR_MASK != 0) as u8;
        }
        k.mm.write_user(a[2].checked_add(done).ok_or(Errno::EFAULT)?, &chunk[..n as usize])?;
        done += n;
    }
    Ok(0)
}

pub fn mlock(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let start = page_down(a[0]);
    let end = a[0].checked_add(a[1]).map(page_up).filter(|&e| e <= USER_END).ok_or(Errno::ENOMEM)?;
    if !k.mm.is_fully_mapped(start, end) {
        return Err(Errno::ENOMEM);
    }
    Ok(0)
}

pub fn mlockall(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(0)
}

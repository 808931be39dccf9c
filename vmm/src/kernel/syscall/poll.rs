//! Waiting for descriptors: epoll, poll, select, and the descriptors made
//! to be waited on (eventfd, timerfd). All run on the host; the program's
//! descriptor numbers and epoll data are translated both ways.

use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};

use super::super::errno::{check, Errno, SysResult};
use super::super::file::{lock, Extra, FileKind};
use super::super::wait::WakeOn;
use super::super::Kernel;

#[inline]
fn fd_arg(a: u64) -> u64 {
    a as u32 as u64
}

/// Events the program may ask epoll for.
const EPOLL_EVENTS: u32 = (libc::EPOLLIN
    | libc::EPOLLOUT
    | libc::EPOLLRDHUP
    | libc::EPOLLPRI
    | libc::EPOLLERR
    | libc::EPOLLHUP
    | libc::EPOLLET
    | libc::EPOLLONESHOT
    | libc::EPOLLEXCLUSIVE
    | libc::EPOLLRDNORM
    | libc::EPOLLRDBAND
    | libc::EPOLLWRNORM
    | libc::EPOLLWRBAND) as u32;
/// Most events one epoll_wait returns here (the program may ask for more
/// and simply gets them over several calls).
const EPOLL_BATCH: usize = 512;
const EP_MAX_EVENTS: u64 = (i32::MAX as u64) / 12;

/// Installs a descriptor a host operation may have returned.
fn install(k: &mut Kernel, fd: Option<i64>, kind: FileKind, extra: Extra, cloexec: bool) -> SysResult {
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let owned = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    k.adopt(owned, kind, extra, cloexec)
}

/// Creates a descriptor on the host with `make` (or replays the leader's).
fn create(k: &mut Kernel, kind: FileKind, extra: Extra, cloexec: bool, make: impl FnOnce() -> i64) -> SysResult {
    let mut fd = None;
    k.host_call(true, &mut [], |_, _| {
        let r = check(make())?;
        fd = Some(r as i64);
        Ok(r)
    })?;
    install(k, fd, kind, extra, cloexec)
}

fn do_epoll_create(k: &mut Kernel, flags: u64) -> SysResult {
    if flags & !(libc::EPOLL_CLOEXEC as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    create(k, FileKind::Epoll, Extra::Epoll(Default::default()), flags != 0, || {
        // SAFETY: plain call; result checked by `create`.
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) as i64 }
    })
}

pub fn epoll_create(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    do_epoll_create(k, 0)
}

pub fn epoll_create1(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_epoll_create(k, a[0] as u32 as u64)
}

pub fn epoll_ctl(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (epfd, op, fd) = (fd_arg(a[0]), a[1] as i32, fd_arg(a[2]));
    let ep = k.fds().file(epfd)?.clone();
    let target = k.fds().file(fd)?.clone();
    let Extra::Epoll(map) = &ep.extra else {
        return Err(Errno::EINVAL);
    };
    if epfd == fd {
        return Err(Errno::EINVAL);
    }
    let mut ev = libc::epoll_event { events: 0, u64: fd };
    let mut data = 0u64;
    if op != libc::EPOLL_CTL_DEL {
        let mut raw = [0u8; 12];
        k.mm.read_user(a[3], &mut raw)?;
        let events = u32::from_le_bytes(raw[..4].try_into().expect("4 bytes"));
        data = u64::from_le_bytes(raw[4..].try_into().expect("8 bytes"));
        ev.events = events & EPOLL_EVENTS;
    }
    k.host_call(true, &mut [], |_, _| {
        // SAFETY: both descriptors are open; ev is a valid epoll_event.
        check(unsafe { libc::epoll_ctl(ep.raw(), op, target.raw(), &mut ev) } as i64)
    })?;
    let mut m = lock(map);
    match op {
        libc::EPOLL_CTL_DEL => {
            m.remove(&(fd as u32));
        }
        _ => {
            m.insert(fd as u32, data);
        }
    }
    Ok(0)
}

/// Waits on epoll `epfd` and writes the program's events; `mask` replaces
/// the signal mask during the wait.
fn epoll_wait_common(
    k: &mut Kernel,
    epfd: u64,
    events_va: u64,
    max: u64,
    timeout_ms: i32,
    mask: Option<u64>,
) -> SysResult {
    let max = max as u32 as i32;
    if max <= 0 || max as u64 > EP_MAX_EVENTS {
        return Err(Errno::EINVAL);
    }
    let ep = k.fds().file(fd_arg(epfd))?.clone();
    let Extra::Epoll(map) = &ep.extra else {
        return Err(Errno::EINVAL);
    };
    super::super::mm::Mm::range_ok(events_va, max as u64 * 12)?;
    let want = (max as usize).min(EPOLL_BATCH);
    // The ready (descriptor, events) pairs: the same in every variant, each
    // of which puts its own epoll_data on them.
    let mut ready = [0u8; EPOLL_BATCH * 8];
    let n = k.host_call(true, &mut ready, |k, ready| {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH];
        let n = k.blocking_on(mask, timeout_ms as i64, Some(WakeOn::Fd(ep.raw(), libc::POLLIN)), |t| {
            // SAFETY: evs has `want` writable entries; the descriptor is open.
            unsafe { libc::epoll_wait(ep.raw(), evs.as_mut_ptr(), want as i32, t as i32) as i64 }
        })? as usize;
        for (i, e) in evs[..n].iter().enumerate() {
            let (vfd, events) = (e.u64 as u32, e.events);
            ready[i * 8..i * 8 + 4].copy_from_slice(&vfd.to_le_bytes());
            ready[i * 8 + 4..i * 8 + 8].copy_from_slice(&events.to_le_bytes());
        }
        Ok(n as u64)
    })? as usize;
    let m = lock(map);
    let mut out = [0u8; EPOLL_BATCH * 12];
    let mut got = 0;
    for i in 0..n.min(EPOLL_BATCH) {
        let vfd = u32::from_le_bytes(ready[i * 8..i * 8 + 4].try_into().expect("4 bytes"));
        let events = u32::from_le_bytes(ready[i * 8 + 4..i * 8 + 8].try_into().expect("4 bytes"));
        let Some(&data) = m.get(&vfd) else { continue };
        out[got * 12..got * 12 + 4].copy_from_slice(&events.to_le_bytes());
        out[got * 12 + 4..got * 12 + 12].copy_from_slice(&data.to_le_bytes());
        got += 1;
    }
    drop(m);
    k.mm.write_user(events_va, &out[..got * 12])?;
    Ok(got as u64)
}

pub fn epoll_wait(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    epoll_wait_common(k, a[0], a[1], a[2], a[3] as i32, None)
}

pub fn epoll_pwait(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mask = k.sigmask_arg(a[4], a[5])?;
    epoll_wait_common(k, a[0], a[1], a[2], a[3] as i32, mask)
}

pub fn epoll_pwait2(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let timeout = if a[3] == 0 {
        -1
    } else {
        let ts: libc::timespec = k.mm.read_val(a[3])?;
        timespec_ms(&ts)?
    };
    let mask = k.sigmask_arg(a[4], a[5])?;
    epoll_wait_common(k, a[0], a[1], a[2], timeout as i32, mask)
}

/// Milliseconds of a timeout, rounded up; EINVAL if malformed.
fn timespec_ms(ts: &libc::timespec) -> SysResult<i64> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    Ok((ts.tv_sec.saturating_mul(1000)).saturating_add((ts.tv_nsec + 999_999) / 1_000_000).min(i32::MAX as i64))
}

/// Polls the host descriptors `pfds` (the leader; followers replay its
/// result): the number ready and each entry's revents.
fn poll_host(
    k: &mut Kernel,
    pfds: Vec<libc::pollfd>,
    timeout_ms: i64,
    mask: Option<u64>,
) -> SysResult<(u64, Vec<i16>)> {
    let n = pfds.len();
    let mut revents = vec![0u8; n * 2];
    let pfds = RefCell::new(pfds);
    let ready = k.host_call(true, &mut revents, |k, out| {
        let r = k.blocking_on(mask, timeout_ms, Some(WakeOn::Set(&pfds)), |t| {
            let mut pfds = pfds.borrow_mut();
            // SAFETY: pfds has n valid entries.
            unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, t as i32) as i64 }
        })?;
        for (i, pf) in pfds.borrow().iter().enumerate() {
            out[i * 2..i * 2 + 2].copy_from_slice(&pf.revents.to_le_bytes());
        }
        Ok(r)
    })?;
    Ok((ready, revents.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()))
}

/// poll over the program's pollfd array; `timeout_ms` < 0 waits forever.
fn poll_common(k: &mut Kernel, fds_va: u64, nfds: u64, timeout_ms: i64, mask: Option<u64>) -> SysResult {
    if nfds > k.fds().limit as u64 {
        return Err(Errno::EINVAL);
    }
    let n = nfds as usize;
    let mut raw = vec![0u8; n * 8];
    k.mm.read_user(fds_va, &mut raw)?;
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(n);
    let mut invalid = vec![false; n];
    for i in 0..n {
        let fd = i32::from_le_bytes(raw[i * 8..i * 8 + 4].try_into().expect("4 bytes"));
        let events = i16::from_le_bytes(raw[i * 8 + 4..i * 8 + 6].try_into().expect("2 bytes"));
        let host = if fd < 0 {
            -1
        } else {
            match k.fds().file(fd as u64) {
                Ok(f) => f.raw(),
                Err(_) => {
                    invalid[i] = true;
                    -1
                }
            }
        };
        pfds.push(libc::pollfd { fd: host, events, revents: 0 });
    }
    let (mut count, revents) = poll_host(k, pfds, timeout_ms, mask)?;
    for i in 0..n {
        let rev = if invalid[i] {
            count += 1;
            libc::POLLNVAL
        } else {
            revents[i]
        };
        raw[i * 8 + 6..i * 8 + 8].copy_from_slice(&rev.to_le_bytes());
    }
    k.mm.write_user(fds_va, &raw)?;
    Ok(count)
}

pub fn poll(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    poll_common(k, a[0], a[1], a[2] as i32 as i64, None)
}

/// The timeout (ms, -1: none) of ppoll, select or pselect6 (`nr`), read
/// from the program's memory; None for other calls.
pub(crate) fn timeout_in_memory(k: &mut Kernel, nr: u64, a: &[u64; 6]) -> Option<SysResult<i64>> {
    let va = match nr as i64 {
        libc::SYS_ppoll => a[2],
        libc::SYS_select | libc::SYS_pselect6 => a[4],
        _ => return None,
    };
    if va == 0 {
        return Some(Ok(-1));
    }
    Some(if nr as i64 == libc::SYS_select {
        k.mm.read_val::<libc::timeval>(va).and_then(|tv| {
            if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
                return Err(Errno::EINVAL);
            }
            Ok((tv.tv_sec.saturating_mul(1000) + (tv.tv_usec + 999) / 1000).min(i32::MAX as i64))
        })
    } else {
        k.mm.read_val::<libc::timespec>(va).and_then(|ts| timespec_ms(&ts))
    })
}

/// The call's timeout: 0 when a process with threads only looks
/// (`Kernel::poll_probe` read the timeout), else the program's. And
/// whether, if nothing is ready, the call is issued again (a look before
/// the last).
fn timeout_of(k: &mut Kernel, nr: i64, a: &[u64; 6]) -> SysResult<(i64, bool)> {
    match k.task.look_only.take() {
        Some(last) => Ok((0, !last)),
        None => Ok((timeout_in_memory(k, nr as u64, a).unwrap_or(Ok(-1))?, false)),
    }
}

pub fn ppoll(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (timeout, _) = timeout_of(k, libc::SYS_ppoll, a)?;
    let mask = k.sigmask_arg(a[3], a[4])?;
    poll_common(k, a[0], a[1], timeout, mask)
}

/// select/pselect6 through poll: the program's fd_sets become a pollfd list.
/// `again`: a look that is issued again if nothing is ready, which leaves
/// the program's sets as they are for it.
fn select_common(
    k: &mut Kernel,
    nfds: u64,
    sets: [u64; 3],
    timeout_ms: i64,
    mask: Option<u64>,
    again: bool,
) -> SysResult {
    let nfds = nfds as u32 as i32;
    if nfds < 0 {
        return Err(Errno::EINVAL);
    }
    // Like Linux, a larger count is clamped to the descriptor table's size.
    let nfds = nfds.min(1024);
    let words = (nfds as usize).div_ceil(64);
    let mut bits = [[0u64; 16]; 3];
    for (s, &va) in sets.iter().enumerate() {
        if va != 0 && words > 0 {
            let mut raw = vec![0u8; words * 8];
            k.mm.read_user(va, &mut raw)?;
            for w in 0..words {
                bits[s][w] = u64::from_le_bytes(raw[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
            }
        }
    }
    let mut pfds = Vec::new();
    let mut which = Vec::new();
    for fd in 0..nfds as usize {
        let bit = |s: usize| bits[s][fd / 64] & (1 << (fd % 64)) != 0;
        let (r, w, x) = (bit(0), bit(1), bit(2));
        if !(r || w || x) {
            continue;
        }
        let host = k.fds().file(fd as u64)?.raw();
        let mut events = 0;
        if r {
            events |= libc::POLLIN;
        }
        if w {
            events |= libc::POLLOUT;
        }
        if x {
            events |= libc::POLLPRI;
        }
        pfds.push(libc::pollfd { fd: host, events, revents: 0 });
        which.push(fd);
    }
    let (_, revents) = poll_host(k, pfds, timeout_ms, mask)?;
    let mut out = [[0u64; 16]; 3];
    let mut count = 0;
    for (i, &fd) in which.iter().enumerate() {
        let rev = revents[i];
        let set = |s: usize, on: bool, out: &mut [[u64; 16]; 3], count: &mut u64| {
            if on && bits[s][fd / 64] & (1 << (fd % 64)) != 0 {
                out[s][fd / 64] |= 1 << (fd % 64);
                *count += 1;
            }
        };
        set(0, rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0, &mut out, &mut count);
        set(1, rev & (libc::POLLOUT | libc::POLLERR) != 0, &mut out, &mut count);
        set(2, rev & libc::POLLPRI != 0, &mut out, &mut count);
    }
    if again && count == 0 {
        return Ok(0);
    }
    for (s, &va) in sets.iter().enumerate() {
        if va != 0 && words > 0 {
            let raw: Vec<u8> = out[s][..words].iter().flat_map(|w| w.to_le_bytes()).collect();
            k.mm.write_user(va, &raw)?;
        }
    }
    Ok(count)
}

pub fn select(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (timeout, again) = timeout_of(k, libc::SYS_select, a)?;
    select_common(k, a[0], [a[1], a[2], a[3]], timeout, None, again)
}

pub fn pselect6(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (timeout, again) = timeout_of(k, libc::SYS_pselect6, a)?;
    // The sixth argument points at { const sigset_t *ss; size_t ss_len; }.
    let mask = if a[5] == 0 {
        None
    } else {
        let pair: [u64; 2] = k.mm.read_val(a[5])?;
        k.sigmask_arg(pair[0], pair[1])?
    };
    select_common(k, a[0], [a[1], a[2], a[3]], timeout, mask, again)
}

fn do_eventfd(k: &mut Kernel, init: u64, flags: u64) -> SysResult {
    let allowed = (libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE) as u64;
    if flags & !allowed != 0 {
        return Err(Errno::EINVAL);
    }
    create(k, FileKind::EventFd, Extra::None, flags as i32 & libc::EFD_CLOEXEC != 0, || {
        // SAFETY: plain call; result checked by `create`.
        unsafe {
            libc::eventfd(init as u32, libc::EFD_CLOEXEC | (flags as i32 & (libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE)))
                as i64
        }
    })
}

pub fn eventfd(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_eventfd(k, a[0], 0)
}

pub fn eventfd2(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_eventfd(k, a[0], a[1])
}

pub fn timerfd_create(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let clock = a[0] as i32;
    let flags = a[1] as i32;
    if !matches!(clock, libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME)
        || flags & !(libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) != 0
    {
        return Err(Errno::EINVAL);
    }
    create(k, FileKind::TimerFd, Extra::None, flags & libc::TFD_CLOEXEC != 0, || {
        // SAFETY: plain call; result checked by `create`.
        unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | (flags & libc::TFD_NONBLOCK)) as i64 }
    })
}

fn timer_file(k: &Kernel, fd: u64) -> SysResult<i32> {
    let f = k.fds().file(fd_arg(fd))?.clone();
    if f.kind != FileKind::TimerFd {
        return Err(Errno::EINVAL);
    }
    Ok(f.raw())
}

pub fn timerfd_settime(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = timer_file(k, a[0])?;
    let new: libc::itimerspec = k.mm.read_val(a[2])?;
    let mut old = [0u8; 32];
    k.host_call(true, &mut old, |_, out| {
        let mut o: libc::itimerspec = super::super::mm::Pod::zeroed();
        // SAFETY: new and o are valid itimerspecs; raw is an open timerfd.
        check(unsafe { libc::timerfd_settime(raw, a[1] as i32 & (libc::TFD_TIMER_ABSTIME | 2), &new, &mut o) } as i64)?;
        out.copy_from_slice(super::super::mm::Pod::as_bytes(&o));
        Ok(0)
    })?;
    if a[3] != 0 {
        k.mm.write_user(a[3], &old)?;
    }
    Ok(0)
}

pub fn timerfd_gettime(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = timer_file(k, a[0])?;
    let mut cur = [0u8; 32];
    k.host_call(true, &mut cur, |_, out| {
        let mut c: libc::itimerspec = super::super::mm::Pod::zeroed();
        // SAFETY: c is a valid out-parameter; raw is an open timerfd.
        check(unsafe { libc::timerfd_gettime(raw, &mut c) } as i64)?;
        out.copy_from_slice(super::super::mm::Pod::as_bytes(&c));
        Ok(0)
    })?;
    k.mm.write_user(a[1], &cur).map(|_| 0)
}

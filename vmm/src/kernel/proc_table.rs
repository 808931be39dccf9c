//! The process table of one variant: every guest process's virtual pid,
//! parent, process group and session, the host process (VMM) that runs it,
//! and its exit status once it ended.
//!
//! Each guest process runs in its own VMM process (its own VM), so the
//! table lives in memory shared by all of them (an anonymous MAP_SHARED
//! mapping made before the first fork). It is never guest memory: the guest
//! cannot reach it. Entries are changed under one lock; a holder that dies
//! (SIGKILL) is detected and its lock taken over.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The virtual pid of the init process dmvx stands for (the parent of the
/// first process, and of every orphan).
pub const INIT_PID: u32 = 1;
/// The first process's pid.
pub const FIRST_PID: u32 = 2;
/// Default limit on the number of the program's processes (a fork bomb
/// gets EAGAIN there).
pub const DEFAULT_MAX_PROCS: u32 = 512;

/// An entry's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    Free = 0,
    /// Running (or about to: the host process is being created).
    Alive = 1,
    /// Ended; its wait status is set, its parent has not reaped it.
    Zombie = 2,
}

/// One process, as the table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub host_pid: i32,
    pub state: State,
    /// Linux's wait status (exit code << 8, or the signal | 0x80 core).
    pub wait_status: i32,
    /// Signal sent to this process when its parent ends (PR_SET_PDEATHSIG).
    pub pdeathsig: i32,
    /// Signal sent to the parent when this process ends (SIGCHLD usually).
    pub exit_signal: i32,
    /// How many children this process has forked (its next child's place
    /// in the tree).
    pub forks: u32,
}

#[repr(C)]
struct Slot {
    state: AtomicU32,
    pid: AtomicU32,
    ppid: AtomicU32,
    pgid: AtomicU32,
    sid: AtomicU32,
    host_pid: AtomicI32,
    wait_status: AtomicI32,
    pdeathsig: AtomicI32,
    exit_signal: AtomicI32,
    forks: AtomicU32,
}

#[repr(C)]
struct Header {
    /// 0, or the host pid of the holder.
    lock: AtomicI32,
    next_pid: AtomicU32,
    max: AtomicU32,
    /// The foreground process group of the program's terminal.
    fg_pgrp: AtomicU32,
    /// Set when the run must stop (a divergence in any process): every
    /// VMM of the variant checks it.
    stopped: AtomicU32,
    /// Unsupported system calls already logged by some process (one bit
    /// each), so a run logs each once.
    logged: [std::sync::atomic::AtomicU64; 8],
}

/// Why a table operation failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the process limit ({0}) is reached")]
    Full(u32),
    #[error("no such process")]
    NoSuchProcess,
}

/// The shared table (a handle; cheap to pass around, valid across fork).
pub struct ProcTable {
    base: *mut u8,
    slots: usize,
    len: usize,
}

// SAFETY: the table is a fixed shared mapping accessed through atomics
// only; it is never unmapped while a handle exists.
unsafe impl Send for ProcTable {}
// SAFETY: as above.
unsafe impl Sync for ProcTable {}

impl Drop for ProcTable {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The table's lock, released on drop.
pub struct Locked<'a> {
    t: &'a ProcTable,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.t.header().lock.store(0, Ordering::Release);
    }
}

fn my_host_pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

impl ProcTable {
    /// A table for at most `max` processes, with the first process `FIRST_PID`
    /// run by this host process.
    pub fn new(max: u32) -> std::io::Result<ProcTable> {
        let slots = max.max(1) as usize;
        let len = std::mem::size_of::<Header>() + slots * std::mem::size_of::<Slot>();
        // SAFETY: an anonymous shared mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let t = ProcTable { base: p.cast(), slots, len };
        t.header().next_pid.store(FIRST_PID + 1, Ordering::Relaxed);
        t.header().max.store(max, Ordering::Relaxed);
        t.header().fg_pgrp.store(FIRST_PID, Ordering::Relaxed);
        let first = t.slot(0);
        first.pid.store(FIRST_PID, Ordering::Relaxed);
        first.ppid.store(INIT_PID, Ordering::Relaxed);
        first.pgid.store(FIRST_PID, Ordering::Relaxed);
        first.sid.store(FIRST_PID, Ordering::Relaxed);
        first.host_pid.store(my_host_pid(), Ordering::Relaxed);
        first.exit_signal.store(libc::SIGCHLD, Ordering::Relaxed);
        first.state.store(State::Alive as u32, Ordering::Release);
        Ok(t)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a Header (zeroed memory is a valid
        // Header of atomics) and lives as long as self.
        unsafe { &*(self.base as *const Header) }
    }

    fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < self.slots);
        // SAFETY: `i < slots`, so the slot lies inside the mapping; zeroed
        // memory is a valid Slot of atomics.
        unsafe { &*(self.base.add(std::mem::size_of::<Header>() + i * std::mem::size_of::<Slot>()) as *const Slot) }
    }

    /// Takes the table's lock. A holder that died is detected and replaced.
    pub fn lock(&self) -> Locked<'_> {
        let me = my_host_pid();
        let lock = &self.header().lock;
        let mut spins = 0u32;
        loop {
            match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Locked { t: self },
                Err(holder) => {
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        // SAFETY: signal 0 only checks that the process exists.
                        let dead = unsafe { libc::kill(holder, 0) } != 0
                            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
                        if dead && lock.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                            return Locked { t: self };
                        }
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }

    fn find(&self, _l: &Locked<'_>, pid: u32) -> Option<&Slot> {
        (0..self.slots)
            .map(|i| self.slot(i))
            .find(|s| s.state.load(Ordering::Relaxed) != State::Free as u32 && s.pid.load(Ordering::Relaxed) == pid)
    }

    fn read(s: &Slot) -> Proc {
        let state = match s.state.load(Ordering::Relaxed) {
            1 => State::Alive,
            2 => State::Zombie,
            _ => State::Free,
        };
        Proc {
            pid: s.pid.load(Ordering::Relaxed),
            ppid: s.ppid.load(Ordering::Relaxed),
            pgid: s.pgid.load(Ordering::Relaxed),
            sid: s.sid.load(Ordering::Relaxed),
            host_pid: s.host_pid.load(Ordering::Relaxed),
            state,
            wait_status: s.wait_status.load(Ordering::Relaxed),
            pdeathsig: s.pdeathsig.load(Ordering::Relaxed),
            exit_signal: s.exit_signal.load(Ordering::Relaxed),
            forks: s.forks.load(Ordering::Relaxed),
        }
    }

    /// The process `pid`, if it exists (alive or a zombie).
    pub fn get(&self, pid: u32) -> Option<Proc> {
        let l = self.lock();
        self.find(&l, pid).map(Self::read)
    }

    /// Every process for which `pred` holds.
    pub fn select(&self, mut pred: impl FnMut(&Proc) -> bool) -> Vec<Proc> {
        let _l = self.lock();
        (0..self.slots)
            .map(|i| self.slot(i))
            .filter(|s| s.state.load(Ordering::Relaxed) != State::Free as u32)
            .map(Self::read)
            .filter(|p| pred(p))
            .collect()
    }

    /// A new child of `parent`: its pid (`want`: the pid the leader chose, in
    /// a follower), its place among the parent's children, inheriting the
    /// parent's process group and session. The host pid is set by the child.
    pub fn fork(&self, parent: u32, want: Option<u32>, exit_signal: i32) -> Result<(u32, u32), TableError> {
        let l = self.lock();
        let h = self.header();
        let max = h.max.load(Ordering::Relaxed);
        let p = self.find(&l, parent).map(Self::read).ok_or(TableError::NoSuchProcess)?;
        let free = (0..self.slots).find(|&i| self.slot(i).state.load(Ordering::Relaxed) == State::Free as u32);
        let Some(i) = free else { return Err(TableError::Full(max)) };
        let pid = match want {
            Some(v) => {
                h.next_pid.fetch_max(v + 1, Ordering::Relaxed);
                v
            }
            None => loop {
                let v = h.next_pid.fetch_add(1, Ordering::Relaxed);
                if self.find(&l, v).is_none() && v > INIT_PID {
                    break v;
                }
            },
        };
        let place = self.find(&l, parent).map_or(0, |s| s.forks.fetch_add(1, Ordering::Relaxed));
        let s = self.slot(i);
        s.pid.store(pid, Ordering::Relaxed);
        s.ppid.store(parent, Ordering::Relaxed);
        s.pgid.store(p.pgid, Ordering::Relaxed);
        s.sid.store(p.sid, Ordering::Relaxed);
        s.host_pid.store(0, Ordering::Relaxed);
        s.wait_status.store(0, Ordering::Relaxed);
        s.pdeathsig.store(0, Ordering::Relaxed);
        s.exit_signal.store(exit_signal, Ordering::Relaxed);
        s.forks.store(0, Ordering::Relaxed);
        s.state.store(State::Alive as u32, Ordering::Release);
        Ok((pid, place))
    }

    /// A thread id for a new thread: from the pid space, so that no process
    /// gets it (`want`: the tid the leader chose, in a follower).
    pub fn alloc_tid(&self, want: Option<u32>) -> u32 {
        let l = self.lock();
        let h = self.header();
        match want {
            Some(v) => {
                h.next_pid.fetch_max(v.saturating_add(1), Ordering::Relaxed);
                v
            }
            None => loop {
                let v = h.next_pid.fetch_add(1, Ordering::Relaxed);
                if self.find(&l, v).is_none() && v > INIT_PID {
                    break v;
                }
            },
        }
    }

    /// Forgets a child whose host process could not be created.
    pub fn unfork(&self, pid: u32) {
        let l = self.lock();
        if let Some(s) = self.find(&l, pid) {
            s.state.store(State::Free as u32, Ordering::Release);
        }
    }

    /// Records the host process that runs `pid`.
    pub fn set_host_pid(&self, pid: u32, host: i32) {
        let l = self.lock();
        if let Some(s) = self.find(&l, pid) {
            s.host_pid.store(host, Ordering::Relaxed);
        }
    }

    /// `pid` ended with `wait_status`: it becomes a zombie, and its children
    /// orphans of init. Returns its parent's entry (for SIGCHLD) and the
    /// children to send a parent-death signal to.
    pub fn exit(&self, pid: u32, wait_status: i32) -> (Option<Proc>, Vec<Proc>) {
        let l = self.lock();
        let Some(s) = self.find(&l, pid) else { return (None, Vec::new()) };
        s.wait_status.store(wait_status, Ordering::Relaxed);
        s.state.store(State::Zombie as u32, Ordering::Release);
        let parent = self.find(&l, s.ppid.load(Ordering::Relaxed)).map(Self::read);
        let mut deathsig = Vec::new();
        for i in 0..self.slots {
            let c = self.slot(i);
            if c.state.load(Ordering::Relaxed) != State::Free as u32 && c.ppid.load(Ordering::Relaxed) == pid {
                c.ppid.store(INIT_PID, Ordering::Relaxed);
                if c.pdeathsig.load(Ordering::Relaxed) != 0 {
                    deathsig.push(Self::read(c));
                }
            }
        }
        (parent, deathsig)
    }

    /// Removes a reaped zombie.
    pub fn reap(&self, pid: u32) {
        let l = self.lock();
        if let Some(s) = self.find(&l, pid) {
            s.state.store(State::Free as u32, Ordering::Release);
        }
    }

    /// setpgid: moves `pid` (a child of `caller` or the caller) into group
    /// `pgid` (0: its own), as Linux allows.
    pub fn setpgid(&self, caller: u32, pid: u32, pgid: u32) -> Result<(), libc::c_int> {
        let l = self.lock();
        let pid = if pid == 0 { caller } else { pid };
        let me = self.find(&l, caller).map(Self::read).ok_or(libc::ESRCH)?;
        let target = self.find(&l, pid).ok_or(libc::ESRCH)?;
        let t = Self::read(target);
        if t.pid != caller && t.ppid != caller {
            return Err(libc::ESRCH);
        }
        if t.sid != me.sid {
            return Err(libc::EPERM);
        }
        if t.pid == t.sid {
            // A session leader cannot move.
            return Err(libc::EPERM);
        }
        let pgid = if pgid == 0 { t.pid } else { pgid };
        if pgid != t.pid {
            // Joining an existing group of the same session.
            let exists = (0..self.slots).map(|i| self.slot(i)).any(|s| {
                s.state.load(Ordering::Relaxed) != State::Free as u32
                    && s.pgid.load(Ordering::Relaxed) == pgid
                    && s.sid.load(Ordering::Relaxed) == me.sid
            });
            if !exists {
                return Err(libc::EPERM);
            }
        }
        target.pgid.store(pgid, Ordering::Relaxed);
        Ok(())
    }

    /// setsid: `pid` leads a new session and group (EPERM if it leads a group).
    pub fn setsid(&self, pid: u32) -> Result<u32, libc::c_int> {
        let l = self.lock();
        let group_leader = (0..self.slots).map(|i| self.slot(i)).any(|s| {
            s.state.load(Ordering::Relaxed) != State::Free as u32
                && s.pgid.load(Ordering::Relaxed) == pid
                && s.pid.load(Ordering::Relaxed) != pid
        });
        let s = self.find(&l, pid).ok_or(libc::ESRCH)?;
        if group_leader || s.pgid.load(Ordering::Relaxed) == pid {
            return Err(libc::EPERM);
        }
        s.pgid.store(pid, Ordering::Relaxed);
        s.sid.store(pid, Ordering::Relaxed);
        Ok(pid)
    }

    /// Sets the signal `pid` gets when its parent ends.
    pub fn set_pdeathsig(&self, pid: u32, sig: i32) {
        let l = self.lock();
        if let Some(s) = self.find(&l, pid) {
            s.pdeathsig.store(sig, Ordering::Relaxed);
        }
    }

    /// The terminal's foreground process group.
    pub fn fg_pgrp(&self) -> u32 {
        self.header().fg_pgrp.load(Ordering::Relaxed)
    }

    /// Sets the terminal's foreground process group (tcsetpgrp).
    pub fn set_fg_pgrp(&self, pgrp: u32) {
        self.header().fg_pgrp.store(pgrp, Ordering::Relaxed);
    }

    /// Marks the run stopped (a divergence somewhere): every VMM stops.
    pub fn stop_all(&self) {
        self.header().stopped.store(1, Ordering::SeqCst);
    }

    /// Marks call `nr` as logged; true if no process had logged it before.
    pub fn first_log(&self, nr: u64) -> bool {
        let (w, b) = ((nr / 64) as usize, nr % 64);
        match self.header().logged.get(w) {
            Some(word) => word.fetch_or(1 << b, Ordering::Relaxed) & (1 << b) == 0,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_exit_reap_and_reparenting() {
        let t = ProcTable::new(4).unwrap();
        let (a, pa) = t.fork(FIRST_PID, None, libc::SIGCHLD).unwrap();
        let (b, pb) = t.fork(a, None, libc::SIGCHLD).unwrap();
        assert_eq!((pa, pb), (0, 0));
        assert_eq!(t.fork(FIRST_PID, None, libc::SIGCHLD).unwrap().1, 1);
        assert_eq!(t.fork(FIRST_PID, None, libc::SIGCHLD), Err(TableError::Full(4)));
        t.set_pdeathsig(b, libc::SIGTERM);
        let (parent, orphans) = t.exit(a, 3 << 8);
        assert_eq!(parent.unwrap().pid, FIRST_PID);
        assert_eq!(orphans.len(), 1);
        assert_eq!(t.get(b).unwrap().ppid, INIT_PID);
        assert_eq!(t.get(a).unwrap().state, State::Zombie);
        t.reap(a);
        assert!(t.get(a).is_none());
    }

    #[test]
    fn leader_chosen_pids_are_taken_as_given() {
        let t = ProcTable::new(8).unwrap();
        let (p, _) = t.fork(FIRST_PID, Some(40), libc::SIGCHLD).unwrap();
        assert_eq!(p, 40);
        let (q, _) = t.fork(FIRST_PID, None, libc::SIGCHLD).unwrap();
        assert_eq!(q, 41);
    }

    #[test]
    fn process_groups_and_sessions_follow_linux_rules() {
        let t = ProcTable::new(8).unwrap();
        let (a, _) = t.fork(FIRST_PID, None, libc::SIGCHLD).unwrap();
        // The session leader cannot change its group; its child can.
        assert_eq!(t.setpgid(FIRST_PID, 0, 0), Err(libc::EPERM));
        t.setpgid(FIRST_PID, a, 0).unwrap();
        assert_eq!(t.get(a).unwrap().pgid, a);
        // A group leader cannot start a session.
        assert_eq!(t.setsid(a), Err(libc::EPERM));
        let (b, _) = t.fork(a, None, libc::SIGCHLD).unwrap();
        assert_eq!(t.setsid(b), Ok(b));
        assert_eq!(t.get(b).unwrap().sid, b);
        // Groups of another session are out of reach.
        assert_eq!(t.setpgid(FIRST_PID, a, b), Err(libc::EPERM));
    }
}

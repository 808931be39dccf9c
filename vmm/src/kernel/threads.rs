//! The threads of a process on its one vCPU: creation, exit, and the
//! switches between them, which happen only at system-call boundaries.
//!
//! One thread runs at a time; the others are parked (`sched`). A thread
//! gives way when it waits (a futex, a sleep), yields, exits, or, at a call
//! entry, when its time slice is over and another can run. In a cluster
//! the leader decides: each record names the thread that made the call,
//! and a follower, at each call entry and whenever it must pick a thread,
//! runs the thread whose call the leader's next event is. Every variant
//! thus makes the same calls in the same threads in the same order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::file::{lock, FileKind};
use super::sched::{Parked, Wait};
use super::signal::{self, SigInfo, Signal, SI_TKILL};
use super::syscall::clone::ForkRequest;
use super::task::Task;
use super::{Kernel, KernelError};
use crate::monitor::Stop;
use crate::platform::{Platform, UserRegs, SYSCALL_INSN_LEN};

/// How long a thread runs before it gives way at a call entry, in VMM
/// thread CPU time (guest time included).
const SLICE_NS: u64 = 10_000_000;
/// A thread that made no system call for this many slices is preempted
/// where it is (a spin-wait would starve the others otherwise).
const QUIET_SLICES: u32 = 10;
/// How long pollers wait at first, and at most, when no thread can run.
const POLL_BACKOFF_MIN: Duration = Duration::from_millis(1);
const POLL_BACKOFF_MAX: Duration = Duration::from_millis(16);
/// The most threads a process may have.
const MAX_THREADS: usize = 4096;

/// The CPU time of the calling host thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Kernel {
    /// Creates the thread `req` asks for; `ctx` holds the caller's
    /// registers after the call. Returns the new thread's id or -errno.
    pub(super) fn create_thread(
        &mut self,
        plat: &mut Platform,
        req: &ForkRequest,
        ctx: &UserRegs,
    ) -> Result<i64, KernelError> {
        if self.sched.others.len() + 1 >= MAX_THREADS {
            return Ok(-(libc::EAGAIN as i64));
        }
        // A follower's thread gets the leader's id (checked as the call's result).
        let want = if self.is_follower() {
            match self.monitor.as_ref().and_then(|m| m.leader_ret()) {
                Some(t) if t > 0 && t <= i32::MAX as i64 => Some(t as u32),
                Some(e) if e < 0 => return Ok(e),
                _ => return Ok(-(libc::EAGAIN as i64)),
            }
        } else {
            None
        };
        let tid = self.procs.alloc_tid(want);
        let files = if req.share_files {
            self.task.files.clone()
        } else {
            Arc::new(Mutex::new(lock(&self.task.files).clone()))
        };
        let fs = if req.share_fs { self.task.fs.clone() } else { Arc::new(Mutex::new(lock(&self.task.fs).clone())) };
        let mut t = Task::new(tid, self.task.tg.clone(), files, fs);
        t.sig.mask = self.task.sig.mask;
        t.affinity = self.task.affinity.clone();
        t.fs_base = req.tls.unwrap_or(self.task.fs_base);
        t.gs_base = self.task.gs_base;
        t.clear_child_tid = req.clear_tid.unwrap_or(0);
        // The tid words are written before either thread runs, as Linux does.
        for va in [req.parent_tid, req.child_tid].into_iter().flatten() {
            let _ = self.mm.write_val(va, &tid);
        }
        let mut regs = *ctx;
        regs.rax = 0;
        if let Some(sp) = req.stack {
            regs.rsp = sp;
        }
        let fpu = match &self.task.pending_fpu {
            Some(f) => {
                let mut x = Box::<kvm_bindings::kvm_xsave>::default();
                x.region = f.region;
                x
            }
            None => Box::new(plat.fpu()?),
        };
        self.sched.others.push_back(Parked {
            task: t,
            regs,
            fpu,
            wait: None,
            call: 0,
            interrupted: false,
            retry: false,
        });
        self.sched.threaded = true;
        if let Err(e) = plat.start_slices(Duration::from_nanos(SLICE_NS)) {
            self.log_once(format!("threads that never make a system call cannot be preempted: {e}"));
        }
        Ok(tid as i64)
    }

    /// Moves the running thread into the parked set (`regs`: where it
    /// continues; `wait`: what it waits for).
    fn park_current(
        &mut self,
        plat: &Platform,
        regs: UserRegs,
        wait: Option<Wait>,
        call: u64,
    ) -> Result<(), KernelError> {
        let fpu = match self.task.pending_fpu.take() {
            Some(f) => f,
            None => Box::new(plat.fpu()?),
        };
        let retry = std::mem::take(&mut self.sched.retry_call);
        let stand_in = self.placeholder();
        let task = std::mem::replace(&mut self.task, stand_in);
        self.sched.others.push_back(Parked { task, regs, fpu, wait, call, interrupted: false, retry });
        Ok(())
    }

    /// A stand-in while no thread is on the vCPU (between two threads).
    fn placeholder(&self) -> Task {
        Task::new(0, self.task.tg.clone(), self.task.files.clone(), self.task.fs.clone())
    }

    /// Puts `p` on the vCPU; returns the registers it continues with.
    fn switch_in(&mut self, p: Parked) -> UserRegs {
        let Parked { task, mut regs, fpu, call, interrupted, retry, .. } = p;
        let stray = std::mem::replace(&mut self.task, task);
        // Signals that reached the stand-in are the process's.
        let mut pending = stray.sig;
        while let Some((sig, info)) = pending.take_any() {
            self.raise_in_process(sig, info);
        }
        self.task.pending_fpu = Some(fpu);
        self.task.bases_dirty = true;
        self.sched.switches += 1;
        self.sched.slice_start_ns = thread_cpu_ns();
        let eintr = (-(libc::EINTR as i64)) as u64;
        let restart = if interrupted {
            regs.rax == eintr && signal::frame::restartable(call) && self.restart_after_handler()
        } else {
            retry
        };
        if restart {
            // The call is issued again (after the handler, if a signal came).
            regs.rip = regs.rip.wrapping_sub(SYSCALL_INSN_LEN);
            regs.rax = call;
        }
        regs
    }

    /// The thread that runs next. A follower takes the one whose call the
    /// leader's next event is; otherwise the first runnable one, waiting on
    /// the host for a deadline or a signal while none is.
    fn choose_next(&mut self) -> Result<Parked, Stop> {
        self.choose(true)
    }

    /// As `choose_next`; without `follow`, the first runnable thread even in
    /// a follower.
    fn choose(&mut self, follow: bool) -> Result<Parked, Stop> {
        if let Some(tid) = if follow { self.leader_next_tid()? } else { None } {
            if let Some(i) = self.sched.find(tid) {
                if let Some(p) = self.sched.take_forced(i) {
                    return Ok(p);
                }
            }
        }
        loop {
            if let Some(p) = self.sched.take_ready(Instant::now()) {
                return Ok(p);
            }
            self.idle()?;
        }
    }

    /// Follower: the thread that made the leader's next event, if the
    /// process has threads and the event is a call.
    fn leader_next_tid(&mut self) -> Result<Option<u32>, Stop> {
        if !self.sched.threaded || !self.is_follower() {
            return Ok(None);
        }
        match self.monitor.as_mut() {
            Some(m) => m.next_tid(),
            None => Ok(None),
        }
    }

    /// No thread can run: waits on the host until the earliest deadline or
    /// a signal, which goes to a thread that takes it.
    fn idle(&mut self) -> Result<(), Stop> {
        if !self.settle_before_blocking() {
            return Err(self
                .stop
                .take()
                .unwrap_or(Stop::Divergence("the link failed while every thread waited".into())));
        }
        let polling = self.sched.any_polling();
        let backoff = self.sched.poll_backoff.clamp(POLL_BACKOFF_MIN, POLL_BACKOFF_MAX);
        let until = match (self.sched.next_deadline(), polling) {
            (Some(d), true) => Some(d.min(Instant::now() + backoff)),
            (None, true) => Some(Instant::now() + backoff),
            (d, false) => d,
        };
        if polling {
            self.sched.retry_polls();
            self.sched.poll_backoff = (backoff * 2).min(POLL_BACKOFF_MAX);
        }
        match until {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
                let ts = libc::timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
                // SAFETY: ts is a valid timespec; no remainder wanted.
                unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
            }
            None => {
                // SAFETY: pause has no preconditions; it returns on a signal.
                unsafe { libc::pause() };
            }
        }
        if super::signal::host::stop_noticed() {
            return Err(Stop::Divergence("another process of this variant diverged; every process stops".into()));
        }
        // A host signal is taken by the next call's end (in a cluster, the
        // leader ships it with that event, so every variant delivers it at
        // the same point): some thread must go on to make that call.
        if super::signal::host::pending() && !self.sched.any_polling() {
            self.sched.wake_one_for_signal();
        }
        Ok(())
    }

    /// A process-directed signal: the running thread takes it unless it
    /// blocks it and another thread does not (that one is woken if it waits).
    pub(crate) fn raise_in_process(&mut self, sig: Signal, info: SigInfo) {
        let b = signal::bit(sig.0);
        let current_takes = self.task.tid != 0 && self.task.sig.mask & b == 0;
        if current_takes || self.sched.others.is_empty() {
            self.task.sig.raise(sig, info);
            return;
        }
        match self.sched.others.iter().position(|p| p.task.sig.mask & b == 0) {
            Some(i) => self.signal_parked(i, sig, info),
            None if self.task.tid != 0 => self.task.sig.raise(sig, info),
            None => self.sched.others[0].task.sig.raise(sig, info),
        }
    }

    /// Raises `sig` in parked thread `i`; if it waits and would take the
    /// signal, its call ends with EINTR (and may restart after the handler).
    pub(crate) fn signal_parked(&mut self, i: usize, sig: Signal, info: SigInfo) {
        let ignored = self.tg().sighand.ignored(sig);
        let Some(p) = self.sched.others.get_mut(i) else { return };
        p.task.sig.raise(sig, info);
        if p.wait.is_some() && !ignored && p.task.sig.mask & signal::bit(sig.0) == 0 {
            if matches!(p.wait, Some(Wait::Poll { .. })) {
                // Its registers were rewound to issue the call again.
                p.regs.rip = p.regs.rip.wrapping_add(SYSCALL_INSN_LEN);
                p.task.poll_deadline = None;
            }
            p.wait = None;
            p.regs.rax = (-(libc::EINTR as i64)) as u64;
            p.interrupted = true;
        }
    }

    /// At the entry of call `nr` (registers `ctx`): whether another thread
    /// runs first. The call is then issued again when this one runs next.
    pub(super) fn switch_at_entry(
        &mut self,
        plat: &Platform,
        ctx: &UserRegs,
        nr: u64,
    ) -> Result<Option<Result<UserRegs, Stop>>, KernelError> {
        let switch = if self.is_follower() {
            match self.leader_next_tid() {
                Ok(Some(t)) => t != self.task.tid && self.sched.find(t).is_some(),
                Ok(None) => false,
                Err(stop) => return Ok(Some(Err(stop))),
            }
        } else {
            self.sched.any_runnable() && thread_cpu_ns().saturating_sub(self.sched.slice_start_ns) >= SLICE_NS
        };
        if !switch {
            return Ok(None);
        }
        let mut regs = *ctx;
        regs.rip = regs.rip.wrapping_sub(SYSCALL_INSN_LEN);
        regs.rax = nr;
        self.park_current(plat, regs, None, nr)?;
        self.sched.yields += 1;
        Ok(Some(self.choose_next().map(|p| self.switch_in(p))))
    }

    /// The vCPU was interrupted in program code (registers `ctx`): after
    /// enough slices without a system call, the next runnable thread runs.
    /// A follower does the same on its own clock (it cannot preempt at the
    /// leader's instruction): what its threads compute between calls makes
    /// no events, and at each call entry it switches to the thread of the
    /// leader's next event, so its calls keep the leader's order.
    pub(super) fn preempt(
        &mut self,
        plat: &mut Platform,
        ctx: &UserRegs,
    ) -> Result<Option<Result<UserRegs, Stop>>, KernelError> {
        if !plat.slice_expired() || self.sched.others.is_empty() {
            return Ok(None);
        }
        self.sched.quiet_slices += 1;
        if self.sched.quiet_slices < QUIET_SLICES {
            return Ok(None);
        }
        if !self.sched.any_runnable() {
            return Ok(None);
        }
        self.sched.quiet_slices = 0;
        self.sched.preemptions += 1;
        let tid = self.task.tid;
        if let Some(m) = self.monitor.as_mut() {
            m.preempted = Some((tid, m.seq));
        }
        self.park_current(plat, *ctx, None, 0)?;
        Ok(Some(self.choose(false).map(|p| self.switch_in(p))))
    }

    /// Before poll, ppoll, select, pselect6 or epoll_wait with a timeout in
    /// a process with threads:
    /// the call only looks (timeout 0), so that other threads can run while
    /// nothing is ready. Returns the timeout it had (ms; negative: none) and
    /// whether this is the last look (the timeout passed: the call returns
    /// whatever it finds). The leader decides that by its clock and records
    /// it; a follower takes the leader's decision.
    pub(super) fn poll_probe(&mut self, nr: u64, args: &mut [u64; 6]) -> Option<(i32, bool)> {
        if self.sched.others.is_empty() {
            return None;
        }
        // The timeout in a register (poll, epoll_wait) or in memory (ppoll,
        // select, pselect6: read here once; the call then only looks).
        let (t, reg) = match nr as i64 {
            libc::SYS_poll => (args[2] as i32, Some(2)),
            libc::SYS_epoll_wait | libc::SYS_epoll_pwait => (args[3] as i32, Some(3)),
            _ => match super::syscall::poll::timeout_in_memory(self, nr, args)? {
                Ok(ms) => (ms as i32, None),
                // A bad timeout: the call itself fails.
                Err(_) => return None,
            },
        };
        if t == 0 {
            return None;
        }
        let leader_says =
            if self.is_follower() { self.monitor.as_ref().and_then(|m| m.leader_next_flag()) } else { None };
        let last = match leader_says {
            Some(f) => f != 0,
            None => self.task.poll_deadline.is_some_and(|d| d <= Instant::now()),
        };
        self.sched.probe_final = Some(last);
        match reg {
            Some(i) => args[i] = 0,
            None => self.task.look_only = Some(last),
        }
        Some((t, last))
    }

    /// At the entry of call `nr`, in a process with threads: whether it
    /// would block on a descriptor (a pipe, socket or device, not set
    /// non-blocking, not ready). One thread blocked on the host would hold
    /// the vCPU and every other thread (the one that would make it ready
    /// among them), so such a call is not made: the thread waits as a
    /// poller and issues it again. The leader looks (poll, no wait) and its
    /// answer is the record's flag; a follower takes it. None: no look.
    pub(super) fn block_probe(&mut self, nr: u64, args: &[u64; 6]) -> Option<bool> {
        if self.sched.others.is_empty() {
            return None;
        }
        if matches!(nr as i64, libc::SYS_wait4 | libc::SYS_waitid) {
            // A wait for a child: the same, with the children for readiness.
            let would_block = if self.is_follower() {
                self.monitor.as_ref().and_then(|m| m.leader_next_flag()).map(|f| f != 0)?
            } else {
                let which = super::syscall::lifetime::blocking_wait_target(self, nr, args)?;
                self.wait_would_block(which)
            };
            self.sched.probe_final = Some(would_block);
            return Some(would_block);
        }
        let (events, flags) = match nr as i64 {
            libc::SYS_read | libc::SYS_readv | libc::SYS_accept | libc::SYS_accept4 => (libc::POLLIN, 0),
            libc::SYS_recvfrom => (libc::POLLIN, args[3]),
            libc::SYS_recvmsg => (libc::POLLIN, args[2]),
            libc::SYS_write | libc::SYS_writev => (libc::POLLOUT, 0),
            // A connection this thread started (`connect`), until it is made.
            libc::SYS_connect if self.task.connecting == Some(args[0]) => (libc::POLLOUT, 0),
            libc::SYS_sendto => (libc::POLLOUT, args[3]),
            libc::SYS_sendmsg => (libc::POLLOUT, args[2]),
            _ => return None,
        };
        let would_block = if self.is_follower() {
            self.monitor.as_ref().and_then(|m| m.leader_next_flag()).map(|f| f != 0)?
        } else {
            if flags & libc::MSG_DONTWAIT as u64 != 0 {
                return None;
            }
            let file = self.fds().file(args[0]).ok()?.clone();
            if !matches!(file.kind, FileKind::Pipe | FileKind::Socket | FileKind::CharDevice) || !file.may_block() {
                return None;
            }
            let mut p = libc::pollfd { fd: file.raw(), events, revents: 0 };
            // SAFETY: one valid pollfd; no wait.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            n == 0
        };
        self.sched.probe_final = Some(would_block);
        Some(would_block)
    }

    /// A probing poll found nothing ready (`ctx`: the registers of the
    /// call): the thread waits and issues the call again later.
    pub(super) fn park_poller(
        &mut self,
        plat: &Platform,
        ctx: &UserRegs,
        nr: u64,
        timeout: i32,
    ) -> Result<Option<Result<UserRegs, Stop>>, KernelError> {
        let now = Instant::now();
        let deadline =
            (timeout > 0).then(|| *self.task.poll_deadline.get_or_insert(now + Duration::from_millis(timeout as u64)));
        let mut regs = *ctx;
        regs.rip = regs.rip.wrapping_sub(SYSCALL_INSN_LEN);
        regs.rax = nr;
        self.park_current(plat, regs, Some(Wait::Poll { deadline }), nr)?;
        Ok(Some(self.choose_next().map(|p| self.switch_in(p))))
    }

    /// After call `nr` returned `ret` (registers `ctx`): the thread waits
    /// for `wait`, or gives way (`wait` None: sched_yield), and the next
    /// thread runs.
    pub(super) fn switch_after(
        &mut self,
        plat: &Platform,
        ctx: &UserRegs,
        nr: u64,
        ret: u64,
        wait: Option<Wait>,
    ) -> Result<Result<UserRegs, Stop>, KernelError> {
        let mut regs = *ctx;
        regs.rax = ret;
        self.park_current(plat, regs, wait, nr)?;
        Ok(self.choose_next().map(|p| self.switch_in(p)))
    }

    /// The running thread ends (exit with other threads left): its robust
    /// futexes and clear-tid word are settled, and the next thread runs.
    pub(super) fn end_thread(&mut self) -> Result<UserRegs, Stop> {
        super::syscall::futex::thread_exit_cleanup(self);
        let stand_in = self.placeholder();
        let gone = std::mem::replace(&mut self.task, stand_in);
        // Signals only it could take die with it; process-directed ones stay.
        let mut pending = gone.sig;
        while let Some((sig, info)) = pending.take_any() {
            if info.code != SI_TKILL && info.trapno == 0 {
                self.raise_in_process(sig, info);
            }
        }
        let p = self.choose_next()?;
        Ok(self.switch_in(p))
    }
}

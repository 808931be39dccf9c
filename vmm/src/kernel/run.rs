//! The kernel's run loop: the program runs until it traps; the kernel
//! handles the trap and says where the program continues.

use std::time::Duration;

use kvm_bindings::kvm_regs;

use super::fork::Forked;
use super::mm::{Access, Fault};
use super::signal::host;
use super::signal::{self, SigInfo, Signal};
use super::syscall::{self, Sys};
use super::{Kernel, KernelError, Outcome};

/// Why a process stops when another of its variant diverged.
const STOPPED_BY_ANOTHER: &str = "another process of this variant diverged; every process stops";
use crate::arch::x86_64::paging::is_canonical;
use crate::arch::x86_64::{pf, vector};
use crate::monitor::{spec, Stop};
use crate::platform::{syscall_args, Platform, Trap, UserRegs, SYSCALL_INSN_LEN};

/// What the kernel does after a trap.
pub(super) enum Next {
    /// The program continues with these registers.
    Resume(UserRegs),
    /// The run is over.
    Done(Outcome),
}

impl Kernel {
    /// Runs the program until it ends.
    pub(crate) fn run_loop(&mut self, plat: &mut Platform) -> Result<Outcome, KernelError> {
        loop {
            let (trap, ctx) = plat.run(&mut self.mm)?;
            let next = match trap {
                Trap::Syscall => self.on_syscall(plat, ctx)?,
                Trap::Exception { vector, error, cr2 } => self.on_exception(ctx, vector, error, cr2),
                Trap::Forbidden { port } => Next::Done(self.kill(
                    Signal::SIGSEGV,
                    format!("general protection fault: port I/O to {port:#x} at rip {:#x}", ctx.rip),
                )),
                Trap::Interrupted => self.on_interrupt(plat, ctx)?,
                Trap::RingCall => match self.on_ring_call(plat, ctx)? {
                    Some(next) => next,
                    // Answered on the ring; the program runs on.
                    None => continue,
                },
                Trap::RingReturn => Next::Resume(ctx),
            };
            match next {
                Next::Resume(ctx) => {
                    if let Some(outcome) = self.resume(plat, ctx)? {
                        return Ok(outcome);
                    }
                }
                Next::Done(outcome) => return Ok(outcome),
            }
        }
    }

    /// Prepares the program's return: segment bases and FPU state a call
    /// changed, a pending signal's handler frame. Some(outcome) if the
    /// program cannot continue.
    fn resume(&mut self, plat: &mut Platform, ctx: UserRegs) -> Result<Option<Outcome>, KernelError> {
        if !is_canonical(ctx.rip) || !is_canonical(ctx.rsp) {
            return Ok(Some(self.kill(
                Signal::SIGSEGV,
                format!("general protection fault: non-canonical rip {:#x} or rsp {:#x}", ctx.rip, ctx.rsp),
            )));
        }
        if std::mem::take(&mut self.task.bases_dirty) {
            plat.set_segment_bases(self.task.fs_base, self.task.gs_base);
        }
        if let Some(x) = self.task.pending_fpu.take() {
            if plat.set_fpu(&x).is_err() {
                return Ok(Some(self.kill(Signal::SIGSEGV, "rt_sigreturn with corrupt FPU state".into())));
            }
        }
        let ctx = match self.deliver_pending(plat, ctx) {
            Ok(c) => c,
            Err((sig, why)) => return Ok(Some(self.kill(sig, why))),
        };
        plat.resume(&mut self.mm, ctx);
        Ok(None)
    }

    /// A call posted on the ring while the vCPU runs on (`ctx`: its system
    /// call registers, the others zero): handled exactly as one that came by
    /// the exit, if the ring serves it now; `None` when the answer went to
    /// the ring, `Some` when the run ends.
    fn on_ring_call(&mut self, plat: &mut Platform, ctx: UserRegs) -> Result<Option<Next>, KernelError> {
        if !self.ring_serves(ctx.rax) {
            plat.ring_refuse();
            return Ok(None);
        }
        match self.on_syscall(plat, ctx)? {
            Next::Resume(c) => {
                let plain = c.rip == ctx.rip
                    && c.rsp == ctx.rsp
                    && c.rflags == ctx.rflags
                    && is_canonical(c.rip)
                    && is_canonical(c.rsp)
                    && self.resume_is_plain();
                plat.ring_complete(&self.mm, c, plain);
                Ok(None)
            }
            Next::Done(outcome) => {
                plat.ring_stop();
                Ok(Some(Next::Done(outcome)))
            }
        }
    }

    /// Whether the ring may serve call `nr` now: one of its calls (their
    /// effect is their result, they need neither the vCPU nor a switch of
    /// threads), in a process of one thread.
    fn ring_serves(&self, nr: u64) -> bool {
        self.sched.others.is_empty() && !self.sched.threaded && syscall::RING_CALLS.contains(&nr)
    }

    /// Whether the return to the program after a call needs nothing of
    /// `resume` (no segment bases, FPU state or signal frame to load).
    fn resume_is_plain(&mut self) -> bool {
        if self.task.bases_dirty || self.task.pending_fpu.is_some() || self.task.saved_mask.is_some() {
            return false;
        }
        if self.monitor.is_none() {
            // As `deliver_pending` would.
            self.collect_host_signals();
        }
        !self.task.sig.has_deliverable()
    }

    fn on_syscall(&mut self, plat: &mut Platform, mut ctx: UserRegs) -> Result<Next, KernelError> {
        self.stats.syscalls += 1;
        let nr = ctx.rax;
        self.sched.quiet_slices = 0;
        if !self.sched.others.is_empty() {
            // Another thread may have to run first (its slice, or the leader's schedule).
            match self.switch_at_entry(plat, &ctx, nr)? {
                Some(Ok(regs)) => return Ok(Next::Resume(regs)),
                Some(Err(stop)) => return Ok(Next::Done(self.stopped(stop))),
                None => {}
            }
        }
        let mut args = syscall_args(&ctx);
        let probe = self.poll_probe(nr, &mut args);
        let mut would_block = self.block_probe(nr, &args) == Some(true);
        self.task.entry_rsp = ctx.rsp;
        self.task.nr = Some(nr);
        if self.monitor.is_some() {
            if let Err(stop) = self.monitor_begin(nr, &args) {
                return Ok(Next::Done(self.stopped(stop)));
            }
        }
        let mut sys =
            if would_block { Sys::Ret((-(libc::EAGAIN as i64)) as u64) } else { syscall::dispatch(self, nr, &args) };
        if std::mem::take(&mut self.task.reissue) {
            would_block = true;
        }
        if let Sys::Thread(req) = &sys {
            // The ring serves processes of one thread only.
            plat.disable_ring();
            sys = Sys::Ret(self.create_thread(plat, req, &ctx)? as u64);
        }
        let mut vfork_wait = None;
        if let Sys::Fork(req) = &sys {
            match self.fork(plat, req, ctx)? {
                Forked::Parent(ret, wait) => {
                    sys = Sys::Ret(ret as u64);
                    vfork_wait = wait;
                }
                // The child's first event is its next call, on its own stream.
                Forked::Child(regs) => return Ok(Next::Resume(regs)),
            }
        }
        if self.diag.trace {
            syscall::trace(self.monitor.as_ref().map(|m| m.id), nr, &args, &sys);
        }
        if self.stop.is_none() && host::stop_noticed() {
            self.stop = Some(Stop::Divergence(STOPPED_BY_ANOTHER.into()));
        }
        if let Some(stop) = self.stop.take() {
            return Ok(Next::Done(self.stopped(stop)));
        }
        if self.monitor.is_some() {
            let ret = match &sys {
                Sys::Ret(v) => Some(*v as i64),
                Sys::Exec(_) | Sys::Restore(_) | Sys::Block(_) | Sys::ThreadExit(_) => Some(0),
                Sys::Exit(_) | Sys::Kill(..) | Sys::Fork(_) | Sys::Thread(_) => None,
            };
            if let Some(ret) = ret {
                if let Err(stop) = self.monitor_end(ret) {
                    return Ok(Next::Done(self.stopped(stop)));
                }
            }
        }
        if (would_block || matches!(sys, Sys::Block(_))) && self.signal_ends_wait() {
            // A signal came with this call (the leader's, shipped with its
            // event): the thread does not wait; the call is interrupted and
            // the handler runs, as Linux's wait sees the pending signal.
            sys = Sys::Ret((-(libc::EINTR as i64)) as u64);
            would_block = false;
        }
        if let Some(r) = vfork_wait {
            // The child's stream needs this call's event: send it first.
            if !self.settle_before_blocking() {
                if let Some(stop) = self.stop.take() {
                    return Ok(Next::Done(self.stopped(stop)));
                }
            }
            super::fork::wait_closed(&r);
        }
        Ok(match sys {
            Sys::Ret(v) if would_block => match self.park_poller(plat, &ctx, nr, -1)? {
                Some(r) => self.next_of(r),
                None => {
                    ctx.rax = v;
                    Next::Resume(ctx)
                }
            },
            Sys::Ret(v) => {
                if let Some((timeout, false)) = probe {
                    // A signal to deliver: the call returns (as if its time
                    // were up) so the handler runs.
                    if v == 0 && !self.task.sig.has_deliverable() {
                        if let Some(r) = self.park_poller(plat, &ctx, nr, timeout)? {
                            return Ok(self.next_of(r));
                        }
                    } else {
                        self.task.poll_deadline = None;
                        self.sched.poll_backoff = Duration::ZERO;
                    }
                } else if probe.is_some() {
                    self.task.poll_deadline = None;
                }
                ctx.rax = v;
                if v as i64 == -(libc::EINTR as i64) && signal::frame::restartable(nr) && self.restart_after_handler() {
                    // Back to the `syscall` instruction once the handler returns.
                    ctx.rip = ctx.rip.wrapping_sub(SYSCALL_INSN_LEN);
                    ctx.rax = nr;
                } else if std::mem::take(&mut self.sched.yield_due) && self.sched.any_runnable() {
                    let r = self.switch_after(plat, &ctx, nr, v, None)?;
                    return Ok(self.next_of(r));
                }
                Next::Resume(ctx)
            }
            Sys::Block(wait) => {
                let r = self.switch_after(plat, &ctx, nr, 0, Some(wait))?;
                self.next_of(r)
            }
            Sys::ThreadExit(_) => {
                let r = self.end_thread();
                self.next_of(r)
            }
            Sys::Restore(regs) => Next::Resume(*regs),
            Sys::Exec(regs) => {
                // The other threads end; the caller goes on as the process.
                self.sched.others.clear();
                self.task.tid = self.task.tg.pid;
                self.task.fs_base = 0;
                self.task.gs_base = 0;
                self.task.bases_dirty = true;
                Next::Resume(*regs)
            }
            Sys::Exit(code) => {
                if let Some(m) = self.monitor.as_mut() {
                    // exit_group is a call like others; the exit itself is
                    // the final event.
                    if let Err(stop) = m.end(0, 0, &[], &mut |_| {}).and_then(|_| m.finish(Some(code), None)) {
                        return Ok(Next::Done(self.stopped(stop)));
                    }
                }
                Next::Done(Outcome::Exited(code))
            }
            Sys::Kill(sig, reason) => Next::Done(self.kill(sig, reason)),
            Sys::Fork(_) | Sys::Thread(_) => unreachable!("a fork or thread was created above"),
        })
    }

    /// Where the program continues after a switch of threads.
    fn next_of(&mut self, r: Result<UserRegs, Stop>) -> Next {
        match r {
            Ok(regs) => Next::Resume(regs),
            Err(stop) => Next::Done(self.stopped(stop)),
        }
    }

    /// The monitor's view of call `nr` before it runs: its class and record.
    fn monitor_begin(&mut self, nr: u64, args: &[u64; 6]) -> Result<(), Stop> {
        let entry = syscall::entry(nr);
        let mut c = spec::classify(self, entry.map(|e| e.class), args);
        let Some(m) = self.monitor.as_mut() else { return Ok(()) };
        if c.open_path.take().is_some_and(|p| m.policy.is_mutable(&p)) {
            c.class = dmvx_sync::policy::Class::FileModify;
            c.remote = true;
        }
        m.threaded = self.sched.threaded;
        m.tid = self.task.tid;
        let thread = m.threaded.then_some(self.task.tid);
        let flag = self.sched.probe_final.take().map(u64::from);
        let mut rec = std::mem::take(&mut m.rec);
        spec::build_record(self, &mut rec, (nr, thread, flag), c.class, entry.map_or(&[], |e| e.record), args);
        let Some(m) = self.monitor.as_mut() else { return Ok(()) };
        m.rec = rec;
        m.begin(nr, c.class, c.remote)
    }

    /// The monitor's view after the call, with the leader's caught signals
    /// going out and the followers raising them.
    pub(super) fn monitor_end(&mut self, ret: i64) -> Result<(), Stop> {
        let (caught, timers) = if self.is_leader() {
            self.collect_host_signals();
            (std::mem::take(&mut self.host_raised), std::mem::take(&mut self.timer_raised))
        } else {
            (0, Vec::new())
        };
        self.signal_waiting = None;
        let Some(m) = self.monitor.as_mut() else { return Ok(()) };
        let mut raised = Vec::new();
        let r = m.end(ret, caught, &timers, &mut |s| raised.push((s.sig, s.code, s.addr)));
        for (sig, code, addr) in raised {
            if code == super::timers::SI_TIMER {
                self.raise_shipped_timer_signal(sig, addr);
                continue;
            }
            let info = SigInfo { code, addr, ..Default::default() };
            if self.sched.others.is_empty() {
                self.task.sig.raise(Signal(sig), info);
            } else {
                self.raise_in_process(Signal(sig), info);
            }
        }
        r
    }

    /// Whether the running thread has a signal pending that it does not
    /// block and that is not ignored: a wait it is about to begin ends at once.
    fn signal_ends_wait(&self) -> bool {
        let ready = self.task.sig.pending & !(self.task.sig.mask & !signal::UNBLOCKABLE);
        ready != 0 && (1..=64).any(|n| ready & signal::bit(n) != 0 && !self.tg().sighand.ignored(Signal(n)))
    }

    /// Whether the signal about to be delivered has a handler with
    /// SA_RESTART (so an interrupted call restarts after it).
    pub(super) fn restart_after_handler(&mut self) -> bool {
        self.collect_host_signals();
        let ready = self.task.sig.pending & !(self.task.sig.mask & !signal::UNBLOCKABLE);
        if ready == 0 {
            return false;
        }
        let sig = Signal(ready.trailing_zeros() as i32 + 1);
        let act = self.tg().sighand.action(sig);
        act.handler > signal::SIG_IGN && act.flags & signal::SA_RESTART != 0
    }

    fn on_exception(&mut self, ctx: kvm_regs, vec: u8, err: u64, cr2: u64) -> Next {
        let rip = ctx.rip;
        if vec == vector::PAGE_FAULT {
            self.stats.page_faults += 1;
            let access = if err & pf::FETCH != 0 {
                Access::Exec
            } else if err & pf::WRITE != 0 {
                Access::Write
            } else {
                Access::Read
            };
            return match self.mm.fault(cr2, access) {
                Ok(()) => Next::Resume(ctx),
                Err(Fault::OutOfMemory) => Next::Done(self.kill(
                    Signal::SIGKILL,
                    format!("out of guest memory at address {cr2:#x}, rip {rip:#x} (raise --memory)"),
                )),
                Err(f) => {
                    let what = match access {
                        Access::Read => "read",
                        Access::Write => "write",
                        Access::Exec => "instruction fetch",
                    };
                    let why = if f == Fault::Unmapped { "no mapping" } else { "not permitted by the mapping" };
                    let info = SigInfo {
                        code: if f == Fault::Unmapped { 1 } else { 2 },
                        addr: cr2,
                        trapno: vec as u64,
                        err,
                        value: 0,
                    };
                    let reason = format!("page fault: {what} at address {cr2:#x} ({why}), rip {rip:#x}");
                    self.fault_signal(ctx, Signal::SIGSEGV, info, reason)
                }
            };
        }
        if vec == vector::GENERAL_PROTECTION && err == 0 {
            if let Some((insn, len)) = self.trapped_insn(&ctx) {
                return match self.emulate_insn(ctx, insn, len) {
                    Ok(ctx) => Next::Resume(ctx),
                    Err(stop) => Next::Done(self.stopped(stop)),
                };
            }
        }
        let sig = match vec {
            vector::DIVIDE_ERROR | vector::X87_FP | vector::SIMD_FP => Signal::SIGFPE,
            vector::INVALID_OPCODE => Signal::SIGILL,
            vector::DEBUG | vector::BREAKPOINT => Signal::SIGTRAP,
            vector::ALIGNMENT_CHECK => Signal::SIGBUS,
            _ => Signal::SIGSEGV,
        };
        let code = match vec {
            vector::DIVIDE_ERROR => 1,    // FPE_INTDIV
            vector::INVALID_OPCODE => 2,  // ILL_ILLOPN
            vector::BREAKPOINT => 1,      // TRAP_BRKPT
            vector::ALIGNMENT_CHECK => 1, // BUS_ADRALN
            _ => 0x80,                    // SI_KERNEL
        };
        let info = SigInfo { code, addr: if code == 0x80 { 0 } else { rip }, trapno: vec as u64, err, value: 0 };
        let reason = format!("{} at rip {rip:#x} (error code {err:#x})", vector::name(vec));
        self.fault_signal(ctx, sig, info, reason)
    }

    /// A fault of the program: delivered to its handler if it has one that
    /// is not blocked (as Linux forces), otherwise it kills the program.
    fn fault_signal(&mut self, ctx: kvm_regs, sig: Signal, info: SigInfo, reason: String) -> Next {
        let act = self.tg().sighand.action(sig);
        let blocked = self.task.sig.mask & signal::bit(sig.0) != 0;
        if act.handler <= signal::SIG_IGN || blocked {
            return Next::Done(self.kill(sig, reason));
        }
        self.task.sig.raise(sig, info);
        Next::Resume(ctx)
    }

    /// Ends the program as killed by `sig`, a signal from outside that
    /// reached the leader while its program ran without system calls.
    pub(crate) fn kill_externally(&mut self, sig: Signal, reason: String) -> Outcome {
        if let Some(m) = self.monitor.as_mut() {
            if let Err(stop) = m.finish_killed_externally(sig.0) {
                return self.stopped(stop);
            }
        }
        Outcome::Killed { signal: sig, reason }
    }

    /// A host signal or the link kicked the vCPU while program code ran:
    /// alone, a signal is delivered there; in a cluster, see `interrupt`.
    fn on_interrupt(&mut self, plat: &mut Platform, ctx: kvm_regs) -> Result<Next, KernelError> {
        if self.monitor.is_none() {
            self.collect_host_signals();
        } else if let Some(outcome) = self.mvx_interrupt() {
            return Ok(Next::Done(outcome));
        }
        // A thread's slices may be over (spinning without system calls).
        Ok(match self.preempt(plat, &ctx)? {
            Some(r) => self.next_of(r),
            None => Next::Resume(ctx),
        })
    }

    /// Ends the program as killed by `sig`.
    pub(crate) fn kill(&mut self, sig: Signal, reason: String) -> Outcome {
        if let Some(m) = self.monitor.as_mut() {
            if let Err(stop) = m.finish(None, Some(sig.0)) {
                return self.stopped(stop);
            }
        }
        Outcome::Killed { signal: sig, reason }
    }

    /// The outcome when the monitor stops the run. A divergence anywhere
    /// stops every process of the variant (and their streams stop the
    /// other variants').
    pub(crate) fn stopped(&mut self, stop: Stop) -> Outcome {
        let outcome = match stop {
            Stop::Divergence(msg) => {
                if msg == STOPPED_BY_ANOTHER {
                    if let Some(m) = self.monitor.as_mut() {
                        m.stop_followers(crate::monitor::EXIT_DIVERGENCE as i32);
                    }
                }
                Outcome::Diverged(msg)
            }
            Stop::Shutdown(status) => return Outcome::Ended(status),
            Stop::Link { why, peer, silent } => {
                if let Some(m) = self.monitor.as_mut() {
                    m.link_failed(&why, peer, silent);
                }
                Outcome::Diverged(format!("the link to the other variants failed: {why}"))
            }
        };
        self.stop_variant();
        outcome
    }

    /// Tells every other process of this variant that the run stops.
    pub(crate) fn stop_variant(&self) {
        self.procs.stop_all();
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        for p in self.procs.select(|p| p.state == super::proc_table::State::Alive && p.host_pid > 0 && p.host_pid != me)
        {
            let _ = host::send_stop_notice(p.host_pid);
        }
    }

    /// The process ended with `outcome`: its zombie goes into the table for
    /// its parent, its children learn of it (PR_SET_PDEATHSIG), a vfork
    /// parent resumes. When the first process ends, the run ends: the
    /// program's remaining processes are killed.
    pub(crate) fn exit_process(&mut self, outcome: &Outcome) {
        let status = match outcome {
            Outcome::Exited(c) => (c & 0xff) << 8,
            Outcome::Killed { signal, .. } => signal.0 & 0x7f,
            Outcome::Diverged(_) | Outcome::Ended(_) => libc::SIGKILL,
        };
        // The program's writes into shared file mappings reach their files.
        let _ = self.mm.write_back(crate::arch::x86_64::layout::USER_MIN, crate::arch::x86_64::layout::USER_END);
        let (_, orphans) = self.procs.exit(self.task.tg.pid, status);
        self.send_pdeathsig(&orphans);
        self.vfork_done = None;
        if self.root {
            // SAFETY: getpid has no preconditions.
            let me = unsafe { libc::getpid() };
            for p in
                self.procs.select(|p| p.state == super::proc_table::State::Alive && p.host_pid > 0 && p.host_pid != me)
            {
                // SAFETY: kill has no memory preconditions; the pid is a VMM of this run.
                unsafe { libc::kill(p.host_pid, libc::SIGKILL) };
            }
        }
    }
}

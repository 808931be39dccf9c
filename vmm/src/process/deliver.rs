//! Delivering signals to the program: catching the VMM's own signals
//! (SIGTERM, SIGINT, ... sent to `dmvx-vmm` are meant for the program),
//! building Linux's x86-64 signal frame on the program's stack, restoring it
//! in `rt_sigreturn`, and interruptible host waits.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Instant;

use kvm_bindings::{kvm_regs, kvm_xsave};

use super::errno::{Errno, SysResult};
use super::signal::{
    bit, SigInfo, Signal, StackT, SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_RESTORER, SIG_DFL, SIG_IGN, SI_USER,
    SS_DISABLE, SS_ONSTACK, UNBLOCKABLE,
};
use super::Process;
use crate::arch::x86_64::regs::{rflags, USER_CS_SEL, USER_SS_SEL};
use crate::vstate::vcpu::Vcpu;

/// Signals sent to the VMM that are passed on to the program.
pub const FORWARDED: [i32; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGWINCH,
];

/// Signals caught by the VMM and not yet handed to the program.
static HOST_PENDING: AtomicU64 = AtomicU64::new(0);
/// `kvm_run.immediate_exit` of the running vCPU, or null.
static IMMEDIATE_EXIT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_host_signal(sig: libc::c_int) {
    HOST_PENDING.fetch_or(bit(sig), Ordering::SeqCst);
    let p = IMMEDIATE_EXIT.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: p points at the live kvm_run of the vCPU (cleared by
        // `SignalGuard` before that mapping goes away); a volatile byte
        // store is async-signal-safe.
        unsafe { p.write_volatile(1) };
    }
}

/// Installs the VMM's handlers for the forwarded signals and points them at
/// `vcpu`; undone on drop.
pub struct SignalGuard;

impl SignalGuard {
    /// A follower ignores its host's signals (the leader's are replicated);
    /// everyone else catches them for the program.
    pub fn install(vcpu: &mut Vcpu, ignore: bool) -> SignalGuard {
        IMMEDIATE_EXIT.store(vcpu.immediate_exit_ptr(), Ordering::SeqCst);
        for sig in FORWARDED {
            if ignore {
                // SAFETY: installing SIG_IGN has no preconditions.
                unsafe { libc::signal(sig, libc::SIG_IGN) };
                continue;
            }
            // SAFETY: a zeroed sigaction is valid; the handler only touches
            // atomics and a volatile byte (async-signal-safe). No SA_RESTART:
            // blocking host calls must return EINTR so the VMM can act.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_host_signal as *const () as usize;
                libc::sigfillset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        SignalGuard
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

/// Size of the x86-64 `struct ucontext` and `struct rt_sigframe`.
const UCONTEXT_SIZE: u64 = 304;
const SIGINFO_SIZE: u64 = 128;
const FRAME_SIZE: u64 = 8 + UCONTEXT_SIZE + SIGINFO_SIZE;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS.
const UC_FLAGS: u64 = 0x7;

/// Bytes of XSAVE state in a signal frame (standard format), for `xcr0`.
pub fn xsave_size() -> usize {
    let ebx = std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize;
    ebx.clamp(576, 4096)
}

impl Process {
    /// Moves signals the VMM caught into the program's pending set. A
    /// follower ignores its host's signals: it takes the leader's.
    pub(crate) fn collect_host_signals(&mut self) {
        let caught = HOST_PENDING.swap(0, Ordering::SeqCst);
        if self.mvx.as_ref().is_some_and(|m| !m.is_leader()) {
            return;
        }
        for sig in FORWARDED {
            if caught & bit(sig) != 0 {
                self.signals.raise(Signal(sig), SigInfo { code: SI_USER, ..Default::default() });
                self.host_raised |= bit(sig);
            }
        }
    }

    /// Runs a blocking host call `f(remaining_ms)` (negative: forever) with
    /// the program's signal mask replaced by `mask` meanwhile. A signal the
    /// program will receive ends the wait with EINTR; other interruptions
    /// resume it.
    pub(crate) fn blocking(&mut self, mask: Option<u64>, timeout_ms: i64, f: impl FnMut(i64) -> i64) -> SysResult {
        self.blocking_on(mask, timeout_ms, None, f)
    }

    /// [`Self::blocking`] for a call whose readiness `wake` describes (an
    /// epoll descriptor, or a poll/select set): the leader then waits for it
    /// and its followers' acknowledgements at once, releasing held output
    /// as they come, instead of waiting for every acknowledgement first. The
    /// program handles new clients while the followers verify what it sent.
    pub(crate) fn blocking_on(
        &mut self,
        mask: Option<u64>,
        timeout_ms: i64,
        wake: Option<WakeOn<'_>>,
        mut f: impl FnMut(i64) -> i64,
    ) -> SysResult {
        let start = Instant::now();
        if let Some(m) = mask {
            self.saved_mask = Some(self.signals.mask);
            self.signals.mask = m & !UNBLOCKABLE;
        }
        self.collect_host_signals();
        if timeout_ms != 0 {
            self.flush_link();
        }
        let left = |start: Instant| {
            if timeout_ms < 0 {
                -1
            } else {
                (timeout_ms - start.elapsed().as_millis() as i64).max(0)
            }
        };
        // The leader may hold outputs a client is waiting for: look first
        // whether anything is ready at once; if not, send them out before
        // blocking.
        if timeout_ms != 0 && self.mvx.as_ref().is_some_and(|m| m.is_leader() && m.outputs.pending()) {
            let r = f(0);
            if r != 0 {
                return if r > 0 { Ok(r as u64) } else { Err(Errno::last()) };
            }
            // A poll set is watched through a temporary epoll descriptor.
            let set_fd;
            let wake = match wake {
                None => None,
                Some(WakeOn::Fd(fd, events)) => Some((fd, events)),
                Some(WakeOn::Set(set)) => {
                    set_fd = epoll_of(&set.borrow());
                    set_fd.as_ref().map(|e| (e.as_raw_fd(), libc::POLLIN))
                }
            };
            match wake {
                None => {
                    if let Err(stop) = self.settle_before_blocking() {
                        self.stop_requested = Some(stop);
                        return Err(Errno::EINTR);
                    }
                }
                Some((fd, events)) => loop {
                    if self.signals.has_deliverable() {
                        return Err(Errno::EINTR);
                    }
                    let link = match self.release_while_waiting() {
                        Ok(Some(link)) => link,
                        Ok(None) => break,
                        Err(stop) => {
                            self.stop_requested = Some(stop);
                            return Err(Errno::EINTR);
                        }
                    };
                    let mut pfd = [
                        libc::pollfd { fd, events, revents: 0 },
                        libc::pollfd { fd: link, events: libc::POLLIN, revents: 0 },
                    ];
                    let t = left(start);
                    // SAFETY: two valid pollfds.
                    let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, t as i32) };
                    self.disarm_link_wake();
                    if n < 0 {
                        if Errno::last() == Errno::EINTR {
                            self.collect_host_signals();
                            continue;
                        }
                        break;
                    }
                    if pfd[0].revents != 0 || n == 0 {
                        let r = f(0);
                        if r != 0 || n == 0 {
                            return if r >= 0 { Ok(r as u64) } else { Err(Errno::last()) };
                        }
                    }
                },
            }
        }
        loop {
            if self.signals.has_deliverable() {
                return Err(Errno::EINTR);
            }
            let r = f(left(start));
            if r >= 0 {
                return Ok(r as u64);
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(e);
            }
            self.collect_host_signals();
        }
    }

    /// Waits until a signal the program will receive arrives (pause,
    /// sigsuspend, a futex nobody can wake). Returns EINTR.
    pub(crate) fn wait_for_signal(&mut self, mask: Option<u64>) -> Errno {
        if let Err(stop) = self.settle_before_blocking() {
            self.stop_requested = Some(stop);
            return Errno::EINTR;
        }
        match self.blocking(mask, -1, |_| {
            // SAFETY: pause has no preconditions; it returns on a signal.
            unsafe { libc::pause() as i64 }
        }) {
            Err(e) => e,
            Ok(_) => Errno::EINTR,
        }
    }

    /// A sigset argument (pointer, size): None when the pointer is null.
    pub(crate) fn sigmask_arg(&mut self, va: u64, size: u64) -> SysResult<Option<u64>> {
        if va == 0 {
            return Ok(None);
        }
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        Ok(Some(self.mm.read_val::<u64>(va)?))
    }

    /// Delivers the next deliverable signal, if any, on top of `ctx`.
    /// Returns the registers to resume with, or the reason the program dies.
    pub(crate) fn deliver_pending(&mut self, vcpu: &mut Vcpu, mut ctx: kvm_regs) -> Result<kvm_regs, (Signal, String)> {
        if self.mvx.is_none() {
            // Under MVX the leader collects them after a call, so every
            // variant delivers them at the same point.
            self.collect_host_signals();
        }
        let mut delivered = false;
        while let Some((sig, info)) = self.signals.take_deliverable() {
            let act = self.signals.action(sig);
            if act.handler == SIG_IGN || (act.handler == SIG_DFL && sig.default_ignored()) {
                continue;
            }
            if act.handler == SIG_DFL {
                let why = if info.trapno != 0 || info.addr != 0 {
                    format!("{} (pending fault)", sig.name())
                } else {
                    format!("{} received", sig.name())
                };
                return Err((sig, why));
            }
            ctx = self.build_frame(vcpu, sig, info, act, ctx).map_err(|why| (Signal::SIGSEGV, why))?;
            delivered = true;
            // Linux delivers one handler frame at a time; the next waits for
            // the program to run (it may block it meanwhile).
            break;
        }
        if let Some(m) = self.saved_mask.take() {
            if !delivered {
                self.signals.mask = m;
            }
        }
        Ok(ctx)
    }

    /// Writes an rt_sigframe for `sig` and returns the handler's registers.
    fn build_frame(
        &mut self,
        vcpu: &mut Vcpu,
        sig: Signal,
        info: SigInfo,
        act: super::signal::SigAction,
        ctx: kvm_regs,
    ) -> Result<kvm_regs, String> {
        let fail = |what: &str| format!("cannot deliver {}: {what}", sig.name());
        if act.flags & SA_RESTORER == 0 {
            return Err(fail("the handler has no SA_RESTORER return path"));
        }
        let xsave = vcpu.fd().get_xsave().map_err(|e| fail(&format!("KVM_GET_XSAVE failed: {e}")))?;
        let alt = self.signals.altstack;
        let on_alt = alt.flags & SS_DISABLE == 0 && ctx.rsp.wrapping_sub(alt.sp) < alt.size;
        let mut sp = if act.flags & SA_ONSTACK != 0 && alt.flags & SS_DISABLE == 0 && !on_alt {
            alt.sp.wrapping_add(alt.size)
        } else {
            ctx.rsp.wrapping_sub(128)
        };
        // FPU/SSE/AVX state, 64-byte aligned, with Linux's software bytes.
        let fp_size = self.xsave_size as u64;
        sp = sp.wrapping_sub(fp_size + 4) & !63;
        let fp_addr = sp;
        let mut fp = vec![0u8; fp_size as usize + 4];
        for (i, w) in xsave.region.iter().take(fp_size as usize / 4).enumerate() {
            fp[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        fp[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
        fp[468..472].copy_from_slice(&((fp_size + 4) as u32).to_le_bytes());
        fp[472..480].copy_from_slice(&self.xcr0.to_le_bytes());
        fp[480..484].copy_from_slice(&(fp_size as u32).to_le_bytes());
        let n = fp.len();
        fp[n - 4..].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
        self.mm.write_user(fp_addr, &fp).map_err(|_| fail("the signal stack is not writable"))?;

        let frame = (sp.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
        let uc = frame + 8;
        let info_addr = uc + UCONTEXT_SIZE;
        let old_mask = self.saved_mask.take().unwrap_or(self.signals.mask);
        let mut f: Vec<u64> = Vec::with_capacity(FRAME_SIZE as usize / 8);
        f.push(act.restorer);
        // ucontext: flags, link, stack_t (sp, flags|pad, size).
        f.extend([UC_FLAGS, 0, alt.sp, if on_alt { SS_ONSTACK as u64 } else { (alt.flags as u32) as u64 }, alt.size]);
        // sigcontext
        f.extend([ctx.r8, ctx.r9, ctx.r10, ctx.r11, ctx.r12, ctx.r13, ctx.r14, ctx.r15]);
        f.extend([ctx.rdi, ctx.rsi, ctx.rbp, ctx.rbx, ctx.rdx, ctx.rax, ctx.rcx, ctx.rsp, ctx.rip, ctx.rflags]);
        f.push(USER_CS_SEL | (USER_SS_SEL << 48));
        f.extend([info.err, info.trapno, old_mask, info.addr, fp_addr]);
        f.extend([0u64; 8]);
        f.push(old_mask);
        // siginfo: signo, errno, code, pad; then the union.
        f.push(sig.0 as u32 as u64);
        f.push(info.code as u32 as u64);
        f.push(info.addr);
        f.extend([0u64; 13]);
        debug_assert_eq!(f.len() as u64 * 8, FRAME_SIZE);
        let bytes: Vec<u8> = f.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.mm.write_user(frame, &bytes).map_err(|_| fail("the signal stack is not writable"))?;

        self.signals.mask =
            old_mask | (act.mask & !UNBLOCKABLE) | if act.flags & SA_NODEFER == 0 { bit(sig.0) } else { 0 };
        if act.flags & SA_RESETHAND != 0 {
            self.signals.reset(sig);
        }
        self.stats.signals += 1;
        Ok(kvm_regs {
            rdi: sig.0 as u64,
            rsi: info_addr,
            rdx: uc,
            rax: 0,
            rsp: frame,
            rip: act.handler,
            rflags: ctx.rflags & !(rflags::DF | rflags::TF | (1 << 16)),
            ..ctx
        })
    }

    /// rt_sigreturn: the registers, mask, alternate stack and FPU state
    /// saved in the frame at the program's stack pointer.
    pub(crate) fn sigreturn(&mut self, rsp: u64) -> Result<kvm_regs, String> {
        let bad = |what: &str| format!("rt_sigreturn with a bad frame: {what}");
        let uc = rsp;
        let mut raw = [0u8; UCONTEXT_SIZE as usize];
        self.mm.read_user(uc, &mut raw).map_err(|_| bad("unreadable"))?;
        let w = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        // [0] flags [1] link [2..5] stack_t [5..] sigcontext (32 words) then mask
        let g = |i: usize| w(5 + i);
        let regs = kvm_regs {
            r8: g(0),
            r9: g(1),
            r10: g(2),
            r11: g(3),
            r12: g(4),
            r13: g(5),
            r14: g(6),
            r15: g(7),
            rdi: g(8),
            rsi: g(9),
            rbp: g(10),
            rbx: g(11),
            rdx: g(12),
            rax: g(13),
            rcx: g(14),
            rsp: g(15),
            rip: g(16),
            rflags: rflags::sanitize_user(g(17)),
        };
        let fp_addr = g(23);
        self.signals.mask = w(37) & !UNBLOCKABLE;
        let stack = StackT { sp: w(2), flags: w(3) as i32, _pad: 0, size: w(4) };
        if stack.flags & SS_DISABLE != 0 || stack.size >= 2048 {
            let _ = self.signals.set_altstack(Some(StackT { flags: stack.flags & SS_DISABLE, ..stack }));
        }
        if fp_addr != 0 {
            let size = self.xsave_size;
            let mut fp = vec![0u8; size];
            self.mm.read_user(fp_addr, &mut fp).map_err(|_| bad("unreadable FPU state"))?;
            let mut x = kvm_xsave::default();
            for (i, word) in x.region.iter_mut().take(size / 4).enumerate() {
                *word = u32::from_le_bytes(fp[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            }
            // The software-reserved bytes are Linux's, not the CPU's.
            for word in &mut x.region[116..128] {
                *word = 0;
            }
            self.pending_xsave = Some(Box::new(x));
        }
        Ok(regs)
    }
}

/// Whether a call interrupted by a handler with SA_RESTART is restarted
/// (Linux's ERESTARTSYS calls), rather than failing with EINTR.
pub fn restartable(nr: u64) -> bool {
    matches!(
        nr as i64,
        libc::SYS_read
            | libc::SYS_write
            | libc::SYS_readv
            | libc::SYS_writev
            | libc::SYS_pread64
            | libc::SYS_pwrite64
            | libc::SYS_recvfrom
            | libc::SYS_recvmsg
            | libc::SYS_sendto
            | libc::SYS_sendmsg
            | libc::SYS_accept
            | libc::SYS_accept4
            | libc::SYS_connect
            | libc::SYS_wait4
            | libc::SYS_flock
            | libc::SYS_fcntl
            | libc::SYS_ioctl
            | libc::SYS_open
            | libc::SYS_openat
            | libc::SYS_futex
    )
}

/// What a blocking call waits for, so that the leader can wait for it and
/// for its followers' acknowledgements at once.
pub(crate) enum WakeOn<'a> {
    /// A descriptor that reports these poll events when the call is ready
    /// (an epoll descriptor: POLLIN).
    Fd(i32, i16),
    /// The host pollfd set of a poll or select.
    Set(&'a RefCell<Vec<libc::pollfd>>),
}

/// An epoll descriptor ready when any of `set` is (level-triggered, the same
/// events: poll and epoll share their bit values). None if a descriptor
/// cannot be watched by epoll; the caller then waits the simple way.
fn epoll_of(set: &[libc::pollfd]) -> Option<OwnedFd> {
    // SAFETY: no pointer arguments.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    for p in set.iter().filter(|p| p.fd >= 0) {
        // A descriptor listed twice waits for the union of its events.
        let events = set.iter().filter(|q| q.fd == p.fd).fold(0i16, |a, q| a | q.events);
        let mut ev = libc::epoll_event { events: u32::from(events as u16), u64: 0 };
        // SAFETY: `ev` is a valid epoll_event for the call's duration.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, p.fd, &mut ev) } < 0
            && Errno::last() != Errno::EEXIST
        {
            return None;
        }
    }
    Some(ep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_matches_linux() {
        // uc_mcontext starts 40 bytes into ucontext; sigcontext is 256 bytes.
        assert_eq!(UCONTEXT_SIZE, 8 + 8 + 24 + 256 + 8);
        assert_eq!(FRAME_SIZE, 440);
        assert!(xsave_size() >= 576);
    }
}

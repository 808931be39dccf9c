//! Delivering signals to the program: Linux's x86-64 signal frame on the
//! program's stack, restored by `rt_sigreturn`.

use kvm_bindings::{kvm_regs, kvm_xsave};

use super::{
    bit, SigInfo, Signal, StackT, SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_RESTORER, SIG_DFL, SIG_IGN, SS_DISABLE,
    SS_ONSTACK, UNBLOCKABLE,
};
use crate::arch::x86_64::regs::{rflags, USER_CS_SEL, USER_SS_SEL};
use crate::kernel::Kernel;
use crate::platform::Platform;

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

impl Kernel {
    /// Delivers the next deliverable signal, if any, on top of `ctx`.
    /// Returns the registers to resume with, or the reason the program dies.
    pub(crate) fn deliver_pending(&mut self, plat: &Platform, mut ctx: kvm_regs) -> Result<kvm_regs, (Signal, String)> {
        if self.monitor.is_none() {
            // Under MVX the leader collects them after a call, so every
            // variant delivers them at the same point.
            self.collect_host_signals();
        }
        let mut delivered = false;
        while let Some((sig, info)) = self.task.sig.take_deliverable() {
            let act = self.tg().sighand.action(sig);
            if act.handler == SIG_IGN || (act.handler == SIG_DFL && sig.default_ignored()) {
                continue;
            }
            if act.handler == SIG_DFL {
                let why = if info.trapno != 0 {
                    format!("{} (pending fault)", sig.name())
                } else {
                    format!("{} received", sig.name())
                };
                return Err((sig, why));
            }
            ctx = self.build_frame(plat, sig, info, act, ctx).map_err(|why| (Signal::SIGSEGV, why))?;
            delivered = true;
            // Linux delivers one handler frame at a time; the next waits for
            // the program to run (it may block it meanwhile).
            break;
        }
        if let Some(m) = self.task.saved_mask.take() {
            if !delivered {
                self.task.sig.mask = m;
            }
        }
        Ok(ctx)
    }

    /// Writes an rt_sigframe for `sig` and returns the handler's registers.
    fn build_frame(
        &mut self,
        plat: &Platform,
        sig: Signal,
        info: SigInfo,
        act: super::SigAction,
        ctx: kvm_regs,
    ) -> Result<kvm_regs, String> {
        let fail = |what: &str| format!("cannot deliver {}: {what}", sig.name());
        if act.flags & SA_RESTORER == 0 {
            return Err(fail("the handler has no SA_RESTORER return path"));
        }
        let xsave = plat.fpu().map_err(|e| fail(&e.to_string()))?;
        let alt = self.task.sig.altstack;
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
        let old_mask = self.task.saved_mask.take().unwrap_or(self.task.sig.mask);
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
        f.push(info.value);
        f.extend([0u64; 12]);
        debug_assert_eq!(f.len() as u64 * 8, FRAME_SIZE);
        let bytes: Vec<u8> = f.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.mm.write_user(frame, &bytes).map_err(|_| fail("the signal stack is not writable"))?;

        self.task.sig.mask =
            old_mask | (act.mask & !UNBLOCKABLE) | if act.flags & SA_NODEFER == 0 { bit(sig.0) } else { 0 };
        if act.flags & SA_RESETHAND != 0 {
            self.tg().sighand.reset(sig);
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
        self.task.sig.mask = w(37) & !UNBLOCKABLE;
        let stack = StackT { sp: w(2), flags: w(3) as i32, _pad: 0, size: w(4) };
        if stack.flags & SS_DISABLE != 0 || stack.size >= 2048 {
            let _ = self.task.sig.set_altstack(Some(StackT { flags: stack.flags & SS_DISABLE, ..stack }));
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
            self.task.pending_fpu = Some(Box::new(x));
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

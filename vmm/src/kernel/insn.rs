//! Instructions that would give each variant its own value without a system
//! call: rdtsc and rdtscp. CR4.TSD makes them raise #GP at CPL3; the kernel
//! answers them here as a `time` event of the monitor, so in a cluster the
//! leader reads the counter and every follower gets its value.

use dmvx_sync::policy::Class;
use kvm_bindings::kvm_regs;

use super::syscall::names::{INSN_RDTSC, INSN_RDTSCP};
use super::Kernel;
use crate::monitor::Stop;

/// A trapped instruction the kernel answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insn {
    Rdtsc,
    Rdtscp,
}

impl Insn {
    /// Decodes the instruction at the start of `code` (what could be read
    /// of the program's code at rip).
    pub(crate) fn decode(code: &[u8]) -> Option<(Insn, u64)> {
        match code {
            [0x0f, 0x31, ..] => Some((Insn::Rdtsc, 2)),
            [0x0f, 0x01, 0xf9, ..] => Some((Insn::Rdtscp, 3)),
            _ => None,
        }
    }

    fn event_nr(self) -> u64 {
        match self {
            Insn::Rdtsc => INSN_RDTSC,
            Insn::Rdtscp => INSN_RDTSCP,
        }
    }
}

impl Kernel {
    /// The trapped instruction at `ctx.rip`, if the kernel answers it.
    pub(crate) fn trapped_insn(&mut self, ctx: &kvm_regs) -> Option<(Insn, u64)> {
        let mut code = [0u8; 3];
        // The instruction may end at the last mapped byte: read what exists.
        self.mm.read_user(ctx.rip, &mut code[..2]).ok()?;
        let n = if self.mm.read_user(ctx.rip + 2, &mut code[2..]).is_ok() { 3 } else { 2 };
        Insn::decode(&code[..n])
    }

    /// Carries out `insn` (`len` bytes at rip): the counter is read on the
    /// host, or replayed from the leader.
    pub(crate) fn emulate_insn(&mut self, mut ctx: kvm_regs, insn: Insn, len: u64) -> Result<kvm_regs, Stop> {
        self.stats.trapped_insns += 1;
        let nr = insn.event_nr();
        if let Some(m) = self.monitor.as_mut() {
            m.rec.call(nr, Class::Time);
            m.begin(nr, Class::Time, false)?;
        }
        let mut tsc = [0u8; 8];
        let r = self.host_call(false, &mut tsc, |_, out| {
            // SAFETY: rdtsc has no memory effects; the VMM runs at CPL3 on
            // the host, where the host kernel lets it read the counter.
            let v = unsafe { core::arch::x86_64::_rdtsc() };
            out.copy_from_slice(&v.to_le_bytes());
            Ok(0)
        });
        if self.monitor.is_some() {
            self.monitor_end(r.map_or_else(|e| -(e.0 as i64), |v| v as i64))?;
        }
        let v = u64::from_le_bytes(tsc);
        ctx.rax = v & 0xffff_ffff;
        ctx.rdx = v >> 32;
        if insn == Insn::Rdtscp {
            // IA32_TSC_AUX: the (only) vCPU's number, 0.
            ctx.rcx = 0;
        }
        ctx.rip = ctx.rip.wrapping_add(len);
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rdtsc_and_rdtscp_only() {
        assert_eq!(Insn::decode(&[0x0f, 0x31]), Some((Insn::Rdtsc, 2)));
        assert_eq!(Insn::decode(&[0x0f, 0x31, 0x90]), Some((Insn::Rdtsc, 2)));
        assert_eq!(Insn::decode(&[0x0f, 0x01, 0xf9]), Some((Insn::Rdtscp, 3)));
        assert_eq!(Insn::decode(&[0x0f, 0x01]), None);
        assert_eq!(Insn::decode(&[0x0f, 0x0b, 0x00]), None);
        assert_eq!(Insn::decode(&[]), None);
    }
}

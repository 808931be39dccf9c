//! vCPU register state: long mode, system-call MSRs, extended state.

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_sregs, kvm_xcrs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

use super::gdt::{segment, tss_segment, GDT_LIMIT, KERNEL_CS, KERNEL_DS, USER_CS, USER_DS};
use super::layout::{direct_map, GDT_GPA, IDT_GPA};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
/// rdtsc and rdtscp fault at CPL3: the VMM answers them (one value in
/// every variant).
const CR4_TSD: u64 = 1 << 2;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_PAT: u32 = 0x277;

/// RFLAGS bits.
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const AC: u64 = 1 << 18;
    pub const ID: u64 = 1 << 21;
    /// What user mode may choose for itself (as Linux's FIX_EFLAGS).
    pub const USER_MASK: u64 = CF | PF | AF | ZF | SF | TF | DF | OF | AC | ID;

    /// The flags user code resumes with: its own choices in USER_MASK,
    /// interrupts on, IOPL 0.
    #[inline]
    pub fn sanitize_user(flags: u64) -> u64 {
        (flags & USER_MASK) | FIXED | IF
    }
}

/// XCR0 components dmvx enables when the host supports them: x87, SSE, AVX,
/// and the three AVX-512 states. (MPX, PKRU and AMX stay off.)
const XCR0_WANTED: u64 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40 | 0x80;

/// Errors of vCPU setup.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot read the CPUID features KVM supports: {0}")]
    GetCpuid(kvm_ioctls::Error),
    #[error("cannot set the vCPU's CPUID: {0}")]
    SetCpuid(kvm_ioctls::Error),
    #[error("cannot set the vCPU's special registers: {0}")]
    SetSregs(kvm_ioctls::Error),
    #[error("cannot set the vCPU's registers: {0}")]
    SetRegs(kvm_ioctls::Error),
    #[error("cannot set the vCPU's MSRs: {0}")]
    SetMsrs(kvm_ioctls::Error),
    #[error("cannot set the vCPU's extended control registers: {0}")]
    SetXcrs(kvm_ioctls::Error),
    #[error("KVM accepted {0} of the MSRs")]
    PartialMsrs(usize),
}

/// CPUID.1:ECX.RDRAND and CPUID.(7,0):EBX.RDSEED: instructions that give
/// each variant its own random number without a system call. Hidden, so
/// that programs ask getrandom (replicated) instead.
const CPUID1_ECX_RDRAND: u32 = 1 << 30;
const CPUID7_EBX_RDSEED: u32 = 1 << 18;

/// The vCPU's CPUID: what KVM supports, without RDRAND and RDSEED. Returns
/// the XCR0 mask to enable.
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd) -> Result<u64, RegsError> {
    let mut cpuid: CpuId = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(RegsError::GetCpuid)?;
    let mut xcr0 = 0x3;
    for e in cpuid.as_mut_slice() {
        match (e.function, e.index) {
            (0xd, 0) => xcr0 = (e.eax as u64 | (e.edx as u64) << 32) & XCR0_WANTED,
            (1, _) => e.ecx &= !CPUID1_ECX_RDRAND,
            (7, 0) => e.ebx &= !CPUID7_EBX_RDSEED,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(RegsError::SetCpuid)?;
    Ok(xcr0)
}

/// Long mode with paging rooted at `cr3`, CPL0, descriptor tables in place,
/// `syscall` entering at `lstar`.
pub fn setup_long_mode(vcpu: &VcpuFd, cr3: u64, lstar: u64, xcr0: u64) -> Result<(), RegsError> {
    let mut s: kvm_sregs = vcpu.get_sregs().map_err(RegsError::SetSregs)?;
    s.cr0 = CR0_PE | CR0_MP | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = cr3;
    s.cr4 = CR4_TSD | CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if xcr0 > 0x3 { CR4_OSXSAVE } else { 0 };
    s.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    s.cs = segment(KERNEL_CS, true);
    let ds = segment(KERNEL_DS, false);
    s.ds = ds;
    s.es = ds;
    s.ss = ds;
    s.fs = segment(USER_DS, false);
    s.gs = segment(USER_DS, false);
    s.gdt.base = direct_map(GDT_GPA);
    s.gdt.limit = GDT_LIMIT;
    s.idt.base = direct_map(IDT_GPA);
    s.idt.limit = 256 * 16 - 1;
    s.tr = tss_segment();
    vcpu.set_sregs(&s).map_err(RegsError::SetSregs)?;

    let entries = [
        msr(MSR_STAR, (0x10u64 << 48) | ((KERNEL_CS as u64) << 32)),
        msr(MSR_LSTAR, lstar),
        // As Linux: clear TF, DF, IF, IOPL, NT, AC on entry.
        msr(MSR_SFMASK, rflags::TF | rflags::DF | rflags::IF | rflags::IOPL | rflags::NT | rflags::AC),
        msr(MSR_PAT, 0x0007_0406_0007_0406),
    ];
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::PartialMsrs(0))?;
    let n = vcpu.set_msrs(&msrs).map_err(RegsError::SetMsrs)?;
    if n != entries.len() {
        return Err(RegsError::PartialMsrs(n));
    }
    if xcr0 > 0x3 {
        let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = xcr0;
        vcpu.set_xcrs(&xcrs).map_err(RegsError::SetXcrs)?;
    }
    Ok(())
}

fn msr(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry { index, data, ..Default::default() }
}

/// Initial general registers: CPL0 at `rip` with `rsp`.
pub fn setup_regs(vcpu: &VcpuFd, rip: u64, rsp: u64) -> Result<(), RegsError> {
    let regs = kvm_regs { rip, rsp, rflags: rflags::FIXED, ..Default::default() };
    vcpu.set_regs(&regs).map_err(RegsError::SetRegs)
}

/// Sets the FS and GS bases through the special registers (before the
/// vCPU first ran, when the sync area holds nothing yet).
pub fn set_segment_bases(vcpu: &VcpuFd, fs: u64, gs: u64) -> Result<(), RegsError> {
    let mut s = vcpu.get_sregs().map_err(RegsError::SetSregs)?;
    s.fs.base = fs;
    s.gs.base = gs;
    vcpu.set_sregs(&s).map_err(RegsError::SetSregs)
}

/// Current privilege level, from the code segment selector.
#[inline]
pub fn cpl(sregs: &kvm_sregs) -> u8 {
    (sregs.cs.selector & 3) as u8
}

/// Puts the segment registers into kernel mode (CPL0).
pub fn enter_kernel_segments(sregs: &mut kvm_sregs) {
    sregs.cs = segment(KERNEL_CS, true);
    sregs.ss = segment(KERNEL_DS, false);
}

/// The selectors of the user iret frame.
pub const USER_CS_SEL: u64 = USER_CS as u64;
pub const USER_SS_SEL: u64 = USER_DS as u64;

/// What the guest's CPUID may still show although `setup_cpuid` hides it:
/// on a KVM that does not apply KVM_SET_CPUID2 to guest user code (PVM,
/// `kvm_pvm`, runs it in host user mode, and these hosts lack CPUID
/// faulting), the program sees the host's CPUID. The names of the hidden
/// instructions the host CPU has, then; empty where the filter holds.
pub fn unhidden_instructions() -> Vec<&'static str> {
    if !std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return Vec::new();
    }
    let (l1, l7) = (core::arch::x86_64::__cpuid(1), core::arch::x86_64::__cpuid_count(7, 0));
    let mut v = Vec::new();
    if l1.ecx & CPUID1_ECX_RDRAND != 0 {
        v.push("rdrand");
    }
    if l7.ebx & CPUID7_EBX_RDSEED != 0 {
        v.push("rdseed");
    }
    v
}

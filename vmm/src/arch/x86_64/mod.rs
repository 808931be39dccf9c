//! x86-64: physical and virtual layout, descriptor tables, paging, vCPU
//! register state.

pub mod acpi;
pub mod gdt;
pub mod layout;
pub mod linux_boot;
pub mod paging;
pub mod regs;

/// Exception vectors, as the CPU numbers them.
pub mod vector {
    pub const DIVIDE_ERROR: u8 = 0;
    pub const DEBUG: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BREAKPOINT: u8 = 3;
    pub const OVERFLOW: u8 = 4;
    pub const BOUND_RANGE: u8 = 5;
    pub const INVALID_OPCODE: u8 = 6;
    pub const DEVICE_NOT_AVAILABLE: u8 = 7;
    pub const DOUBLE_FAULT: u8 = 8;
    pub const INVALID_TSS: u8 = 10;
    pub const SEGMENT_NOT_PRESENT: u8 = 11;
    pub const STACK_FAULT: u8 = 12;
    pub const GENERAL_PROTECTION: u8 = 13;
    pub const PAGE_FAULT: u8 = 14;
    pub const X87_FP: u8 = 16;
    pub const ALIGNMENT_CHECK: u8 = 17;
    pub const MACHINE_CHECK: u8 = 18;
    pub const SIMD_FP: u8 = 19;
    pub const CONTROL_PROTECTION: u8 = 21;

    /// A short name, for reports.
    pub fn name(v: u8) -> &'static str {
        match v {
            DIVIDE_ERROR => "divide error",
            DEBUG => "debug trap",
            NMI => "NMI",
            BREAKPOINT => "breakpoint",
            OVERFLOW => "overflow",
            BOUND_RANGE => "bound range exceeded",
            INVALID_OPCODE => "invalid opcode",
            DEVICE_NOT_AVAILABLE => "device not available",
            DOUBLE_FAULT => "double fault",
            INVALID_TSS => "invalid TSS",
            SEGMENT_NOT_PRESENT => "segment not present",
            STACK_FAULT => "stack fault",
            GENERAL_PROTECTION => "general protection fault",
            PAGE_FAULT => "page fault",
            X87_FP => "x87 floating-point error",
            ALIGNMENT_CHECK => "alignment check",
            MACHINE_CHECK => "machine check",
            SIMD_FP => "SIMD floating-point error",
            CONTROL_PROTECTION => "control protection fault",
            _ => "reserved exception",
        }
    }
}

/// Page-fault error code bits (the whole set, as the SDM names them).
#[allow(dead_code)]
pub mod pf {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
}

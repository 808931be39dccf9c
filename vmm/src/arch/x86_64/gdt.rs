//! Descriptor tables: GDT, TSS (with its I/O-permission bitmap) and IDT.

use kvm_bindings::kvm_segment;

use super::layout::{direct_map, GDT_GPA, IDT_GPA, IST_STACK_TOP_GPA, KERNEL_STACK_TOP_GPA, TSS_GPA};
use crate::memory::GuestMemory;

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data segment selector (RPL 3). STAR's sysret base is 0x10, so
/// sysret loads SS = 0x18|3 and CS = 0x20|3, as on Linux.
pub const USER_DS: u16 = 0x18 | 3;
/// User 64-bit code segment selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// Task state segment selector.
pub const TSS_SEL: u16 = 0x28;
/// GDT limit (7 eight-byte slots: the TSS descriptor takes two).
pub const GDT_LIMIT: u16 = 7 * 8 - 1;

/// Offset of the I/O-permission bitmap in the TSS.
const IOPB_OFFSET: u64 = 104;
/// Bytes in the bitmap (ports 0..65536) plus the terminating 0xff byte.
const IOPB_BYTES: u64 = 8192 + 1;
/// TSS limit: covers the bitmap and its terminator.
pub const TSS_LIMIT: u32 = (IOPB_OFFSET + IOPB_BYTES - 1) as u32;

/// A flat 64-bit segment as KVM wants it.
pub fn segment(selector: u16, code: bool) -> kvm_segment {
    let dpl = (selector & 3) as u8;
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: if code { 0 } else { 1 },
        s: 1,
        l: if code { 1 } else { 0 },
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The task register's segment.
pub fn tss_segment() -> kvm_segment {
    kvm_segment {
        base: direct_map(TSS_GPA),
        limit: TSS_LIMIT,
        selector: TSS_SEL,
        type_: 0xb, // busy 64-bit TSS
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Encodes a flat code or data segment as a GDT descriptor.
pub fn code_data_descriptor(seg: &kvm_segment) -> u64 {
    let access = (seg.present as u64) << 7 | (seg.dpl as u64) << 5 | (seg.s as u64) << 4 | seg.type_ as u64;
    let flags = (seg.g as u64) << 3 | (seg.db as u64) << 2 | (seg.l as u64) << 1;
    0xffff | (access << 40) | (0xf << 48) | (flags << 52)
}

/// Writes the GDT, TSS and IDT. `exception_stubs[v]` is the handler address
/// of vector `v`; `user_ports` are the ports CPL3 code may use.
pub fn write_tables(
    mem: &GuestMemory,
    exception_stubs: &[u64; dmvx_abi::EXCEPTION_VECTORS],
    user_ports: &[u8],
) -> Option<()> {
    // GDT
    mem.write_u64(GDT_GPA, 0)?;
    mem.write_u64(GDT_GPA + KERNEL_CS as u64, code_data_descriptor(&segment(KERNEL_CS, true)))?;
    mem.write_u64(GDT_GPA + KERNEL_DS as u64, code_data_descriptor(&segment(KERNEL_DS, false)))?;
    mem.write_u64(GDT_GPA + (USER_DS & !3) as u64, code_data_descriptor(&segment(USER_DS, false)))?;
    mem.write_u64(GDT_GPA + (USER_CS & !3) as u64, code_data_descriptor(&segment(USER_CS, true)))?;
    let base = direct_map(TSS_GPA);
    let limit = TSS_LIMIT as u64;
    let low = (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | 0x89 << 40
        | ((limit >> 16) & 0xf) << 48
        | ((base >> 24) & 0xff) << 56;
    mem.write_u64(GDT_GPA + TSS_SEL as u64, low)?;
    mem.write_u64(GDT_GPA + TSS_SEL as u64 + 8, base >> 32)?;

    // TSS: rsp0, ist1, bitmap offset; the bitmap denies every port but those.
    mem.zero(TSS_GPA, IOPB_OFFSET)?;
    mem.write_u64(TSS_GPA + 4, direct_map(KERNEL_STACK_TOP_GPA))?;
    mem.write_u64(TSS_GPA + 36, direct_map(IST_STACK_TOP_GPA))?;
    mem.write(TSS_GPA + 102, &(IOPB_OFFSET as u16).to_le_bytes())?;
    let mut bitmap = vec![0xffu8; IOPB_BYTES as usize];
    for &p in user_ports {
        bitmap[p as usize / 8] &= !(1 << (p % 8));
    }
    mem.write(TSS_GPA + IOPB_OFFSET, &bitmap)?;

    // IDT: interrupt gates (IF cleared), DPL 0 so that `int n` from user
    // mode cannot reach them; double fault and NMI on their own stack.
    mem.zero(IDT_GPA, 4096)?;
    for (v, &handler) in exception_stubs.iter().enumerate() {
        let ist: u64 = if v == 2 || v == 8 || v == 18 { 1 } else { 0 };
        let low =
            (handler & 0xffff) | (KERNEL_CS as u64) << 16 | ist << 32 | 0x8e << 40 | ((handler >> 16) & 0xffff) << 48;
        mem.write_u64(IDT_GPA + v as u64 * 16, low)?;
        mem.write_u64(IDT_GPA + v as u64 * 16 + 8, handler >> 32)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_usual_encodings() {
        assert_eq!(code_data_descriptor(&segment(KERNEL_CS, true)), 0x00af_9b00_0000_ffff);
        assert_eq!(code_data_descriptor(&segment(KERNEL_DS, false)), 0x00cf_9300_0000_ffff);
        assert_eq!(code_data_descriptor(&segment(USER_CS, true)), 0x00af_fb00_0000_ffff);
        assert_eq!(code_data_descriptor(&segment(USER_DS, false)), 0x00cf_f300_0000_ffff);
    }
}

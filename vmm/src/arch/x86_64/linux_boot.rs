//! x86-64 boot state for an unmodified Linux kernel: the physical layout of
//! the boot structures, the e820 map, the zero page (Linux 64-bit boot
//! protocol), the PVH start_info block, the boot GDT and identity page
//! tables, and the vCPU registers at the kernel's entry.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};

use super::gdt::{code_data_descriptor as descriptor, segment};
use super::regs::{rflags, RegsError};
use crate::memory::GuestMemory;

/// Boot GDT (null, 32-bit code, 64-bit code, data).
pub const BOOT_GDT_GPA: u64 = 0x500;
/// The PVH `hvm_start_info`, its memory map and module list.
pub const PVH_INFO_GPA: u64 = 0x6000;
pub const PVH_MEMMAP_GPA: u64 = 0x6100;
pub const PVH_MODLIST_GPA: u64 = 0x6f00;
/// The zero page (`boot_params`).
pub const ZERO_PAGE_GPA: u64 = 0x7000;
/// The boot stack grows down from here.
pub const BOOT_STACK_GPA: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, then four page directories (4 GiB).
pub const PML4_GPA: u64 = 0x9000;
const PDPT_GPA: u64 = 0xa000;
const PD_GPA: u64 = 0xb000;
const IDENTITY_GIB: u64 = 4;
/// The kernel command line.
pub const CMDLINE_GPA: u64 = 0x2_0000;
/// Largest command line (Linux's COMMAND_LINE_SIZE on x86, with its NUL).
pub const CMDLINE_MAX: usize = 2048;
/// Conventional memory ends at the EBDA; 640 KiB - 1 MiB is reserved.
pub const EBDA_GPA: u64 = 0x9_fc00;
/// Extended memory (and the bzImage's protected-mode code) starts at 1 MiB.
pub const HIGH_MEMORY_GPA: u64 = 0x10_0000;
/// Guest memory must end below the 32-bit MMIO hole (IOAPIC, local APIC).
pub const MAX_LINUX_MEMORY: u64 = 3 << 30;

/// GDT selectors of the boot GDT.
pub const BOOT_CS32: u16 = 0x08;
pub const BOOT_CS64: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "Undefined" boot loader id: dmvx has none assigned.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// An initrd placed in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// The guest's memory map: low RAM up to the EBDA, the legacy hole
/// (EBDA, VGA, BIOS) reserved, then RAM from 1 MiB to the end.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    vec![
        (0, EBDA_GPA, E820_RAM),
        (EBDA_GPA, HIGH_MEMORY_GPA - EBDA_GPA, E820_RESERVED),
        (HIGH_MEMORY_GPA, mem_size - HIGH_MEMORY_GPA, E820_RAM),
    ]
}

/// The zero page for the 64-bit boot protocol, starting from the kernel's
/// own setup header.
pub fn zero_page(
    hdr: &setup_header,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    mem_size: u64,
) -> boot_params {
    let mut p = boot_params { hdr: *hdr, ..Default::default() };
    p.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    p.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    p.hdr.cmd_line_ptr = CMDLINE_GPA as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        p.hdr.ramdisk_image = i.addr as u32;
        p.hdr.ramdisk_size = i.size as u32;
    }
    let map = e820_map(mem_size);
    for (slot, &(addr, size, ty)) in p.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr, size, r#type: ty };
    }
    p.e820_entries = map.len() as u8;
    p
}

/// The PVH start_info block, its memory map, and its module list (the initrd).
pub fn pvh_start_info(
    initrd: Option<InitrdPlacement>,
    mem_size: u64,
) -> (hvm_start_info, Vec<hvm_memmap_table_entry>, Vec<hvm_modlist_entry>) {
    let memmap: Vec<_> = e820_map(mem_size)
        .into_iter()
        .map(|(addr, size, ty)| hvm_memmap_table_entry { addr, size, type_: ty, reserved: 0 })
        .collect();
    let modules: Vec<_> = initrd
        .map(|i| hvm_modlist_entry { paddr: i.addr, size: i.size, cmdline_paddr: 0, reserved: 0 })
        .into_iter()
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { PVH_MODLIST_GPA },
        cmdline_paddr: CMDLINE_GPA,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_GPA,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    (info, memmap, modules)
}

fn code32() -> kvm_segment {
    kvm_segment { l: 0, db: 1, ..segment(BOOT_CS32, true) }
}

/// Writes the boot GDT and the identity-mapped page tables (the first
/// 4 GiB with 2 MiB pages), as the 64-bit boot protocol requires.
pub fn write_boot_tables(mem: &GuestMemory) -> Option<()> {
    let entries =
        [0, descriptor(&code32()), descriptor(&segment(BOOT_CS64, true)), descriptor(&segment(BOOT_DS, false))];
    for (i, d) in entries.iter().enumerate() {
        mem.write_u64(BOOT_GDT_GPA + 8 * i as u64, *d)?;
    }
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    mem.write_u64(PML4_GPA, PDPT_GPA | PRESENT_RW)?;
    for gib in 0..IDENTITY_GIB {
        let pd = PD_GPA + gib * 0x1000;
        mem.write_u64(PDPT_GPA + gib * 8, pd | PRESENT_RW)?;
        for i in 0..512 {
            let addr = (gib << 30) | (i << 21);
            mem.write_u64(pd + i * 8, addr | PRESENT_RW | HUGE)?;
        }
    }
    Some(())
}

fn boot_sregs(vcpu: &VcpuFd, cs: kvm_segment) -> Result<kvm_sregs, RegsError> {
    let mut s = vcpu.get_sregs().map_err(RegsError::SetSregs)?;
    let ds = segment(BOOT_DS, false);
    s.cs = cs;
    s.ds = ds;
    s.es = ds;
    s.fs = ds;
    s.gs = ds;
    s.ss = ds;
    s.gdt.base = BOOT_GDT_GPA;
    s.gdt.limit = 4 * 8 - 1;
    s.idt.base = 0;
    s.idt.limit = 0;
    Ok(s)
}

/// Registers at the 64-bit entry of a bzImage: long mode on the identity
/// map, `rsi` pointing at the zero page, interrupts off.
pub fn setup_linux64(vcpu: &VcpuFd, entry: u64) -> Result<(), RegsError> {
    let mut s = boot_sregs(vcpu, segment(BOOT_CS64, true))?;
    s.cr0 = CR0_PE | CR0_ET | CR0_PG;
    s.cr3 = PML4_GPA;
    s.cr4 = CR4_PAE;
    s.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&s).map_err(RegsError::SetSregs)?;
    let regs = kvm_regs {
        rip: entry,
        rsi: ZERO_PAGE_GPA,
        rsp: BOOT_STACK_GPA,
        rbp: BOOT_STACK_GPA,
        rflags: rflags::FIXED,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(RegsError::SetRegs)
}

/// Registers at a PVH entry: 32-bit protected mode without paging, flat
/// segments, `ebx` pointing at the start_info block.
pub fn setup_pvh(vcpu: &VcpuFd, entry: u64) -> Result<(), RegsError> {
    let mut s = boot_sregs(vcpu, code32())?;
    s.cr0 = CR0_PE | CR0_ET;
    s.cr4 = 0;
    s.efer = 0;
    vcpu.set_sregs(&s).map_err(RegsError::SetSregs)?;
    let regs = kvm_regs { rip: entry, rbx: PVH_INFO_GPA, rflags: rflags::FIXED, ..Default::default() };
    vcpu.set_regs(&regs).map_err(RegsError::SetRegs)
}

/// Local APIC LVT entries as a PC's firmware leaves them: LINT0 delivers
/// the 8259's interrupts (ExtINT), LINT1 NMIs.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic()?;
    let reg =
        |regs: &[std::os::raw::c_char], off: usize| u32::from_le_bytes(std::array::from_fn(|i| regs[off + i] as u8));
    let set = |regs: &mut [std::os::raw::c_char], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().into_iter().enumerate() {
            regs[off + i] = b as std::os::raw::c_char;
        }
    };
    let with_mode = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = reg(&lapic.regs, APIC_LVT0);
    set(&mut lapic.regs, APIC_LVT0, with_mode(lvt0, MODE_EXTINT));
    let lvt1 = reg(&lapic.regs, APIC_LVT1);
    set(&mut lapic.regs, APIC_LVT1, with_mode(lvt1, MODE_NMI));
    vcpu.set_lapic(&lapic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_descriptors_are_the_usual_encodings() {
        assert_eq!(descriptor(&code32()), 0x00cf_9b00_0000_ffff);
        assert_eq!(descriptor(&segment(BOOT_CS64, true)), 0x00af_9b00_0000_ffff);
        assert_eq!(descriptor(&segment(BOOT_DS, false)), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn e820_covers_memory_without_the_legacy_hole() {
        let map = e820_map(256 << 20);
        let ram: u64 = map.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(ram, (256 << 20) - (HIGH_MEMORY_GPA - EBDA_GPA));
        assert_eq!(map.last().unwrap().0 + map.last().unwrap().1, 256 << 20);
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let hdr = setup_header { header: 0x5372_6448, version: 0x020f, ..Default::default() };
        let initrd = InitrdPlacement { addr: 0x800_0000, size: 12345 };
        let p = zero_page(&hdr, 10, Some(initrd), 256 << 20);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_GPA as u32);
        assert_eq!({ p.hdr.ramdisk_image }, 0x800_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 12345);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.hdr.version }, 0x020f);
    }
}

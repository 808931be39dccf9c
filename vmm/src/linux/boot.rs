//! Loading a Linux kernel: telling a bzImage from an ELF vmlinux (and from
//! things that are neither), checking the boot protocol, loading through
//! linux-loader, and placing the command line and the initrd.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{ByteValued, GuestAddress};

use crate::arch::x86_64::linux_boot::{InitrdPlacement, CMDLINE_MAX, HIGH_MEMORY_GPA};
use crate::elf::{ElfError, ElfHeader, ProgramHeader, PT_LOAD, PT_NOTE};
use crate::memory::{GuestMemory, PAGE_SIZE};

/// Offset of the setup header in a bzImage.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// "HdrS", at offset 0x202.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Oldest boot protocol with a 64-bit entry point (xloadflags): 2.12.
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// loadflags: the protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 0x1;
/// xloadflags: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 0x1;
/// The 64-bit entry point's offset from the start of the protected-mode code.
const ENTRY_64_OFFSET: u64 = 0x200;
/// The Xen note type that holds a PVH kernel's 32-bit entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Highest initrd end for kernels that do not say (PVH): below 4 GiB.
const PVH_INITRD_LIMIT: u64 = 1 << 32;

/// Why a kernel, initrd or command line cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel image {path}: cannot read it: {source}")]
    ReadKernel { path: PathBuf, source: std::io::Error },
    #[error("initrd {path}: cannot read it: {source}")]
    ReadInitrd { path: PathBuf, source: std::io::Error },
    #[error("kernel image {path}: not a Linux kernel: neither a bzImage (no \"HdrS\" magic at offset 0x202) nor an ELF vmlinux")]
    NotAKernel { path: PathBuf },
    #[error("kernel image {path}: this is a dmvx guest kernel (it has a .dmvx_header section), which runs in process mode, and process mode needs a PROGRAM: dmvx-vmm --kernel {path} -- PROGRAM [ARGS...]")]
    DmvxKernel { path: PathBuf },
    #[error("kernel image {path}: {source}")]
    Elf { path: PathBuf, source: ElfError },
    #[error("kernel image {path}: an ELF kernel without a PVH entry point (no XEN_ELFNOTE_PHYS32_ENTRY note): dmvx-vmm boots an ELF vmlinux only through PVH; boot its bzImage instead")]
    NoPvhEntry { path: PathBuf },
    #[error("kernel image {path}: truncated bzImage: its setup header says the image is {expected} bytes, the file has {actual}")]
    Truncated { path: PathBuf, expected: u64, actual: u64 },
    #[error("kernel image {path}: Linux boot protocol {major}.{minor:02} is too old: dmvx-vmm needs 2.12 or later (a bzImage with a 64-bit entry point, Linux 3.8 or newer)")]
    OldProtocol { path: PathBuf, major: u8, minor: u8 },
    #[error(
        "kernel image {path}: an old zImage (loadflags say it does not load at 1 MiB); dmvx-vmm boots bzImages only"
    )]
    NotLoadedHigh { path: PathBuf },
    #[error("kernel image {path}: the bzImage has no 64-bit entry point (XLF_KERNEL_64 is clear in xloadflags): a 32-bit kernel?")]
    No64BitEntry { path: PathBuf },
    #[error("kernel image {path}: needs guest memory up to {need_mib} MiB to boot, but --memory is {mem_mib} MiB")]
    KernelTooBig { path: PathBuf, need_mib: u64, mem_mib: u64 },
    #[error("kernel image {path}: linux-loader could not load it: {source}")]
    Load { path: PathBuf, source: linux_loader::loader::Error },
    #[error("initrd {path} ({size} bytes) does not fit: with --memory {mem_mib}M the room between the end of the kernel ({kernel_end:#x}) and the highest address the kernel accepts for an initrd ({limit:#x}) is {room} bytes; {hint}")]
    InitrdTooBig { path: PathBuf, size: u64, mem_mib: u64, kernel_end: u64, limit: u64, room: u64, hint: String },
    #[error("the kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
}

/// The two kinds of Linux kernel dmvx-vmm boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// A bzImage, entered at its 64-bit entry point with a zero page.
    BzImage,
    /// An ELF vmlinux, entered at its PVH entry with an hvm_start_info.
    PvhElf,
}

impl KernelKind {
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::BzImage => "bzImage (64-bit boot protocol)",
            KernelKind::PvhElf => "ELF vmlinux (PVH entry)",
        }
    }
}

/// A kernel in guest memory.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    pub kind: KernelKind,
    /// Where the vCPU starts.
    pub entry: u64,
    /// The bzImage's setup header, the base of the zero page.
    pub setup_header: Option<setup_header>,
    /// The end of everything the kernel needs at boot (for a bzImage: its
    /// decompression area); the initrd goes above it.
    pub kernel_end: u64,
    /// The highest address + 1 the kernel accepts for the end of an initrd.
    pub initrd_limit: u64,
    /// The longest command line the kernel accepts, without its NUL.
    pub cmdline_max: usize,
}

/// Reads the setup header of a bzImage, if `bytes` has the "HdrS" magic.
fn bzimage_header(bytes: &[u8]) -> Option<setup_header> {
    let raw = bytes.get(SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + setup_header::default().as_slice().len())?;
    let mut h = setup_header::default();
    h.as_mut_slice().copy_from_slice(raw);
    (h.header == HDRS_MAGIC).then_some(h)
}

/// The ELF header and program headers of an ELF kernel.
fn elf_headers(path: &Path, bytes: &[u8]) -> Result<(ElfHeader, Vec<ProgramHeader>), BootError> {
    let elf_err = |source| BootError::Elf { path: path.into(), source };
    let eh = ElfHeader::parse(bytes).map_err(elf_err)?;
    let phdrs = eh.program_headers_in(bytes).map_err(elf_err)?;
    Ok((eh, phdrs))
}

/// Whether a PT_NOTE segment holds a Xen XEN_ELFNOTE_PHYS32_ENTRY note.
fn has_pvh_note(bytes: &[u8], phdrs: &[ProgramHeader]) -> bool {
    let u32_at = |b: &[u8], o: usize| b.get(o..o + 4).map(|x| u32::from_le_bytes(x.try_into().expect("4 bytes")));
    phdrs.iter().filter(|p| p.p_type == PT_NOTE).any(|p| {
        let Some(mut notes) =
            (p.offset as usize).checked_add(p.filesz as usize).and_then(|end| bytes.get(p.offset as usize..end))
        else {
            return false;
        };
        while let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(notes, 0), u32_at(notes, 4), u32_at(notes, 8)) {
            let name_end = 12 + (namesz as usize).next_multiple_of(4);
            let next = name_end.saturating_add((descsz as usize).next_multiple_of(4));
            if ty == XEN_ELFNOTE_PHYS32_ENTRY && notes.get(12..12 + namesz as usize) == Some(b"Xen\0") && descsz >= 4 {
                return true;
            }
            match notes.get(next..) {
                Some(rest) => notes = rest,
                None => break,
            }
        }
        false
    })
}

/// Whether `bytes` starts like a bzImage (the "HdrS" magic).
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bzimage_header(bytes).is_some()
}

/// Tells what `bytes` is, with the checks that need no guest memory.
pub fn detect(path: &Path, bytes: &[u8]) -> Result<KernelKind, BootError> {
    if bytes.starts_with(b"\x7fELF") {
        let elf_err = |source| BootError::Elf { path: path.into(), source };
        let (eh, phdrs) = elf_headers(path, bytes)?;
        if eh.find_section(bytes, dmvx_abi::HEADER_SECTION).map_err(elf_err)?.is_some() {
            return Err(BootError::DmvxKernel { path: path.into() });
        }
        if !has_pvh_note(bytes, &phdrs) {
            return Err(BootError::NoPvhEntry { path: path.into() });
        }
        return Ok(KernelKind::PvhElf);
    }
    let Some(h) = bzimage_header(bytes) else {
        return Err(BootError::NotAKernel { path: path.into() });
    };
    let path = path.to_path_buf();
    if h.version < MIN_BOOT_PROTOCOL {
        return Err(BootError::OldProtocol { path, major: (h.version >> 8) as u8, minor: h.version as u8 });
    }
    if h.loadflags & LOADED_HIGH == 0 {
        return Err(BootError::NotLoadedHigh { path });
    }
    if h.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::No64BitEntry { path });
    }
    let setup_sects = if h.setup_sects == 0 { 4 } else { h.setup_sects };
    let expected = (setup_sects as u64 + 1) * 512 + h.syssize as u64 * 16;
    if (bytes.len() as u64) < expected {
        return Err(BootError::Truncated { path, expected, actual: bytes.len() as u64 });
    }
    Ok(KernelKind::BzImage)
}

/// Checks `bytes` and loads it into `mem`.
pub fn load_kernel(mem: &GuestMemory, path: &Path, bytes: &[u8]) -> Result<LoadedKernel, BootError> {
    let kind = detect(path, bytes)?;
    log::debug!("{}: a {}, {} bytes", path.display(), kind.name(), bytes.len());
    let too_big = |need: u64| BootError::KernelTooBig {
        path: path.into(),
        need_mib: need.div_ceil(1 << 20),
        mem_mib: mem.size() >> 20,
    };
    let load_err = |source| BootError::Load { path: path.into(), source };
    let himem = Some(GuestAddress(HIGH_MEMORY_GPA));
    match kind {
        KernelKind::BzImage => {
            let h = bzimage_header(bytes).expect("detect checked the header");
            // A relocatable kernel decompresses to its preferred address
            // when loaded below it, and needs init_size bytes from there.
            let run_base = HIGH_MEMORY_GPA.max(h.pref_address);
            // pref_address is the file's: near 2^64 the sum would wrap to a
            // small end and pass the size check below.
            let kernel_end = run_base.checked_add(u64::from(h.init_size)).ok_or_else(|| too_big(u64::MAX))?;
            let image_end = HIGH_MEMORY_GPA + bytes.len() as u64;
            if kernel_end.max(image_end) > mem.size() {
                return Err(too_big(kernel_end.max(image_end)));
            }
            let r = BzImage::load(mem.mmap(), himem, &mut Cursor::new(bytes), himem).map_err(load_err)?;
            Ok(LoadedKernel {
                kind,
                entry: r.kernel_load.0 + ENTRY_64_OFFSET,
                setup_header: r.setup_header,
                kernel_end,
                initrd_limit: h.initrd_addr_max as u64 + 1,
                cmdline_max: if h.cmdline_size > 0 { h.cmdline_size as usize } else { 255 },
            })
        }
        KernelKind::PvhElf => {
            let (_, phdrs) = elf_headers(path, bytes)?;
            let kernel_end = phdrs
                .iter()
                .filter(|p| p.p_type == PT_LOAD)
                .map(|p| p.paddr.saturating_add(p.memsz))
                .max()
                .unwrap_or(0);
            if kernel_end > mem.size() {
                return Err(too_big(kernel_end));
            }
            let r = Elf::load(mem.mmap(), None, &mut Cursor::new(bytes), himem).map_err(load_err)?;
            let PvhBootCapability::PvhEntryPresent(entry) = r.pvh_boot_cap else {
                return Err(BootError::NoPvhEntry { path: path.into() });
            };
            Ok(LoadedKernel {
                kind,
                entry: entry.0,
                setup_header: None,
                kernel_end,
                initrd_limit: PVH_INITRD_LIMIT,
                cmdline_max: CMDLINE_MAX - 1,
            })
        }
    }
}

/// Places an initrd of `size` bytes as high as the kernel allows, above
/// the kernel, page aligned.
pub fn place_initrd(
    kernel: &LoadedKernel,
    mem_size: u64,
    path: &Path,
    size: u64,
) -> Result<InitrdPlacement, BootError> {
    let limit = kernel.initrd_limit.min(mem_size);
    let floor = kernel.kernel_end.next_multiple_of(PAGE_SIZE);
    let addr = limit.checked_sub(size).map(|a| a & !(PAGE_SIZE - 1)).filter(|&a| a >= floor);
    match addr {
        Some(addr) => Ok(InitrdPlacement { addr, size }),
        None => {
            let need = (floor + size.next_multiple_of(PAGE_SIZE)).next_multiple_of(2 << 20);
            let hint = if need <= kernel.initrd_limit && need <= crate::arch::x86_64::linux_boot::MAX_LINUX_MEMORY {
                format!("use --memory {}M or more", need >> 20)
            } else {
                "it is too large for this kernel; use a smaller initrd".into()
            };
            Err(BootError::InitrdTooBig {
                path: path.into(),
                size,
                mem_mib: mem_size >> 20,
                kernel_end: floor,
                limit,
                room: limit.saturating_sub(floor),
                hint,
            })
        }
    }
}

/// Checks a command line against the kernel's limit.
pub fn check_cmdline(kernel: &LoadedKernel, cmdline: &str) -> Result<(), BootError> {
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    if cmdline.len() > kernel.cmdline_max {
        return Err(BootError::CmdlineTooLong { len: cmdline.len(), max: kernel.cmdline_max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic bzImage: a setup header and `payload` bytes of code.
    fn fake_bzimage(version: u16, payload: usize) -> Vec<u8> {
        let mut h = setup_header {
            setup_sects: 1,
            header: HDRS_MAGIC,
            version,
            loadflags: LOADED_HIGH,
            xloadflags: XLF_KERNEL_64,
            syssize: (payload / 16) as u32,
            init_size: 0x10_0000,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            cmdline_size: 2047,
            ..Default::default()
        };
        h.boot_flag = 0xaa55;
        let mut b = vec![0u8; 1024 + payload];
        b[SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + h.as_slice().len()].copy_from_slice(h.as_slice());
        b
    }

    #[test]
    fn detects_and_checks_bzimages() {
        let p = Path::new("k");
        assert_eq!(detect(p, &fake_bzimage(0x020f, 4096)).unwrap(), KernelKind::BzImage);
        let e = detect(p, &fake_bzimage(0x020b, 4096)).unwrap_err();
        assert!(e.to_string().contains("boot protocol 2.11 is too old"), "{e}");
        let mut cut = fake_bzimage(0x020f, 4096);
        cut.truncate(3000);
        let e = detect(p, &cut).unwrap_err();
        assert!(e.to_string().contains("truncated bzImage"), "{e}");
        let e = detect(p, b"root:x:0:0:root:/root:/bin/bash\n").unwrap_err();
        assert!(e.to_string().contains("not a Linux kernel"), "{e}");
        let e = detect(p, crate::guest_kernel::EMBEDDED).unwrap_err();
        assert!(e.to_string().contains("process mode needs a PROGRAM"), "{e}");
    }

    #[test]
    fn a_preferred_address_near_the_top_is_refused_not_wrapped() {
        let mem = GuestMemory::new(64 << 20, 2 << 20).unwrap();
        let mut img = fake_bzimage(0x020f, 8192);
        // pref_address, at offset 0x258 of the file.
        img[0x258..0x260].copy_from_slice(&(u64::MAX - 0xfff).to_le_bytes());
        let e = load_kernel(&mem, Path::new("k"), &img).unwrap_err();
        assert!(matches!(e, BootError::KernelTooBig { .. }), "{e}");
    }

    #[test]
    fn loads_a_bzimage_and_places_the_initrd_on_top() {
        let mem = GuestMemory::new(64 << 20, 2 << 20).unwrap();
        let img = fake_bzimage(0x020f, 8192);
        let k = load_kernel(&mem, Path::new("k"), &img).unwrap();
        assert_eq!(k.entry, HIGH_MEMORY_GPA + 0x200);
        let i = place_initrd(&k, mem.size(), Path::new("i"), 5000).unwrap();
        assert_eq!(i.addr, (64 << 20) - 8192);
        let e = place_initrd(&k, mem.size(), Path::new("i"), 63 << 20).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        assert!(e.to_string().contains("use --memory 66M or more"), "{e}");
        assert!(check_cmdline(&k, &"x".repeat(2047)).is_ok());
        assert!(check_cmdline(&k, &"x".repeat(2048)).is_err());
    }
}

//! The guest kernel image: the embedded default or an ELF file given with
//! `--kernel`, checked against the dmvx guest ABI before it is used.

use std::path::{Path, PathBuf};

use dmvx_abi::{KernelHeader, ABI_VERSION, HEADER_MAGIC, HEADER_SECTION, HEADER_SIZE};

use crate::arch::x86_64::layout::{KERNEL_AREA_END, KERNEL_AREA_START, KERNEL_VIRT_MIN};
use crate::arch::x86_64::paging::{pte, PageTables};
use crate::elf::{ElfError, ElfHeader, PF_W, PF_X, PT_LOAD};
use crate::memory::{FrameAllocator, GuestMemory, PAGE_SIZE};

/// The guest kernel built from guest/kernel, embedded at build time.
pub static EMBEDDED: &[u8] = include_bytes!(env!("DMVX_GUEST_KERNEL"));

/// Why a kernel image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel image {path}: cannot read it: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("kernel image {path}: {source}")]
    Elf { path: PathBuf, source: ElfError },
    #[error("kernel image {path}: no {HEADER_SECTION} section, so not a dmvx guest kernel (a Linux kernel runs in Linux mode: --kernel without a PROGRAM)")]
    NoHeader { path: PathBuf },
    #[error("kernel image {path}: a Linux bzImage, not a dmvx guest kernel: Linux mode boots it, without a PROGRAM (dmvx-vmm --kernel {path})")]
    LinuxKernel { path: PathBuf },
    #[error("kernel image {path}: not a dmvx guest kernel: {reason}")]
    BadHeader { path: PathBuf, reason: String },
}

/// One loadable segment of the kernel.
#[derive(Debug, Clone)]
struct Segment {
    vaddr: u64,
    paddr: u64,
    memsz: u64,
    flags: u32,
    data: Vec<u8>,
}

/// A checked guest kernel image.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub header: KernelHeader<u64>,
    segments: Vec<Segment>,
}

impl GuestKernel {
    /// The embedded kernel.
    pub fn embedded() -> Result<Self, KernelError> {
        Self::parse(Path::new("<embedded>"), EMBEDDED)
    }

    /// A kernel read from `path`.
    pub fn from_file(path: &Path) -> Result<Self, KernelError> {
        let bytes = std::fs::read(path).map_err(|source| KernelError::Read { path: path.into(), source })?;
        log::debug!("guest kernel {}: {} bytes", path.display(), bytes.len());
        Self::parse(path, &bytes)
    }

    /// Parses and checks an image.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, KernelError> {
        let elf_err = |source| KernelError::Elf { path: path.into(), source };
        let bad = |reason: String| KernelError::BadHeader { path: path.into(), reason };
        if crate::linux::boot::is_bzimage(bytes) {
            return Err(KernelError::LinuxKernel { path: path.into() });
        }
        let eh = ElfHeader::parse(bytes).map_err(elf_err)?;
        let phdrs = eh.program_headers_in(bytes).map_err(elf_err)?;
        let section = eh
            .find_section(bytes, HEADER_SECTION)
            .map_err(elf_err)?
            .ok_or(KernelError::NoHeader { path: path.into() })?;

        let mut segments = Vec::new();
        for ph in phdrs.iter().filter(|p| p.p_type == PT_LOAD && p.memsz > 0) {
            if ph.paddr < KERNEL_AREA_START || ph.paddr + ph.memsz > KERNEL_AREA_END {
                return Err(bad(format!(
                    "segment at physical {:#x}..{:#x} is outside {KERNEL_AREA_START:#x}..{KERNEL_AREA_END:#x}",
                    ph.paddr,
                    ph.paddr + ph.memsz
                )));
            }
            if ph.vaddr < KERNEL_VIRT_MIN || (ph.vaddr ^ ph.paddr) & (PAGE_SIZE - 1) != 0 {
                return Err(bad(format!(
                    "segment at virtual {:#x} is not linked in the top 2 GiB, page-congruent with its physical address",
                    ph.vaddr
                )));
            }
            let data = bytes[ph.offset as usize..(ph.offset + ph.filesz) as usize].to_vec();
            segments.push(Segment { vaddr: ph.vaddr, paddr: ph.paddr, memsz: ph.memsz, flags: ph.flags, data });
        }
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if a.paddr < b.paddr + b.memsz && b.paddr < a.paddr + a.memsz {
                    return Err(bad("segments overlap".into()));
                }
            }
        }

        let hbytes = bytes
            .get(section.offset as usize..)
            .and_then(|b| b.get(..HEADER_SIZE))
            .filter(|_| section.size as usize >= HEADER_SIZE)
            .ok_or(bad(format!("the {HEADER_SECTION} section is smaller than the {HEADER_SIZE}-byte header")))?;
        let header = KernelHeader::parse(hbytes).ok_or(bad("short header".into()))?;
        if header.magic != HEADER_MAGIC {
            return Err(bad("wrong magic number in the header".into()));
        }
        if header.abi_version != ABI_VERSION {
            return Err(bad(format!(
                "guest ABI version {}, this dmvx-vmm speaks version {ABI_VERSION}",
                header.abi_version
            )));
        }
        if header.header_size as usize != HEADER_SIZE {
            return Err(bad(format!("header size {}, expected {HEADER_SIZE}", header.header_size)));
        }
        let k = GuestKernel { header, segments };
        let exec = |va: u64| k.segments.iter().any(|s| s.flags & PF_X != 0 && va >= s.vaddr && va < s.vaddr + s.memsz);
        let mut entries = vec![
            ("boot entry", header.boot_entry),
            ("user return", header.user_return),
            ("kernel operations", header.kops_entry),
            ("syscall entry", header.syscall_entry),
        ];
        entries.extend(header.exception_stubs.iter().map(|&a| ("exception stub", a)));
        for (what, va) in entries {
            if !exec(va) {
                return Err(bad(format!("{what} {va:#x} is not in an executable segment")));
            }
        }
        let (us, ue) = (header.user_text_start, header.user_text_end);
        if us % PAGE_SIZE != 0 || ue % PAGE_SIZE != 0 || us >= ue || !exec(us) || !exec(ue - 1) {
            return Err(bad(format!("user text {us:#x}..{ue:#x} is not a page-aligned executable range")));
        }
        if !(us..ue).contains(&header.syscall_entry) {
            return Err(bad("the syscall entry is outside the user text pages".into()));
        }
        for (what, va) in
            [("ring entry", header.ring_entry), ("ring wait", header.ring_wait), ("ring exit", header.ring_exit)]
        {
            if !exec(va) || !(us..ue).contains(&va) {
                return Err(bad(format!("the {what} {va:#x} is outside the user text pages")));
            }
        }
        let rp = header.ring_page;
        let writable = k.segments.iter().any(|s| {
            s.flags & PF_W != 0 && s.flags & PF_X == 0 && rp >= s.vaddr && rp + PAGE_SIZE <= s.vaddr + s.memsz
        });
        if rp % PAGE_SIZE != 0 || !writable {
            return Err(bad(format!("the ring page {rp:#x} is not a page of a writable, non-executable segment")));
        }
        for (what, va) in [
            ("boot entry", header.boot_entry),
            ("user return", header.user_return),
            ("kernel operations", header.kops_entry),
        ] {
            if (us..ue).contains(&va) {
                return Err(bad(format!("the {what} lies in user-accessible text")));
            }
        }
        Ok(k)
    }

    /// The guest physical address of the ring page (`dmvx_abi::Ring`).
    pub fn ring_page_gpa(&self) -> Option<u64> {
        let rp = self.header.ring_page;
        self.segments.iter().find(|s| rp >= s.vaddr && rp < s.vaddr + s.memsz).map(|s| s.paddr + (rp - s.vaddr))
    }

    /// Copies the kernel into guest memory and maps it into `pt`: the user
    /// text pages user-executable, the ring page user-writable if `ring`
    /// (the exit-less path is on; otherwise no program can reach it),
    /// everything else supervisor-only.
    pub fn install(&self, mem: &GuestMemory, frames: &mut FrameAllocator, pt: &PageTables, ring: bool) -> Option<()> {
        let (us, ue) = (self.header.user_text_start, self.header.user_text_end);
        let ring = if ring { self.header.ring_page..self.header.ring_page + PAGE_SIZE } else { 0..0 };
        for s in &self.segments {
            mem.zero(s.paddr, s.memsz)?;
            mem.write(s.paddr, &s.data)?;
            let first = s.vaddr & !(PAGE_SIZE - 1);
            let mut va = first;
            while va < s.vaddr + s.memsz {
                let gpa = s.paddr - (s.vaddr - va);
                let mut flags = pte::PRESENT | pte::ACCESSED | pte::DIRTY;
                if s.flags & PF_W != 0 {
                    flags |= pte::WRITABLE;
                }
                if s.flags & PF_X == 0 {
                    flags |= pte::NO_EXECUTE;
                }
                if (us..ue).contains(&va) || ring.contains(&va) {
                    flags |= pte::USER;
                }
                pt.map_new(mem, frames, va, gpa, flags)?;
                va += PAGE_SIZE;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_kernel_is_valid() {
        let k = GuestKernel::embedded().unwrap();
        assert!(k.header.syscall_entry >= k.header.user_text_start);
        assert!(k.header.ring_entry >= k.header.user_text_start && k.header.ring_wait < k.header.user_text_end);
    }

    /// The guest physical address of the ring page.
    #[test]
    fn ring_page_is_in_guest_memory() {
        let k = GuestKernel::embedded().unwrap();
        assert!(k.ring_page_gpa().is_some());
    }

    #[test]
    fn corrupt_images_are_refused_with_reasons() {
        let path = Path::new("k");
        let good = EMBEDDED.to_vec();
        let e = GuestKernel::parse(path, &good[..40]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(GuestKernel::parse(path, &bad).unwrap_err().to_string().contains("not an ELF file"));
        // Flip the header magic inside the image.
        let pos = good.windows(8).position(|w| w == HEADER_MAGIC).unwrap();
        let mut bad = good.clone();
        bad[pos] ^= 0xff;
        assert!(GuestKernel::parse(path, &bad).unwrap_err().to_string().contains("wrong magic"));
        let mut bad = good.clone();
        bad[pos + 8] = 99;
        assert!(GuestKernel::parse(path, &bad).unwrap_err().to_string().contains("ABI version 99"));
    }
}

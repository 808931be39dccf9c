//! A bounds-checked reader of 64-bit little-endian ELF headers.
//!
//! Used for the guest kernel image and for the programs the VMM loads. Every
//! offset and size comes from the file, so every one is checked before use.

/// `PT_LOAD`.
pub const PT_LOAD: u32 = 1;
/// `PT_INTERP`.
pub const PT_INTERP: u32 = 3;
/// `PT_NOTE`.
pub const PT_NOTE: u32 = 4;
/// `PT_PHDR`.
pub const PT_PHDR: u32 = 6;
/// `PT_GNU_STACK`.
pub const PT_GNU_STACK: u32 = 0x6474_e551;
/// Segment flags.
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

const EM_X86_64: u16 = 62;
const HEADER_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
/// More program headers than this is not a real program.
const MAX_PHNUM: u16 = 512;

/// Why a file is not a usable x86-64 ELF image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file (bad magic number)")]
    NotElf,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("a 32-bit ELF file; dmvx runs 64-bit x86-64 programs only")]
    Not64Bit,
    #[error("a big-endian ELF file; dmvx runs x86-64 programs only")]
    BigEndian,
    #[error("built for {0}, not x86-64")]
    WrongArch(&'static str),
    #[error("an ELF file of type {0} (not an executable or shared object)")]
    WrongType(&'static str),
    #[error("malformed: {0}")]
    Malformed(String),
}

/// ELF file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfType {
    /// Fixed addresses (ET_EXEC).
    Exec,
    /// Position independent (ET_DYN): PIE programs and shared objects.
    Dyn,
}

/// The parts of the ELF header dmvx uses.
#[derive(Debug, Clone)]
pub struct ElfHeader {
    pub ty: ElfType,
    pub entry: u64,
    pub phoff: u64,
    pub phnum: u16,
    pub shoff: u64,
    pub shnum: u16,
    pub shstrndx: u16,
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// One section header (only what the kernel loader needs).
#[derive(Debug, Clone, Copy)]
pub struct SectionHeader {
    pub name: u32,
    pub offset: u64,
    pub size: u64,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "s390",
        40 => "ARM",
        50 => "IA-64",
        183 => "AArch64",
        243 => "RISC-V",
        258 => "LoongArch",
        _ => "another architecture",
    }
}

impl ElfHeader {
    /// Parses and checks the ELF header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, ElfError> {
        if b.len() < 4 || b[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        if b.len() < HEADER_SIZE {
            return Err(ElfError::Truncated("the ELF header is incomplete"));
        }
        if b[4] != 2 {
            return Err(ElfError::Not64Bit);
        }
        if b[5] != 1 {
            return Err(ElfError::BigEndian);
        }
        let machine = u16_at(b, 18);
        if machine != EM_X86_64 {
            return Err(ElfError::WrongArch(machine_name(machine)));
        }
        let ty = match u16_at(b, 16) {
            2 => ElfType::Exec,
            3 => ElfType::Dyn,
            1 => return Err(ElfError::WrongType("relocatable (an object file)")),
            4 => return Err(ElfError::WrongType("core (a core dump)")),
            _ => return Err(ElfError::WrongType("unknown")),
        };
        let phentsize = u16_at(b, 54);
        let phnum = u16_at(b, 56);
        if phnum > 0 && phentsize as usize != PHDR_SIZE {
            return Err(ElfError::Malformed(format!("program header size {phentsize}, expected {PHDR_SIZE}")));
        }
        if phnum > MAX_PHNUM {
            return Err(ElfError::Malformed(format!("{phnum} program headers")));
        }
        let shentsize = u16_at(b, 58);
        let shnum = u16_at(b, 60);
        if shnum > 0 && shentsize as usize != SHDR_SIZE {
            return Err(ElfError::Malformed(format!("section header size {shentsize}, expected {SHDR_SIZE}")));
        }
        Ok(ElfHeader {
            ty,
            entry: u64_at(b, 24),
            phoff: u64_at(b, 32),
            phnum,
            shoff: u64_at(b, 40),
            shnum,
            shstrndx: u16_at(b, 62),
        })
    }

    /// Byte range of the program header table in the file.
    pub fn phdr_range(&self) -> Result<(u64, u64), ElfError> {
        let len = self.phnum as u64 * PHDR_SIZE as u64;
        let end =
            self.phoff.checked_add(len).ok_or(ElfError::Malformed("program header table offset overflows".into()))?;
        Ok((self.phoff, end))
    }

    /// The program headers of `file`, the whole image in memory.
    pub fn program_headers_in(&self, file: &[u8]) -> Result<Vec<ProgramHeader>, ElfError> {
        let (start, end) = self.phdr_range()?;
        let table = file
            .get(start as usize..end as usize)
            .ok_or(ElfError::Truncated("the program header table extends past the end of the file"))?;
        self.program_headers(table, file.len() as u64)
    }

    /// Parses the program header table from `table` (the bytes of
    /// `phdr_range`) and checks each header against a file of `file_len` bytes.
    pub fn program_headers(&self, table: &[u8], file_len: u64) -> Result<Vec<ProgramHeader>, ElfError> {
        let (start, end) = self.phdr_range()?;
        if end > file_len || table.len() < (end - start) as usize {
            return Err(ElfError::Truncated("the program header table extends past the end of the file"));
        }
        let mut out = Vec::with_capacity(self.phnum as usize);
        for i in 0..self.phnum as usize {
            let b = &table[i * PHDR_SIZE..(i + 1) * PHDR_SIZE];
            let ph = ProgramHeader {
                p_type: u32_at(b, 0),
                flags: u32_at(b, 4),
                offset: u64_at(b, 8),
                vaddr: u64_at(b, 16),
                paddr: u64_at(b, 24),
                filesz: u64_at(b, 32),
                memsz: u64_at(b, 40),
                align: u64_at(b, 48),
            };
            if ph.p_type == PT_LOAD || ph.p_type == PT_INTERP {
                let fend = ph
                    .offset
                    .checked_add(ph.filesz)
                    .ok_or(ElfError::Malformed(format!("segment {i}: file range overflows")))?;
                if fend > file_len {
                    return Err(ElfError::Truncated("a segment extends past the end of the file"));
                }
            }
            if ph.p_type == PT_LOAD {
                if ph.filesz > ph.memsz {
                    return Err(ElfError::Malformed(format!(
                        "segment {i}: file size {:#x} exceeds memory size {:#x}",
                        ph.filesz, ph.memsz
                    )));
                }
                if ph.vaddr.checked_add(ph.memsz).is_none() || ph.paddr.checked_add(ph.memsz).is_none() {
                    return Err(ElfError::Malformed(format!("segment {i}: address range overflows")));
                }
                if ph.align > 1 && !ph.align.is_power_of_two() {
                    return Err(ElfError::Malformed(format!(
                        "segment {i}: alignment {:#x} is not a power of two",
                        ph.align
                    )));
                }
                if (ph.vaddr ^ ph.offset) & 0xfff != 0 {
                    return Err(ElfError::Malformed(format!(
                        "segment {i}: address {:#x} and file offset {:#x} differ within a page",
                        ph.vaddr, ph.offset
                    )));
                }
            }
            out.push(ph);
        }
        let loads: Vec<_> = out.iter().filter(|p| p.p_type == PT_LOAD).collect();
        if loads.is_empty() {
            return Err(ElfError::Malformed("no loadable segment".into()));
        }
        Ok(out)
    }

    /// Parses the section headers and finds the section called `name`, with
    /// everything in `file` (the whole image).
    pub fn find_section(&self, file: &[u8], name: &str) -> Result<Option<SectionHeader>, ElfError> {
        if self.shnum == 0 {
            return Ok(None);
        }
        let len = self.shnum as u64 * SHDR_SIZE as u64;
        let end =
            self.shoff.checked_add(len).ok_or(ElfError::Malformed("section header table offset overflows".into()))?;
        if end > file.len() as u64 {
            return Err(ElfError::Truncated("the section header table extends past the end of the file"));
        }
        let sh = |i: usize| {
            let b = &file[self.shoff as usize + i * SHDR_SIZE..][..SHDR_SIZE];
            SectionHeader { name: u32_at(b, 0), offset: u64_at(b, 24), size: u64_at(b, 32) }
        };
        if self.shstrndx >= self.shnum {
            return Err(ElfError::Malformed("section name table index out of range".into()));
        }
        let strtab = sh(self.shstrndx as usize);
        let sbeg = strtab.offset as usize;
        let send = strtab
            .offset
            .checked_add(strtab.size)
            .filter(|&e| e <= file.len() as u64)
            .ok_or(ElfError::Truncated("the section name table extends past the end of the file"))?
            as usize;
        let names = &file[sbeg..send];
        for i in 0..self.shnum as usize {
            let s = sh(i);
            let Some(rest) = names.get(s.name as usize..) else {
                continue;
            };
            let n = rest.iter().position(|&c| c == 0).map(|p| &rest[..p]).unwrap_or(rest);
            if n == name.as_bytes() {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(machine: u16, ty: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&ty.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        // one PT_LOAD of 16 bytes at offset 0
        b[64..68].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[64 + 32..64 + 40].copy_from_slice(&16u64.to_le_bytes());
        b[64 + 40..64 + 48].copy_from_slice(&16u64.to_le_bytes());
        b
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        assert_eq!(ElfHeader::parse(b"#!/bin/sh\n").unwrap_err(), ElfError::NotElf);
        assert!(matches!(ElfHeader::parse(b"\x7fELF\x02\x01").unwrap_err(), ElfError::Truncated(_)));
        let mut b = header(62, 2);
        b[4] = 1;
        assert_eq!(ElfHeader::parse(&b).unwrap_err(), ElfError::Not64Bit);
        assert_eq!(ElfHeader::parse(&header(183, 2)).unwrap_err(), ElfError::WrongArch("AArch64"));
        assert!(matches!(ElfHeader::parse(&header(62, 1)).unwrap_err(), ElfError::WrongType(_)));
    }

    #[test]
    fn checks_segments_against_the_file() {
        let b = header(62, 2);
        let h = ElfHeader::parse(&b).unwrap();
        let ph = h.program_headers(&b[64..], b.len() as u64).unwrap();
        assert_eq!(ph.len(), 1);
        // The segment says 16 bytes; a 10-byte file is truncated.
        assert!(matches!(h.program_headers(&b[64..], 10), Err(ElfError::Truncated(_))));
        let mut bad = b.clone();
        bad[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(h.program_headers(&bad[64..], bad.len() as u64).is_err());
    }
}

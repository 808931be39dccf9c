//! Loading a program: ELF executables (static, static-pie, and dynamic with
//! their interpreter) and `#!` scripts, into a fresh address space with the
//! Linux initial stack (argc, argv, envp, auxv).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use kvm_bindings::kvm_regs;

use super::creds::Creds;
use super::errno::{Errno, SysResult};
use super::layout::{Layout, Placed, STACK_SIZE};
use super::mm::{page_down, page_up, Area, Backing, Mm, Vma, VmaKind, PROT_EXEC, PROT_READ, PROT_WRITE};
use super::sandbox::Sandbox;
use crate::arch::x86_64::layout::{USER_END, USER_MIN};
use crate::arch::x86_64::regs::rflags;
use crate::elf::{
    ElfError, ElfHeader, ElfType, ProgramHeader, PF_R, PF_W, PF_X, PT_GNU_STACK, PT_INTERP, PT_LOAD, PT_PHDR,
};

/// Most `#!` interpreters chained.
const MAX_SCRIPT_DEPTH: usize = 4;
/// Total size of arguments and environment (Linux: a quarter of the stack).
const ARG_MAX: usize = (STACK_SIZE / 4) as usize;
/// Longest single argument or environment string (Linux's MAX_ARG_STRLEN).
const MAX_ARG_STRLEN: usize = 32 * 4096;
/// Segments up to this size are populated at load time; larger ones fault in.
const EAGER_SEGMENT_BYTES: u64 = 16 << 20;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;

/// Why a program cannot be loaded, with enough detail for a user.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {reason}")]
    Open { path: String, reason: String, errno: Errno },
    #[error("{path}: {source}")]
    Elf { path: String, source: ElfError },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String, errno: Errno },
    #[error("{path}: guest memory is too small to load it (raise --memory)")]
    OutOfMemory { path: String },
}

impl ExecError {
    /// The error number execve returns for this failure.
    pub fn errno(&self) -> Errno {
        match self {
            ExecError::Open { errno, .. } | ExecError::Invalid { errno, .. } => *errno,
            ExecError::Elf { .. } => Errno::ENOEXEC,
            ExecError::OutOfMemory { .. } => Errno::ENOMEM,
        }
    }
}

fn describe(e: Errno) -> String {
    match e {
        Errno::ENOENT => "not found in the root directory".into(),
        Errno::EACCES => "permission denied (not executable, or outside what the sandbox allows)".into(),
        Errno::EISDIR => "is a directory".into(),
        Errno::ELOOP => "too many levels of symbolic links or #! interpreters".into(),
        e => std::io::Error::from_raw_os_error(e.0).to_string(),
    }
}

/// An opened, checked ELF file.
struct ElfImage {
    path: String,
    fd: Arc<OwnedFd>,
    header: ElfHeader,
    phdrs: Vec<ProgramHeader>,
}

/// What the program loader produced.
pub struct Loaded {
    /// Initial registers of the program.
    pub regs: kvm_regs,
    /// Guest path of the executable (for /proc/self/exe).
    pub exe: Vec<u8>,
    /// Where its parts went.
    pub placed: Placed,
}

fn pread_exact(fd: &OwnedFd, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: buf[done..] is a valid writable slice of the given length.
        let n = unsafe {
            libc::pread(fd.as_raw_fd(), buf[done..].as_mut_ptr().cast(), buf.len() - done, (off + done as u64) as i64)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

fn open_exec(sb: &Sandbox, cwd: &[u8], path: &[u8]) -> Result<(OwnedFd, libc::stat, String), ExecError> {
    let shown = String::from_utf8_lossy(path).into_owned();
    let fail = |errno: Errno| ExecError::Open { path: shown.clone(), reason: describe(errno), errno };
    let (fd, st) = sb.open(cwd, path, libc::O_RDONLY, 0).map_err(fail)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFDIR => return Err(fail(Errno::EISDIR)),
        _ => return Err(fail(Errno::EACCES)),
    }
    if st.st_mode & 0o111 == 0 {
        return Err(fail(Errno::EACCES));
    }
    Ok((fd, st, shown))
}

fn read_elf(fd: OwnedFd, size: u64, path: String, head: &[u8]) -> Result<ElfImage, ExecError> {
    let elf = |source| ExecError::Elf { path: path.clone(), source };
    let header = ElfHeader::parse(head).map_err(elf)?;
    let (start, end) = header.phdr_range().map_err(elf)?;
    if end > size {
        return Err(elf(ElfError::Truncated("the program header table extends past the end of the file")));
    }
    let mut table = vec![0u8; (end - start) as usize];
    let n = pread_exact(&fd, &mut table, start).map_err(|e| ExecError::Open {
        path: path.clone(),
        reason: e.to_string(),
        errno: Errno::from_io(&e),
    })?;
    if n < table.len() {
        return Err(elf(ElfError::Truncated("the program header table extends past the end of the file")));
    }
    let phdrs = header.program_headers(&table, size).map_err(elf)?;
    for ph in phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
        let end = ph.vaddr.saturating_add(ph.memsz);
        if header.ty == ElfType::Exec && (ph.vaddr < USER_MIN || end > USER_END) {
            return Err(ExecError::Invalid {
                path,
                reason: format!("segment {:#x}..{end:#x} lies outside user space", ph.vaddr),
                errno: Errno::ENOEXEC,
            });
        }
        if end - ph.vaddr > USER_END {
            return Err(ExecError::Invalid {
                path,
                reason: "a segment larger than user space".into(),
                errno: Errno::ENOEXEC,
            });
        }
    }
    Ok(ElfImage { path, fd: Arc::new(fd), header, phdrs })
}

impl ElfImage {
    /// Lowest and highest (exclusive) page of the loadable segments.
    fn span(&self) -> (u64, u64) {
        let loads = self.phdrs.iter().filter(|p| p.p_type == PT_LOAD);
        let lo = loads.clone().map(|p| page_down(p.vaddr)).min().unwrap_or(0);
        let hi = loads.map(|p| page_up(p.vaddr + p.memsz)).max().unwrap_or(0);
        (lo, hi)
    }

    fn max_align(&self) -> u64 {
        self.phdrs.iter().filter(|p| p.p_type == PT_LOAD).map(|p| p.align.max(4096)).max().unwrap_or(4096).min(1 << 30)
    }

    fn interp(&self) -> Result<Option<Vec<u8>>, ExecError> {
        let Some(ph) = self.phdrs.iter().find(|p| p.p_type == PT_INTERP) else {
            return Ok(None);
        };
        if ph.filesz < 2 || ph.filesz > 4096 {
            return Err(ExecError::Invalid {
                path: self.path.clone(),
                reason: "malformed interpreter path".into(),
                errno: Errno::ENOEXEC,
            });
        }
        let mut buf = vec![0u8; ph.filesz as usize];
        pread_exact(&self.fd, &mut buf, ph.offset).map_err(|e| ExecError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
            errno: Errno::from_io(&e),
        })?;
        match buf.iter().position(|&c| c == 0) {
            Some(z) if z > 0 => Ok(Some(buf[..z].to_vec())),
            _ => Err(ExecError::Invalid {
                path: self.path.clone(),
                reason: "malformed interpreter path".into(),
                errno: Errno::ENOEXEC,
            }),
        }
    }

    /// Maps the segments at `bias`; returns the end of the highest one.
    fn map(&self, mm: &mut Mm, bias: u64) -> Result<u64, ExecError> {
        let oom = || ExecError::OutOfMemory { path: self.path.clone() };
        let mut top = 0;
        for ph in self.phdrs.iter().filter(|p| p.p_type == PT_LOAD && p.memsz > 0) {
            let prot = (if ph.flags & PF_R != 0 { PROT_READ } else { 0 })
                | (if ph.flags & PF_W != 0 { PROT_WRITE } else { 0 })
                | (if ph.flags & PF_X != 0 { PROT_EXEC } else { 0 });
            let start = page_down(bias + ph.vaddr);
            let file_end = bias + ph.vaddr + ph.filesz;
            let mem_end = page_up(bias + ph.vaddr + ph.memsz);
            let mapped_file_end = page_up(file_end).min(mem_end);
            if !mm.is_free(start, mem_end) {
                return Err(ExecError::Invalid {
                    path: self.path.clone(),
                    reason: format!("segments overlap at {start:#x}"),
                    errno: Errno::ENOEXEC,
                });
            }
            if ph.filesz > 0 {
                mm.insert(Vma {
                    start,
                    end: mapped_file_end,
                    prot,
                    shared: false,
                    backing: Backing::File { fd: self.fd.clone(), offset: page_down(ph.offset), writeback: false },
                    kind: VmaKind::Program,
                });
                if mapped_file_end - start <= EAGER_SEGMENT_BYTES {
                    mm.populate_range(start, mapped_file_end).map_err(|_| oom())?;
                }
                // The rest of the last file page belongs to .bss: zero it.
                if ph.memsz > ph.filesz && file_end < mapped_file_end {
                    mm.populate_range(file_end, file_end + 1).map_err(|_| oom())?;
                    let gpa = mm.translate(file_end, false).map_err(|_| oom())?;
                    mm.mem.zero(gpa, mapped_file_end - file_end).ok_or_else(oom)?;
                }
            }
            let anon_start = if ph.filesz > 0 { mapped_file_end } else { start };
            if anon_start < mem_end {
                mm.insert(Vma {
                    start: anon_start,
                    end: mem_end,
                    prot,
                    shared: false,
                    backing: Backing::Anon,
                    kind: VmaKind::Program,
                });
            }
            top = top.max(mem_end);
        }
        Ok(top)
    }

    /// Address of the program headers once loaded at `bias`.
    fn phdr_addr(&self, bias: u64) -> u64 {
        if let Some(p) = self.phdrs.iter().find(|p| p.p_type == PT_PHDR) {
            return bias + p.vaddr;
        }
        self.phdrs
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .find(|p| p.offset <= self.header.phoff && self.header.phoff < p.offset + p.filesz)
            .map(|p| bias + p.vaddr + (self.header.phoff - p.offset))
            .unwrap_or(0)
    }
}

/// A choice of load address for a position-independent image of `span`
/// bytes and alignment `align` near `base`.
fn pie_bias(image: &ElfImage, base: u64) -> u64 {
    let (lo, _) = image.span();
    let align = image.max_align();
    ((base + align - 1) & !(align - 1)).wrapping_sub(lo)
}

/// Resolves `#!` chains and reads the final ELF image. Rewrites `argv`.
fn resolve(sb: &Sandbox, cwd: &[u8], path: &[u8], argv: &mut Vec<Vec<u8>>) -> Result<(ElfImage, Vec<u8>), ExecError> {
    let mut path = path.to_vec();
    for _ in 0..=MAX_SCRIPT_DEPTH {
        let (fd, st, shown) = open_exec(sb, cwd, &path)?;
        let mut head = vec![0u8; 4096];
        let n = pread_exact(&fd, &mut head, 0).map_err(|e| ExecError::Open {
            path: shown.clone(),
            reason: e.to_string(),
            errno: Errno::from_io(&e),
        })?;
        head.truncate(n);
        if head.starts_with(b"#!") {
            let line_end = head.iter().position(|&c| c == b'\n').unwrap_or(head.len()).min(256);
            let line = &head[2..line_end];
            let mut words = line.split(|&c| c == b' ' || c == b'\t').filter(|w| !w.is_empty());
            let Some(interp) = words.next() else {
                return Err(ExecError::Invalid { path: shown, reason: "empty #! line".into(), errno: Errno::ENOEXEC });
            };
            let rest_start = interp.as_ptr() as usize - line.as_ptr() as usize + interp.len();
            let arg: Vec<u8> = line[rest_start..].trim_ascii().to_vec();
            let mut new_argv = vec![interp.to_vec()];
            if !arg.is_empty() {
                new_argv.push(arg);
            }
            new_argv.push(path.clone());
            new_argv.extend(argv.drain(..).skip(1));
            *argv = new_argv;
            path = interp.to_vec();
            continue;
        }
        let exe = sb.guest_path(fd.as_raw_fd());
        return Ok((read_elf(fd, st.st_size as u64, shown, &head)?, exe));
    }
    Err(ExecError::Open {
        path: String::from_utf8_lossy(&path).into_owned(),
        reason: describe(Errno::ELOOP),
        errno: Errno::ELOOP,
    })
}

/// Loads a program into `mm` (which must be empty of user mappings).
/// Everything that can fail because of the file happens in `prepare`.
pub struct Prepared {
    main: ElfImage,
    interp: Option<ElfImage>,
    argv: Vec<Vec<u8>>,
    exe: Vec<u8>,
}

/// Opens and checks the program and its interpreter; nothing is changed.
pub fn prepare(
    sb: &Sandbox,
    cwd: &[u8],
    path: &[u8],
    mut argv: Vec<Vec<u8>>,
    envp: &[Vec<u8>],
) -> Result<Prepared, ExecError> {
    let total: usize = argv.iter().chain(envp.iter()).map(|s| s.len() + 1 + 8).sum();
    if total > ARG_MAX || argv.iter().chain(envp.iter()).any(|s| s.len() >= MAX_ARG_STRLEN) {
        return Err(ExecError::Invalid {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: "argument list too long".into(),
            errno: Errno::E2BIG,
        });
    }
    let (main, exe) = resolve(sb, cwd, path, &mut argv)?;
    let interp = match main.interp()? {
        Some(ip) => {
            let (fd, st, shown) = open_exec(sb, b"/", &ip).map_err(|e| match e {
                ExecError::Open { reason, errno, .. } => ExecError::Open {
                    path: main.path.clone(),
                    reason: format!("its interpreter {}: {reason}", String::from_utf8_lossy(&ip)),
                    errno,
                },
                e => e,
            })?;
            let mut head = vec![0u8; 4096];
            let n = pread_exact(&fd, &mut head, 0).map_err(|e| ExecError::Open {
                path: shown.clone(),
                reason: e.to_string(),
                errno: Errno::from_io(&e),
            })?;
            head.truncate(n);
            let img = read_elf(fd, st.st_size as u64, shown, &head)?;
            if img.interp()?.is_some() {
                return Err(ExecError::Invalid {
                    path: img.path,
                    reason: "an interpreter that needs an interpreter".into(),
                    errno: Errno::ELIBBAD,
                });
            }
            Some(img)
        }
        None => None,
    };
    Ok(Prepared { main, interp, argv, exe })
}

impl Prepared {
    /// Guest path of the ELF file that will run (after `#!` lines).
    pub fn exe(&self) -> &[u8] {
        &self.exe
    }
}

impl Errno {
    pub const ELIBBAD: Errno = Errno(libc::ELIBBAD);
}

/// Maps a prepared program into `mm` and builds its stack.
pub fn load(mm: &mut Mm, p: Prepared, envp: &[Vec<u8>], creds: &Creds, random: [u8; 16]) -> Result<Loaded, ExecError> {
    let layout: Layout = mm.layout;
    let main = &p.main;
    let bias = match main.header.ty {
        ElfType::Exec => 0,
        ElfType::Dyn => pie_bias(main, layout.pie_base),
    };
    let top = main.map(mm, bias)?;
    let brk = layout.heap_start(page_up(top), main.header.ty == ElfType::Dyn);
    mm.brk_start = brk;
    mm.brk = brk;

    let (entry, interp_base) = match &p.interp {
        Some(ip) => {
            let (lo, hi) = ip.span();
            let size = hi - lo + ip.max_align();
            let area = mm.unmapped_area(size, 0, Area::File).ok_or(ExecError::OutOfMemory { path: ip.path.clone() })?;
            let ib = pie_bias(ip, area);
            ip.map(mm, ib)?;
            (ib + ip.header.entry, ib)
        }
        None => (bias + main.header.entry, 0),
    };

    let exec_stack = main.phdrs.iter().find(|p| p.p_type == PT_GNU_STACK).is_none_or(|p| p.flags & PF_X != 0);
    let stack_prot = PROT_READ | PROT_WRITE | if exec_stack { PROT_EXEC } else { 0 };
    mm.insert(Vma {
        start: layout.stack_top - STACK_SIZE,
        end: layout.stack_top,
        prot: stack_prot,
        shared: false,
        backing: Backing::Anon,
        kind: VmaKind::Stack,
    });

    let hwcap = std::arch::x86_64::__cpuid(1).edx as u64;
    let mut auxv = vec![
        (AT_PHDR, main.phdr_addr(bias)),
        (AT_PHENT, 56),
        (AT_PHNUM, main.header.phnum as u64),
        (AT_PAGESZ, 4096),
        (AT_BASE, interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, bias + main.header.entry),
        (AT_UID, creds.uid as u64),
        (AT_EUID, creds.euid as u64),
        (AT_GID, creds.gid as u64),
        (AT_EGID, creds.egid as u64),
        (AT_SECURE, 0),
        (AT_HWCAP, hwcap),
        (AT_HWCAP2, 0),
        (AT_CLKTCK, 100),
    ];
    let sp = build_stack(mm, &layout, &p.argv, envp, &p.exe, &mut auxv, random)
        .map_err(|_| ExecError::OutOfMemory { path: main.path.clone() })?;
    let regs = kvm_regs { rip: entry, rsp: sp, rflags: rflags::FIXED | rflags::IF, ..Default::default() };
    let placed = Placed { program: bias.wrapping_add(main.span().0), interpreter: interp_base, heap: brk, stack: sp };
    Ok(Loaded { regs, exe: p.exe, placed })
}

/// Writes strings, auxv, envp, argv and argc below `top`; returns the
/// initial stack pointer (16-byte aligned, pointing at argc).
fn build_stack(
    mm: &mut Mm,
    layout: &Layout,
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    execfn: &[u8],
    auxv: &mut Vec<(u64, u64)>,
    random: [u8; 16],
) -> SysResult<u64> {
    let mut sp = layout.stack_top - 16;
    let push_str = |mm: &mut Mm, s: &[u8], sp: &mut u64| -> SysResult<u64> {
        *sp -= s.len() as u64 + 1;
        mm.write_user(*sp, s)?;
        mm.write_user(*sp + s.len() as u64, &[0])?;
        Ok(*sp)
    };
    let execfn_addr = push_str(mm, execfn, &mut sp)?;
    let mut env_addrs = Vec::with_capacity(envp.len());
    for e in envp.iter().rev() {
        env_addrs.push(push_str(mm, e, &mut sp)?);
    }
    env_addrs.reverse();
    let mut arg_addrs = Vec::with_capacity(argv.len());
    for a in argv.iter().rev() {
        arg_addrs.push(push_str(mm, a, &mut sp)?);
    }
    arg_addrs.reverse();
    let platform = push_str(mm, b"x86_64", &mut sp)?;
    // The strings sit at the top, the tables right below (no random step:
    // see `layout`).
    sp &= !15;
    sp -= 16;
    let random_addr = sp;
    mm.write_user(random_addr, &random)?;
    auxv.push((AT_RANDOM, random_addr));
    auxv.push((AT_PLATFORM, platform));
    auxv.push((AT_EXECFN, execfn_addr));
    auxv.push((AT_NULL, 0));

    let words = 1 + arg_addrs.len() + 1 + env_addrs.len() + 1 + 2 * auxv.len();
    sp -= words as u64 * 8;
    sp &= !15;
    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(argv.len() as u64);
    table.extend(&arg_addrs);
    table.push(0);
    table.extend(&env_addrs);
    table.push(0);
    for &(k, v) in auxv.iter() {
        table.push(k);
        table.push(v);
    }
    let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    mm.write_user(sp, &bytes)?;
    Ok(sp)
}

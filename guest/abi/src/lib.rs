//! The interface between the dmvx guest kernel and the VMM.
//!
//! Both sides compile against this crate, so the port numbers, the image
//! header and the register conventions cannot drift apart.
//!
//! The guest kernel is deliberately dumb: every path is a handful of
//! instructions that ends in an `out` to one of the ports below. The VMM reads
//! and writes the guest's registers and memory itself, decides everything,
//! and tells the guest where to continue by setting its registers.
#![no_std]

/// Version of this interface; the VMM refuses a kernel image with another.
pub const ABI_VERSION: u32 = 1;

/// First bytes of [`KernelHeader`].
pub const HEADER_MAGIC: [u8; 8] = *b"DMVXGK\x00\x01";

/// Name of the ELF section that holds the [`KernelHeader`].
pub const HEADER_SECTION: &str = ".dmvx_header";

/// The syscall entry stub writes this port. At the exit the guest's
/// registers are the program's system call registers (Linux x86-64 ABI:
/// number in rax, arguments in rdi, rsi, rdx, r10, r8, r9; return address
/// in rcx and saved rflags in r11, as `syscall` leaves them).
///
/// The stub runs at CPL0 on bare-metal KVM and at CPL3 on hosts whose
/// `syscall` does not change privilege; the VMM checks CS to tell which.
/// The instruction after the `out` is a `hlt`: the VMM always redirects the
/// vCPU, so reaching it means the VMM resumed the stub by mistake.
pub const PORT_SYSCALL: u8 = 0xd0;

/// The boot entry writes this port once, as its first instruction, then
/// executes `iretq` from the frame the VMM placed at the initial rsp.
pub const PORT_BOOT: u8 = 0xd1;

/// The kernel-operations routine writes this port when it has applied the
/// batch it was given (see [`KopsOp`]).
pub const PORT_KOPS_DONE: u8 = 0xd2;

/// Exception stub `v` (0..32) writes port `PORT_EXCEPTION_BASE + v`, after
/// pushing a zero error code for vectors whose hardware frame has none, so
/// every frame at rsp is: error code, rip, cs, rflags, rsp, ss.
pub const PORT_EXCEPTION_BASE: u8 = 0xe0;

/// Number of exception vectors with stubs.
pub const EXCEPTION_VECTORS: usize = 32;

/// Size in bytes of the frame an exception stub leaves at rsp.
pub const EXCEPTION_FRAME_SIZE: u64 = 6 * 8;

/// One copy performed by the kernel-operations routine.
///
/// The VMM enters the routine at CPL0 with rflags = 0x2, `rbx` = virtual address of
/// an array of [`KopsOp`], `rbp` = number of entries (at least one). For each
/// entry the routine copies `qwords` 64-bit words from `src` to `dst`
/// (`rep movsq`), then reloads CR3 to flush the TLB, then writes
/// [`PORT_KOPS_DONE`].
///
/// Page-table entries that remove or reduce a mapping must be written by the
/// guest itself: a shadow-paging KVM only notices page-table writes that the
/// guest makes, not writes by the VMM through its own mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KopsOp {
    /// Guest virtual address to copy to.
    pub dst: u64,
    /// Guest virtual address to copy from.
    pub src: u64,
    /// Number of 64-bit words.
    pub qwords: u64,
}

/// Size of one [`KopsOp`] in bytes.
pub const KOPS_OP_SIZE: usize = core::mem::size_of::<KopsOp>();

/// The header at the start of the [`HEADER_SECTION`] of a guest kernel image.
///
/// `F` is the type of the code addresses: the guest instantiates it with
/// function pointers (so the linker fills them in), the VMM with `u64`. Both
/// are 8 bytes on x86-64, so the layout is the same.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelHeader<F> {
    /// [`HEADER_MAGIC`].
    pub magic: [u8; 8],
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<KernelHeader<u64>>()`.
    pub header_size: u32,
    /// Boot entry, CPL0: writes [`PORT_BOOT`], then `iretq`.
    pub boot_entry: F,
    /// Target of the LSTAR MSR. Must lie inside the user text range.
    pub syscall_entry: F,
    /// A lone `iretq`: the VMM points rip here with an iret frame at rsp to
    /// return to user mode from CPL0.
    pub user_return: F,
    /// The kernel-operations routine, see [`KopsOp`].
    pub kops_entry: F,
    /// Start of the pages that must be mapped user-executable (they hold the
    /// syscall entry, which runs at CPL3 where `syscall` keeps privilege).
    pub user_text_start: F,
    /// End (exclusive) of those pages.
    pub user_text_end: F,
    /// Exception stubs, one per vector.
    pub exception_stubs: [F; EXCEPTION_VECTORS],
}

/// Size in bytes of the header.
pub const HEADER_SIZE: usize = core::mem::size_of::<KernelHeader<u64>>();

impl KernelHeader<u64> {
    /// Parses a header from the start of `bytes` (little-endian).
    /// Returns `None` if `bytes` is too short; checks nothing else.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_SIZE {
            return None;
        }
        let u64_at = |off: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[off..off + 8]);
            u64::from_le_bytes(b)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[0..8]);
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[8..12]);
        let abi_version = u32::from_le_bytes(w);
        w.copy_from_slice(&bytes[12..16]);
        let header_size = u32::from_le_bytes(w);
        let mut exception_stubs = [0u64; EXCEPTION_VECTORS];
        for (v, stub) in exception_stubs.iter_mut().enumerate() {
            *stub = u64_at(64 + v * 8);
        }
        Some(KernelHeader {
            magic,
            abi_version,
            header_size,
            boot_entry: u64_at(16),
            syscall_entry: u64_at(24),
            user_return: u64_at(32),
            kops_entry: u64_at(40),
            user_text_start: u64_at(48),
            user_text_end: u64_at(56),
            exception_stubs,
        })
    }
}

/// Whether the CPU pushes an error code for exception `vector`.
pub const fn has_error_code(vector: usize) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

// The offsets used by `parse` follow the field order above.
const _: () = assert!(HEADER_SIZE == 64 + EXCEPTION_VECTORS * 8);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, boot_entry) == 16);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, user_text_end) == 56);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, exception_stubs) == 64);
const _: () = assert!(KOPS_OP_SIZE == 24);
const _: () = assert!((PORT_EXCEPTION_BASE as usize) + EXCEPTION_VECTORS <= 256);

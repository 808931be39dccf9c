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
pub const ABI_VERSION: u32 = 2;

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

/// The ring entry stub writes this port when its call did not complete on
/// the ring (see [`Ring`]): the service was parked or refused the call, the
/// completion needs the vCPU, or the spin ran out. Registers are the
/// program's system call registers, as at [`PORT_SYSCALL`].
pub const PORT_RING_WAIT: u8 = 0xd3;

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
    /// Target of LSTAR when the exit-less call path is on (see [`Ring`]).
    /// Must lie inside the user text range.
    pub ring_entry: F,
    /// The ring stub's `out` to [`PORT_RING_WAIT`].
    pub ring_wait: F,
    /// The ring stub's `out` to [`PORT_SYSCALL`] (taken at CPL0, or when the
    /// service is parked or the call is not one the ring serves).
    pub ring_exit: F,
    /// The [`Ring`] page: page-aligned, mapped user-writable and
    /// non-executable by the VMM.
    pub ring_page: F,
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
            ring_entry: u64_at(RING_FIELDS),
            ring_wait: u64_at(RING_FIELDS + 8),
            ring_exit: u64_at(RING_FIELDS + 16),
            ring_page: u64_at(RING_FIELDS + 24),
        })
    }
}

/// Offset of `ring_entry` in the header.
const RING_FIELDS: usize = 64 + EXCEPTION_VECTORS * 8;

/// The exit-less call path: one page shared between the guest kernel's ring
/// entry stub and the VMM's service (one per vCPU).
///
/// The stub (at CPL3, where `syscall` keeps privilege; at CPL0 it takes
/// [`PORT_SYSCALL`] at once) looks at `service` and the `calls` bitmap; if the
/// service is awake and serves the call, it stores the number, arguments,
/// rcx, r11 and rsp with RIP-relative stores (no register but rax and the
/// flags is changed, and rax is reloaded from `nr` before any exit), sets
/// `state` to [`RING_REQUEST`], and spins at most `spin` rounds for
/// [`RING_DONE`] (result in `ret`: it restores rflags from r11 on the page's
/// scratch stack and jumps to rcx, as `sysret` would) or [`RING_EXIT`]; else
/// it writes [`PORT_RING_WAIT`].
///
/// The guest can write the page at any time: the VMM takes a request by
/// compare-and-swap of `state` from [`RING_REQUEST`] to [`RING_TAKEN`], reads it
/// once into its own memory and treats it as a system call with those
/// registers; what it knows about a request is kept in its own memory, never
/// read back from the page.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// [`RING_IDLE`], [`RING_REQUEST`], [`RING_TAKEN`], [`RING_DONE`], [`RING_EXIT`].
    pub state: u32,
    /// [`RING_AWAKE`] while the service polls, [`RING_PARKED`] otherwise.
    pub service: u32,
    pub nr: u64,
    pub args: [u64; 6],
    pub rcx: u64,
    pub r11: u64,
    pub rsp: u64,
    /// The result of a [`RING_DONE`] call.
    pub ret: u64,
    /// Rounds the stub spins for the completion (written by the VMM).
    pub spin: u32,
    /// The stub's `cs` (its CPL check).
    pub cs: u16,
    pub pad: u16,
    /// Bit `n` set: call number `n` (< [`RING_CALLS`]) may go the ring way.
    pub calls: [u64; RING_CALLS / 64],
}

/// Call numbers the `calls` bitmap covers.
pub const RING_CALLS: usize = 512;
/// `Ring::state` values.
pub const RING_IDLE: u32 = 0;
pub const RING_REQUEST: u32 = 1;
pub const RING_TAKEN: u32 = 2;
pub const RING_DONE: u32 = 3;
pub const RING_EXIT: u32 = 4;
/// `Ring::service` values.
pub const RING_PARKED: u32 = 0;
pub const RING_AWAKE: u32 = 1;
/// The top of the stub's 16-byte scratch stack (for `popfq`), as an offset
/// in the page.
pub const RING_STACK_TOP: usize = 4096;
/// Byte offsets of the fields, for the stub.
pub const RING_STATE: usize = core::mem::offset_of!(Ring, state);
pub const RING_SERVICE: usize = core::mem::offset_of!(Ring, service);
pub const RING_NR: usize = core::mem::offset_of!(Ring, nr);
pub const RING_ARGS: usize = core::mem::offset_of!(Ring, args);
pub const RING_RCX: usize = core::mem::offset_of!(Ring, rcx);
pub const RING_R11: usize = core::mem::offset_of!(Ring, r11);
pub const RING_RSP: usize = core::mem::offset_of!(Ring, rsp);
pub const RING_RET: usize = core::mem::offset_of!(Ring, ret);
pub const RING_SPIN: usize = core::mem::offset_of!(Ring, spin);
pub const RING_CS: usize = core::mem::offset_of!(Ring, cs);
pub const RING_CALLS_OFF: usize = core::mem::offset_of!(Ring, calls);
/// The flags the stub restores from r11: what user mode may choose for
/// itself (as the VMM's return to user mode) except TF; a call made with TF
/// set takes [`PORT_SYSCALL`].
pub const RING_USER_FLAGS: u32 = 0x0024_0cd5;
/// RFLAGS.TF.
pub const RFLAGS_TF: u32 = 0x100;

/// Whether the CPU pushes an error code for exception `vector`.
pub const fn has_error_code(vector: usize) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

// The offsets used by `parse` follow the field order above.
const _: () = assert!(HEADER_SIZE == RING_FIELDS + 4 * 8);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, ring_entry) == RING_FIELDS);
const _: () = assert!(core::mem::size_of::<Ring>() + 16 <= RING_STACK_TOP);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, boot_entry) == 16);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, user_text_end) == 56);
const _: () = assert!(core::mem::offset_of!(KernelHeader<u64>, exception_stubs) == 64);
const _: () = assert!(KOPS_OP_SIZE == 24);
const _: () = assert!((PORT_EXCEPTION_BASE as usize) + EXCEPTION_VECTORS <= 256);

//! The dmvx guest kernel: a header and a few entry stubs (`entry.S`).
//!
//! It has no state, no policy and no allocation. The VMM builds the page
//! tables, descriptor tables and stacks, and handles every system call and
//! exception; the stubs only get the vCPU to exit at the right moment.
#![no_std]
#![no_main]

use dmvx_abi::{
    has_error_code, KernelHeader, ABI_VERSION, EXCEPTION_VECTORS, HEADER_MAGIC, HEADER_SIZE, PORT_BOOT,
    PORT_EXCEPTION_BASE, PORT_KOPS_DONE, PORT_RING_WAIT, PORT_SYSCALL, RFLAGS_TF, RING_ARGS, RING_AWAKE, RING_CALLS,
    RING_CALLS_OFF, RING_CS, RING_DONE, RING_EXIT, RING_NR, RING_R11, RING_RCX, RING_REQUEST, RING_RET, RING_RSP,
    RING_SERVICE, RING_SPIN, RING_STACK_TOP, RING_STATE, RING_USER_FLAGS,
};

core::arch::global_asm!(
    include_str!("entry.S"),
    port_syscall = const PORT_SYSCALL,
    port_boot = const PORT_BOOT,
    port_kops_done = const PORT_KOPS_DONE,
    port_exception_base = const PORT_EXCEPTION_BASE,
    port_ring_wait = const PORT_RING_WAIT,
    rflags_tf = const RFLAGS_TF,
    ring_cs = const RING_CS,
    ring_service = const RING_SERVICE,
    ring_awake = const RING_AWAKE,
    ring_calls = const RING_CALLS,
    ring_calls_off = const RING_CALLS_OFF,
    ring_nr = const RING_NR,
    ring_args = const RING_ARGS,
    ring_rcx = const RING_RCX,
    ring_r11 = const RING_R11,
    ring_rsp = const RING_RSP,
    ring_state = const RING_STATE,
    ring_request = const RING_REQUEST,
    ring_spin = const RING_SPIN,
    ring_done = const RING_DONE,
    ring_exit = const RING_EXIT,
    ring_stack_top = const RING_STACK_TOP,
    ring_user_flags = const RING_USER_FLAGS,
    ring_ret = const RING_RET,
);

type Entry = unsafe extern "C" fn();

macro_rules! stubs {
    ($($name:ident),* $(,)?) => {
        extern "C" { $(fn $name();)* }
        const STUBS: [Entry; EXCEPTION_VECTORS] = [$($name),*];
    };
}

stubs!(
    dmvx_exc_0,
    dmvx_exc_1,
    dmvx_exc_2,
    dmvx_exc_3,
    dmvx_exc_4,
    dmvx_exc_5,
    dmvx_exc_6,
    dmvx_exc_7,
    dmvx_exc_8,
    dmvx_exc_9,
    dmvx_exc_10,
    dmvx_exc_11,
    dmvx_exc_12,
    dmvx_exc_13,
    dmvx_exc_14,
    dmvx_exc_15,
    dmvx_exc_16,
    dmvx_exc_17,
    dmvx_exc_18,
    dmvx_exc_19,
    dmvx_exc_20,
    dmvx_exc_21,
    dmvx_exc_22,
    dmvx_exc_23,
    dmvx_exc_24,
    dmvx_exc_25,
    dmvx_exc_26,
    dmvx_exc_27,
    dmvx_exc_28,
    dmvx_exc_29,
    dmvx_exc_30,
    dmvx_exc_31,
);

extern "C" {
    fn dmvx_boot();
    fn dmvx_syscall_entry();
    fn dmvx_user_return();
    fn dmvx_kops();
    fn dmvx_ring_entry();
    fn dmvx_ring_wait();
    fn dmvx_ring_exit();
    fn dmvx_ring();
    // Linker-script symbols; only their addresses are used.
    fn dmvx_user_text_start();
    fn dmvx_user_text_end();
}

// The stubs in entry.S push a zero error code exactly where the CPU does not.
const _: () = assert!(!has_error_code(0) && has_error_code(14) && has_error_code(8));

#[used]
#[link_section = ".dmvx_header"]
static HEADER: KernelHeader<Entry> = KernelHeader {
    magic: HEADER_MAGIC,
    abi_version: ABI_VERSION,
    header_size: HEADER_SIZE as u32,
    boot_entry: dmvx_boot,
    syscall_entry: dmvx_syscall_entry,
    user_return: dmvx_user_return,
    kops_entry: dmvx_kops,
    user_text_start: dmvx_user_text_start,
    user_text_end: dmvx_user_text_end,
    exception_stubs: STUBS,
    ring_entry: dmvx_ring_entry,
    ring_wait: dmvx_ring_wait,
    ring_exit: dmvx_ring_exit,
    ring_page: dmvx_ring,
};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // No Rust code runs in the guest; this only satisfies no_std.
    loop {}
}

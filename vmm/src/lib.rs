//! dmvx-vmm: the KVM virtual machine monitor of one dmvx variant.
//!
//! In process mode the VMM boots the tiny dmvx guest kernel, loads an
//! unmodified Linux x86-64 program into the VM and acts as its operating
//! system: every system call and fault of the program exits to the VMM,
//! which handles memory calls by editing the guest page tables and carries
//! out I/O on the host inside a sandbox.
//!
//! In Linux mode (`linux`) it boots an unmodified Linux kernel with a
//! serial console instead.
//!
//! Layout: `arch/x86_64` holds everything x86-specific (descriptor tables,
//! paging, registers, the physical layout); `vstate` the VM and vCPU and the
//! generic exit loop; `process` the program's operating system.

pub mod app;
pub(crate) mod arch;
pub(crate) mod bench;
pub(crate) mod cli;
pub(crate) mod elf;
#[doc(hidden)]
pub mod fuzz_entry;
pub(crate) mod guest_kernel;
pub(crate) mod image;
pub(crate) mod jail;
pub(crate) mod kernel;
pub(crate) mod linux;
pub(crate) mod logger;
pub(crate) mod memory;
pub(crate) mod monitor;
pub(crate) mod platform;
pub(crate) mod vstate;

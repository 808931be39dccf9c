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

pub mod arch;
pub mod bench;
pub mod cli;
pub mod elf;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod guest_kernel;
pub mod image;
pub mod jail;
pub mod kernel;
pub mod linux;
pub mod logger;
pub mod memory;
pub mod monitor;
pub mod platform;
pub mod vstate;

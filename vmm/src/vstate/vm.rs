//! A KVM virtual machine with its guest memory.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};

use crate::memory::{GuestMemory, MemoryError};

/// Errors of VM creation.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("/dev/kvm does not exist: this host has no KVM. Load the kvm_intel or kvm_amd module, or enable nested virtualisation for this VM")]
    KvmMissing,
    #[error("permission denied opening /dev/kvm: run as root or add your user to the group that owns /dev/kvm (usually 'kvm': sudo usermod -aG kvm $USER, then log in again)")]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(kvm_ioctls::Error),
    #[error("KVM API version {0} is not the stable version 12")]
    KvmApiVersion(i32),
    #[error("KVM lacks a capability dmvx needs: {0}")]
    MissingCapability(&'static str),
    #[error("cannot create a VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    #[error("cannot register guest memory with KVM: {0}")]
    MemorySlot(kvm_ioctls::Error),
    #[error("cannot create the vCPU: {0}")]
    CreateVcpu(kvm_ioctls::Error),
}

/// /dev/kvm, opened before the VMM entered its jail (which has no /dev).
static PREOPENED: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Opens /dev/kvm now, for VMs created once the VMM is confined.
pub fn preopen_kvm() -> Result<(), VmError> {
    if PREOPENED.get().is_none() {
        let kvm = open_kvm()?;
        // SAFETY: kvm's descriptor stays open for the borrow (kvm lives to the end).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&kvm)) }
            .try_clone_to_owned()
            .map_err(|e| VmError::KvmOpen(kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EBADF))))?;
        let _ = PREOPENED.set(fd);
    }
    Ok(())
}

/// Opens /dev/kvm (or duplicates the descriptor opened before the jail)
/// with a clear error for the usual failures.
pub fn open_kvm() -> Result<Kvm, VmError> {
    let kvm = match PREOPENED.get() {
        Some(fd) => {
            let dup = fd
                .try_clone()
                .map_err(|e| VmError::KvmOpen(kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EBADF))))?;
            // SAFETY: dup is a fresh descriptor of /dev/kvm that the Kvm takes over.
            unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) }
        }
        None => Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENXIO | libc::ENODEV => VmError::KvmMissing,
            libc::EACCES | libc::EPERM => VmError::KvmPermission,
            _ => VmError::KvmOpen(e),
        })?,
    };
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(VmError::KvmApiVersion(v));
    }
    for (cap, name) in [
        (kvm_ioctls::Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (kvm_ioctls::Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
        (kvm_ioctls::Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCapability(name));
        }
    }
    Ok(kvm)
}

/// A VM: the KVM handles and the guest's memory.
pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub mem: GuestMemory,
}

impl Vm {
    /// A VM with `mem_size` bytes of memory at guest physical address 0.
    pub fn new(mem_size: u64, min_mem: u64) -> Result<Self, VmError> {
        Self::with_shared(mem_size, min_mem, 0)
    }

    /// A VM whose memory also has a region of `shared` bytes that forked
    /// VMMs keep sharing (for the program's MAP_SHARED memory).
    pub fn with_shared(mem_size: u64, min_mem: u64, shared: u64) -> Result<Self, VmError> {
        let kvm = open_kvm()?;
        let mem = GuestMemory::with_shared(mem_size, min_mem, shared)?;
        Self::over(kvm, mem)
    }

    /// In a forked VMM: a new VM over the guest memory it inherited (the
    /// parent's VM cannot be used from another process). /dev/kvm is not
    /// opened again: the inherited descriptor serves.
    pub fn for_child(&self) -> Result<Self, VmError> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: F_DUPFD_CLOEXEC of an open descriptor; result checked.
        let fd = unsafe { libc::fcntl(self.kvm.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(VmError::KvmOpen(kvm_ioctls::Error::last()));
        }
        // SAFETY: fd is a fresh duplicate of the /dev/kvm descriptor.
        let kvm = unsafe { Kvm::from_raw_fd(fd) };
        Self::over(kvm, self.mem.clone())
    }

    fn over(kvm: Kvm, mem: GuestMemory) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.size(),
            userspace_addr: mem.host_base(),
        };
        // SAFETY: the region is a live anonymous mapping of exactly
        // memory_size bytes owned by `mem`, which this Vm keeps alive for as
        // long as the VM exists (fields drop in declaration order: the VM fd
        // closes before the memory is unmapped).
        unsafe { fd.set_user_memory_region(region) }.map_err(VmError::MemorySlot)?;
        if let Some((gpa, host, size)) = mem.shared_region() {
            let region = kvm_userspace_memory_region {
                slot: 1,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: as above, for the shared region `mem` owns.
            unsafe { fd.set_user_memory_region(region) }.map_err(VmError::MemorySlot)?;
        }
        Ok(Vm { kvm, fd, mem })
    }
}

//! Making the guest's rdtsc and rdtscp fault, so that the VMM answers them.
//!
//! On bare-metal KVM the guest's CR4.TSD does it (set in `arch::regs`).
//! Software-virtualisation KVMs such as PVM run guest user code in host
//! user mode under the host's CR4, ignoring the guest's TSD bit; there the
//! vCPU thread asks the host kernel for TSD (prctl PR_SET_TSC) around each
//! KVM_RUN. It cannot stay on: the VMM's own clock reads (the vDSO) execute
//! rdtsc too.

/// Whether this host lets a thread disable the time stamp counter for itself.
pub fn can_fault_tsc() -> bool {
    let mut mode: libc::c_int = 0;
    // SAFETY: PR_GET_TSC writes one int through the pointer, which is valid.
    unsafe { libc::prctl(libc::PR_GET_TSC, &mut mode as *mut libc::c_int) == 0 }
}

/// rdtsc faults in this thread (and in a guest it enters) until `allow`.
#[inline]
pub fn fault_tsc() {
    // SAFETY: PR_SET_TSC changes only this thread's TSD flag.
    unsafe { libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV) };
}

/// rdtsc works again in this thread.
#[inline]
pub fn allow_tsc() {
    // SAFETY: as in `fault_tsc`.
    unsafe { libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_ENABLE) };
}

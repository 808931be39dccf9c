//! The VM, its vCPU, and the generic exit loop.

pub mod vcpu;
pub mod vm;

//! The VM, its vCPU, and the generic exit loop.

pub mod tsc;
pub mod vcpu;
pub mod vm;

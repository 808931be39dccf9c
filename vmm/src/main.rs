//! `dmvx-vmm`: run one variant of a program in a KVM microVM.

fn main() -> std::process::ExitCode {
    dmvx_vmm::app::main()
}

//! The guest kernel built as a file by images/build-guest-kernel.sh boots
//! with --kernel, like the embedded one.

use dmvx::*;

#[test]
fn images_script_builds_a_bootable_kernel_file() {
    require_kvm!();
    let script = workspace().join("images/build-guest-kernel.sh");
    // The script runs cargo: keep this environment (PATH to the toolchain).
    let o = std::process::Command::new("/bin/bash").arg(&script).output().expect("run the images script");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let image = workspace().join("images/out/dmvx-guest.elf");
    let o = run_vmm(&["--kernel", image.to_str().unwrap(), "--", busybox(), "echo", "booted from a file"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "booted from a file\n");
}

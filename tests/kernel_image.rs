//! The guest kernel built as a file by images/build-guest-kernel.sh boots
//! with --kernel, like the embedded one.

use dmvx::*;

#[test]
fn images_script_builds_a_bootable_kernel_file() {
    require_kvm!();
    let script = workspace().join("images/build-guest-kernel.sh");
    let o = run("/bin/bash", &[script.to_str().unwrap()], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let image = workspace().join("images/out/dmvx-guest.elf");
    let o = run_vmm(
        &[
            "--kernel",
            image.to_str().unwrap(),
            "--",
            busybox(),
            "echo",
            "booted from a file",
        ],
        b"",
    );
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "booted from a file\n");
}

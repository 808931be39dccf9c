//! Linux mode: Debian's kernel (bzImage, and the vmlinux inside it through
//! its PVH entry) booted by dmvx-vmm with a busybox initramfs; every way a
//! guest can end, through a tiny PVH kernel; and bad input.
//!
//! On nested KVM (these development and CI machines) Linux stops at its
//! first emulated int3, so the Linux tests check the early boot console
//! (banner, e820 map). Where KVM runs Linux to the end (bare metal) they
//! check the full boot: the initramfs's marker and a clean power-off. Each
//! says loudly which of the two it checked.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dmvx::*;

/// Exit statuses of Linux mode (see `dmvx-vmm --help`).
const POWER_OFF: i32 = 0;
const RESET: i32 = 10;
const TRIPLE_FAULT: i32 = 11;
const TIMEOUT: i32 = 12;
const KVM_STOPPED: i32 = 13;
const VMM_ERROR: i32 = 125;

/// The longest a Debian kernel may take here before we give up: the
/// bzImage needs about 90 s under nested KVM to reach its banner.
const BOOT_LIMIT_SECS: u64 = 300;

static IMAGES: Mutex<()> = Mutex::new(());

/// images/out/linux, built by images/build-linux-initramfs.sh when missing.
fn linux_images() -> PathBuf {
    let _guard = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace().join("images/out/linux");
    let wanted = ["bzImage", "vmlinux", "initramfs.cpio.gz", "MARKER"];
    if !wanted.iter().all(|f| dir.join(f).exists()) {
        let script = workspace().join("images/build-linux-initramfs.sh");
        let o =
            std::process::Command::new("/bin/bash").arg(&script).output().expect("run images/build-linux-initramfs.sh");
        assert_eq!(status(&o), 0, "images/build-linux-initramfs.sh failed:\n{}{}", stdout(&o), stderr(&o));
    }
    dir
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Boots `kernel` (a file in images/out/linux) with the initramfs and
/// checks the full boot or, where KVM stops Linux early, the early console.
fn boots_debian_kernel(kernel: &str) {
    let dir = linux_images();
    let marker = std::fs::read_to_string(dir.join("MARKER")).unwrap();
    let marker = marker.trim();
    let limit = BOOT_LIMIT_SECS.to_string();
    let start = Instant::now();
    let o = run_vmm(
        &[
            "--kernel",
            path_str(&dir.join(kernel)),
            "--initrd",
            path_str(&dir.join("initramfs.cpio.gz")),
            "--memory",
            "256M",
            "--timeout",
            &limit,
        ],
        b"",
    );
    let took = start.elapsed();
    let (out, err) = (stdout(&o), stderr(&o));
    let tail: String = {
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    let context = format!(
        "{kernel}: status {}, {:.1}s\n--- stderr:\n{err}\n--- last lines of the console:\n{tail}",
        status(&o),
        took.as_secs_f64()
    );
    // Both cases: the banner and our e820 map (256 MiB) on the console.
    assert!(out.contains("Linux version 6."), "no banner: {context}");
    for line in [
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
        "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved",
        "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
    ] {
        assert!(out.contains(line), "missing '{line}': {context}");
    }
    assert!(took < Duration::from_secs(BOOT_LIMIT_SECS + 10), "the --timeout did not bound the run: {context}");
    if out.contains(marker) {
        assert_eq!(status(&o), POWER_OFF, "init ran but the guest did not power off cleanly: {context}");
        assert!(err.contains("the guest powered off"), "{context}");
        shout(&format!(
            "{kernel}: FULL BOOT checked: banner, e820 map, initramfs marker and a clean power-off (status 0) in {:.1}s",
            took.as_secs_f64()
        ));
    } else {
        // Nested KVM: Linux stops early, with an internal error or a hang.
        assert!(
            status(&o) == KVM_STOPPED || status(&o) == TIMEOUT,
            "Linux neither finished nor stopped the nested way: {context}"
        );
        let why = if status(&o) == KVM_STOPPED {
            assert!(err.contains("KVM_EXIT_INTERNAL_ERROR"), "{context}");
            "KVM could not emulate an instruction"
        } else {
            assert!(err.contains("--timeout"), "{context}");
            "the guest hung until --timeout"
        };
        shout(&format!(
            "{kernel}: EARLY BOOT ONLY checked (this host's KVM stops unmodified Linux early: {why}, status {}): banner and e820 map on the serial console in {:.1}s; the full boot (initramfs marker, power-off) was NOT checked here",
            status(&o),
            took.as_secs_f64()
        ));
    }
}

#[test]
fn debian_bzimage_boots() {
    require_kvm!();
    boots_debian_kernel("bzImage");
}

#[test]
fn debian_vmlinux_boots_through_pvh() {
    require_kvm!();
    boots_debian_kernel("vmlinux");
}

/// A tiny PVH kernel (tests/programs/pvh_stub.S) that prints its command
/// line and ends as the command line asks.
fn pvh_stub() -> PathBuf {
    build_c(
        "tests/programs/pvh_stub.S",
        &["-nostdlib", "-static", "-no-pie", "-Wl,-Ttext-segment=0x100000", "-Wl,--build-id=none"],
    )
}

#[test]
fn every_way_a_guest_ends_has_its_status() {
    require_kvm!();
    let stub = pvh_stub();
    let stub = path_str(&stub);
    let d = TempDir::new("linux-stub");
    let initrd = d.join("initrd");
    std::fs::write(&initrd, "first line of the initrd\nsecond\n").unwrap();
    for (cmdline, code, said) in [
        ("poweroff", POWER_OFF, "the guest powered off"),
        ("reset", RESET, "the guest reset the machine"),
        ("triple-fault", TRIPLE_FAULT, "the guest triple-faulted"),
        ("hang", TIMEOUT, "after the --timeout of 1s"),
    ] {
        let start = Instant::now();
        let o = run_vmm(&["--kernel", stub, "--cmdline", cmdline, "--timeout", "1"], b"");
        assert_eq!(status(&o), code, "{cmdline}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("dmvx-pvh-stub: {cmdline}\n"));
        assert!(stderr(&o).contains(said), "{cmdline}: {}", stderr(&o));
        assert!(start.elapsed() < Duration::from_secs(10), "{cmdline}");
    }
    // The initrd arrives as the PVH module, intact.
    let o = run_vmm(&["--kernel", stub, "--initrd", path_str(&initrd), "--cmdline", "initrd"], b"");
    assert_eq!(status(&o), POWER_OFF, "{}", stderr(&o));
    assert_eq!(stdout(&o), "dmvx-pvh-stub: initrd\nfirst line of the initrd\n");
}

/// Checks that need no KVM: the image is refused before a VM exists.
#[test]
fn bad_kernels_are_refused_with_reasons() {
    let dir = linux_images();
    let bz = std::fs::read(dir.join("bzImage")).unwrap();
    let d = TempDir::new("linux-bad");
    expect_vmm(&["--kernel", "/etc/passwd"], VMM_ERROR, &["/etc/passwd", "not a Linux kernel", "HdrS"]);
    expect_vmm(&["--kernel", busybox()], VMM_ERROR, &["without a PVH entry point", "XEN_ELFNOTE_PHYS32_ENTRY"]);
    expect_vmm(&["--kernel", "/nonexistent/bzImage"], VMM_ERROR, &["cannot read it"]);
    let cut = d.join("truncated");
    std::fs::write(&cut, &bz[..bz.len() / 2]).unwrap();
    expect_vmm(
        &["--kernel", path_str(&cut)],
        VMM_ERROR,
        &["truncated bzImage", &format!("the file has {}", bz.len() / 2)],
    );
    let mut old = bz.clone();
    old[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
    let oldp = d.join("old-protocol");
    std::fs::write(&oldp, &old).unwrap();
    expect_vmm(&["--kernel", path_str(&oldp)], VMM_ERROR, &["boot protocol 2.06 is too old", "2.12 or later"]);
    let mut no64 = bz.clone();
    no64[0x236] &= !1;
    let no64p = d.join("no-64bit-entry");
    std::fs::write(&no64p, &no64).unwrap();
    expect_vmm(&["--kernel", path_str(&no64p)], VMM_ERROR, &["no 64-bit entry point"]);
    expect_vmm(
        &["--kernel", path_str(&dir.join("bzImage")), "--memory", "4G"],
        VMM_ERROR,
        &["too large for Linux mode"],
    );
    // A bzImage given to process mode (with a PROGRAM) says where it belongs.
    expect_vmm(
        &["--kernel", path_str(&dir.join("bzImage")), "--", "/bin/true"],
        VMM_ERROR,
        &["a Linux bzImage, not a dmvx guest kernel", "without a PROGRAM"],
    );
    expect_vmm(&["--initrd", "/etc/passwd", "--", "/bin/true"], 2, &["--initrd is a Linux-mode option"]);
}

#[test]
fn bad_inputs_that_need_a_vm_are_refused_with_reasons() {
    require_kvm!();
    let dir = linux_images();
    let d = TempDir::new("linux-bad-vm");
    // 100 MiB of initrd cannot fit above the bzImage's 16 MiB + init_size
    // in 128 MiB of guest memory.
    let big = d.join("big-initrd");
    std::fs::File::create(&big).unwrap().set_len(100 << 20).unwrap();
    expect_vmm(
        &["--kernel", path_str(&dir.join("bzImage")), "--initrd", path_str(&big), "--memory", "128M"],
        VMM_ERROR,
        &["big-initrd", "(104857600 bytes) does not fit", "use --memory"],
    );
    expect_vmm(
        &["--kernel", path_str(&dir.join("bzImage")), "--memory", "32M"],
        VMM_ERROR,
        &["needs guest memory up to", "--memory is 32 MiB"],
    );
    let long = "x".repeat(3000);
    expect_vmm(
        &["--kernel", path_str(&dir.join("bzImage")), "--cmdline", &long],
        VMM_ERROR,
        &["command line is 3000 bytes", "at most 2047"],
    );
}

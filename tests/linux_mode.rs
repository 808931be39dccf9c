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

/// A cluster file for two Linux-mode variants on loopback.
fn linux_cluster(dir: &std::path::Path) -> PathBuf {
    ClusterKeys::new(dir, 2).local_cluster(dir, "linux", 5000, "")
}

#[test]
fn variants_of_a_kernel_agree_on_their_console() {
    require_kvm!();
    let stub = pvh_stub();
    let d = TempDir::new("linux-mvx");
    for (cmdline, code) in [("poweroff", POWER_OFF), ("reset", RESET), ("triple-fault", TRIPLE_FAULT)] {
        let o = run_vmm(
            &["--variants", "2", "--report-dir", d.path().to_str().unwrap(), "--kernel", path_str(&stub)]
                .into_iter()
                .chain(["--cmdline", cmdline])
                .collect::<Vec<_>>(),
            b"",
        );
        assert_eq!(status(&o), code, "{cmdline}: {}", stderr(&o));
        // The leader's console, once; the follower's was compared, not shown.
        assert_eq!(stdout(&o), format!("dmvx-pvh-stub: {cmdline}\n"), "{cmdline}: {}", stderr(&o));
        assert!(!stderr(&o).contains("diverged"), "{cmdline}: {}", stderr(&o));
    }
    assert!(std::fs::read_dir(d.path()).unwrap().next().is_none(), "a divergence report was written");
}

#[test]
fn a_variant_booted_with_another_command_line_diverges() {
    require_kvm!();
    let stub = pvh_stub();
    let d = TempDir::new("linux-mvx-diverge");
    let file = linux_cluster(d.path());
    let start = |id: &str, cmdline: &str| {
        std::process::Command::new(vmm())
            .args(["--cluster", file.to_str().unwrap(), "--variant", id, "--report-dir"])
            .arg(d.path())
            .args(["--kernel", path_str(&stub), "--cmdline", cmdline, "--timeout", "20"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The follower's guest hangs after printing its command line: the
    // difference must stop it (not the --timeout).
    let follower = start("1", "hang");
    let leader = start("0", "poweroff");
    let t = Instant::now();
    let (lo, fo) = (leader.wait_with_output().unwrap(), follower.wait_with_output().unwrap());
    let (lerr, ferr) = (String::from_utf8_lossy(&lo.stderr), String::from_utf8_lossy(&fo.stderr));
    assert_eq!(fo.status.code(), Some(121), "follower: {ferr}");
    assert_eq!(lo.status.code(), Some(121), "leader: {lerr}");
    assert!(t.elapsed() < Duration::from_secs(15), "the hanging variant was not stopped by the divergence");
    assert!(fo.stdout.is_empty(), "a follower's console reached stdout");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("dmvx-divergence-variant1.json")).unwrap()).unwrap();
    let msg = report["message"].as_str().unwrap();
    // "dmvx-pvh-stub: " is 15 bytes: the command lines differ right after.
    assert!(msg.contains("at byte 15"), "{report:#}");
    assert!(msg.contains("poweroff") && msg.contains("hang"), "{report:#}");
    assert_eq!(report["variant"], 1);
    assert_eq!(report["leader"]["event"], "serial");
    assert!(d.join("dmvx-divergence-variant0.json").exists(), "the leader wrote no report: {lerr}");
}

/// The default command line of Linux mode (`dmvx-vmm --help`).
fn default_cmdline() -> String {
    let o = run_vmm(&["--help"], b"");
    let help = stdout(&o);
    let start = help.find("without --cmdline (default:").expect("--cmdline default in --help");
    let rest = &help[start..];
    let q = rest.find('"').unwrap() + 1;
    rest[q..q + rest[q..].find('"').unwrap()].to_string()
}

#[test]
fn debian_kernel_in_two_variants_agrees_and_another_command_line_diverges() {
    require_kvm!();
    let dir = linux_images();
    let (kernel, initrd) = (dir.join("vmlinux"), dir.join("initramfs.cpio.gz"));
    let limit = BOOT_LIMIT_SECS.to_string();
    let d = TempDir::new("linux-mvx-debian");
    let base = ["--kernel", path_str(&kernel), "--initrd", path_str(&initrd), "--timeout", &limit];
    // Two variants of the same boot: their consoles agree to the end,
    // whichever end this host's KVM allows.
    let t = Instant::now();
    let mut args = vec!["--variants", "2", "--report-dir", d.path().to_str().unwrap()];
    args.extend(base);
    let o = run_vmm(&args, b"");
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        [POWER_OFF, KVM_STOPPED].contains(&status(&o)),
        "status {}: {err}\n--- console tail:\n{}",
        status(&o),
        &out[out.len().saturating_sub(2000)..]
    );
    assert_eq!(out.matches("Linux version 6.").count(), 1, "the leader's console, once: {err}");
    assert!(out.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"), "{err}");
    assert!(std::fs::read_dir(d.path()).unwrap().next().is_none(), "a divergence report was written: {err}");
    shout(&format!(
        "Debian's kernel in 2 variants: consoles agreed over {} bytes to status {} in {:.1}s",
        out.len(),
        status(&o),
        t.elapsed().as_secs_f64()
    ));
    // One variant booted with another command line: stopped at the line
    // where the kernel prints it.
    let file = linux_cluster(d.path());
    let other = format!("{} dmvx.variant=1", default_cmdline());
    let spawn = |id: &str, extra: &[&str]| {
        std::process::Command::new(vmm())
            .args(["--cluster", file.to_str().unwrap(), "--variant", id, "--report-dir"])
            .arg(d.path())
            .args(base)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let follower = spawn("1", &["--cmdline", &other]);
    let leader = spawn("0", &[]);
    let (lo, fo) = (leader.wait_with_output().unwrap(), follower.wait_with_output().unwrap());
    let ferr = String::from_utf8_lossy(&fo.stderr).into_owned();
    assert_eq!(fo.status.code(), Some(121), "{ferr}");
    assert_eq!(lo.status.code(), Some(121), "{}", String::from_utf8_lossy(&lo.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("dmvx-divergence-variant1.json")).unwrap()).unwrap();
    let msg = report["message"].as_str().unwrap();
    assert!(msg.contains("Command line:") && msg.contains("no-kvmclock dmvx.variant=1"), "{report:#}");
}

//! Bad input gets a clear error and a distinct exit status.

use std::path::Path;

use dmvx::*;

fn patched(d: &TempDir, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut b = std::fs::read(busybox()).unwrap();
    f(&mut b);
    let p = d.join(name);
    std::fs::write(&p, b).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

fn expect(args: &[&str], code: i32, needle: &str) {
    expect_vmm(args, code, &[needle]);
}

#[test]
fn missing_dev_kvm_says_how_to_fix_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/unshare").exists() {
        shout("SKIPPED missing_dev_kvm_says_how_to_fix_it: needs root and unshare to hide /dev/kvm");
        return;
    }
    let vmm = vmm();
    let script = format!("mount -t tmpfs tmpfs /dev && exec {} -- /bin/busybox true", vmm.display());
    let o = run("/usr/bin/unshare", &["--mount", "--propagation", "private", "/bin/sh", "-c", &script], b"");
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("/dev/kvm does not exist") && stderr(&o).contains("kvm_intel"), "{}", stderr(&o));
}

#[test]
fn dev_kvm_without_permission_says_how_to_fix_it() {
    let meta = std::fs::metadata("/dev/kvm");
    let world =
        meta.as_ref().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o006 != 0).unwrap_or(true);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || world || !Path::new("/usr/bin/setpriv").exists() {
        shout("SKIPPED dev_kvm_without_permission_says_how_to_fix_it: needs root, setpriv, and a /dev/kvm others cannot open");
        return;
    }
    // Run as nobody from a copy nobody can execute.
    let d = TempDir::new("perm");
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copy = d.join("dmvx-vmm");
    install_exe(&vmm(), &copy);
    let o = run(
        "/usr/bin/setpriv",
        &["--reuid=65534", "--regid=65534", "--clear-groups", copy.to_str().unwrap(), "--", "/bin/busybox", "true"],
        b"",
    );
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("permission denied opening /dev/kvm") && stderr(&o).contains("kvm"), "{}", stderr(&o));
}

#[test]
fn bad_kernel_images_are_refused_with_reasons() {
    require_kvm!();
    let d = TempDir::new("kernels");
    expect(&["--kernel", "/nonexistent/kernel", "--", "/bin/busybox", "true"], 125, "cannot read it");
    expect(&["--kernel", "/etc/passwd", "--", "/bin/busybox", "true"], 125, "not an ELF file");
    expect(&["--kernel", busybox(), "--", "/bin/busybox", "true"], 125, "not a dmvx guest kernel");
    let arm = patched(&d, "arm", |b| b[18] = 183);
    expect(&["--kernel", &arm, "--", "/bin/busybox", "true"], 125, "built for AArch64, not x86-64");
    let short = patched(&d, "short", |b| b.truncate(40));
    expect(&["--kernel", &short, "--", "/bin/busybox", "true"], 125, "truncated");
    let cut = patched(&d, "cut", |b| b.truncate(100_000));
    expect(&["--kernel", &cut, "--", "/bin/busybox", "true"], 125, "truncated");
}

#[test]
fn bad_programs_are_refused_with_reasons() {
    require_kvm!();
    let d = TempDir::new("programs");
    expect(&["--", "/nonexistent/program"], 127, "not found");
    let text = d.join("text");
    std::fs::write(&text, "just some text\n").unwrap();
    std::fs::set_permissions(&text, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    expect(&["--", text.to_str().unwrap()], 126, "not an ELF file");
    let arm = patched(&d, "arm", |b| b[18] = 183);
    expect(&["--", &arm], 126, "built for AArch64, not x86-64");
    let i386 = patched(&d, "i386", |b| b[4] = 1);
    expect(&["--", &i386], 126, "32-bit");
    let cut = patched(&d, "cut", |b| b.truncate(5000));
    expect(&["--", &cut], 126, "truncated");
    let noexec = d.join("noexec");
    std::fs::copy(busybox(), &noexec).unwrap();
    std::fs::set_permissions(&noexec, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    expect(&["--", noexec.to_str().unwrap()], 126, "permission denied");
    expect(&["--", "/etc"], 126, "is a directory");
}

#[test]
fn guest_memory_too_small_is_an_error() {
    require_kvm!();
    expect(&["--memory", "4M", "--", "/bin/busybox", "true"], 125, "too small");
    let big = build_c("tests/programs/bigdata.c", &["-static"]);
    expect(&["--memory", "8M", "--", big.to_str().unwrap()], 125, "guest memory is too small to load it");
    // And with enough memory the same program runs.
    let o = run_vmm(&["--memory", "64M", "--", big.to_str().unwrap()], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
}

#[test]
fn help_and_version_exit_0_with_examples() {
    let o = run_vmm(&["--help"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    for needle in
        ["Usage: dmvx-vmm", "Examples:", "dmvx-vmm --variants 2 --", "Exit status, process mode", "--cluster <FILE>"]
    {
        assert!(stdout(&o).contains(needle), "--help lacks {needle:?}:\n{}", stdout(&o));
    }
    let o = run_vmm(&["-V"], b"");
    assert_eq!((status(&o), stdout(&o)), (0, format!("dmvx-vmm {}\n", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn usage_errors_exit_2() {
    expect(&["--memory", "lots", "--", "/bin/true"], 2, "invalid size");
    expect(&["--no-such-option"], 2, "unexpected argument '--no-such-option'");
    expect(&["--variants", "17", "--", "/bin/true"], 2, "--variants must be 1-16");
    // Usage errors are clap's: the message, the usage line, a pointer to --help.
    let o = run_vmm(&["--stats", "--bogus", "--", "/bin/true"], b"");
    assert_eq!(status(&o), 2);
    assert!(stderr(&o).starts_with("error: ") && stderr(&o).contains("Usage: dmvx-vmm"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    expect(&[], 2, "no program given");
}

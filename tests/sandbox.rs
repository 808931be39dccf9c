//! The sandbox: a writable root when asked, a read-only one by default, no
//! way out of the root, and hostile pointers that get EFAULT while the VMM
//! stays up.

use dmvx::*;

fn memtest() -> std::path::PathBuf {
    build_c("tests/programs/memtest.c", &["-static"])
}

/// A writable root with /bin/memtest and /data, writable by the jail's uid.
fn memtest_root(name: &str) -> TempDir {
    let root = TempDir::new(name);
    install_exe(&memtest(), &root.join("bin/memtest"));
    std::fs::create_dir_all(root.join("data")).unwrap();
    chown_for_jail(&root.join("data"));
    root
}

#[test]
fn file_write_in_a_writable_rootfs() {
    require_kvm!();
    let root = memtest_root("rw-root");
    let o = run_vmm(&["--rootfs", root.path().to_str().unwrap(), "--", "/bin/memtest", "file", "/data"], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(std::fs::read_to_string(root.join("data/memtest.out")).unwrap(), "written inside dmvx\n");
}

/// Writable MAP_SHARED file mappings: written back at msync, munmap and the
/// program's end in one variant; in two, where the file is the leader's and
/// writes through the mapping would be outputs no call shows, refused alike
/// in every variant.
#[test]
fn shared_file_mappings_are_written_back() {
    require_kvm!();
    let root = memtest_root("shared-map");
    let r = root.path().to_str().unwrap();
    let o = run_vmm(&["--rootfs", r, "--", "/bin/memtest", "shared", "/data"], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok shared"), "{}", stdout(&o));
    let o = run_vmm(&["--rootfs", r, "--", "/bin/memtest", "shared-exit", "/data"], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let data = std::fs::read(root.join("data/shared.bin")).unwrap();
    assert_eq!(data.len(), 8192 + 100);
    assert_eq!(&data[..5], b"msync");
    assert_eq!(&data[4096..4100], b"exit", "the program's end wrote the page back");
    assert_eq!(&data[8192 + 90..8192 + 94], b"tail");
    let o = run_vmm(&["--variants", "2", "--rootfs", r, "--", "/bin/memtest", "shared", "/data"], b"");
    assert_eq!(status(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("shared writable mapping: No such device"), "{}", stdout(&o));
    assert!(stderr(&o).contains("refusing a writable shared file mapping"), "{}", stderr(&o));
}

#[test]
fn default_root_is_read_only() {
    require_kvm!();
    let target = std::env::temp_dir().join(format!("dmvx-ro-{}", std::process::id()));
    let t = target.to_str().unwrap();
    let o = run_vmm(&["--", busybox(), "sh", "-c", &format!("echo x > {t}")], b"");
    assert_ne!(status(&o), 0);
    assert!(stderr(&o).contains("Read-only file system"), "{}", stderr(&o));
    assert!(!target.exists(), "the write reached the host");
    let o = run_vmm(&["--", busybox(), "mkdir", t], b"");
    assert_ne!(status(&o), 0);
    assert!(!target.exists(), "mkdir reached the host");
    let o = run_vmm(&["--", busybox(), "rm", "/etc/hostname"], b"");
    assert_ne!(status(&o), 0);
    assert!(std::path::Path::new("/etc/hostname").exists());
    // Writing to /dev/null is fine even so.
    let o = run_vmm(&["--", busybox(), "sh", "-c", "echo x > /dev/null && echo fine"], b"");
    assert_eq!(stdout(&o), "fine\n", "{}", stderr(&o));
}

#[test]
fn symlink_and_dotdot_escapes_are_refused() {
    require_kvm!();
    let d = TempDir::new("escape");
    let root = d.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(d.join("secret"), b"TOPSECRET\n").unwrap();
    let secret = d.join("secret");
    std::os::unix::fs::symlink(&secret, root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("link-rel")).unwrap();
    install_exe(&memtest(), &root.join("bin/memtest"));
    let o =
        run_vmm(&["--rootfs", root.to_str().unwrap(), "--", "/bin/memtest", "escape", secret.to_str().unwrap()], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok escape"));
    // The same paths with busybox cat, for good measure.
    install_exe(std::path::Path::new(busybox()), &root.join("bin/busybox"));
    for p in ["../secret", "/../secret", "link-abs", "link-rel", "sub/../../secret", "/proc/self/root/secret"] {
        let o = run_vmm(&["--rootfs", root.to_str().unwrap(), "--", "/bin/busybox", "cat", p], b"");
        assert!(!stdout(&o).contains("TOPSECRET"), "escaped through {p}");
        assert_ne!(status(&o), 0, "cat {p} succeeded");
    }
}

#[test]
fn hostile_pointers_and_lengths_get_efault() {
    require_kvm!();
    let o = run_vmm(&["--", memtest().to_str().unwrap(), "hostile"], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok hostile"));
}

#[test]
fn the_kernel_half_and_ports_are_out_of_reach() {
    require_kvm!();
    let m = memtest();
    let o = run_vmm(&["--", m.to_str().unwrap(), "kernel-read"], b"");
    assert_eq!(status(&o), 139, "{}", stderr(&o));
    let o = run_vmm(&["--", m.to_str().unwrap(), "port-io"], b"");
    assert_eq!(status(&o), 139, "{}", stderr(&o));
    assert!(stderr(&o).contains("port I/O"), "{}", stderr(&o));
}

#[test]
fn unsupported_calls_are_logged_once_by_name() {
    require_kvm!();
    // ionice needs ioprio_set, which dmvx does not have; the two processes
    // that try it say so once in all.
    let o = run_vmm(&["--", busybox(), "sh", "-c", "busybox ionice -c 3 true; busybox ionice -c 3 true"], b"");
    let e = stderr(&o);
    let lines: Vec<_> = e.lines().filter(|l| l.contains("unsupported system call")).collect();
    assert!(!lines.is_empty(), "{e}");
    let mut names: Vec<_> = lines.iter().map(|l| l.split_whitespace().nth(4).unwrap_or("")).collect();
    let n = names.len();
    names.dedup();
    assert_eq!(n, names.len(), "logged more than once: {e}");
}

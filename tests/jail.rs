//! The VMM's jail (issue 10, part 1): a running VMM is unprivileged, has no
//! capabilities, no_new_privs and a seccomp filter on every thread, reaches
//! only its root; a host call outside its filter ends it with a message;
//! hostile guest programs (tests/programs/hostile.c) find the host's
//! privileged files, root-only sockets, setuid bits, ownership and device
//! nodes out of reach, and the host unchanged.

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dmvx::*;

fn hostile() -> PathBuf {
    build_c("tests/programs/hostile.c", &["-static"])
}

/// The fields of /proc/PID/status (or a task's), by name.
fn status_fields(path: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect())
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    f.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

/// Waits until process `pid` has entered its jail (Seccomp 2), or is gone.
fn wait_jailed(pid: u32) -> bool {
    for _ in 0..600 {
        match status_fields(Path::new(&format!("/proc/{pid}/status"))) {
            None => return false,
            Some(f) if field(&f, "Seccomp") == "2" => return true,
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    false
}

/// Asserts that every thread of `pid` is confined; returns how many threads.
fn assert_confined(pid: u32) -> usize {
    let id = format!("{JAIL_ID}\t{JAIL_ID}\t{JAIL_ID}\t{JAIL_ID}");
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Some(f) = status_fields(&t.path().join("status")) else { continue };
        let name = format!("process {pid} thread {} ({})", t.file_name().to_string_lossy(), field(&f, "Name"));
        assert_eq!(field(&f, "Uid"), id, "{name}: Uid");
        assert_eq!(field(&f, "Gid"), id, "{name}: Gid");
        assert_eq!(field(&f, "Groups"), "", "{name}: supplementary groups");
        assert_eq!(field(&f, "NoNewPrivs"), "1", "{name}: NoNewPrivs");
        assert_eq!(field(&f, "Seccomp"), "2", "{name}: Seccomp");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(&f, cap), "0000000000000000", "{name}: {cap}");
        }
        threads += 1;
    }
    // Its root holds the program's root directory and its own /proc, nothing else.
    let mut entries: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["proc", "root"], "process {pid}: its file tree");
    threads
}

/// The processes whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.split(' ').nth(1) == Some(&ppid.to_string())))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_running_vmm_is_unprivileged_filtered_and_reaches_only_its_root() {
    require_kvm!();
    require_root!();
    let prog = hostile();
    let child = Command::new(vmm())
        .args(["--", prog.to_str().unwrap(), "sleep", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_jailed(child.id()), "the VMM never showed Seccomp 2");
    assert!(assert_confined(child.id()) >= 1);
    let o = child.wait_with_output().unwrap();
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "slept\n");

    // Two variants: each VMM and its link's I/O threads.
    let launcher = Command::new(vmm())
        .args(["--variants", "2", "--", prog.to_str().unwrap(), "sleep", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vmms = Vec::new();
    for _ in 0..600 {
        vmms = children_of(launcher.id());
        if vmms.len() == 2 && vmms.iter().all(|&p| wait_jailed(p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(vmms.len(), 2, "the launcher's variants: {vmms:?}");
    for &p in &vmms {
        // The vCPU thread and at least one link I/O thread (which may start
        // just after the first filter is in).
        for _ in 0..100 {
            if std::fs::read_dir(format!("/proc/{p}/task")).map_or(0, |d| d.count()) >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(assert_confined(p) >= 2, "variant process {p} has no link thread");
    }
    let o = launcher.wait_with_output().unwrap();
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "slept\n");
}

#[test]
fn a_host_call_outside_the_filter_ends_the_vmm_naming_it() {
    require_kvm!();
    require_root!();
    let o = run_vmm(&["--jail-selftest", "--", "/bin/true"], b"");
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the seccomp filter of the vmm thread refused host system call ptrace (101) at ip 0x"),
        "{err}"
    );
    assert!(err.contains("; the VMM stops"), "{err}");
    // Without the jail the same call is not refused, and the VMM says so.
    let o = run_vmm(&["--no-jail", "--jail-selftest", "--", "/bin/true"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("jail: off"), "{}", stderr(&o));
}

#[test]
fn host_root_authority_needs_a_named_opt_out() {
    require_kvm!();
    require_root!();
    let o = run_vmm(&["--uid", "0", "--gid", "0", "--", "/bin/true"], b"");
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-missing identity"), "{}", stderr(&o));
    let o = run_vmm(&["--uid", "0", "--gid", "0", "--allow-missing", "identity", "--", "/bin/true"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    expect_vmm(&["--allow-missing", "walls", "--", "/bin/true"], 2, &["no jail layer \"walls\""]);
}

#[test]
fn the_default_root_does_not_give_the_shadow_file() {
    require_kvm!();
    require_root!();
    let before = std::fs::metadata("/etc/shadow").ok();
    let o = run_vmm(&["--", hostile().to_str().unwrap(), "shadow"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "open /etc/shadow errno 13 (Permission denied)\n", "{}", stderr(&o));
    let after = std::fs::metadata("/etc/shadow").ok();
    assert_eq!(before.map(|m| (m.mode(), m.uid(), m.len())), after.map(|m| (m.mode(), m.uid(), m.len())));
}

/// SO_PEERCRED's uid of a connected unix stream.
fn peer_uid(s: &std::os::unix::net::UnixStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: ucred is plain data; zeroes are a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out-parameters of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "SO_PEERCRED: {}", std::io::Error::last_os_error());
    cred.uid
}

#[test]
fn a_root_only_unix_socket_gets_no_connection_and_no_server_sees_root() {
    require_kvm!();
    require_root!();
    let d = TempDir::new("jail-unix");
    let private = d.join("root-only.sock");
    let public = d.join("public.sock");
    let lp = UnixListener::bind(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lq = UnixListener::bind(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o666)).unwrap();
    lp.set_nonblocking(true).unwrap();

    let o = run_vmm(&["--", hostile().to_str().unwrap(), "unix", private.to_str().unwrap()], b"");
    assert!(stdout(&o).contains("connect errno 13 (Permission denied)"), "{}{}", stdout(&o), stderr(&o));
    match lp.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the root-only socket: {other:?}"),
    }

    let o = run_vmm(&["--", hostile().to_str().unwrap(), "unix", public.to_str().unwrap()], b"");
    assert!(stdout(&o).contains("connect ok"), "{}{}", stdout(&o), stderr(&o));
    let (s, _) = lq.accept().unwrap();
    assert_eq!(peer_uid(&s), JAIL_ID, "the server saw the guest as host uid {}", peer_uid(&s));
}

#[test]
fn setuid_files_and_chown_in_a_writable_root_never_reach_the_host() {
    require_kvm!();
    require_root!();
    let root = TempDir::new("jail-setuid");
    install_exe(&hostile(), &root.join("bin/hostile"));
    let victim = root.join("victim");
    std::fs::write(&victim, b"the host's file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run_vmm(&["--rootfs", root.path().to_str().unwrap(), "--", "/bin/hostile", "setuid", "/", "/victim"], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("create 04755 ok"), "the guest may create files in its writable root:\n{out}");
    let m = std::fs::symlink_metadata(root.join("suid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (JAIL_ID, JAIL_ID), "owner of the guest's file on the host:\n{out}");
    assert!(
        m.mode() & 0o6000 == 0 || m.uid() != 0,
        "a setuid-root file reached the host: mode {:o} uid {}\n{out}",
        m.mode(),
        m.uid()
    );
    let v = std::fs::symlink_metadata(&victim).unwrap();
    assert_eq!((v.mode() & 0o7777, v.uid(), v.gid()), (0o644, 0, 0), "the host's file changed:\n{out}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"the host's file\n", "the host's file changed:\n{out}");
}

#[test]
fn device_nodes_are_refused_before_any_host_open() {
    require_kvm!();
    require_root!();
    let o = run_vmm(&["--", hostile().to_str().unwrap(), "devices"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for dev in ["/dev/kmsg", "/dev/kvm"] {
        assert!(out.contains(&format!("open {dev} errno 13")), "{dev}:\n{out}");
    }
    assert!(out.contains("open /dev/null ok"), "{out}");

    // Device nodes that a writable root holds: refused too, the harmless
    // ones are the VMM's own (the jail's mounts are nodev).
    let root = TempDir::new("jail-devices");
    install_exe(&hostile(), &root.join("bin/hostile"));
    std::fs::create_dir_all(root.join("dev")).unwrap();
    for (name, major, minor) in [("kmsg", 1, 11), ("kvm", 10, 232), ("null", 1, 3), ("sda", 8, 0)] {
        let p = std::ffi::CString::new(root.join(&format!("dev/{name}")).to_str().unwrap()).unwrap();
        let kind = if name == "sda" { libc::S_IFBLK } else { libc::S_IFCHR };
        // SAFETY: p is a valid path.
        assert_eq!(unsafe { libc::mknod(p.as_ptr(), kind | 0o666, libc::makedev(major, minor)) }, 0);
    }
    let args = ["--rootfs", root.path().to_str().unwrap(), "--", "/bin/hostile", "devices", "/dev/sda"];
    let o = run_vmm(&args, b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for dev in ["/dev/kmsg", "/dev/kvm", "/dev/sda"] {
        assert!(out.contains(&format!("open {dev} errno 13")), "{dev}:\n{out}");
    }
    assert!(out.contains("open /dev/null ok"), "{out}");
}

#[test]
fn mincore_over_a_huge_reservation_does_not_grow_the_vmm() {
    require_kvm!();
    use std::io::BufRead;
    let mut child = Command::new(vmm())
        .args(["--", hostile().to_str().unwrap(), "mincore"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    while !lines.contains("mincore") {
        if out.read_line(&mut lines).unwrap() == 0 {
            break;
        }
    }
    // The guest sleeps now: the VMM's peak resident size is what the call cost.
    let hwm = status_fields(Path::new(&format!("/proc/{}/status", child.id())))
        .map(|f| field(&f, "VmHWM").trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))
        .unwrap_or(0);
    let _ = child.wait();
    assert!(lines.contains("mmap ok"), "{lines}");
    let gib: u64 = lines
        .lines()
        .find_map(|l| l.strip_prefix("reserved ")?.strip_suffix(" GiB")?.parse().ok())
        .unwrap_or_else(|| panic!("{lines}"));
    assert!(gib >= 64, "only {gib} GiB reserved:\n{lines}");
    assert!(lines.contains("mincore errno 14"), "a one-page vector for {gib} GiB: EFAULT\n{lines}");
    // One byte per page was what the call used to allocate.
    let vector_kb = gib << 30 >> 12 >> 10;
    assert!(hwm > 0, "no VmHWM for the VMM");
    assert!(hwm < vector_kb / 8, "the VMM grew to {hwm} kB for one mincore over {gib} GiB");
}

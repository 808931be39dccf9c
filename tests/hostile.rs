//! Hostile guest programs against the host: set-id files, host owners and
//! device nodes; the host files behind inherited descriptors; connections
//! to host services; and, in a cluster, metadata changes and locks that one
//! variant makes alone. Each test checks the host afterwards (modes, owners,
//! contents, links, connections), not only what the program was told.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dmvx::*;

fn program(name: &str) -> std::path::PathBuf {
    build_c(&format!("tests/programs/{name}.c"), &["-static"])
}

/// A writable root with the program at /bin/NAME and an empty /d.
fn root_with(name: &str) -> TempDir {
    let root = TempDir::new(&format!("hostile-{name}"));
    install_exe(&program(name), &root.join(&format!("bin/{name}")));
    std::fs::create_dir_all(root.join("d")).unwrap();
    // The VMM writes as its jail identity, as an operator gives it a writable root.
    chown_for_jail(root.path());
    root
}

/// The program's "key=value" lines.
fn results(out: &str) -> std::collections::HashMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn me() -> (u32, u32) {
    // SAFETY: getuid and getgid have no preconditions.
    unsafe { (libc::getuid(), libc::getgid()) }
}

#[test]
fn set_id_bits_owners_and_devices_never_reach_the_host() {
    require_kvm!();
    let root = root_with("hostile_ids");
    let o = run_vmm(&["--rootfs", root.path().to_str().unwrap(), "--", "/bin/hostile_ids", "files", "/d"], b"");
    let out = stdout(&o);
    assert_eq!(status(&o), 0, "{out}{}", stderr(&o));
    let r = results(&out);
    // The program sees what it set (the ids it started with are the VMM's).
    let (uid, gid) = me();
    for (what, want) in [
        ("stat created-suid", format!("4755 {uid}:{gid}")),
        ("stat fchmod-suid", format!("4777 {uid}:{gid}")),
        ("stat fchmodat-suid", format!("2755 {uid}:{gid}")),
        ("stat chowned", "644 1234:1234".to_string()),
        ("stat fchowned", "644 77:77".to_string()),
        // No overlay on a FIFO: the host's owner, the VMM's jail identity,
        // which is shown as the program's root (who made it).
        ("stat fifo", format!("666 {uid}:{gid}")),
    ] {
        assert_eq!(r.get(what), Some(&want), "{what}: {out}");
    }
    // chown of a set-user-id file clears the bit, as Linux does.
    assert_eq!(r.get("stat chmod-suid").map(String::as_str), Some("755 5:5"), "{out}");
    for call in ["mknod char 1:1", "mknod block 8:0"] {
        assert_eq!(r.get(call).map(String::as_str), Some("Operation not permitted"), "{call}: {out}");
    }
    // The host: no set-id bit, no owner but the VMM's (that of a file it
    // made and nobody chowned), no device node.
    let control = std::fs::metadata(root.join("d/fifo")).unwrap();
    for e in std::fs::read_dir(root.join("d")).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(m.mode() & 0o6000, 0, "{name} has set-id bits on the host: {:o}", m.mode());
        assert_eq!((m.uid(), m.gid()), (control.uid(), control.gid()), "{name} changed owner on the host");
        let kind = m.mode() & libc::S_IFMT;
        assert!(kind != libc::S_IFCHR && kind != libc::S_IFBLK, "{name} is a device node on the host");
    }
    assert!(!root.join("d/mem").exists() && !root.join("d/disk").exists());
}

#[test]
fn a_program_that_drops_privileges_sees_its_virtual_ids() {
    require_kvm!();
    let root = root_with("hostile_ids");
    let o = run_vmm(&["--rootfs", root.path().to_str().unwrap(), "--", "/bin/hostile_ids", "drop", "/d"], b"");
    let out = stdout(&o);
    if out.contains("not root inside") {
        shout("SKIPPED a_program_that_drops_privileges_sees_its_virtual_ids: the program is not root inside");
        return;
    }
    assert_eq!(status(&o), 0, "{out}{}", stderr(&o));
    let r = results(&out);
    let want = [
        ("caps before", "ffffffff"),
        ("caps after", "0"),
        ("capset CAP_CHOWN back", "Operation not permitted"),
        ("setgroups", "ok"),
        ("setgid 65534", "ok"),
        ("setuid 65534", "ok"),
        ("resuid", "65534,65534,65534 gid=65534"),
        ("setuid 0 again", "Operation not permitted"),
        ("setresuid 0", "Operation not permitted"),
        ("setgroups again", "Operation not permitted"),
        // A file it created as nobody is its own to give away...
        ("chown own file to nobody", "ok"),
        // ... but not back to root.
        ("chown as nobody", "Operation not permitted"),
        ("stat mine", "644 65534:65534"),
    ];
    for (k, v) in want {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k}: {out}");
    }
    // On the host it belongs to the VMM, as the file made before the drop.
    let m = std::fs::metadata(root.join("d/mine")).unwrap();
    let control = std::fs::metadata(root.join("d/control")).unwrap();
    assert_eq!((m.uid(), m.gid()), (control.uid(), control.gid()), "the host owner changed");
}

/// Runs hostile_fds with stdin a host file outside the root and stdout a
/// host file (opened for appending, holding "before\n"): the attacks'
/// results, then the host files' state. In a writable root, or under the
/// default root (the host's /, read-only).
fn attack_descriptors(default_root: bool) -> (String, std::fs::Metadata, String, TempDir) {
    let outside = TempDir::new("hostile-outside");
    let victim = outside.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out_path = outside.join("stdout");
    std::fs::write(&out_path, b"before\n").unwrap();
    let root = root_with("hostile_fds");
    let mut args: Vec<&str> = Vec::new();
    let root_arg = root.path().to_str().unwrap().to_string();
    let prog = program("hostile_fds");
    let prog_arg = prog.to_str().unwrap().to_string();
    if default_root {
        args.extend(["--", &prog_arg, "attack", "/tmp"]);
    } else {
        args.extend(["--rootfs", &root_arg, "--", "/bin/hostile_fds", "attack", "/d"]);
    }
    let stdin = std::fs::File::open(&victim).unwrap();
    let stdout = std::fs::OpenOptions::new().append(true).open(&out_path).unwrap();
    let o = Command::new(vmm())
        .args(&args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .output()
        .expect("run dmvx-vmm");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(!root.join("d/stolen").exists(), "a host file outside the root was linked into it");
    let text = std::fs::read_to_string(&out_path).unwrap();
    let meta = std::fs::metadata(&victim).unwrap();
    let content = std::fs::read_to_string(&victim).unwrap();
    assert_eq!(meta.nlink(), 1, "the host file got another link");
    (text, meta, content, outside)
}

fn assert_descriptors_held(text: &str, meta: &std::fs::Metadata, content: &str) {
    assert!(text.starts_with("before\n"), "stdout's host file was truncated: {text}");
    assert!(text.contains("fstat stdin=ok"), "{text}");
    let refused: Vec<&str> = text.lines().filter(|l| l.starts_with("fd") && !l.ends_with("=ok")).collect();
    let allowed: Vec<&str> = text.lines().filter(|l| l.starts_with("fd") && l.ends_with("=ok")).collect();
    assert!(allowed.is_empty(), "calls that worked on host files outside the root: {allowed:?}");
    assert_eq!(refused.len(), 20, "{text}");
    assert_eq!(meta.mode() & 0o7777, 0o600, "the host file's mode changed");
    assert_eq!((meta.uid(), meta.gid()), me(), "the host file's owner changed");
    assert_eq!(content, "precious\n", "the host file's contents changed");
}

#[test]
fn inherited_descriptors_can_do_what_a_pipe_end_can() {
    require_kvm!();
    let (text, meta, content, _d) = attack_descriptors(false);
    assert_descriptors_held(&text, &meta, &content);
    // What Linux says of a pipe.
    for (k, v) in [
        ("fd0 fchmod", "Operation not permitted"),
        ("fd0 ftruncate", "Invalid argument"),
        ("fd0 linkat", "No such file or directory"),
        ("fd1 tcsetattr", "Operation not permitted"),
    ] {
        assert_eq!(results(&text).get(k).map(String::as_str), Some(v), "{k}: {text}");
    }
}

#[test]
fn inherited_descriptors_under_the_read_only_default_root() {
    require_kvm!();
    let (text, meta, content, _d) = attack_descriptors(true);
    assert_descriptors_held(&text, &meta, &content);
}

/// Runs `hostile_net ARGS` with `net` options against a host listener;
/// returns the program's output and whether a connection arrived.
fn connect_out(net: &[&str], mode: &str) -> (String, bool) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let prog = program("hostile_net");
    let mut args: Vec<&str> = net.to_vec();
    args.extend(["--", prog.to_str().unwrap(), mode, "127.0.0.1", &port]);
    let o = run_vmm(&args, b"");
    l.set_nonblocking(true).unwrap();
    // The program has ended: a connection it made is queued by now.
    let arrived = l.accept().is_ok();
    (stdout(&o) + &stderr(&o), arrived)
}

#[test]
fn outgoing_connections_follow_the_network_policy() {
    require_kvm!();
    let (out, arrived) = connect_out(&[], "connect");
    assert!(!arrived, "the default policy let a connection reach a host service: {out}");
    assert!(out.contains("connect: Permission denied"), "{out}");
    assert!(out.contains("--net serve"), "the refusal is logged: {out}");
    let (out, arrived) = connect_out(&["--net", "allow=127.0.0.1:1"], "connect");
    assert!(!arrived, "a destination outside the allow-list was reached: {out}");
    let (out, arrived) = connect_out(&["--net", "none"], "connect");
    assert!(!arrived, "{out}");
    // Opted in, it connects.
    let (out, arrived) = connect_out(&["--net", "loopback"], "connect");
    assert!(arrived && out.contains("connected"), "{out}");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let allow = format!("allow=127.0.0.1:{port}");
    let prog = program("hostile_net");
    let o = run_vmm(&["--net", &allow, "--", prog.to_str().unwrap(), "connect", "127.0.0.1", &port.to_string()], b"");
    l.set_nonblocking(true).unwrap();
    assert!(l.accept().is_ok(), "an allowed destination was not reached: {}{}", stdout(&o), stderr(&o));
}

#[test]
fn datagrams_follow_the_network_policy_and_a_server_may_talk_to_itself() {
    require_kvm!();
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = u.local_addr().unwrap().port().to_string();
    let prog = program("hostile_net");
    let o = run_vmm(&["--", prog.to_str().unwrap(), "udp", "127.0.0.1", &port], b"");
    assert!(stdout(&o).contains("sendto: Permission denied"), "{}{}", stdout(&o), stderr(&o));
    let mut buf = [0u8; 16];
    assert!(u.recv(&mut buf).is_err(), "a datagram reached a host service");
    let o = run_vmm(&["--", prog.to_str().unwrap(), "self"], b"");
    assert_eq!(stdout(&o), "talked to self: abc\n", "{}", stderr(&o));
    let o = run_vmm(&["--net", "none", "--", prog.to_str().unwrap(), "socket"], b"");
    assert_eq!(stdout(&o), "socket: Permission denied\n", "{}", stderr(&o));
}

fn leader_report(dir: &Path) -> serde_json::Value {
    let path = dir.join("dmvx-divergence-variant0.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no leader report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn leader_only_metadata_changes_and_locks_never_take_effect() {
    require_kvm!();
    for (mode, call) in [
        ("ftruncate", "ftruncate"),
        ("fchmod", "fchmod"),
        ("fchown", "fchown"),
        ("fallocate", "fallocate"),
        ("utimes", "utimensat"),
        ("flock", "flock"),
    ] {
        let root = root_with("hostile_mvx");
        let target = root.join("d/target");
        std::fs::write(&target, b"keep me\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        chown_for_jail(&target);
        let before = std::fs::metadata(&target).unwrap();
        let reports = TempDir::new("hostile-mvx-reports");
        let o = run_vmm(
            &[
                "--variants",
                "2",
                "--report-dir",
                reports.path().to_str().unwrap(),
                "--rootfs",
                root.path().to_str().unwrap(),
                "--",
                "/bin/hostile_mvx",
                mode,
                "/d/target",
            ],
            b"",
        );
        assert_eq!(status(&o), 121, "{mode}: {}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), "ready\n", "{mode}");
        let r = leader_report(reports.path());
        assert_eq!(r["leader"]["name"], call, "{mode}: {r:#}");
        assert_eq!(r["took_effect"], false, "{mode}: {r:#}");
        assert_eq!(r["policy"]["check"], "lockstep", "{mode}: {r:#}");
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me\n", "{mode}: the contents changed");
        assert_eq!(after.mode(), before.mode(), "{mode}: the mode changed");
        assert_eq!((after.uid(), after.gid(), after.blocks()), (before.uid(), before.gid(), before.blocks()), "{mode}");
        assert_eq!(after.mtime_nsec(), before.mtime_nsec(), "{mode}: the times changed");
    }
}

#[test]
fn identical_variants_that_lock_one_file_do_not_block_each_other() {
    require_kvm!();
    let root = root_with("hostile_mvx");
    std::fs::write(root.join("d/target"), b"shared\n").unwrap();
    let reports = TempDir::new("hostile-lock-reports");
    let child = Command::new(vmm())
        .args(["--variants", "2", "--report-dir", reports.path().to_str().unwrap()])
        .args(["--rootfs", root.path().to_str().unwrap(), "--", "/bin/hostile_mvx", "lock-all", "/d/target"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Before the followers took the leader's result for the lock, they
    // waited for it behind the leader's host lock: a false divergence.
    let o = child.wait_with_output().unwrap();
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "ready\nlocked\n");
}

#[test]
fn a_leader_only_shutdown_or_close_of_a_connection_waits_for_agreement() {
    require_kvm!();
    use std::io::{BufRead, BufReader};
    for mode in ["shutdown", "close"] {
        let prog = program("hostile_mvx");
        let reports = TempDir::new("hostile-sock-reports");
        let port = free_port();
        let mut child = Command::new(vmm())
            .args(["--variants", "2", "--report-dir", reports.path().to_str().unwrap(), "--"])
            .args([prog.to_str().unwrap(), mode, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "{mode}");
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The followers spin for seconds before their next call; until they
        // reach it, the leader's shutdown or close must not reach us.
        client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut b = [0u8; 1];
        let early = std::io::Read::read(&mut client, &mut b);
        assert!(early.is_err(), "{mode}: the peer saw the leader's {mode} before the followers agreed: {early:?}");
        let o = child.wait_with_output().unwrap();
        drop(client);
        assert_eq!(status(&o), 121, "{mode}: {}", stderr(&o));
        let r = leader_report(reports.path());
        assert_eq!(r["leader"]["name"], mode, "{r:#}");
        assert_eq!(r["policy"]["check"], "lockstep", "{mode}: checked before the peer sees it: {r:#}");
        assert_eq!(r["took_effect"], false, "{r:#}");
    }
}

/// What lies beside a fuzzed root: names, modes, owners, sizes and contents.
fn snapshot(dir: &Path) -> Vec<(String, u32, u32, u64, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let data = if m.is_file() { std::fs::read(e.path()).unwrap() } else { Vec::new() };
            (e.file_name().to_string_lossy().into_owned(), m.mode(), m.uid(), m.nlink(), data)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn random_system_calls_never_panic_the_vmm_nor_leave_the_root() {
    require_kvm!();
    let outer = TempDir::new("fuzz");
    let root = outer.join("root");
    install_exe(&program("fuzz"), &root.join("bin/fuzz"));
    std::fs::write(outer.join("sentinel"), b"outside the root\n").unwrap();
    std::fs::set_permissions(outer.join("sentinel"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = snapshot(outer.path());
    let reports = TempDir::new("fuzz-reports");
    let r = root.to_str().unwrap();
    for (variants, seed) in [("1", "1"), ("1", "2"), ("2", "3")] {
        let o = run_vmm(
            &["--variants", variants, "--report-dir", reports.path().to_str().unwrap(), "--rootfs", r, "--"]
                .into_iter()
                .chain(["/bin/fuzz", seed, "4", "300"])
                .collect::<Vec<_>>(),
            b"",
        );
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "the VMM panicked (seed {seed}, {variants} variants): {err}");
        // One variant runs to the end; two may diverge (addresses differ by
        // design), which stops them cleanly.
        let ok = status(&o) == 0 && stdout(&o).ends_with("fuzz done\n");
        assert!(ok || (variants == "2" && status(&o) == 121), "seed {seed}, {variants} variants: {}{err}", stdout(&o));
    }
    assert_eq!(snapshot(outer.path()), before, "something beside the root changed");
}

#[test]
fn variants_with_different_network_policies_do_not_form_a_cluster() {
    require_kvm!();
    let d = TempDir::new("hostile-net-cluster");
    let keys = ClusterKeys::new(d.path(), 2);
    let file = keys.local_cluster(d.path(), "test", 2000, "[policy]\npreset = \"dmvx\"\n");
    let bb = busybox();
    let leader = Command::new(vmm())
        .args(["--cluster", file.to_str().unwrap(), "--variant", "0", "--", bb, "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower =
        run_vmm(&["--cluster", file.to_str().unwrap(), "--variant", "1", "--net", "loopback", "--", bb, "true"], b"");
    let lo = leader.wait_with_output().unwrap();
    assert_eq!(status(&follower), 125, "{}", stderr(&follower));
    assert_eq!(status(&lo), 125, "{}", stderr(&lo));
    let both = format!("{}{}", stderr(&follower), stderr(&lo));
    assert!(both.contains("policy digest"), "{both}");
}

#[test]
fn a_datagram_server_answers_its_clients_under_the_default_policy() {
    require_kvm!();
    use std::io::{BufRead, BufReader};
    let prog = program("hostile_net");
    let mut child = Command::new(vmm())
        .args(["--", prog.to_str().unwrap(), "udp-echo"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).expect("its port");
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    u.send_to(b"ping", ("127.0.0.1", port)).unwrap();
    let mut b = [0u8; 16];
    let n = u.recv(&mut b).expect("the answer");
    assert_eq!(&b[..n], b"ping");
    let o = child.wait_with_output().unwrap();
    assert_eq!(status(&o), 0, "{}", stderr(&o));
}

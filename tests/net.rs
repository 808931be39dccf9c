//! Sockets, epoll/poll/select, eventfd/timerfd and signals of programs in
//! a dmvx microVM, with real TCP clients on the host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dmvx::*;

fn nettest() -> String {
    build_c("tests/programs/nettest.c", &["-static"]).to_string_lossy().into_owned()
}

fn vm_mode(extra: &[&str], mode: &[&str]) -> std::process::Output {
    let prog = nettest();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--", prog.as_str()]);
    args.extend_from_slice(mode);
    run_vmm(&args, b"")
}

/// Starts the VMM with `mode` and returns it with a reader of its stdout.
fn spawn(mode: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let prog = nettest();
    let mut child = Command::new(vmm())
        .arg("--")
        .arg(&prog)
        .args(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dmvx-vmm");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (child, out)
}

fn line(r: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read a line from the VM");
    s
}

#[test]
fn tcp_echo_server_with_epoll_serves_host_clients() {
    require_kvm!();
    let (mut child, mut out) = spawn(&["echo-server", "0"]);
    let l = line(&mut out);
    let port: u16 =
        l.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("unexpected: {l}"));
    let mut clients: Vec<TcpStream> =
        (0..5).map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect")).collect();
    for round in 0..20 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let msg = format!("client {i} round {round}\n");
            c.write_all(msg.as_bytes()).unwrap();
            let mut got = vec![0u8; msg.len() + 6];
            c.read_exact(&mut got).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), format!("echo: {msg}"));
        }
    }
    clients[0].write_all(b"quit\n").unwrap();
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{rest}{err}");
    assert!(rest.contains("ok echo-server"), "{rest}");
    assert!(!err.contains("unsupported"), "{err}");
}

#[test]
fn hostile_socket_and_epoll_arguments_get_errors_not_crashes() {
    require_kvm!();
    let o = vm_mode(&[], &["hostile"]);
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok hostile"));
}

/// The VMM's NETLINK_ROUTE socket under malformed requests, lying lengths
/// and pointers, in 1 and 2 variants alike.
#[test]
fn a_netlink_socket_survives_hostile_requests() {
    require_kvm!();
    for extra in [&[][..], &["--variants", "2"][..]] {
        let o = vm_mode(extra, &["netlink"]);
        assert_eq!(status(&o), 0, "{extra:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("ok netlink"), "{extra:?}: {}", stdout(&o));
        assert!(stderr(&o).contains("refused a netlink request that changes the network"), "{}", stderr(&o));
    }
}

#[test]
fn disallowed_families_options_and_fd_passing_are_refused_with_a_log_line() {
    require_kvm!();
    let o = vm_mode(&[], &["refused"]);
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let e = stderr(&o);
    for needle in [
        "refused netlink protocol 9",
        "refused socket family 17",
        "refused socket type 3",
        "refused socket option level 1 name 25",
        "abstract",
        "ancillary data",
    ] {
        assert!(e.contains(needle), "missing '{needle}' in:\n{e}");
    }
}

#[test]
fn unix_sockets_live_inside_the_root() {
    require_kvm!();
    let root = TempDir::new("unix-root");
    install_exe(std::path::Path::new(&nettest()), &root.join("bin/nettest"));
    std::fs::create_dir_all(root.join("run")).unwrap();
    let dir = format!("/run/dmvx-test-{}", std::process::id());
    std::fs::create_dir_all(root.join(&dir[1..])).unwrap();
    chown_for_jail(root.path());
    let o = run_vmm(&["--rootfs", root.path().to_str().unwrap(), "--", "/bin/nettest", "unix", &dir, "keep"], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The socket was made inside the root, not at the host path it names.
    use std::os::unix::fs::FileTypeExt;
    let inside = std::fs::symlink_metadata(root.join(&dir[1..]).join("sock")).expect("socket inside the root");
    assert!(inside.file_type().is_socket());
    assert!(!std::path::Path::new(&dir).exists(), "{dir} appeared on the host");
}

#[test]
fn signal_handlers_frames_masks_restart_and_altstack() {
    require_kvm!();
    let o = vm_mode(&[], &["signals"]);
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok signals"));
}

#[test]
fn sigpipe_kills_unless_ignored() {
    require_kvm!();
    let o = vm_mode(&[], &["sigpipe"]);
    assert_eq!(status(&o), 141, "{}", stderr(&o));
    assert!(stderr(&o).contains("SIGPIPE"));
    let o = vm_mode(&[], &["sigpipe-ignored"]);
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn sigterm_to_the_vmm_reaches_the_programs_handler() {
    require_kvm!();
    let (mut child, mut out) = spawn(&["graceful"]);
    assert_eq!(line(&mut out).trim(), "waiting");
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(7), "{rest}");
    assert!(rest.contains("epoll_wait=-1 errno=4 term=1"), "{rest}");
}

#[test]
fn sigterm_without_a_handler_ends_the_program_as_linux_would() {
    require_kvm!();
    let bb = busybox();
    let mut child = Command::new(vmm()).args(["--", bb, "sleep", "20"]).stderr(Stdio::piped()).spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + 15));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("killed by SIGTERM"), "{err}");
}

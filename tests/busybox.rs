//! Debian's static busybox in a dmvx microVM gives exactly the output it
//! gives natively.

use dmvx::*;

/// Runs `busybox ARGS` natively and in the VM; both must agree.
fn same_as_native(args: &[&str], stdin: &[u8]) {
    let bb = busybox();
    let native = run(bb, args, stdin);
    let mut vargs = vec!["--", bb];
    vargs.extend_from_slice(args);
    let vm = run_vmm(&vargs, stdin);
    assert_eq!(status(&vm), status(&native), "exit status of busybox {args:?}; VM stderr:\n{}", stderr(&vm));
    assert_eq!(stdout(&vm), stdout(&native), "stdout of busybox {args:?}; VM stderr:\n{}", stderr(&vm));
    assert!(
        !stdout(&native).is_empty() || args[0] == "true",
        "the native run printed nothing; the comparison would be empty"
    );
}

#[test]
fn echo() {
    require_kvm!();
    same_as_native(&["echo", "hello", "from", "dmvx"], b"");
}

#[test]
fn cat_of_a_file() {
    require_kvm!();
    same_as_native(&["cat", "/etc/passwd"], b"");
}

#[test]
fn ls_la_of_a_directory() {
    require_kvm!();
    // A directory inside one of our own, so that ".." (shown with its
    // mtime) does not change under us the way /tmp does; one level below
    // the temporary directory, which belongs to the jail's uid (dmvx shows
    // the jail's files as root's: natively they are nobody's).
    let top = TempDir::new("ls");
    let d = top.join("parent/dir");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir(d.join("subdir")).unwrap();
    std::fs::write(d.join("file.txt"), b"some contents\n").unwrap();
    std::fs::write(d.join(".hidden"), vec![7u8; 5000]).unwrap();
    std::os::unix::fs::symlink("file.txt", d.join("link")).unwrap();
    same_as_native(&["ls", "-la", d.to_str().unwrap()], b"");
    same_as_native(&["ls", "-la", "/etc/apt"], b"");
}

#[test]
fn sha256sum_of_a_file() {
    require_kvm!();
    same_as_native(&["sha256sum", "/bin/busybox", "/etc/passwd"], b"");
}

#[test]
fn wc_reads_stdin_piped_from_the_host() {
    require_kvm!();
    let input: Vec<u8> = (0..20000).flat_map(|i| format!("line {i} of the input\n").into_bytes()).collect();
    same_as_native(&["wc"], &input);
}

#[test]
fn sh_c_runs_a_command_list() {
    require_kvm!();
    same_as_native(&["sh", "-c", "echo a; echo b"], b"");
    same_as_native(&["sh", "-c", "cd /etc && pwd && x=3; echo $((x * 7)); exit 5"], b"");
}

#[test]
fn sh_c_execs_its_last_command() {
    require_kvm!();
    // ash replaces itself with the last simple command: a real execve in the VM.
    same_as_native(&["sh", "-c", "exec /bin/busybox echo exec-ed"], b"");
}

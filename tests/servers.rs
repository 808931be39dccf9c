//! Unmodified Debian servers (lighttpd, nginx) from images/build-rootfs.sh
//! run in a dmvx microVM and serve exactly what they serve natively.

use std::path::Path;
use std::process::Command;

use dmvx::*;

fn native(root: &Path, s: &ServerSpec, port: u16) -> Server {
    // As the VMM's jail identity, so neither leaves files in the shared
    // image that the other may not replace (nginx's pid file).
    let mut cmd = Command::new("chroot");
    cmd.arg(format!("--userspec={JAIL_ID}:{JAIL_ID}")).arg(root).args(&s.argv).env_clear().env("PATH", GUEST_PATH);
    for (k, v) in &s.env {
        cmd.env(k, v);
    }
    Server::start(cmd, port)
}

fn in_dmvx(root: &Path, s: &ServerSpec, port: u16) -> Server {
    let mut cmd = Command::new(vmm());
    cmd.arg("--rootfs").arg(root).args(s.vmm_args());
    Server::start(cmd, port)
}

fn serves_like_native(pkg: &'static str) {
    let root = rootfs(pkg);
    let (pn, pv) = (free_port(), free_port());
    let (sn, sv) = (ServerSpec::new(pkg, &root, pn), ServerSpec::new(pkg, &root, pv));
    let nat = native(&root, &sn, pn);
    let vm = in_dmvx(&root, &sv, pv);
    for path in ["/4k.bin", "/index.html", "/1m.bin", "/missing", "/"] {
        let a = http_get("127.0.0.1", pn, path);
        let b = http_get("127.0.0.1", pv, path);
        assert_eq!(b.code, a.code, "{pkg} {path}: status");
        assert!(b.body == a.body, "{pkg} {path}: body differs ({} vs {} bytes)", b.body.len(), a.body.len());
        for h in ["Content-Type", "Content-Length", "ETag", "Last-Modified", "Server"] {
            assert_eq!(b.header(h), a.header(h), "{pkg} {path}: header {h}");
        }
    }
    let image = std::fs::read(root.join("srv/www/4k.bin")).unwrap();
    assert_eq!(http_get("127.0.0.1", pv, "/4k.bin").body, image, "{pkg}: /4k.bin is not the image's file");

    let load = wrk("127.0.0.1", pv, "/4k.bin", 10, 10);
    assert!(load.requests > 1000, "{pkg}: wrk made only {} requests:\n{}", load.requests, load.raw);
    assert_eq!(load.socket_errors, 0, "{pkg}: socket errors under wrk:\n{}", load.raw);
    assert_eq!(load.non_2xx, 0, "{pkg}: non-2xx responses under wrk:\n{}", load.raw);

    let (native_status, _, _) = nat.stop();
    let (vm_status, _, vm_err) = vm.stop();
    assert_eq!(
        vm_status, native_status,
        "{pkg}: exit status after SIGTERM (native {native_status}); VM stderr:\n{vm_err}"
    );
    assert!(!vm_err.contains("unsupported system call"), "{pkg} hit unsupported calls:\n{vm_err}");
    assert!(!vm_err.contains("dmvx: refused"), "{pkg} hit refusals:\n{vm_err}");
    shout(&format!("{pkg} in dmvx: {:.0} requests/s under wrk -t1 -c10 -d10s, 0 errors", load.requests_per_sec));
}

#[test]
fn lighttpd_serves_like_native() {
    require_kvm!();
    require_root!();
    serves_like_native("lighttpd");
}

#[test]
fn nginx_serves_like_native() {
    require_kvm!();
    require_root!();
    serves_like_native("nginx");
}

/// Debian's nginx as it ships: a master and 2 worker processes, natively,
/// in 1 variant and in 2; the same bodies, no errors under wrk, and
/// SIGTERM (fast) or SIGQUIT (graceful) to the master ends every process
/// with native's status.
#[test]
fn nginx_with_a_master_and_two_workers() {
    require_kvm!();
    require_root!();
    let root = rootfs("nginx");
    for (variants, sig) in [("1", libc::SIGTERM), ("2", libc::SIGTERM), ("2", libc::SIGQUIT)] {
        let (pn, pv) = (free_port(), free_port());
        let (sn, sv) = (ServerSpec::new("nginx-workers", &root, pn), ServerSpec::new("nginx-workers", &root, pv));
        let nat = native(&root, &sn, pn);
        let mut cmd = Command::new(vmm());
        cmd.args(["--variants", variants, "--rootfs"]).arg(&root).args(sv.vmm_args());
        let vm = Server::start(cmd, pv);
        for path in ["/4k.bin", "/index.html", "/1m.bin", "/missing"] {
            let a = http_get("127.0.0.1", pn, path);
            let b = http_get("127.0.0.1", pv, path);
            assert_eq!(b.code, a.code, "{variants} variant(s) {path}: status");
            assert!(b.body == a.body, "{variants} variant(s) {path}: body differs");
        }
        let load = wrk("127.0.0.1", pv, "/4k.bin", 10, 10);
        assert!(load.requests > 1000, "{variants} variant(s): wrk made only {} requests:\n{}", load.requests, load.raw);
        assert_eq!((load.socket_errors, load.non_2xx), (0, 0), "{variants} variant(s) under wrk:\n{}", load.raw);
        let (native_status, _, _) = nat.stop_with(sig);
        let host_pid = vm.pid();
        let (vm_status, _, vm_err) = vm.stop_with(sig);
        assert_eq!(vm_status, native_status, "{variants} variant(s), signal {sig}: status; stderr:\n{vm_err}");
        assert!(!vm_err.contains("diverged"), "{variants} variant(s): {vm_err}");
        // No VMM of the run (the master's, the workers') outlives it.
        let left = Command::new("pgrep").args(["-f", &format!("nginx-workers-{pv}")]).output().unwrap();
        assert!(
            left.stdout.is_empty(),
            "VMMs of run {host_pid} left behind: {}",
            String::from_utf8_lossy(&left.stdout)
        );
        shout(&format!(
            "nginx, master + 2 workers, {variants} variant(s): {:.0} requests/s, 0 errors, ended by signal {sig} like native",
            load.requests_per_sec
        ));
    }
}

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

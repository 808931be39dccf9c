//! N-version variants: two builds of one server (images/build-nversion.sh:
//! different optimisation, inlining, stack protector, PLT and CET flags, so
//! different code at different addresses, non-PIE) run as the 2 variants of
//! one cluster under load, with zero divergences; a variant whose program is
//! not the build its cluster file names is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use dmvx::*;

/// The two builds of tests/programs/httpd.c and their digests (built once
/// per test process: the tests run in parallel).
fn builds() -> (PathBuf, PathBuf, Vec<String>) {
    static BUILT: std::sync::Mutex<Option<(PathBuf, PathBuf, Vec<String>)>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built.get_or_insert_with(build).clone()
}

fn build() -> (PathBuf, PathBuf, Vec<String>) {
    let out = target_dir().join("dmvx-nversion");
    let script = workspace().join("images/build-nversion.sh");
    let src = workspace().join("tests/programs/httpd.c");
    let o = run("/bin/bash", &[script.to_str().unwrap(), src.to_str().unwrap(), out.to_str().unwrap()], b"");
    assert_eq!(status(&o), 0, "images/build-nversion.sh: {}{}", stdout(&o), stderr(&o));
    let digests: Vec<String> = std::fs::read_to_string(out.join("httpd.digests"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    assert_eq!(digests.len(), 2);
    assert_ne!(digests[0], digests[1], "the two builds are the same file");
    (out.join("httpd-a"), out.join("httpd-b"), digests)
}

/// A document root outside the policy's mutable paths (not under /tmp).
fn docroot() -> TempDir {
    let d = TempDir::new_in(&target_dir(), "nversion-www");
    std::fs::write(d.join("index.html"), "<html><body>dmvx n-version</body></html>\n").unwrap();
    let bytes = |n: usize| (0..n).map(|i| (i * 7 + i / 251) as u8).collect::<Vec<u8>>();
    std::fs::write(d.join("4k.bin"), bytes(4096)).unwrap();
    std::fs::write(d.join("1m.bin"), bytes(1 << 20)).unwrap();
    d
}

fn start(opts: &[&str], program: &Path, port: u16, root: &Path) -> Server {
    let mut cmd = Command::new(vmm());
    cmd.args(opts).arg("--").arg(program).arg(port.to_string()).arg(root);
    Server::start(cmd, port)
}

const PATHS: [&str; 5] = ["/4k.bin", "/index.html", "/1m.bin", "/missing", "/"];

#[test]
fn two_builds_of_a_server_run_as_two_variants_under_load() {
    require_kvm!();
    let (a, b, _) = builds();
    let www = docroot();
    let reference = free_port();
    let single = start(&[], &a, reference, www.path());
    let reports = TempDir::new("nversion-reports");
    let port = free_port();
    let b_arg = format!("1={}", b.display());
    let opts = ["--variants", "2", "--variant-program", &b_arg, "--report-dir", reports.path().to_str().unwrap()];
    let multi = start(&opts, &a, port, www.path());
    let same = || {
        for path in PATHS {
            let want = http_get("127.0.0.1", reference, path);
            let got = http_get("127.0.0.1", port, path);
            assert_eq!((got.code, got.header("Content-Length")), (want.code, want.header("Content-Length")), "{path}");
            assert!(got.body == want.body, "{path}: body differs");
        }
    };
    same();
    let load = wrk("127.0.0.1", port, "/4k.bin", 10, 10);
    assert!(load.requests > 300, "only {} requests:\n{}", load.requests, load.raw);
    assert_eq!((load.socket_errors, load.non_2xx), (0, 0), "{}", load.raw);
    same();
    let (code, _, err) = multi.stop();
    assert_eq!(code, 0, "after SIGTERM:\n{err}");
    assert!(!err.contains("diverged"), "{err}");
    let left: Vec<_> = std::fs::read_dir(reports.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "divergence reports: {left:?}");
    let _ = single.stop();
    shout(&format!(
        "2 builds of httpd as 2 variants: {:.0} requests/s, 0 errors, 0 divergences",
        load.requests_per_sec
    ));
}

#[test]
fn a_variant_running_another_build_than_its_cluster_file_names_is_refused() {
    require_kvm!();
    let (a, b, digests) = builds();
    let d = TempDir::new("nversion-cluster");
    let keys = ClusterKeys::new(d.path(), 2);
    let port = free_port();
    let file = d.join("cluster.toml");
    let addresses = [format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", port + 1)];
    // Each variant's entry names its build's digest after its role line.
    let mut text = String::new();
    let mut seen = 0;
    for line in keys.cluster_text("nv", 2000, "", &addresses).lines() {
        text.push_str(line);
        text.push('\n');
        if line.starts_with("role = ") {
            text.push_str(&format!("program = \"{}\"\n", digests[seen]));
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "{text}");
    std::fs::write(&file, text).unwrap();
    // Variant 1 started with build a, where the file names build b.
    let www = docroot();
    let o = run_vmm(
        &[
            "--cluster",
            file.to_str().unwrap(),
            "--variant",
            "1",
            "--",
            a.to_str().unwrap(),
            &port.to_string(),
            www.path().to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("has digest {}", digests[0])), "{err}");
    assert!(err.contains(&format!("the cluster file says {} for variant 1", digests[1])), "{err}");
    assert!(b.exists());
}

//! Threaded Debian servers in dmvx: redis-server (background threads) under
//! redis-benchmark and memcached with 4 worker threads under libmemcached's
//! memcslap and a plain protocol client, in one variant and in two.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use dmvx::*;

/// `dmvx-vmm` running `argv` in `n` variants, reports into `reports`.
fn server(n: u32, reports: &Path, argv: &[&str], port: u16) -> Server {
    let mut cmd = Command::new(vmm());
    cmd.args(["--variants", &n.to_string(), "--report-dir", reports.to_str().unwrap(), "--"]).args(argv);
    Server::start(cmd, port)
}

fn no_reports(d: &TempDir, what: &str, err: &str) {
    let reports: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(reports.is_empty(), "{what} reported a divergence: {reports:?}\n{err}");
}

fn installed(paths: &[&str], test: &str) -> bool {
    if let Some(p) = paths.iter().find(|p| !Path::new(p).exists()) {
        shout(&format!("SKIPPED {test}: {p} is not installed (scripts/host-packages.txt)"));
        return false;
    }
    true
}

#[test]
fn redis_serves_redis_benchmark_in_one_variant() {
    redis_under_benchmark(1);
}

/// jemalloc seeds its decay ticks from the address of its thread data:
/// with disjoint data layouts the variants' clock calls (and background
/// thread wake-ups) came at different points and the run diverged in most
/// runs; shared data layouts (the default) keep them in step.
#[test]
fn redis_serves_redis_benchmark_in_two_variants() {
    redis_under_benchmark(2);
}

fn redis_under_benchmark(n: u32) {
    require_kvm!();
    if !installed(&["/usr/bin/redis-server", "/usr/bin/redis-benchmark"], "redis") {
        return;
    }
    {
        let d = TempDir::new("redis");
        let port = free_port();
        let p = port.to_string();
        let argv = [
            "/usr/bin/redis-server",
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ];
        let s = server(n, d.path(), &argv, port);
        let out = Command::new("redis-benchmark")
            .args(["-p", &p, "-t", "set,get,incr,lpush", "-c", "10", "-n", "2000", "-q", "--csv"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let errs = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{n} variant(s): redis-benchmark failed: {text}{errs}");
        for t in ["SET", "GET", "INCR", "LPUSH"] {
            assert!(text.contains(&format!("\"{t}\"")), "{n} variant(s): no {t} result: {text}{errs}");
        }
        assert!(!errs.to_lowercase().contains("error"), "{n} variant(s): {errs}");
        // What was written is there: the counter INCR made.
        let cli = Command::new("redis-cli").args(["-p", &p, "get", "counter:__rand_int__"]).output().unwrap();
        let v = String::from_utf8_lossy(&cli.stdout).trim().to_string();
        assert_eq!(v, "2000", "{n} variant(s): the INCR counter");
        // No divergence while it served.
        no_reports(&d, &format!("redis in {n} variant(s) under load"), "");
        // SIGTERM: redis's handler (taken by whichever thread the leader's
        // schedule names) schedules the shutdown its main thread carries out.
        let (code, out, err) = s.stop();
        assert_eq!(code, 0, "{n} variant(s): redis after SIGTERM: {out}{err}");
        assert!(out.contains("Received SIGTERM"), "{n} variant(s): {out}");
        no_reports(&d, &format!("redis in {n} variant(s) at SIGTERM"), &err);
        shout(&format!("redis-server in {n} variant(s) under redis-benchmark: {}", text.replace('\n', "; ")));
    }
}

/// Talks memcached's text protocol: `req` in, everything up to `end` out.
fn memcached_says(port: u16, req: &str, end: &str) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with(end) {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0, "memcached closed the connection after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn memcached_with_four_threads_serves_clients_in_two_variants() {
    require_kvm!();
    if !installed(&["/usr/bin/memcached", "/usr/bin/memcslap"], "memcached") {
        return;
    }
    let d = TempDir::new("memcached");
    let port = free_port();
    let p = port.to_string();
    let s = server(
        2,
        d.path(),
        &["/usr/bin/memcached", "-t", "4", "-p", &p, "-l", "127.0.0.1", "-U", "0", "-u", "root", "-A"],
        port,
    );
    let out = Command::new("memcslap")
        .args([&format!("--servers=127.0.0.1:{p}"), "--concurrency=8", "--execute-number=200"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "memcslap failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Time to set"), "{text}");
    // Several clients at once, each on its own connection (and so on
    // different worker threads): what each stored, each reads back.
    let clients: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let mut req = String::new();
                for k in 0..20 {
                    let v = format!("value-{i}-{k}");
                    req.push_str(&format!("set key{i}-{k} 0 0 {}\r\n{v}\r\n", v.len()));
                }
                let stored = memcached_says(port, &req, &"STORED\r\n".repeat(20));
                assert_eq!(stored, "STORED\r\n".repeat(20));
                let keys: Vec<String> = (0..20).map(|k| format!("key{i}-{k}")).collect();
                let got = memcached_says(port, &format!("get {}\r\n", keys.join(" ")), "END\r\n");
                for k in 0..20 {
                    let v = format!("value-{i}-{k}");
                    assert!(got.contains(&format!("VALUE key{i}-{k} 0 {}\r\n{v}\r\n", v.len())), "{got}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // -A: the protocol's shutdown command ends it (see the redis test).
    if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = c.write_all(b"shutdown\r\n");
    }
    let (_, _, err) = s.stop();
    no_reports(&d, "memcached in 2 variants", &err);
}

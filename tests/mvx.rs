//! Multi-variant execution: N variants of real programs in N microVMs, one
//! VMM process each, joined over TCP. They must agree on everything a single
//! variant does; a variant that acts differently must be stopped before the
//! difference leaves the host, with a report that names the call and the
//! variant.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dmvx::*;

fn divergent() -> String {
    build_c("tests/programs/divergent.c", &["-static"]).to_string_lossy().into_owned()
}

/// The report files in `dir`, parsed.
fn reports(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("dmvx-divergence-") {
            out.push(serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap());
        }
    }
    out
}

/// The leader's report (variant 0), which holds both sides.
fn leader_report(dir: &Path) -> serde_json::Value {
    let path = dir.join("dmvx-divergence-variant0.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no leader report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn busybox_in_two_and_three_variants_does_what_one_does() {
    require_kvm!();
    let bb = busybox();
    let stdin: Vec<u8> = (0..3000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let cases: [&[&str]; 4] = [
        &["sha256sum", "/etc/passwd", "/bin/busybox"],
        &["ls", "-la", "/etc/apt"],
        &["echo", "two", "variants"],
        &["wc"],
    ];
    for args in cases {
        let mut one = vec!["--", bb];
        one.extend_from_slice(args);
        let single = run_vmm(&one, &stdin);
        assert_eq!(status(&single), 0, "{}", stderr(&single));
        for n in ["2", "3"] {
            let d = TempDir::new("bb-mvx");
            let mut a = vec!["--variants", n, "--report-dir", d.path().to_str().unwrap(), "--", bb];
            a.extend_from_slice(args);
            let multi = run_vmm(&a, &stdin);
            assert_eq!(status(&multi), 0, "{n} variants of {args:?}: {}", stderr(&multi));
            assert_eq!(stdout(&multi), stdout(&single), "{n} variants of {args:?}");
            assert!(reports(d.path()).is_empty(), "a divergence report for {args:?}");
        }
    }
}

/// Starts a server from the rootfs of `pkg` on `port` with extra VMM options.
fn server(pkg: &str, root: &Path, port: u16, vmm_opts: &[&str]) -> Server {
    let mut cmd = Command::new(vmm());
    let spec = ServerSpec::new(pkg, root, port);
    cmd.args(vmm_opts).arg("--rootfs").arg(root).args(spec.vmm_args());
    Server::start(cmd, port).holding(spec)
}

const PATHS: [&str; 5] = ["/4k.bin", "/index.html", "/1m.bin", "/missing", "/"];

fn same_responses(pkg: &str, reference: u16, port: u16) {
    for path in PATHS {
        let a = http_get("127.0.0.1", reference, path);
        let b = http_get("127.0.0.1", port, path);
        assert_eq!(b.code, a.code, "{pkg} {path}: status");
        assert!(b.body == a.body, "{pkg} {path}: body differs ({} vs {} bytes)", b.body.len(), a.body.len());
        for h in ["Content-Type", "Content-Length", "ETag", "Last-Modified", "Server"] {
            assert_eq!(b.header(h), a.header(h), "{pkg} {path}: header {h}");
        }
    }
}

fn serves_in_variants(pkg: &str) {
    let root = rootfs(pkg);
    let reference = free_port();
    let single = server(pkg, &root, reference, &[]);
    for n in ["2", "3"] {
        let dir = TempDir::new("srv-mvx");
        let port = free_port();
        let multi = server(pkg, &root, port, &["--variants", n, "--report-dir", dir.path().to_str().unwrap()]);
        same_responses(pkg, reference, port);
        let load = wrk("127.0.0.1", port, "/4k.bin", 10, 10);
        assert!(load.requests > 500, "{pkg} x{n}: only {} requests:\n{}", load.requests, load.raw);
        assert_eq!(load.socket_errors, 0, "{pkg} x{n}: socket errors:\n{}", load.raw);
        assert_eq!(load.non_2xx, 0, "{pkg} x{n}: non-2xx:\n{}", load.raw);
        same_responses(pkg, reference, port);
        let (code, _, err) = multi.stop();
        assert_eq!(code, 0, "{pkg} x{n} after SIGTERM:\n{err}");
        assert!(!err.contains("diverged"), "{pkg} x{n}:\n{err}");
        assert!(reports(dir.path()).is_empty(), "{pkg} x{n} wrote a divergence report");
        shout(&format!("{pkg} in {n} variants: {:.0} requests/s, 0 errors, 0 divergences", load.requests_per_sec));
    }
    let _ = single.stop();
}

#[test]
fn lighttpd_in_two_and_three_variants() {
    require_kvm!();
    require_root!();
    serves_in_variants("lighttpd");
}

#[test]
fn nginx_in_two_and_three_variants() {
    require_kvm!();
    require_root!();
    serves_in_variants("nginx");
}

fn diverge_with(mode: &str, expect_call: &str) -> (TempDir, serde_json::Value) {
    let root = TempDir::new("dv-root");
    install_exe(Path::new(&divergent()), &root.join("bin/divergent"));
    std::fs::create_dir_all(root.join("data")).unwrap();
    let reports = TempDir::new("dv-reports");
    let o = run_vmm(
        &[
            "--variants",
            "2",
            "--report-dir",
            reports.path().to_str().unwrap(),
            "--rootfs",
            root.path().to_str().unwrap(),
            "--",
            "/bin/divergent",
            mode,
            "/data",
        ],
        b"",
    );
    assert_eq!(status(&o), 121, "{mode}: {}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("variants diverged"), "{}", stderr(&o));
    // What all variants agreed on got out; nothing after.
    assert_eq!(stdout(&o), "ready\n", "{mode}");
    assert!(!root.join("data/extra").exists(), "{mode}: the extra file was created");
    let r = leader_report(reports.path());
    assert_eq!(r["variant"], 1, "{r:#}");
    assert_eq!(r["kind"], "records", "{r:#}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains(expect_call) && msg.contains("variant 1"), "{msg}");
    assert!(r["forensic"].as_array().unwrap().len() >= 2, "both variants' recent events: {r:#}");
    drop(root);
    (reports, r)
}

#[test]
fn an_extra_open_in_the_leader_is_stopped_before_it_takes_effect() {
    require_kvm!();
    let (_d, r) = diverge_with("open-leader", "openat");
    assert_eq!(r["leader"]["name"], "openat", "{r:#}");
    assert_eq!(r["other"]["name"], "write", "{r:#}");
    assert_eq!(r["policy"]["check"], "lockstep");
}

#[test]
fn an_extra_open_in_a_follower_is_stopped() {
    require_kvm!();
    let (_d, r) = diverge_with("open-follower", "openat");
    assert_eq!(r["other"]["name"], "openat", "{r:#}");
    assert_eq!(r["leader"]["name"], "write", "{r:#}");
}

#[test]
fn output_that_depends_on_an_address_is_stopped() {
    require_kvm!();
    let d = TempDir::new("addr");
    let o =
        run_vmm(&["--variants", "3", "--report-dir", d.path().to_str().unwrap(), "--", &divergent(), "address"], b"");
    assert_eq!(status(&o), 121, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ready\n", "the address must not be printed");
    let r = leader_report(d.path());
    assert_eq!(r["leader"]["name"], "write");
    assert_eq!(r["other"]["name"], "write");
    assert_ne!(r["leader"]["args"][1], r["other"]["args"][1], "the written data differs: {r:#}");
}

/// Data addresses (heap, thread data, anonymous memory) are the same in
/// every variant of a run and new in every run; with `--data-layout
/// disjoint` a program that prints them is stopped.
#[test]
fn data_addresses_agree_when_shared_and_differ_when_disjoint() {
    require_kvm!();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = TempDir::new("data-addr");
        let o = run_vmm(
            &["--variants", "3", "--report-dir", d.path().to_str().unwrap(), "--", &divergent(), "data-address"],
            b"",
        );
        assert_eq!(status(&o), 0, "{}", stderr(&o));
        assert!(reports(d.path()).is_empty(), "a divergence report: {}", stderr(&o));
        let line = stdout(&o).lines().last().unwrap_or_default().to_string();
        assert_eq!(line.split(' ').count(), 3, "{}", stdout(&o));
        seen.push(line);
    }
    assert_ne!(seen[0], seen[1], "data addresses repeat across runs");
    let d = TempDir::new("data-addr-disjoint");
    let o = run_vmm(
        &[
            "--variants",
            "2",
            "--data-layout",
            "disjoint",
            "--report-dir",
            d.path().to_str().unwrap(),
            "--",
            &divergent(),
            "data-address",
        ],
        b"",
    );
    assert_eq!(status(&o), 121, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ready\n", "disjoint data addresses must not be printed");
    let r = leader_report(d.path());
    assert_eq!(r["leader"]["name"], "write", "{r:#}");
}

#[test]
fn every_variant_has_its_own_at_random_and_stack_canary() {
    require_kvm!();
    // One variant: fresh secrets per run, and the canary is made of them.
    let runs: Vec<String> = (0..2).map(|_| stdout(&run_vmm(&["--", &divergent(), "secrets"], b""))).collect();
    for r in &runs {
        let line = r.lines().last().unwrap_or_default();
        let (random, canary) = line.split_once(' ').unwrap_or_else(|| panic!("secrets output: {r:?}"));
        assert_eq!(random.len(), 32, "{r}");
        // glibc: the canary is AT_RANDOM's first 8 bytes with the low byte zeroed.
        let first8: String = random.as_bytes()[..16].chunks(2).rev().map(|c| std::str::from_utf8(c).unwrap()).collect();
        assert_eq!(&canary[..14], &first8[..14], "{r}");
        assert_eq!(&canary[14..], "00", "{r}");
    }
    assert_ne!(runs[0], runs[1], "AT_RANDOM repeats across runs");
    // Two variants: a program that prints them diverges (they differ; that
    // is the point: a leaked canary is good for one variant only).
    let d = TempDir::new("secrets");
    let o =
        run_vmm(&["--variants", "2", "--report-dir", d.path().to_str().unwrap(), "--", &divergent(), "secrets"], b"");
    assert_eq!(status(&o), 121, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ready\n", "the secrets must not be printed");
    let r = leader_report(d.path());
    assert_eq!(r["leader"]["name"], "write");
    assert_ne!(r["leader"]["args"][1], r["other"]["args"][1], "{r:#}");
}

/// Starts `divergent ARGS` in 2 variants (reports into `dir`) and waits
/// until it says it is listening.
fn listening(dir: &Path, args: &[&str]) -> std::process::Child {
    let mut child = Command::new(vmm())
        .args(["--variants", "2", "--report-dir", dir.to_str().unwrap(), "--", &divergent()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "{args:?}: the server ended early");
    }
    child
}

#[test]
fn a_different_byte_on_a_socket_never_reaches_the_client() {
    require_kvm!();
    let d = TempDir::new("sock");
    let port = free_port();
    let mut child = listening(d.path(), &["socket", &port.to_string()]);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"request\n").unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.is_empty(), "the client received {:?}", String::from_utf8_lossy(&got));
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(121));
    let r = leader_report(d.path());
    assert_eq!(r["leader"]["name"], "write", "{r:#}");
    assert_eq!(r["variant"], 1);
}

#[test]
fn poll_and_select_servers_get_their_held_replies_out_while_they_wait() {
    // The leader holds each reply until the follower agreed; the server is
    // meanwhile blocked in poll or select, and the reply must still leave
    // (the leader waits for the program's descriptors and the link at once).
    require_kvm!();
    for how in ["poll", "select"] {
        let d = TempDir::new("echo");
        let port = free_port();
        let mut child = listening(d.path(), &["echo", how, &port.to_string()]);
        let connect = || {
            let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            BufReader::new(c)
        };
        let mut clients = [connect(), connect()];
        for i in 0..5 {
            let c = &mut clients[i % 2];
            let msg = format!("message {i} via {how}\n");
            c.get_mut().write_all(msg.as_bytes()).unwrap();
            let mut echo = String::new();
            c.read_line(&mut echo).unwrap_or_else(|e| panic!("{how}: no echo of message {i}: {e}"));
            assert_eq!(echo, msg, "{how}");
        }
        clients[0].get_mut().write_all(b"quit\n").unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{how}");
        assert!(reports(d.path()).is_empty(), "{how}: a divergence was reported");
    }
}

fn replicated_file_bytes(err: &str) -> u64 {
    err.lines()
        .find(|l| l.contains("(leader)") && l.contains("replicated file bytes"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with("replicated file bytes")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no leader statistics in:\n{err}"))
}

#[test]
fn strict_replicates_file_reads_and_dmvx_reads_locally() {
    require_kvm!();
    let bb = busybox();
    let size = std::fs::metadata(bb).unwrap().len();
    for (policy, expect_all) in [("strict", true), ("dmvx", false)] {
        let o = run_vmm(&["--variants", "2", "--policy", policy, "--stats", "--", &divergent(), "read", bb], b"");
        assert_eq!(status(&o), 0, "{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("read {size} bytes")), "{}", stdout(&o));
        let shipped = replicated_file_bytes(&stderr(&o));
        if expect_all {
            assert!(shipped >= size, "strict shipped {shipped} of {size} bytes");
        } else {
            assert_eq!(shipped, 0, "dmvx shipped file contents");
        }
    }
}

/// A cluster file for `n` variants on loopback with a short timeout.
fn cluster_file(dir: &Path, n: u32, timeout_ms: u32) -> std::path::PathBuf {
    ClusterKeys::new(dir, n as usize).local_cluster(dir, "test", timeout_ms, "[policy]\npreset = \"dmvx\"\n")
}

/// Runs the socket program in two variants, does `to_follower` to the
/// follower once the leader listens, sends a request; checks that nothing
/// of the reply left and returns the leader's report.
fn lose_the_follower(to_follower: i32) -> serde_json::Value {
    let d = TempDir::new("silent");
    let file = cluster_file(d.path(), 2, 2000);
    let port = free_port().to_string();
    let prog = divergent();
    let spawn = |id: &str, out: Stdio| {
        Command::new(vmm())
            .args(["--cluster", file.to_str().unwrap(), "--variant", id, "--report-dir", d.path().to_str().unwrap()])
            .args(["--", &prog, "socket", &port])
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut follower = spawn("1", Stdio::null());
    let mut leader = spawn("0", Stdio::piped());
    let mut out = BufReader::new(leader.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the leader ended early");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(follower.id() as i32, to_follower) };
    let mut c = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"request\n").unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.is_empty(), "output left without the follower's agreement: {:?}", String::from_utf8_lossy(&got));
    let mut err = String::new();
    let _ = leader.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(leader.wait().unwrap().code(), Some(121), "{err}");
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(d.join("dmvx-divergence-variant0.json").exists(), "no report: {err}");
    leader_report(d.path())
}

#[test]
fn a_follower_that_stops_answering_stops_the_run_before_output_leaves() {
    require_kvm!();
    let r = lose_the_follower(libc::SIGSTOP);
    assert_eq!(r["kind"], "silent", "{r:#}");
    assert_eq!(r["variant"], 1);
    assert!(r["message"].as_str().unwrap().contains("stopped answering"), "{r:#}");
}

#[test]
fn a_follower_that_dies_stops_the_run_before_output_leaves() {
    require_kvm!();
    let r = lose_the_follower(libc::SIGKILL);
    assert_eq!(r["kind"], "link", "{r:#}");
    assert_eq!(r["variant"], 1);
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("the link to variant 1 failed"), "{r:#}");
}

#[test]
fn a_cluster_with_a_wrong_key_or_program_is_refused() {
    require_kvm!();
    let d = TempDir::new("badkey");
    let keys = ClusterKeys::new(d.path(), 2);
    let file = keys.local_cluster(d.path(), "test", 2000, "[policy]\npreset = \"dmvx\"\n");
    // Variant 1 with a key pair of its own making, which the leader's file does not list.
    std::fs::create_dir(d.join("stranger")).unwrap();
    let stranger = ClusterKeys::new(&d.join("stranger"), 1);
    let other = d.join("other.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let (theirs, ours) = (stranger.files[0].display().to_string(), keys.files[1].display().to_string());
    std::fs::write(&other, text.replace(&keys.public[1], &stranger.public[0]).replace(&ours, &theirs)).unwrap();
    let bb = busybox();
    let leader = Command::new(vmm())
        .args(["--cluster", file.to_str().unwrap(), "--variant", "0", "--", bb, "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower = run_vmm(&["--cluster", other.to_str().unwrap(), "--variant", "1", "--", bb, "true"], b"");
    let lo = leader.wait_with_output().unwrap();
    assert_eq!(status(&follower), 125, "{}", stderr(&follower));
    assert_eq!(status(&lo), 125, "{}", stderr(&lo));
    assert!(
        stderr(&follower).contains("our key is not the one its cluster file lists for variant 1"),
        "{}",
        stderr(&follower)
    );
    assert!(stderr(&lo).contains("its key is not listed in our cluster file"), "{}", stderr(&lo));
    // Different programs: the handshake compares their digests.
    let leader = Command::new(vmm())
        .args(["--cluster", file.to_str().unwrap(), "--variant", "0", "--", bb, "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower =
        run_vmm(&["--cluster", file.to_str().unwrap(), "--variant", "1", "--", &divergent(), "read", bb], b"");
    let lo = leader.wait_with_output().unwrap();
    assert_eq!(status(&follower), 125, "{}", stderr(&follower));
    let both = format!("{}{}", stderr(&follower), stderr(&lo));
    assert!(both.contains("program"), "{both}");
}

#[test]
fn a_variant_whose_image_differs_from_the_cluster_digest_is_refused() {
    require_kvm!();
    require_root!();
    let root = rootfs("lighttpd");
    let digest = std::fs::read_to_string(root.with_extension("manifest.sha256")).unwrap();
    let digest = format!("sha256:{}", digest.split_whitespace().next().unwrap());
    let d = TempDir::new("image");
    let file = cluster_file(d.path(), 1, 2000);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("[policy]", &format!("[digests]\nimage = \"{digest}\"\n\n[policy]"))).unwrap();
    let args = |r: &Path| -> Vec<String> {
        ["--cluster", file.to_str().unwrap(), "--variant", "0", "--rootfs", r.to_str().unwrap(), "--read-only"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--", "/usr/sbin/lighttpd", "-v"].map(String::from))
            .collect()
    };
    let run = |r: &Path| {
        let a = args(r);
        run_vmm(&a.iter().map(String::as_str).collect::<Vec<_>>(), b"")
    };
    // The image as built: verified, and the program runs.
    let ok = run(&root);
    assert_eq!(status(&ok), 0, "{}", stderr(&ok));
    assert!(stdout(&ok).contains("lighttpd/"), "{}", stdout(&ok));
    // A copy with one byte of the configuration changed is refused, by name.
    let copy = d.join("rootfs");
    let cp = Command::new("cp").arg("-a").arg(&root).arg(&copy).status().unwrap();
    assert!(cp.success());
    std::fs::copy(root.with_extension("manifest"), copy.with_extension("manifest")).unwrap();
    let conf = copy.join("etc/lighttpd/lighttpd-env.conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&conf, bytes).unwrap();
    let bad = run(&copy);
    assert_eq!(status(&bad), 125, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("/etc/lighttpd/lighttpd-env.conf changed"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());
    // A manifest that is not the one the cluster names is refused too.
    std::fs::write(copy.with_extension("manifest"), b"# dmvx-rootfs-manifest v1: forged\n").unwrap();
    let forged = run(&copy);
    assert_eq!(status(&forged), 125, "{}", stderr(&forged));
    assert!(stderr(&forged).contains("the cluster file says"), "{}", stderr(&forged));
}

/// A directory opened under a mutable path (/tmp) is the leader's; calls
/// relative to it (openat(fd, "a") as GNU find makes them) must classify the
/// same on the follower, which has no host descriptor for it.
#[test]
fn find_under_a_mutable_directory_agrees_in_two_variants() {
    require_kvm!();
    if !Path::new("/usr/bin/find").exists() {
        shout("SKIPPED find_under_a_mutable_directory_agrees_in_two_variants: no /usr/bin/find");
        return;
    }
    let d = TempDir::new("find-mvx");
    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::write(tree.join("a/b/c/f1"), b"1").unwrap();
    std::fs::write(tree.join("a/f2"), b"2").unwrap();
    let t = tree.to_str().unwrap();
    let native = run("/usr/bin/find", &[t], b"");
    let multi =
        run_vmm(&["--variants", "2", "--report-dir", d.path().to_str().unwrap(), "--", "/usr/bin/find", t], b"");
    assert_eq!(status(&multi), 0, "{}", stderr(&multi));
    assert_eq!(stdout(&multi), stdout(&native));
    assert!(reports(d.path()).is_empty(), "a divergence was reported: {}", stderr(&multi));
}

#[test]
fn variants_are_chosen_by_the_names_in_the_cluster_file() {
    require_kvm!();
    let d = TempDir::new("names");
    let file = cluster_file(d.path(), 2, 5000);
    let text = std::fs::read_to_string(&file).unwrap();
    let named = text.replace("id = 0\n", "id = 0\nname = \"alpha\"\n").replace("id = 1\n", "id = 1\nname = \"beta\"\n");
    std::fs::write(&file, named).unwrap();
    let (f, bb) = (file.to_str().unwrap(), busybox());
    let follower = Command::new(vmm())
        .args(["--cluster", f, "--variant", "beta", "--", bb, "sha256sum", "/etc/os-release"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let leader = run_vmm(&["--cluster", f, "--variant", "alpha", "--", bb, "sha256sum", "/etc/os-release"], b"");
    let fo = follower.wait_with_output().unwrap();
    assert_eq!(status(&leader), 0, "{}", stderr(&leader));
    assert_eq!(status(&fo), 0, "{}", stderr(&fo));
    let native = run(bb, &["sha256sum", "/etc/os-release"], b"");
    assert_eq!(stdout(&leader), stdout(&native));
    // A name the file does not give, and a name without a cluster file.
    expect_vmm(&["--cluster", f, "--variant", "gamma", "--", bb, "true"], 125, &["no variant is named \"gamma\""]);
    expect_vmm(&["--variant", "alpha", "--", bb, "true"], 2, &["give --cluster FILE"]);
}

/// The leader's stdout is a file (the launcher gives followers /dev/null):
/// the write to it is the same call in every variant, and the file gets the
/// output once.
#[test]
fn output_to_a_file_agrees_in_two_variants() {
    require_kvm!();
    let d = TempDir::new("stdout-file");
    let out = d.join("out.txt");
    let st = std::process::Command::new(vmm())
        .args([
            "--variants",
            "2",
            "--report-dir",
            d.path().to_str().unwrap(),
            "--",
            busybox(),
            "sha256sum",
            "/etc/os-release",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let native = std::process::Command::new(busybox()).args(["sha256sum", "/etc/os-release"]).output().unwrap();
    assert_eq!(st.status.code(), Some(0), "{}", String::from_utf8_lossy(&st.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), native.stdout);
}

/// The CPUs a program sees are the leader's host's, in every variant: a
/// follower whose host has fewer (here: a VMM allowed one CPU) still tells
/// its program the leader's count through every interface, so its output
/// agrees; a leader allowed one CPU makes every variant see one.
#[test]
fn every_variant_sees_the_leaders_cpus() {
    require_kvm!();
    // SAFETY: sysconf has no memory preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let script = "nproc; nproc --all; getconf _NPROCESSORS_ONLN; getconf _NPROCESSORS_CONF; \
                  grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online; \
                  grep -c '^cpu[0-9]' /proc/stat";
    let d = TempDir::new("cpus");
    let file = cluster_file(d.path(), 2, 5000);
    let run_pair = |leader_cpus: Option<&str>, follower_cpus: Option<&str>| {
        let spawn = |id: &str, cpus: Option<&str>, out: Stdio| {
            let mut c = match cpus {
                Some(list) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", list]).arg(vmm());
                    c
                }
                None => Command::new(vmm()),
            };
            c.args(["--cluster", file.to_str().unwrap(), "--variant", id, "--report-dir", d.path().to_str().unwrap()])
                .args(["--", "/bin/sh", "-c", script])
                .stdout(out)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let follower = spawn("1", follower_cpus, Stdio::null());
        let leader = spawn("0", leader_cpus, Stdio::piped());
        let lo = leader.wait_with_output().unwrap();
        let fo = follower.wait_with_output().unwrap();
        assert_eq!(status(&lo), 0, "leader: {}", stderr(&lo));
        assert_eq!(status(&fo), 0, "follower: {}", stderr(&fo));
        stdout(&lo)
    };
    let list = |n: i64| if n == 1 { "0".to_string() } else { format!("0-{}", n - 1) };
    let want = |n: i64| format!("{n}\n{n}\n{n}\n{n}\n{n}\n{}\n{n}\n", list(n));
    assert_eq!(run_pair(Some("0"), None), want(1), "a leader allowed one CPU");
    if online < 2 {
        shout("every_variant_sees_the_leaders_cpus: this host has one CPU, only the one-CPU leader was checked");
        return;
    }
    assert_eq!(run_pair(None, Some("0")), want(online), "a follower allowed one CPU");
}

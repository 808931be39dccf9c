//! Variants on separate hosts: each VMM in its own network namespace, the
//! hosts joined by veth through a bridge on the leader's host, 0.1 ms added
//! each way between the leader and every follower. The client reaches the
//! leader's host without added delay. Every variant verifies its image
//! against the digest in the cluster file before joining. The tests create
//! and remove the namespaces themselves.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dmvx::*;

const DELAY_US: u32 = 100;
const CLUSTER_PORT: u16 = 7700;
const HTTP_PORT: u16 = 8080;

/// Variant `i`'s cluster file: the same keys and tables on every host; only
/// the leader's address differs (each follower reaches it through its relay).
fn cluster_text(keys: &ClusterKeys, leader: &str, hosts: &TestHosts, image: &str) -> String {
    let addresses: Vec<String> = (0..keys.files.len())
        .map(|i| if i == 0 { leader.to_string() } else { format!("{}:{CLUSTER_PORT}", hosts.addrs[i]) })
        .collect();
    let tables = format!("[digests]\nimage = \"{image}\"\n\n[policy]\npreset = \"dmvx\"\n");
    keys.cluster_text("hosts", 10000, &tables, &addresses)
}

/// A reference: the same server as a single variant in this namespace.
fn reference(pkg: &str, root: &Path) -> (Server, u16) {
    let port = free_port();
    let mut cmd = Command::new(vmm());
    let spec = ServerSpec::new(pkg, root, port);
    cmd.arg("--rootfs").arg(root).args(spec.vmm_args());
    (Server::start(cmd, port).holding(spec), port)
}

/// The variants answer as the single reference does, byte for byte.
fn same_responses(pkg: &str, via: &[&str], reference: u16) {
    for path in ["/4k.bin", "/index.html", "/1m.bin", "/missing"] {
        let a = http_get("127.0.0.1", reference, path);
        let b = http_get_via(via, "127.0.0.1", HTTP_PORT, path);
        assert_eq!(b.code, a.code, "{pkg} {path}");
        assert!(b.body == a.body, "{pkg} {path}: body differs");
        for h in ["Content-Type", "Content-Length", "ETag", "Last-Modified"] {
            assert_eq!(b.header(h), a.header(h), "{pkg} {path}: {h}");
        }
    }
}

fn across_hosts(pkg: &str, n: usize) {
    across_hosts_as(pkg, pkg, n, DELAY_US);
}

/// Server `pkg` (a `ServerSpec` name) from image `image_name` on `n` hosts,
/// `delay_us` added each way.
/// One image at a time: a server's configuration for another port is
/// written into the image's /run, which every variant's VMM then checks
/// against the image's manifest (a test's file made another's check fail).
static IMAGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn across_hosts_as(image_name: &str, pkg: &str, n: usize, delay_us: u32) {
    let _one = IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    let root = rootfs(image_name);
    let mut hosts = TestHosts::new(&pkg[..3], n, delay_us);
    shout(&format!(
        "{pkg} on {n} hosts: {} ms each way added by {}",
        delay_us as f64 / 1000.0,
        if delay_us == 0 {
            "nobody"
        } else if hosts.netem {
            "tc netem"
        } else {
            "dmvx-netdelay (this kernel has no netem: CONFIG_NET_SCH_NETEM is off)"
        }
    ));
    // Every host checks its image against the digest before joining.
    let image = std::fs::read_to_string(root.with_extension("manifest.sha256")).unwrap();
    let image = format!("sha256:{}", image.split_whitespace().next().unwrap());
    let dir = TempDir::new("hosts");
    let keys = ClusterKeys::new(dir.path(), n);
    let mut vmms: Vec<Child> = Vec::new();
    for i in (0..n).rev() {
        let leader = hosts.leader_address(i, CLUSTER_PORT, delay_us);
        let leader = if i == 0 { format!("{}:{CLUSTER_PORT}", hosts.addrs[0]) } else { leader };
        let file = dir.join(&format!("cluster-{i}.toml"));
        std::fs::write(&file, cluster_text(&keys, &leader, &hosts, &image)).unwrap();
        let mut cmd = hosts.command(i, vmm().to_str().unwrap());
        cmd.args(["--cluster", file.to_str().unwrap(), "--variant", &i.to_string()])
            .args(["--report-dir", dir.path().to_str().unwrap()])
            .arg("--rootfs")
            .arg(&root)
            .args(ServerSpec::new(pkg, &root, HTTP_PORT).vmm_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        vmms.push(cmd.spawn().expect("start a variant"));
    }
    vmms.reverse();
    let via = ["ip", "netns", "exec", hosts.names[0].as_str()];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", &hosts.names[0], "curl", "-s", "-m", "5", "-o", "/dev/null"])
            .arg(format!("http://127.0.0.1:{HTTP_PORT}/"))
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        if vmms.iter_mut().any(|v| v.try_wait().unwrap().is_some()) || Instant::now() >= deadline {
            let all: Vec<String> = vmms
                .iter_mut()
                .enumerate()
                .map(|(i, v)| {
                    let _ = v.kill();
                    let st = v.wait().unwrap();
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(v.stderr.as_mut().unwrap(), &mut err);
                    format!("variant {i} ({st}): {err}")
                })
                .collect();
            panic!("{pkg} on {n} hosts: a variant ended or none served in 30 s:\n{}", all.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (single, port) = reference(pkg, &root);
    same_responses(pkg, &via, port);
    let url = format!("http://127.0.0.1:{HTTP_PORT}/4k.bin");
    let o = Command::new("ip")
        .args(["netns", "exec", &hosts.names[0], "wrk", "-t1", "-c10", "-d10s", &url])
        .output()
        .expect("run wrk");
    let raw = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "wrk: {raw}");
    assert!(!raw.contains("Socket errors") && !raw.contains("Non-2xx"), "{pkg} on {n} hosts under wrk:\n{raw}");
    let rps = raw.lines().find(|l| l.starts_with("Requests/sec")).unwrap_or("").to_string();
    same_responses(pkg, &via, port);
    // lighttpd exits 1 when clients are still connected at SIGTERM.
    wait_connections_closed(&via, HTTP_PORT);
    // SAFETY: signalling our own child (ip netns exec execs the VMM).
    unsafe { libc::kill(vmms[0].id() as i32, libc::SIGTERM) };
    let ends: Vec<(Option<i32>, String)> = vmms
        .into_iter()
        .map(|mut v| {
            let st = v.wait().unwrap();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(v.stderr.as_mut().unwrap(), &mut err);
            (st.code(), err)
        })
        .collect();
    for (i, (code, err)) in ends.iter().enumerate() {
        assert!(*code == Some(0) && !err.contains("diverged"), "variant {i} of {pkg} ended {code:?}; all: {ends:#?}");
    }
    let reports: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dmvx-divergence"))
        .collect();
    assert!(reports.is_empty(), "divergence reports written");
    let _ = single.stop();
    shout(&format!("{pkg} on {n} hosts: {rps}, 0 errors, 0 divergences"));
}

fn require_ip() -> bool {
    let ok = Command::new("ip").arg("-V").output().is_ok() && Command::new("tc").arg("-V").output().is_ok();
    if !ok {
        shout("SKIPPED: iproute2 (ip, tc) is not installed");
    }
    ok
}

#[test]
fn lighttpd_on_two_and_three_hosts() {
    require_kvm!();
    require_root!();
    if !require_ip() {
        return;
    }
    across_hosts("lighttpd", 2);
    across_hosts("lighttpd", 3);
}

#[test]
fn nginx_on_two_and_three_hosts() {
    require_kvm!();
    require_root!();
    if !require_ip() {
        return;
    }
    across_hosts("nginx", 2);
    across_hosts("nginx", 3);
}

/// nginx as Debian ships it: a master process and 2 workers in every
/// variant, each variant on its own host. Each worker's stream connects to
/// a port of its own on the leader's host, which dmvx-netdelay (one port)
/// does not relay: the delay is added only where netem can add it.
#[test]
fn nginx_with_two_workers_on_two_hosts() {
    require_kvm!();
    require_root!();
    if !require_ip() {
        return;
    }
    let delay = if netem_available() { DELAY_US } else { 0 };
    across_hosts_as("nginx", "nginx-workers", 2, delay);
}

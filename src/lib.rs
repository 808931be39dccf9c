//! Support for the end-to-end tests in tests/: locating `dmvx-vmm`, building
//! the C test programs, running commands, temporary directories, and the
//! loud skip when /dev/kvm is absent.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The PATH programs get inside the VM by default.
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory of the running test binary (target/<profile>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// The `dmvx-vmm` binary built alongside the tests.
pub fn vmm() -> PathBuf {
    let p = target_dir().join("dmvx-vmm");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --workspace, as scripts/test.sh does)",
        p.display()
    );
    p
}

/// Writes straight to the process's stderr, past the test harness's
/// output capture, so skips are never silent.
pub fn shout(msg: &str) {
    let line = format!("\n*** {msg} ***\n");
    // SAFETY: writing a valid buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Whether /dev/kvm can be used; says so loudly when not.
pub fn kvm_available(test: &str) -> bool {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            shout(&format!("SKIPPED {test}: /dev/kvm is not usable here ({e}); this test needs KVM"));
            false
        }
    }
}

/// Returns from the test early (loudly) when KVM is absent.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::kvm_available(module_path!()) {
            return;
        }
    };
}

/// Whether the tests run as root; says so loudly when not.
pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    shout(&format!("SKIPPED {test}: needs root (device nodes in images, chroot)"));
    false
}

/// Returns from the test early (loudly) when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root(module_path!()) {
            return;
        }
    };
}

static ROOTFS_LOCK: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The root filesystem of Debian package `pkg` (images/out/rootfs-PKG),
/// built by images/build-rootfs.sh once per test process (the script itself
/// skips the work when the tree is up to date). Needs root.
pub fn rootfs(pkg: &str) -> PathBuf {
    let mut built = ROOTFS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace().join(format!("images/out/rootfs-{pkg}"));
    if !built.iter().any(|p| p == pkg) {
        let script = workspace().join("images/build-rootfs.sh");
        let o = run("/bin/bash", &[script.to_str().unwrap(), pkg], b"");
        assert_eq!(status(&o), 0, "images/build-rootfs.sh {pkg} failed:\n{}{}", stdout(&o), stderr(&o));
        built.push(pkg.to_string());
    }
    dir
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Compiles a C file (relative to the workspace) with gcc and `flags`,
/// once per flag set; returns the binary.
pub fn build_c(src: &str, flags: &[&str]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src_path = workspace().join(src);
    let stem = Path::new(src).file_stem().and_then(|s| s.to_str()).expect("source file name");
    let tag: String =
        flags.iter().map(|f| f.trim_start_matches('-').replace(['=', '/'], "_")).collect::<Vec<_>>().join("-");
    let dir = target_dir().join("dmvx-test-programs");
    std::fs::create_dir_all(&dir).expect("create test program dir");
    let out = dir.join(format!("{stem}-{tag}"));
    let fresh = |o: &Path| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(o), std::fs::metadata(&src_path)) else {
            return false;
        };
        a.modified().ok() >= b.modified().ok()
    };
    if !fresh(&out) {
        let status = Command::new("gcc")
            .args(["-O1", "-g0", "-Wall"])
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src_path)
            .status()
            .expect("run gcc (is it installed?)");
        assert!(status.success(), "gcc failed for {src} {flags:?}");
    }
    out
}

/// Runs `dmvx-vmm` with `args`, feeding `stdin`.
pub fn run_vmm(args: &[&str], stdin: &[u8]) -> Output {
    run(vmm().as_os_str().to_str().expect("utf-8 path"), args, stdin)
}

/// Runs `program` with `args`, feeding `stdin`, with a clean environment.
pub fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", GUEST_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for child");
    let _ = writer.join();
    out
}

/// Runs `dmvx-vmm` with `args` and checks that it exits with `code` and that
/// its stderr contains every one of `needles`.
pub fn expect_vmm(args: &[&str], code: i32, needles: &[&str]) {
    let o = run_vmm(args, b"");
    assert_eq!(status(&o), code, "{args:?}: {}", stderr(&o));
    for needle in needles {
        assert!(stderr(&o).contains(needle), "{args:?}: expected '{needle}' in:\n{}", stderr(&o));
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit status a shell would report (128+N for signal N).
pub fn status(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0))
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), name)
    }

    /// A temporary directory inside `base` (e.g. on the workspace's file
    /// system when /tmp may be mounted nodev).
    pub fn new_in(base: &Path, name: &str) -> TempDir {
        let p = base.join(
            format!("dmvx-test-{name}-{}-{:?}", std::process::id(), std::thread::current().id())
                .replace(['(', ')'], ""),
        );
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One key pair per variant of a test cluster, written by `dmvx-vmm keygen`
/// as an operator would.
pub struct ClusterKeys {
    /// Variant `i`'s private key file.
    pub files: Vec<PathBuf>,
    /// Variant `i`'s public key, as the cluster file lists it.
    pub public: Vec<String>,
}

impl ClusterKeys {
    /// Key pairs for `n` variants in `dir` (`variant-I.key` and `.pub`).
    pub fn new(dir: &Path, n: usize) -> ClusterKeys {
        let mut keys = ClusterKeys { files: Vec::new(), public: Vec::new() };
        for i in 0..n {
            let file = dir.join(format!("variant-{i}.key"));
            let o = run_vmm(&["keygen", file.to_str().expect("utf-8 path")], b"");
            assert_eq!(status(&o), 0, "dmvx-vmm keygen: {}", stderr(&o));
            let public = std::fs::read_to_string(file.with_extension("key.pub")).expect("keygen wrote FILE.pub");
            assert!(stdout(&o).contains(public.trim()), "keygen printed another public key: {}", stdout(&o));
            keys.files.push(file);
            keys.public.push(public.trim().to_string());
        }
        keys
    }

    /// A cluster file's text: variant `i` at `addresses[i]` (variant 0
    /// leads) with its key pair, its entry naming its private key file, so
    /// `--cluster FILE --variant I` is all a variant needs. `tables` (e.g.
    /// `[policy]`, `[digests]`) follow `[cluster]`.
    pub fn cluster_text(&self, name: &str, timeout_ms: u32, tables: &str, addresses: &[String]) -> String {
        let mut s = format!("[cluster]\nname = \"{name}\"\ntimeout_ms = {timeout_ms}\n\n{tables}\n");
        for (i, address) in addresses.iter().enumerate() {
            let role = if i == 0 { "leader" } else { "follower" };
            s.push_str(&format!(
                "[[variant]]\nid = {i}\naddress = \"{address}\"\nrole = \"{role}\"\npublic_key = \"{}\"\nprivate_key_file = \"{}\"\n\n",
                self.public[i],
                self.files[i].display()
            ));
        }
        s
    }

    /// Writes a cluster file for variants on loopback, at free ports, into
    /// `dir/cluster.toml`.
    pub fn local_cluster(&self, dir: &Path, name: &str, timeout_ms: u32, tables: &str) -> PathBuf {
        let addresses: Vec<String> = self.files.iter().map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let p = dir.join("cluster.toml");
        std::fs::write(&p, self.cluster_text(name, timeout_ms, tables, &addresses)).expect("write the cluster file");
        p
    }
}

/// Copies `src` to `dst`, executable.
pub fn install_exe(src: &Path, dst: &Path) {
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).expect("create dir");
    }
    std::fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Debian's static busybox, which the tests need.
pub fn busybox() -> &'static str {
    let p = "/bin/busybox";
    assert!(
        Path::new(p).exists(),
        "{p} is missing: install Debian's busybox-static (apt-get install busybox-static; .ci/run does)"
    );
    p
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process that listens on a TCP port; killed when dropped.
pub struct Server {
    child: std::process::Child,
    what: String,
    port: u16,
    spec: Option<ServerSpec>,
}

impl Server {
    /// Spawns `cmd` (stdout and stderr are captured) and waits until it
    /// accepts connections on 127.0.0.1:`port`.
    pub fn start(mut cmd: Command, port: u16) -> Server {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let mut server = Server { child, what, port, spec: None };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = server.child.try_wait().unwrap() {
                let (_, err) = server.output();
                panic!("{} exited ({st}) before listening on {port}: {err}", server.what);
            }
            assert!(Instant::now() < deadline, "{} never listened on {port}", server.what);
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Keeps `spec` (and the files it wrote) as long as the server.
    pub fn holding(mut self, spec: ServerSpec) -> Server {
        self.spec = Some(spec);
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (out, err)
    }

    /// Sends SIGTERM, as an operator would, and waits; returns the exit
    /// status (128+N for signal N), stdout and stderr.
    pub fn stop(self) -> (i32, String, String) {
        self.stop_with(libc::SIGTERM)
    }

    /// Like `stop`, with signal `sig` (SIGQUIT: nginx's graceful shutdown).
    pub fn stop_with(mut self, sig: i32) -> (i32, String, String) {
        // lighttpd exits 1 when clients are still connected at SIGTERM.
        wait_connections_closed(&[], self.port);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{} ignores signal {sig}", self.what);
            std::thread::sleep(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        let (out, err) = self.output();
        (code, out, err)
    }
}

/// Waits (up to 20 s) until nothing is connected to local TCP `port`
/// (the server closed every connection clients left), with `ss` run
/// through `prefix` (e.g. `ip netns exec NS`; empty: here).
pub fn wait_connections_closed(prefix: &[&str], port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let filter = format!("( sport = :{port} )");
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend(["ss", "-Htn", "state", "established", "state", "close-wait", &filter]);
    loop {
        let o = Command::new(args[0]).args(&args[1..]).output().expect("run ss (iproute2)");
        let open = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && open.trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the server on port {port} never closed its connections:\n{open}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response as curl saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// GETs http://`host`:`port``path` with the real curl.
pub fn http_get(host: &str, port: u16, path: &str) -> Response {
    http_get_via(&[], host, port, path)
}

/// How to start one of the image servers (lighttpd, nginx) on `port`.
pub struct ServerSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A configuration written into the image, removed on drop.
    written: Option<PathBuf>,
}

impl Drop for ServerSpec {
    fn drop(&mut self) {
        if let Some(p) = &self.written {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl ServerSpec {
    /// `pkg` from its root filesystem `root`, listening on 127.0.0.1:`port`.
    pub fn new(pkg: &str, root: &Path, port: u16) -> ServerSpec {
        match pkg {
            "lighttpd" => ServerSpec {
                argv: ["/usr/sbin/lighttpd", "-D", "-f", "/etc/lighttpd/lighttpd-env.conf"].map(String::from).to_vec(),
                env: vec![("DMVX_HTTP_ADDR".into(), "127.0.0.1".into()), ("DMVX_HTTP_PORT".into(), port.to_string())],
                written: None,
            },
            "nginx" => {
                // The image's configuration listens on 8080; for another
                // port, the documented override: a copy with another
                // `listen`, in the writable /run.
                let (conf, written) = if port == 8080 {
                    ("/etc/nginx/nginx.conf".to_string(), None)
                } else {
                    let text = std::fs::read_to_string(root.join("etc/nginx/nginx.conf")).unwrap();
                    let name = format!("run/nginx-{port}.conf");
                    let text = text.replace("listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{port};"));
                    std::fs::write(root.join(&name), text).unwrap();
                    (format!("/{name}"), Some(root.join(&name)))
                };
                ServerSpec {
                    argv: ["/usr/sbin/nginx", "-c", &conf, "-g", "daemon off; master_process off;"]
                        .map(String::from)
                        .to_vec(),
                    env: vec![],
                    written,
                }
            }
            // Debian's way (the image's nginx-workers.conf): a master
            // process and 2 workers, which it forks and talks to over
            // socket pairs.
            "nginx-workers" => {
                let (conf, written) = if port == 8080 {
                    ("/etc/nginx/nginx-workers.conf".to_string(), None)
                } else {
                    let text = std::fs::read_to_string(root.join("etc/nginx/nginx-workers.conf")).unwrap();
                    let name = format!("run/nginx-workers-{port}.conf");
                    let text = text.replace("listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{port};"));
                    std::fs::write(root.join(&name), text).unwrap();
                    (format!("/{name}"), Some(root.join(&name)))
                };
                ServerSpec {
                    argv: ["/usr/sbin/nginx", "-c", &conf, "-g", "daemon off;"].map(String::from).to_vec(),
                    env: vec![],
                    written,
                }
            }
            _ => panic!("no server spec for {pkg}"),
        }
    }

    /// The `dmvx-vmm` arguments that run it: `--env K=V ... -- ARGV`.
    pub fn vmm_args(&self) -> Vec<String> {
        let mut v: Vec<String> = self.env.iter().flat_map(|(k, val)| ["--env".into(), format!("{k}={val}")]).collect();
        v.push("--".into());
        v.extend(self.argv.iter().cloned());
        v
    }
}

/// What wrk reported.
#[derive(Debug, Clone)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub socket_errors: u64,
    pub non_2xx: u64,
    pub raw: String,
}

/// How long wrk waits for a response before it counts a timeout (its own
/// default is 2 s). A server in dmvx may leave a connection waiting longer
/// under load, with nothing wrong: after each keep-alive response lighttpd
/// reads the same connection's next request at once, and since a system
/// call in dmvx takes longer than wrk's turnaround, that request is always
/// there. One connection is then served hundreds of times in a row while
/// the others wait for lighttpd's next epoll_wait: streaks of 0.2-0.7 s
/// measured on a loaded 2-CPU host, over 2 s on a busier one (CI).
pub const WRK_TIMEOUT: &str = "10s";

/// Runs `wrk -t1 -cCONNS -dSECSs` against http://host:port/path.
pub fn wrk(host: &str, port: u16, path: &str, conns: u32, secs: u32) -> WrkReport {
    let url = format!("http://{host}:{port}{path}");
    let (c, d) = (format!("-c{conns}"), format!("-d{secs}s"));
    let o = run("wrk", &["-t1", &c, &d, "--timeout", WRK_TIMEOUT, "--latency", &url], b"");
    assert_eq!(status(&o), 0, "wrk {url}: {}{}", stdout(&o), stderr(&o));
    let raw = stdout(&o);
    let num = |s: &str| s.trim().trim_end_matches(',').parse::<f64>().unwrap_or(0.0);
    let mut r = WrkReport { requests: 0, requests_per_sec: 0.0, socket_errors: 0, non_2xx: 0, raw: raw.clone() };
    for l in raw.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("Requests/sec:") {
            r.requests_per_sec = num(rest);
        } else if l.contains("requests in") {
            r.requests = num(l.split_whitespace().next().unwrap_or("0")) as u64;
        } else if let Some(rest) = l.strip_prefix("Socket errors:") {
            // connect N, read N, write N, timeout N
            r.socket_errors = rest.split(',').filter_map(|p| p.split_whitespace().nth(1)).map(|n| num(n) as u64).sum();
        } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = num(rest) as u64;
        }
    }
    r
}

/// Test hosts: network namespaces joined by veth to a bridge in the first
/// one (the leader's host), with `delay_us` added each way between the
/// leader's host and every other: by `tc netem` where the kernel has it,
/// otherwise by a delaying TCP relay (dmvx-netdelay) in front of the leader.
pub struct TestHosts {
    pub names: Vec<String>,
    /// Each host's address on the bridge.
    pub addrs: Vec<String>,
    /// How the delay was added.
    pub netem: bool,
    relays: Vec<std::process::Child>,
}

/// Whether this kernel has the netem qdisc.
pub fn netem_available() -> bool {
    let ns = format!("dmvxprobe{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success())
        && Command::new("tc")
            .args(["-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "100us"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    ok
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

impl TestHosts {
    /// `n` hosts named after `tag`.
    pub fn new(tag: &str, n: usize, delay_us: u32) -> TestHosts {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{}{}", std::process::id() % 100_000, k);
        let names: Vec<String> = (0..n).map(|i| format!("dmvx-{tag}-{id}-{i}")).collect();
        let addrs: Vec<String> = (0..n).map(|i| format!("10.233.0.{}", i + 1)).collect();
        let netem = netem_available();
        let hosts = TestHosts { names, addrs, netem, relays: Vec::new() };
        let h0 = hosts.names[0].clone();
        for n in &hosts.names {
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &h0, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &h0, "addr", "add", "10.233.0.1/24", "dev", "br0"]);
        sh(&["ip", "-n", &h0, "link", "set", "br0", "up"]);
        for i in 1..n {
            let (a, b) = (format!("dv{id}a{i}"), format!("dv{id}b{i}"));
            let hi = hosts.names[i].clone();
            sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            sh(&["ip", "link", "set", &a, "netns", &h0]);
            sh(&["ip", "link", "set", &b, "netns", &hi]);
            sh(&["ip", "-n", &h0, "link", "set", &a, "master", "br0", "up"]);
            sh(&["ip", "-n", &hi, "addr", "add", &format!("{}/24", hosts.addrs[i]), "dev", &b]);
            sh(&["ip", "-n", &hi, "link", "set", &b, "up"]);
            if netem && delay_us > 0 {
                let d = format!("{delay_us}us");
                sh(&["tc", "-n", &hi, "qdisc", "add", "dev", &b, "root", "netem", "delay", &d]);
                sh(&["tc", "-n", &h0, "qdisc", "add", "dev", &a, "root", "netem", "delay", &d]);
            }
        }
        hosts
    }

    /// `cmd` run in host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i], program]);
        c
    }

    /// The address variant `i` reaches the leader's `port` at: directly
    /// with netem, else through a delaying relay started in host `i`.
    pub fn leader_address(&mut self, i: usize, port: u16, delay_us: u32) -> String {
        let direct = format!("{}:{port}", self.addrs[0]);
        if i == 0 || self.netem || delay_us == 0 {
            return direct;
        }
        let local = format!("127.0.0.1:{}", port + 100 + i as u16);
        let relay = target_dir().join("dmvx-netdelay");
        assert!(relay.exists(), "{} is missing: build it first (cargo build --workspace)", relay.display());
        let mut cmd = self.command(i, relay.to_str().expect("utf-8 path"));
        cmd.args([local.as_str(), direct.as_str(), &delay_us.to_string()]).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start dmvx-netdelay");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
            .expect("relay ready");
        self.relays.push(child);
        local
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        for r in &mut self.relays {
            let _ = r.kill();
            let _ = r.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// GETs a URL with curl run through `prefix` (e.g. `ip netns exec NS`;
/// empty: directly).
pub fn http_get_via(prefix: &[&str], host: &str, port: u16, path: &str) -> Response {
    let dir = TempDir::new("curl");
    let (h, b) = (dir.join("headers"), dir.join("body"));
    let url = format!("http://{host}:{port}{path}");
    let (program, mut args) = match prefix.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => ("curl", vec![]),
    };
    if !prefix.is_empty() {
        args.push("curl");
    }
    args.extend(["-sS", "--max-time", "30", "-D", h.to_str().unwrap(), "-o", b.to_str().unwrap(), &url]);
    let o = Command::new(program).args(&args).output().expect("run curl");
    assert!(o.status.success(), "curl {url}: {}", String::from_utf8_lossy(&o.stderr));
    let head = std::fs::read_to_string(&h).unwrap_or_default();
    let mut lines = head.lines();
    let code = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Response { code, headers, body: std::fs::read(&b).unwrap_or_default() }
}

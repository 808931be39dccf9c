//! Support for the end-to-end tests in tests/: locating `dmvx-vmm`, building
//! the C test programs, running commands, temporary directories, and the
//! loud skip when /dev/kvm is absent.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

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
        let p = std::env::temp_dir().join(
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

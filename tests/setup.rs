//! README's two commands set up a clean clone: `git clone` of this
//! repository (what is committed) into a scratch directory, then the set-up
//! paths of `scripts/test.sh` and `scripts/demo.sh` run there, as on a fresh
//! machine: the Debian packages checked (and one that the host lacks
//! installed, then removed again), the release build, and the demo's image
//! built from nothing. Not the test suite again, and not the demo's run.

use std::path::Path;
use std::process::{Command, Output};

use dmvx::*;

/// A small Debian package that the host is unlikely to have.
const SPARE: &str = "hello";

/// Runs a script of the clone with this environment less cargo's (the
/// scripts run cargo themselves), building into `target`.
fn script(clone: &Path, target: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(clone.join(args[0]));
    cmd.args(&args[1..]).current_dir(clone).env("CARGO_TARGET_DIR", target);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" || key == "RUSTFLAGS" {
            cmd.env_remove(key);
        }
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn installed(pkg: &str) -> bool {
    let o = run("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", pkg], b"");
    status(&o) == 0 && stdout(&o).starts_with("ii")
}

/// Removes SPARE again if the test installed it.
struct Spare(bool);

impl Drop for Spare {
    fn drop(&mut self) {
        if self.0 {
            let o = run("apt-get", &["purge", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", SPARE], b"");
            if status(&o) != 0 {
                shout(&format!("could not remove {SPARE} again: {}", stderr(&o)));
            }
        }
    }
}

fn ok(what: &str, o: &Output) {
    assert_eq!(status(o), 0, "{what} failed:\n{}{}", stdout(o), stderr(o));
}

#[test]
fn readme_commands_set_up_a_clean_clone() {
    require_root!();
    require_kvm!();
    if !workspace().join(".git").exists() {
        shout("SKIPPED readme_commands_set_up_a_clean_clone: the workspace is not a git checkout");
        return;
    }
    // The clone's build reuses one directory across runs (a clean clone in
    // CI builds it from nothing); its sources and images are new each time,
    // outside this workspace (cargo would take the clone's guest kernel for
    // a package of this workspace).
    let target = target_dir().join("clean-clone");
    let dir = TempDir::new("clean-clone");
    let clone = dir.join("repo");
    let o = run("git", &["clone", "--quiet", workspace().to_str().unwrap(), clone.to_str().unwrap()], b"");
    ok("git clone", &o);
    assert!(!clone.join("images/out").exists(), "a clone has no images yet");

    // The packages: every one the list names is installed (the outer
    // scripts/test.sh set them up), and a check is only a check.
    let o = script(&clone, &target, &["scripts/setup-host.sh", "--list"]);
    ok("setup-host.sh --list", &o);
    let listed: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert!(listed.iter().any(|p| p == "busybox-static") && listed.iter().any(|p| p == "cpio"), "{listed:?}");
    for p in &listed {
        assert!(installed(p), "{p} is listed but not installed");
    }
    let o = script(&clone, &target, &["scripts/setup-host.sh", "--check"]);
    ok("setup-host.sh --check", &o);
    assert!(stderr(&o).contains(&format!("ok: {} Debian packages present", listed.len())), "{}", stderr(&o));

    // A package the host lacks is found missing, then installed by the set-up.
    if installed(SPARE) {
        shout(&format!("{SPARE} is installed here: not checking that a missing package gets installed"));
    } else {
        let list = clone.join("scripts/host-packages.txt");
        let text = std::fs::read_to_string(&list).unwrap();
        std::fs::write(&list, format!("{text}{SPARE} all tests/setup.rs: one the host lacks\n")).unwrap();
        let o = script(&clone, &target, &["scripts/setup-host.sh", "--check"]);
        assert_eq!(status(&o), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("missing Debian packages: {SPARE}")), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("apt-get install {SPARE}")), "{}", stderr(&o));
        let spare = Spare(true);
        let o = script(&clone, &target, &["scripts/setup-host.sh"]);
        ok("setup-host.sh", &o);
        assert!(installed(SPARE), "setup-host.sh did not install {SPARE}:\n{}", stderr(&o));
        assert!(stderr(&o).contains("1 just installed"), "{}", stderr(&o));
        drop(spare);
        assert!(!installed(SPARE));
        std::fs::write(&list, text).unwrap();
    }

    // README's test command, set-up only: packages and the release build.
    let o = script(&clone, &target, &["scripts/test.sh", "--setup-only"]);
    ok("scripts/test.sh --setup-only", &o);
    let vmm = target.join("release/dmvx-vmm");
    let o = run(vmm.to_str().unwrap(), &["--version"], b"");
    ok("the clone's dmvx-vmm --version", &o);
    assert!(stdout(&o).starts_with("dmvx-vmm "), "{}", stdout(&o));
    // README's demo command, set-up only: the same, and its image from nothing.
    let o = script(&clone, &target, &["scripts/demo.sh", "--setup-only"]);
    ok("scripts/demo.sh --setup-only", &o);
    let image = clone.join("images/out/rootfs-lighttpd");
    assert!(image.join("usr/sbin/lighttpd").exists(), "{}", stderr(&o));
    assert!(clone.join("images/out/debs").read_dir().unwrap().count() > 0, "no packages downloaded into the clone");
    let manifest = clone.join("images/out/rootfs-lighttpd.manifest");
    let o = run(
        "/bin/bash",
        &[clone.join("images/verify-rootfs.sh").to_str().unwrap(), image.to_str().unwrap(), manifest.to_str().unwrap()],
        b"",
    );
    ok("verify-rootfs.sh of the clone's image", &o);
    // From the same package versions, the clone's image is this checkout's.
    let here = rootfs("lighttpd");
    let read = |p: &Path, ext: &str| std::fs::read_to_string(format!("{}.{ext}", p.display())).unwrap();
    if read(&here, "packages") == read(&image, "packages") {
        assert_eq!(read(&here, "manifest.sha256"), read(&image, "manifest.sha256"));
    } else {
        shout("the clone's image was built from other package versions than this checkout's: digests not compared");
    }
}

//! The cluster's keys: `dmvx-vmm keygen` writes a key pair that only its
//! owner can read and that joins a real cluster; a private key file that
//! others may read, or that another user owns, is refused; `--variants`
//! leaves no cluster file for a guest to find, while it runs or after it was
//! killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use dmvx::*;

fn snoop() -> String {
    build_c("tests/programs/snoop.c", &["-static"]).to_string_lossy().into_owned()
}

/// Runs variants 0..n of the cluster in `file` with `args`; returns each
/// one's (status, stdout, stderr).
fn run_members(file: &Path, n: usize, args: &[&str]) -> Vec<(i32, String, String)> {
    let children: Vec<_> = (0..n)
        .rev()
        .map(|i| {
            Command::new(vmm())
                .arg("--cluster")
                .arg(file)
                .args(["--variant", &i.to_string()])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a variant")
        })
        .collect();
    let mut out: Vec<_> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().expect("wait for a variant");
            (status(&o), stdout(&o), stderr(&o))
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn keygen_writes_a_pair_only_its_owner_reads_which_joins_a_cluster() {
    require_kvm!();
    let d = TempDir::new("keygen");
    // ClusterKeys runs keygen and checks that it printed what FILE.pub holds.
    let keys = ClusterKeys::new(d.path(), 2);
    for (file, public) in keys.files.iter().zip(&keys.public) {
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{}", file.display());
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains(&format!("public_key = \"{public}\"")), "{text}");
        assert_eq!(public.len(), 64, "{public}");
    }
    assert_ne!(keys.public[0], keys.public[1]);
    // An existing key is not replaced unless asked to.
    let path = keys.files[0].to_str().unwrap();
    let o = run_vmm(&["keygen", path], b"");
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("exists there already") && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(std::fs::read_to_string(path).unwrap().contains(&keys.public[0]), "the key was replaced");
    let o = run_vmm(&["keygen", "--force", path], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(!std::fs::read_to_string(path).unwrap().contains(&keys.public[0]), "--force kept the old key");
    // Fresh pairs join a cluster, each VMM with its own key.
    std::fs::create_dir_all(d.join("fresh")).unwrap();
    let keys = ClusterKeys::new(&d.join("fresh"), 2);
    let file = keys.local_cluster(d.path(), "keygen", 5000, "");
    let out = run_members(&file, 2, &["--", "/bin/busybox", "echo", "joined"]);
    assert_eq!(out[0].0, 0, "leader: {}", out[0].2);
    assert_eq!(out[1].0, 0, "follower: {}", out[1].2);
    assert_eq!(out[0].1, "joined\n");
}

#[test]
fn a_private_key_file_others_may_read_or_own_is_refused() {
    let d = TempDir::new("loose-key");
    let keys = ClusterKeys::new(d.path(), 2);
    let file = keys.local_cluster(d.path(), "loose", 2000, "");
    let key = &keys.files[1];
    let join = || run_vmm(&["--cluster", file.to_str().unwrap(), "--variant", "1", "--", "/bin/true"], b"");
    for mode in [0o640, 0o604, 0o660] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = join();
        let err = stderr(&o);
        assert_eq!(status(&o), 125, "mode {mode:o}: {err}");
        assert!(err.contains(&format!("has mode {mode:04o}")) && err.contains("chmod 600"), "{err}");
        assert!(err.contains(key.to_str().unwrap()), "{err}");
    }
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(key, Some(65534), None).unwrap();
        let o = join();
        let err = stderr(&o);
        assert_eq!(status(&o), 125, "{err}");
        assert!(err.contains("owned by uid 65534") && err.contains("runs as uid 0"), "{err}");
        std::os::unix::fs::chown(key, Some(0), None).unwrap();
    } else {
        shout("a_private_key_file_others_may_read_or_own_is_refused: not root, the owner check is not exercised");
    }
    // The same refusal through --private-key.
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run_vmm(
        &["--cluster", file.to_str().unwrap(), "--private-key", key.to_str().unwrap(), "--variant", "1", "/bin/true"],
        b"",
    );
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("has mode 0644"), "{}", stderr(&o));
}

#[test]
fn a_key_that_is_not_the_listed_one_is_refused_naming_both() {
    let d = TempDir::new("wrong-key");
    let keys = ClusterKeys::new(d.path(), 2);
    let file = keys.local_cluster(d.path(), "wrong", 2000, "");
    let o = run_vmm(
        &[
            "--cluster",
            file.to_str().unwrap(),
            "--private-key",
            keys.files[0].to_str().unwrap(),
            "--variant",
            "1",
            "/bin/true",
        ],
        b"",
    );
    assert_eq!(status(&o), 125, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("variant 1's private key belongs to public key"), "{err}");
    assert!(err.contains(&keys.public[0]) && err.contains(&keys.public[1]), "{err}");
}

/// `--variants 2` of the snoop program in a launcher whose temporary
/// directory is `tmp` (the guest looks there and in /proc), in a process
/// group of its own; returns the launcher, the snoop's FOUND lines and its
/// summary line.
fn snoop_variants(tmp: &Path) -> (std::process::Child, Vec<String>, String) {
    // strict: what the guest lists is no image file, so every variant takes
    // the leader's results and they agree whatever the directories hold.
    let mut launcher = Command::new(vmm())
        .args(["--variants", "2", "--policy", "strict", "--", &snoop(), "--sleep"])
        .arg(tmp)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("start dmvx-vmm --variants 2");
    let mut out = BufReader::new(launcher.stdout.take().unwrap());
    let mut found = Vec::new();
    let summary = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the run ended before the guest reported");
        if line.starts_with("FOUND") {
            found.push(line);
        } else if line.starts_with("scanned") {
            break line;
        }
    };
    (launcher, found, summary)
}

fn kill_group(launcher: &std::process::Child) {
    // SAFETY: signalling the process group of our own child.
    unsafe { libc::kill(-(launcher.id() as i32), libc::SIGKILL) };
}

/// The names in `dir`.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn a_guest_finds_no_cluster_file_of_its_run() {
    require_kvm!();
    let tmp = TempDir::new("snoop");
    let (mut launcher, found, summary) = snoop_variants(tmp.path());
    let left = entries(tmp.path());
    kill_group(&launcher);
    let _ = launcher.wait();
    assert!(found.is_empty(), "the guest found the cluster's secrets:\n{}", found.concat());
    // The guest really looked (it listed the directory), found nothing there
    // or through /proc, and nothing is there to find.
    assert!(summary.contains("in 1 directories") && summary.ends_with("found 0\n"), "{summary}");
    assert!(left.is_empty(), "while the variants run, {} holds {left:?}", tmp.path().display());
}

#[test]
fn a_run_killed_with_sigkill_leaves_no_cluster_file() {
    require_kvm!();
    let tmp = TempDir::new("killed");
    let (mut launcher, _, _) = snoop_variants(tmp.path());
    // Every process of the run at once: the launcher and both VMMs.
    kill_group(&launcher);
    let st = launcher.wait().unwrap();
    assert!(!st.success(), "{st}");
    // The VMMs are gone when their descriptors are: wait for them briefly.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left = entries(tmp.path());
    assert!(left.is_empty(), "left behind in {}: {left:?}", tmp.path().display());
}

//! A hostile program against the exit-less call ring (`--syscall-path
//! ring`): it finds its ring page and writes requests into it itself, no
//! stub, while its vCPU runs on — numbers out of range and off the list,
//! wild pointers and huge lengths, a bitmap of its own, a request rewritten
//! and its state word flipped while the VMM serves it, an unmapping it
//! requested itself. The VMM must refuse or answer each with an error,
//! never panic or hang, and end a run of two variants cleanly.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dmvx::*;

/// Runs dmvx-vmm with `args`; fails the test if it runs longer than `limit`.
fn run_limited(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(vmm())
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dmvx-vmm");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for dmvx-vmm").is_some() {
            return child.wait_with_output().expect("dmvx-vmm's output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("dmvx-vmm's output");
            panic!("dmvx-vmm {args:?} hung ({limit:?}):\n{}{}", stdout(&o), stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn results(out: &str) -> HashMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Requests the VMM must refuse (the stub then takes the exit).
const REFUSED: &[&str] = &["nr-out-of-range", "nr-all-ones", "exit_group", "execve", "kill"];
/// Requests with wild pointers or huge lengths: an errno.
const ERRORS: &[&str] = &[
    "read-kernel-ptr",
    "read-noncanonical",
    "pread-null-huge",
    "write-wild",
    "readv-huge-count",
    "readv-wild-iov",
    "writev-wild-iov",
    "mmap-huge",
    "munmap-kernel",
    "mprotect-kernel",
    "poll-wild",
    "select-wild",
    "stat-wild",
    "sendfile-wild",
    "rt_sigaction-kill",
    "ioctl-wild",
    "getrandom-huge",
    "epoll_wait-wild",
    "recvfrom-wild",
    "open-unterminated",
];

/// Checks one run's report of the attacks; returns how many forged
/// requests the VMM took.
fn check_attacks(out: &str, err: &str) -> usize {
    let r = results(out);
    let ctx = || format!("{out}{err}");
    let mut taken = 0;
    for k in REFUSED {
        let v = r.get(*k).unwrap_or_else(|| panic!("no {k}: {}", ctx()));
        assert!(v == "exit" || v == "untaken", "{k} was served: {v}\n{}", ctx());
        taken += (v == "exit") as usize;
    }
    for k in ERRORS {
        let v = r.get(*k).unwrap_or_else(|| panic!("no {k}: {}", ctx()));
        if v == "untaken" {
            continue;
        }
        let errno = v.strip_prefix("done ").and_then(|n| n.parse::<i64>().ok());
        assert!(errno.is_some_and(|e| (-4095..0).contains(&e)), "{k}: not an error: {v}\n{}", ctx());
        taken += 1;
    }
    for (k, want) in [
        ("bare-wait", "ok"),
        ("after-wild", "ok"),
        ("unmapped-after", "fault"),
        ("after-chaos", "ok"),
        ("survived", ""),
    ] {
        if want.is_empty() {
            assert!(out.lines().any(|l| l == k), "no {k}: {}", ctx());
        } else {
            assert_eq!(r.get(k).map(String::as_str), Some(want), "{k}: {}", ctx());
        }
    }
    // Memory given out after the unmapping never shows through the page.
    let page = r.get("unmapped-page").map(String::as_str);
    assert!(matches!(page, Some("fault" | "stale-own" | "untaken")), "unmapped page: {page:?}\n{}", ctx());
    taken
}

#[test]
fn a_program_that_writes_its_own_ring_requests_gets_errors_and_the_vmm_survives() {
    require_kvm!();
    let prog = build_c("tests/programs/hostile_ring.c", &["-static"]);
    let p = prog.to_str().unwrap();
    // Without the ring the page is out of the program's reach.
    let off = run_limited(&["--syscall-path", "exit", "--", p, p], Duration::from_secs(60));
    assert_eq!(status(&off), 0, "{}", stderr(&off));
    assert_eq!(stdout(&off), "ring=absent\n", "{}", stderr(&off));

    let on = run_limited(&["--stats", "--syscall-path", "ring", "--", p, p], Duration::from_secs(120));
    let (out, err) = (stdout(&on), stderr(&on));
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status(&on), 0, "{out}{err}");
    assert!(out.starts_with("ring=found\n"), "{out}{err}");
    let taken = check_attacks(&out, &err);
    // Most forged requests reach the service (it polls right after the
    // honest call before each), or the test would prove nothing.
    assert!(taken * 2 > REFUSED.len() + ERRORS.len(), "only {taken} forged requests were taken:\n{out}{err}");
    for k in ["posted-then-rewritten", "rewritten"] {
        assert_eq!(results(&out).get(k).map(String::as_str), Some("served"), "{k}: {out}{err}");
    }
}

#[test]
fn two_variants_that_write_their_own_ring_requests_end_cleanly() {
    require_kvm!();
    let prog = build_c("tests/programs/hostile_ring.c", &["-static"]);
    let p = prog.to_str().unwrap();
    let reports = TempDir::new("hostile-ring-reports");
    let dir = reports.path().to_str().unwrap();
    let args = ["--variants", "2", "--report-dir", dir, "--syscall-path", "ring", "--", p, p];
    let o = run_limited(&args, Duration::from_secs(240));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(!err.contains("panicked"), "{err}");
    // Whether a forged request is taken depends on timing, so the
    // variants may disagree: a divergence, reported. Or they agree.
    match status(&o) {
        0 => {
            check_attacks(&out, &err);
        }
        121 => {
            let any_report = std::fs::read_dir(reports.path())
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("dmvx-divergence-"));
            assert!(any_report && err.contains("variants diverged"), "a divergence without a report:\n{out}{err}");
        }
        s => panic!("status {s}:\n{out}{err}"),
    }
}

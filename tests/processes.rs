//! Processes: fork, vfork, clone, execve, wait, pipes, process groups,
//! shared memory — real Debian programs that make processes, in one variant
//! and in two, with outputs compared with native runs.

use std::path::Path;

use dmvx::*;

fn procs() -> String {
    build_c("tests/programs/procs.c", &["-static", "-O1"]).to_string_lossy().into_owned()
}

/// Runs `argv` natively, in 1 variant and in 2; all three must print the
/// same and end with the same status, and no divergence may be reported.
fn same_everywhere(argv: &[&str]) {
    if !Path::new(argv[0]).exists() {
        shout(&format!("SKIPPED {argv:?}: {} is not installed", argv[0]));
        return;
    }
    let native = run(argv[0], &argv[1..], b"");
    assert!(!stdout(&native).is_empty(), "{argv:?} printed nothing natively: {}", stderr(&native));
    let mut one = vec!["--"];
    one.extend_from_slice(argv);
    let o = run_vmm(&one, b"");
    assert_eq!(stdout(&o), stdout(&native), "1 variant of {argv:?}: {}", stderr(&o));
    assert_eq!(status(&o), status(&native), "1 variant of {argv:?}: {}", stderr(&o));
    let d = TempDir::new("procs-mvx");
    let mut two = vec!["--variants", "2", "--report-dir", d.path().to_str().unwrap(), "--"];
    two.extend_from_slice(argv);
    let o = run_vmm(&two, b"");
    assert_eq!(stdout(&o), stdout(&native), "2 variants of {argv:?}: {}", stderr(&o));
    assert_eq!(status(&o), status(&native), "2 variants of {argv:?}: {}", stderr(&o));
    let reports: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
    assert!(reports.is_empty(), "2 variants of {argv:?} reported a divergence: {}", stderr(&o));
}

/// POSIX timers (timer_create): a periodic timer's signals carry SI_TIMER
/// and the program's value in every variant (followers take the leader's
/// expiries), SIGEV_NONE, Linux's checks, and coreutils' timeout, which
/// ends its command through one (before: ENOSYS).
#[test]
fn posix_timers_signal_like_native() {
    require_kvm!();
    let t = build_c("tests/programs/timers.c", &["-static", "-O1"]).to_string_lossy().into_owned();
    same_everywhere(&[&t]);
    same_everywhere(&["/bin/bash", "-c", "timeout 0.3 sleep 5; echo timeout said $?"]);
}

#[test]
fn shells_run_pipelines_substitutions_and_background_jobs() {
    require_kvm!();
    same_everywhere(&[
        "/bin/bash",
        "-c",
        "echo a b c | tr a-z A-Z | rev; x=$(seq 3 | paste -sd+ | bc); echo $x; (sleep 0.05; echo bg) & wait; echo end",
    ]);
    same_everywhere(&["/bin/dash", "-c", "seq 5 | while read l; do echo n$l; done | tail -2; echo $(echo nested)"]);
    same_everywhere(&[busybox(), "sh", "-c", "echo one | busybox cat | busybox wc -c; busybox true && echo and"]);
}

#[test]
fn xargs_find_exec_and_make_run_their_commands() {
    require_kvm!();
    same_everywhere(&["/bin/bash", "-c", "seq 100 | xargs -n 7 echo"]);
    let d = TempDir::new("find");
    std::fs::create_dir_all(d.join("a/b")).unwrap();
    std::fs::write(d.join("a/b/f1"), b"1").unwrap();
    std::fs::write(d.join("a/f2"), b"22").unwrap();
    let t = d.path().to_str().unwrap();
    same_everywhere(&["/usr/bin/find", t, "-type", "f", "-exec", "wc", "-c", "{}", ";"]);
    std::fs::write(d.join("Makefile"), "all: one two\n\t@echo all done\none:\n\t@echo one\ntwo:\n\t@echo $$((1+1))\n")
        .unwrap();
    same_everywhere(&["/usr/bin/make", "-s", "-C", t]);
}

#[test]
fn python_subprocess_and_tar_with_a_compressor() {
    require_kvm!();
    same_everywhere(&[
        "/usr/bin/python3",
        "-c",
        "import subprocess as s; print(s.run(['echo', 'from a child'], capture_output=True, text=True).stdout, end=''); \
         print(s.run('exit 3', shell=True).returncode)",
    ]);
    let d = TempDir::new("tar");
    std::fs::create_dir_all(d.join("t/sub")).unwrap();
    std::fs::write(d.join("t/sub/data"), vec![b'x'; 50_000]).unwrap();
    let t = d.path().to_str().unwrap();
    // The archive goes to stdout (the default root is read-only); gzip and
    // xz run as child processes of tar.
    same_everywhere(&["/bin/bash", "-c", &format!("tar czf - -C {t} t | md5sum; tar cJf - -C {t} t | md5sum")]);
}

#[test]
fn fork_wait_and_waitid_report_what_linux_reports() {
    require_kvm!();
    same_everywhere(&[&procs(), "fork-wait"]);
    same_everywhere(&[&procs(), "shared"]);
    same_everywhere(&[&procs(), "pdeathsig"]);
    same_everywhere(&[&procs(), "exec-altstack"]);
}

#[test]
fn process_groups_sessions_and_group_signals() {
    require_kvm!();
    let p = procs();
    // The program is its own session leader in dmvx (natively it is not),
    // so this compares 1 and 2 variants with what Linux says for a leader.
    let want = "leader: pgrp==pid 1, sid==pid 1\nchild in own group: 1\nleader cannot setsid: 1\n\
                killed by SIGTERM: 1, SIGCHLD handled: 1\nchild started a session: 1\nno such process: 1\n";
    let o = run_vmm(&["--", &p, "groups"], b"");
    assert_eq!((status(&o), stdout(&o).as_str()), (0, want), "{}", stderr(&o));
    let o = run_vmm(&["--variants", "2", "--", &p, "groups"], b"");
    assert_eq!((status(&o), stdout(&o).as_str()), (0, want), "{}", stderr(&o));
}

#[test]
fn shared_memory_is_private_without_a_shared_region() {
    require_kvm!();
    let o = run_vmm(&["--shared-memory", "0", "--", &procs(), "shared"], b"");
    assert_eq!(stdout(&o), "shared=1 far=0 private=1\n", "{}", stderr(&o));
}

#[test]
fn a_fork_bomb_meets_the_process_limit() {
    require_kvm!();
    let want = "fork failed with EAGAIN after some children; reaped all: 1\n";
    for n in ["1", "2"] {
        let o = run_vmm(&["--variants", n, "--max-procs", "24", "--", &procs(), "bomb"], b"");
        assert_eq!((status(&o), stdout(&o).as_str()), (0, want), "{n} variant(s): {}", stderr(&o));
    }
}

#[test]
fn a_divergent_child_stops_every_process_before_its_output_leaves() {
    require_kvm!();
    let divergent = build_c("tests/programs/divergent.c", &["-static"]);
    let d = TempDir::new("child-div");
    let o = run_vmm(
        &[
            "--variants",
            "2",
            "--report-dir",
            d.path().to_str().unwrap(),
            "--",
            divergent.to_str().unwrap(),
            "child-address",
        ],
        b"",
    );
    assert_eq!(status(&o), 121, "{}", stderr(&o));
    // Neither the child's address nor anything after it left.
    assert_eq!(stdout(&o), "ready\n", "{}", stderr(&o));
    let path = d.join("dmvx-divergence-variant0-pid3.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), stderr(&o)));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("process 3 (2/0): "), "{msg}");
    assert_eq!(r["leader"]["name"], "write", "{r:#}");
    assert_eq!(r["took_effect"], false, "{r:#}");
}

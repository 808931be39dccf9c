//! The two system-call paths (`--syscall-path exit|ring`): the same results
//! as native on both, and on the ring hardly an exit per call.

use dmvx::*;

/// The `N exits, M system calls` of a --stats line.
fn exits_and_calls(err: &str) -> (u64, u64) {
    let line = err.lines().find(|l| l.contains(" exits, ")).unwrap_or_else(|| panic!("no stats in:\n{err}"));
    let num = |after: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| w.trim_end_matches(',') == after).expect("stats word");
        words[i - 1].parse().expect("a count")
    };
    (num("exits"), num("system"))
}

#[test]
fn calls_agree_with_native_on_both_paths_and_the_ring_saves_the_exits() {
    require_kvm!();
    let prog = build_c("tests/programs/ringcalls.c", &["-static"]);
    let p = prog.to_str().unwrap();
    let native = run(p, &["3000", "/bin/busybox"], b"");
    assert_eq!(status(&native), 0, "{}", stderr(&native));
    for path in ["exit", "ring"] {
        let vm = run_vmm(&["--stats", "--syscall-path", path, "--", p, "3000", "/bin/busybox"], b"");
        assert_eq!(status(&vm), 0, "{path}: {}", stderr(&vm));
        // getppid differs (the VMM's own pid space): compare the rest.
        let rest = |s: &str| s.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(rest(&stdout(&vm)), rest(&stdout(&native)), "{path}: {}", stderr(&vm));
        assert!(stdout(&vm).starts_with("getppid 1\n"), "{path}: {}", stdout(&vm));
        let (exits, calls) = exits_and_calls(&stderr(&vm));
        assert!(calls > 6000, "{path}: {calls} calls");
        if path == "exit" {
            assert!(exits >= calls, "exit path: {exits} exits for {calls} calls");
            assert!(!stderr(&vm).contains("ring:"), "{}", stderr(&vm));
        } else {
            // Parked spells and the calls that finish through an exit
            // (munmap, the unblocked signal) cost exits; the rest go
            // without, unless the ring backed off (CPUs too busy for both
            // of its threads: then the VMM enters the guest itself).
            let err = stderr(&vm);
            let ring = err.lines().find(|l| l.contains("ring: ")).unwrap_or_else(|| panic!("no ring stats:\n{err}"));
            // Calls taken from the page: done there, finished through an
            // exit, or done after the stub stopped spinning (a busy machine).
            let counts: Vec<u64> = ring
                .split("ring: ")
                .nth(1)
                .unwrap()
                .split(", ")
                .take(3)
                .map(|part| part.split(' ').next().unwrap().parse().unwrap())
                .collect();
            assert!(counts.iter().sum::<u64>() > 0, "no call was taken from the ring:\n{err}");
            if ring.contains(" 0 back-offs") {
                assert!(exits < calls / 2, "ring: {exits} exits for {calls} calls\n{err}");
            }
        }
    }
}

#[test]
fn the_path_is_an_option_with_two_values() {
    let o = run_vmm(&["--syscall-path", "fast", "--", "/bin/true"], b"");
    assert_eq!(status(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a system call path (ring or exit)"), "{}", stderr(&o));
}

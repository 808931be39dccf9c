//! Memory system calls and faults of static C programs (non-PIE and
//! static-pie) in a dmvx microVM.

use dmvx::*;

fn memtest(pie: bool) -> String {
    build_c("tests/programs/memtest.c", &[if pie { "-static-pie" } else { "-static" }]).to_string_lossy().into_owned()
}

fn run_mode(pie: bool, extra: &[&str], mode: &[&str]) -> std::process::Output {
    let prog = memtest(pie);
    let mut args: Vec<&str> = extra.to_vec();
    args.push("--");
    args.push(&prog);
    args.extend_from_slice(mode);
    run_vmm(&args, b"")
}

#[test]
fn brk_mmap_munmap_mprotect_mremap_and_a_1gib_reservation() {
    require_kvm!();
    for pie in [false, true] {
        let o = run_mode(pie, &[], &["all"]);
        assert_eq!(status(&o), 0, "pie={pie}\nstdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("ok all"), "{}", stdout(&o));
    }
}

#[test]
fn reservations_cost_nothing_until_touched() {
    require_kvm!();
    // 1 GiB reserved and 1 GiB mapped (touched sparsely) in 32 MiB of guest memory.
    let o = run_mode(false, &["--memory", "32M"], &["all"]);
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn null_dereference_exits_139_with_a_reason() {
    require_kvm!();
    for pie in [false, true] {
        let o = run_mode(pie, &[], &["null"]);
        assert_eq!(status(&o), 139, "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("SIGSEGV") && e.contains("address 0x0") && e.contains("rip 0x"), "{e}");
        assert_eq!(e.lines().filter(|l| l.contains("killed")).count(), 1, "one line of reason: {e}");
    }
}

#[test]
fn illegal_instruction_exits_132() {
    require_kvm!();
    for pie in [false, true] {
        let o = run_mode(pie, &[], &["ill"]);
        assert_eq!(status(&o), 132, "{}", stderr(&o));
        assert!(stderr(&o).contains("SIGILL") && stderr(&o).contains("invalid opcode"), "{}", stderr(&o));
    }
}

#[test]
fn access_after_munmap_faults() {
    require_kvm!();
    // The page was mapped and touched; munmap must really take it away
    // (the guest kernel rewrites the entry so KVM drops its cached copy).
    let o = run_mode(false, &[], &["after-munmap"]);
    assert_eq!(status(&o), 139, "{}", stderr(&o));
    assert!(stderr(&o).contains("no mapping"), "{}", stderr(&o));
}

#[test]
fn write_after_mprotect_read_only_faults() {
    require_kvm!();
    let o = run_mode(false, &[], &["after-mprotect"]);
    assert_eq!(status(&o), 139, "{}", stderr(&o));
    assert!(stderr(&o).contains("write") && stderr(&o).contains("not permitted"), "{}", stderr(&o));
}

#[test]
fn abort_and_exit_statuses_are_the_programs() {
    require_kvm!();
    let o = run_mode(true, &[], &["abort"]);
    assert_eq!(status(&o), 134, "{}", stderr(&o));
    assert!(stderr(&o).contains("SIGABRT"));
    let o = run_mode(true, &[], &["exit", "42"]);
    assert_eq!(status(&o), 42, "{}", stderr(&o));
}

//! Threads: POSIX threads of real programs, in one variant and in two, with
//! outputs compared with native runs. Within a process the threads take
//! turns on one vCPU; in a cluster the leader's schedule is replayed, so a
//! threaded program makes the same calls in every variant.

use std::path::Path;

use dmvx::*;

fn threads() -> String {
    build_c("tests/programs/threads.c", &["-static", "-pthread"]).to_string_lossy().into_owned()
}

/// Runs `argv` in `n` variants; returns stdout, status and stderr, and
/// fails if a divergence was reported.
fn in_variants(n: usize, argv: &[&str]) -> (String, i32, String) {
    let d = TempDir::new("threads-mvx");
    let n = n.to_string();
    let mut args = vec!["--variants", &n, "--report-dir", d.path().to_str().unwrap(), "--"];
    args.extend_from_slice(argv);
    let o = run_vmm(&args, b"");
    let reports: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(reports.is_empty(), "{n} variant(s) of {argv:?} reported a divergence: {}", stderr(&o));
    (stdout(&o), status(&o), stderr(&o))
}

/// Native, 1 variant and 2 variants print the same and end alike.
fn same_everywhere(argv: &[&str]) -> String {
    if !Path::new(argv[0]).exists() {
        shout(&format!("SKIPPED {argv:?}: {} is not installed", argv[0]));
        return String::new();
    }
    let native = run(argv[0], &argv[1..], b"");
    let want = stdout(&native);
    assert!(!want.is_empty(), "{argv:?} printed nothing natively: {}", stderr(&native));
    for n in [1, 2] {
        let (out, st, err) = in_variants(n, argv);
        assert_eq!(out, want, "{n} variant(s) of {argv:?}: {err}");
        assert_eq!(st, status(&native), "{n} variant(s) of {argv:?}: {err}");
    }
    want
}

/// A Python script with os, signal, threading and time imported and a
/// 30 s alarm (a hang ends it, and the comparison with native fails), run
/// as `same_everywhere` does.
fn python_everywhere(script: &str) -> String {
    let full = format!("import os, signal, threading, time\nsignal.alarm(30)\n{script}");
    same_everywhere(&["/usr/bin/python3", "-c", &full])
}

#[test]
fn pthreads_run_like_native_in_one_and_two_variants() {
    require_kvm!();
    let t = threads();
    let out = same_everywhere(&[&t, "all"]);
    assert!(out.ends_with("all done\n"), "{out}");
    assert!(!out.contains("WRONG") && !out.contains("ELSEWHERE") && !out.contains("FAILED"), "{out}");
}

#[test]
fn the_main_thread_may_leave_first() {
    require_kvm!();
    let t = threads();
    same_everywhere(&[&t, "exit"]);
}

#[test]
fn spinning_threads_are_preempted() {
    require_kvm!();
    let t = threads();
    assert_eq!(same_everywhere(&[&t, "spin"]), "spin: token passed 10 times\n");
}

/// The threaded program, again and again in two variants: the schedule the
/// leader chose must replay every time (DMVX_THREAD_RUNS, default 5;
/// scripts/threads-loop.sh runs 100).
#[test]
fn two_variants_agree_run_after_run() {
    require_kvm!();
    let t = threads();
    let want = stdout(&run(&t, &["all"], b""));
    let runs: usize = std::env::var("DMVX_THREAD_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    for i in 0..runs {
        let (out, st, err) = in_variants(2, &[&t, "all"]);
        assert_eq!((st, out.as_str()), (0, want.as_str()), "run {i}: {err}");
    }
}

#[test]
fn a_divergent_thread_is_stopped_before_its_output_leaves() {
    require_kvm!();
    let t = threads();
    let d = TempDir::new("thread-div");
    let o = run_vmm(&["--variants", "2", "--report-dir", d.path().to_str().unwrap(), "--", &t, "divergent"], b"");
    assert_eq!(status(&o), 121, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ready\n", "the worker's line left: {}", stderr(&o));
    let path = d.join("dmvx-divergence-variant0.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), stderr(&o)));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("thread "), "the report does not name the thread: {msg}");
    assert!(!msg.starts_with("thread 1:"), "the worker is not the main thread: {msg}");
    assert_eq!(r["leader"]["name"], "write", "{r:#}");
    assert_eq!(r["took_effect"], false, "{r:#}");
}

#[test]
fn python_threading_runs_like_native() {
    require_kvm!();
    same_everywhere(&[
        "/usr/bin/python3",
        "-c",
        "import threading, queue\n\
         q = queue.Queue(); lock = threading.Lock(); total = [0]\n\
         def work(i):\n    s = sum(range(i * 10000))\n    with lock: total[0] += s\n    q.put(i)\n\
         ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n\
         [t.start() for t in ts]; [t.join() for t in ts]\n\
         print(sorted(q.get() for _ in range(8)), total[0], threading.active_count())",
    ]);
}

/// A thread blocked reading a pipe, accepting a connection or receiving
/// on a socket pair while another thread makes it ready: the VMM must not
/// block on the host (one vCPU: the other thread would never run).
#[test]
fn a_thread_blocked_on_a_descriptor_lets_the_others_run() {
    require_kvm!();
    python_everywhere(
        "import socket\n\
         def later(f):\n    t = threading.Thread(target=lambda: (time.sleep(0.1), f())); t.start(); return t\n\
         r, w = os.pipe()\n\
         t = later(lambda: os.write(w, b'pipe')); print(os.read(r, 10).decode()); t.join()\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         def connect():\n    c = socket.create_connection(s.getsockname()); c.sendall(b'accept'); c.close()\n\
         t = later(connect); conn, _ = s.accept(); print(conn.recv(10).decode()); t.join()\n\
         a, b = socket.socketpair()\n\
         t = later(lambda: b.sendall(b'pair')); print(a.recv(10).decode()); t.join()",
    );
}

/// A thread waiting for a child (wait4, waitid) while another thread
/// feeds that child: the wait must not block the VMM on the host, or the
/// feeding thread never runs and the child never ends.
#[test]
fn a_thread_waiting_for_a_child_lets_the_others_run() {
    require_kvm!();
    python_everywhere(
        "import os\n\
         pipes = [os.pipe() for _ in range(2)]\n\
         kids = []\n\
         for r, w in pipes:\n    pid = os.fork()\n    if pid == 0:\n        os.close(w); os._exit(len(os.read(r, 10)))\n    os.close(r); kids.append(pid)\n\
         def later(w, b):\n    t = threading.Thread(target=lambda: (time.sleep(0.2), os.write(w, b))); t.start(); return t\n\
         t = later(pipes[0][1], b'wait4'); _, st = os.waitpid(kids[0], 0); t.join()\n\
         print('waitpid', os.waitstatus_to_exitcode(st))\n\
         t = later(pipes[1][1], b'waitid!'); info = os.waitid(os.P_PID, kids[1], os.WEXITED); t.join()\n\
         print('waitid', info.si_status, info.si_code == os.CLD_EXITED)",
    );
}

/// A thread in a blocking connect that cannot complete until another
/// thread accepts (the listener's queue is full: the SYN is dropped and
/// sent again), and one refused.
#[test]
fn a_thread_connecting_lets_the_others_run() {
    require_kvm!();
    python_everywhere(
        "import select, socket\n\
         def full(family, addr):\n    s = socket.socket(family); s.bind(addr); s.listen(0)\n    \
             first = socket.socket(family); first.connect(s.getsockname()); return s, first\n\
         def accept_later(s, n):\n    def run():\n        time.sleep(0.3)\n        for _ in range(n): s.accept()[0].close()\n    \
             t = threading.Thread(target=run); t.start(); return t\n\
         s, first = full(socket.AF_INET, ('127.0.0.1', 0))\n\
         extra = [socket.socket() for _ in range(2)]\n\
         t = accept_later(s, 3)\n\
         for c in extra: c.connect(s.getsockname())\n\
         t.join(); print('tcp connected', len(extra) + 1)\n\
         import errno; s2 = socket.socket(); s2.bind(('127.0.0.1', 0)); s2.listen()\n\
         n = socket.socket(); n.setblocking(False); e = n.connect_ex(s2.getsockname())\n\
         print('non-blocking', e in (0, errno.EINPROGRESS)); select.select([], [n], [], 5); n.close()\n\
         r = socket.socket(); r.bind(('127.0.0.1', 0)); port = r.getsockname()[1]; r.close()\n\
         c = socket.socket(); done = threading.Event(); t = threading.Thread(target=done.wait); t.start()\n\
         try:\n    c.connect(('127.0.0.1', port))\nexcept ConnectionRefusedError:\n    print('refused')\n\
         done.set(); t.join()",
    );
}

/// select and ppoll with a timeout while another thread makes a
/// descriptor ready: the call must only look, or it holds the vCPU for its
/// whole timeout and the other thread never runs.
#[test]
fn a_thread_in_select_lets_the_others_run() {
    require_kvm!();
    python_everywhere(
        "import select\n\
         r, w = os.pipe()\n\
         t = threading.Thread(target=lambda: (time.sleep(0.2), os.write(w, b'x'))); t.start()\n\
         ready, _, _ = select.select([r], [], [], 10); t.join()\n\
         print('select', ready == [r], os.read(r, 1))",
    );
}

/// Ruby's threads: its main thread waits in ppoll with a timeout (its
/// timer) while the others need the vCPU to end (before: every Ruby
/// program with a thread hung).
#[test]
fn ruby_threads_run_like_native() {
    require_kvm!();
    if !Path::new("/usr/bin/ruby").exists() {
        shout("SKIPPED ruby_threads_run_like_native: /usr/bin/ruby is not installed");
        return;
    }
    // timeout(1): a hang fails the comparison instead of the suite.
    same_everywhere(&[
        "/usr/bin/timeout",
        "60",
        "/usr/bin/ruby",
        "-e",
        "q = Queue.new; m = Mutex.new; cv = ConditionVariable.new; done = 0\n\
         ts = 4.times.map { |i| Thread.new { sleep 0.05 * i; q << i * i; m.synchronize { done += 1; cv.signal } } }\n\
         m.synchronize { cv.wait(m) while done < 4 }\n\
         ts.each(&:join); a = []; a << q.pop until q.empty?\n\
         x = 0; t = Thread.new { sleep 0.2; 1 }; 300000.times { x += 1 }\n\
         puts a.sort.inspect, t.value + x",
    ]);
}

#[test]
fn zstd_with_four_workers_compresses_like_native() {
    require_kvm!();
    if !Path::new("/usr/bin/zstd").exists() {
        shout("SKIPPED zstd_with_four_workers_compresses_like_native: /usr/bin/zstd is not installed");
        return;
    }
    let d = TempDir::new("zstd");
    // 20 MB of compressible, not trivial, data.
    let mut data = Vec::with_capacity(20 << 20);
    let mut x: u32 = 1;
    while data.len() < 20 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        data.extend_from_slice(format!("line {} value {}\n", data.len() / 64, (x >> 16) % 1000).as_bytes());
    }
    std::fs::write(d.join("in"), &data).unwrap();
    let input = d.join("in");
    let cmd = format!("/usr/bin/zstd -T4 -q -c {} | md5sum", input.display());
    same_everywhere(&["/bin/bash", "-c", &cmd]);
}

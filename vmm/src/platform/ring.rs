//! The exit-less system-call path (`dmvx_abi::Ring`).
//!
//! With the ring on, KVM_RUN is issued by a runner thread of its own, so
//! the VMM thread (the kernel's, which handles every exit as before) is
//! free while guest code runs: it polls the ring page, and a call posted
//! there is handled by the kernel on that thread while the vCPU spins in
//! the stub. The kernel thus stays on one host thread, as without the ring
//! (its host signals, seccomp role and blocking host calls are unchanged);
//! the runner only enters the guest.
//!
//! The service polls while calls keep coming and parks (futex) after a
//! quiet spell; the stub sees it parked and exits as before, and such an
//! exit of a call the ring serves wakes the service again. A request is
//! taken by compare-and-swap of the page's state and read once; what the
//! VMM knows about it (refused, done with a result, or finished with
//! registers that need the exit) is kept here, never read back from the
//! page, so a request is neither lost nor run twice whatever the guest
//! writes into the page.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmvx_abi::{
    Ring as Page, RING_AWAKE, RING_CALLS, RING_DONE, RING_EXIT, RING_IDLE, RING_PARKED, RING_REQUEST, RING_TAKEN,
};
use kvm_bindings::kvm_regs;

use crate::memory::GuestMemory;
use crate::vstate::vcpu::Entered;

/// How the program's system calls reach the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyscallPath {
    /// One VM exit per call (`PORT_SYSCALL`).
    #[default]
    Exit,
    /// The ring where it serves the call, the exit otherwise.
    Ring,
}

impl SyscallPath {
    /// `ring` or `exit`.
    pub fn parse(s: &str) -> Option<SyscallPath> {
        match s {
            "ring" => Some(SyscallPath::Ring),
            "exit" => Some(SyscallPath::Exit),
            _ => None,
        }
    }

    /// The default when no option says: `DMVX_SYSCALL_PATH` (for running a
    /// test suite with the ring forced on), else `exit`.
    pub fn from_env() -> SyscallPath {
        std::env::var("DMVX_SYSCALL_PATH").ok().and_then(|v| SyscallPath::parse(&v)).unwrap_or_default()
    }
}

/// Errors of starting the ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the ring page at guest physical {0:#x} is outside guest memory")]
    Page(u64),
    #[error("cannot start the vCPU runner thread of the ring: {0}")]
    Spawn(std::io::Error),
    #[error("cannot give the ring's KVM_RUN its signal mask: {0}")]
    Mask(std::io::Error),
}

/// Tuning, from the environment (for measurements): `DMVX_RING_POLL_US`,
/// how long the service polls after the last call before it parks, and
/// `DMVX_RING_SPIN`, the rounds the stub spins for a completion.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    poll: Duration,
    spin: u32,
    /// The service yields its CPU every this many rounds of polling.
    yield_every: u32,
}

impl Tuning {
    fn from_env() -> Tuning {
        let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
        Tuning {
            poll: Duration::from_micros(num("DMVX_RING_POLL_US", 100)),
            spin: num("DMVX_RING_SPIN", 2_000).min(u32::MAX as u64) as u32,
            yield_every: num("DMVX_RING_YIELD", YIELD_EVERY as u64).clamp(1, u32::MAX as u64) as u32,
        }
    }
}

/// What the VMM knows about the last request it took.
#[derive(Clone, Copy, Debug)]
enum Taken {
    /// Not served here: the stub's exit carries the call.
    Refused,
    /// Done, result written to the page.
    Done(u64),
    /// Done; the program continues with these registers, through the exit
    /// (a signal to deliver, page tables to narrow, a restart, ...).
    Exit(kvm_regs),
}

/// What became of the call of the stub's exit to `PORT_RING_WAIT`.
pub enum Waited {
    /// The VMM finished it: the program continues with these registers.
    Finished(kvm_regs),
    /// It is to be handled as a system call (never taken, or refused).
    Call(kvm_regs),
}

/// Counters, printed with --stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingStats {
    /// Calls completed on the ring without an exit.
    pub done: u64,
    /// Calls taken from the ring that finished through an exit.
    pub via_exit: u64,
    /// Calls done on the ring after the stub had stopped spinning for them
    /// (they cost an exit after all).
    pub late: u64,
    /// Requests the service did not serve.
    pub refused: u64,
    /// Times the service parked.
    pub parks: u64,
    /// Times it stayed parked for a while because the ring did not pay.
    pub backoffs: u64,
}

/// The runner thread's controls.
struct Ctl {
    fd: RawFd,
    trap_tsc: bool,
    /// The signal mask inside KVM_RUN (the VMM thread's).
    mask: libc::sigset_t,
    /// 0 idle, [`GO_RUN`] run once, [`GO_QUIT`] end (futex word).
    go: AtomicU32,
    /// 1 once KVM_RUN returned (futex word).
    done: AtomicU32,
    /// KVM_RUN's errno (0: success).
    errno: AtomicI32,
    /// The VMM thread sleeps on `done`.
    waiter: AtomicU32,
    /// The runner sleeps on `go`.
    sleeper: AtomicU32,
}

const GO_RUN: u32 = 1;
const GO_QUIT: u32 = 2;
/// Rounds the runner spins for its next entry before it sleeps, yielding
/// its CPU every [`YIELD_EVERY`] rounds.
const RUNNER_SPIN: u32 = 256;
/// Spinning threads yield their CPU this often (rounds of `pause`), so
/// that a thread of this VMM waiting for the same CPU gets it: with two
/// CPUs shared by variants and clients, the two sides of the ring are
/// often on one.
const YIELD_EVERY: u32 = 64;

fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

fn futex_wait(word: &AtomicU32, val: u32) {
    // SAFETY: the word is a live, aligned u32; FUTEX_WAIT only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1) };
}

fn runner(ctl: Arc<Ctl>, tid: std::sync::mpsc::Sender<i32>) {
    // Signals reach this thread only inside KVM_RUN (the vCPU's signal
    // mask), where they make KVM_RUN return; the VMM thread handles them.
    // SAFETY: plain-data sigset; valid pointers.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    crate::jail::filter_thread(crate::jail::Role::VcpuRunner);
    // SAFETY: gettid has no preconditions.
    let _ = tid.send(unsafe { libc::gettid() });
    loop {
        let mut spins = 0;
        let go = loop {
            let g = ctl.go.swap(0, Ordering::Acquire);
            if g != 0 {
                break g;
            }
            if spins < RUNNER_SPIN {
                spins += 1;
                if spins.is_multiple_of(YIELD_EVERY) {
                    yield_now();
                }
                std::hint::spin_loop();
                continue;
            }
            ctl.sleeper.store(1, Ordering::SeqCst);
            if ctl.go.load(Ordering::SeqCst) == 0 {
                futex_wait(&ctl.go, 0);
            }
            ctl.sleeper.store(0, Ordering::SeqCst);
        };
        if go == GO_QUIT {
            return;
        }
        if ctl.trap_tsc {
            crate::vstate::tsc::fault_tsc();
        }
        // SAFETY: fd is the vCPU, alive until the runner has quit (the
        // ring joins it before the vCPU goes); the VMM thread does not use
        // the vCPU until `done`.
        let r = unsafe { libc::ioctl(ctl.fd, KVM_RUN as _, 0) };
        let errno = if r < 0 { std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) } else { 0 };
        if ctl.trap_tsc {
            crate::vstate::tsc::allow_tsc();
        }
        if errno == libc::EINTR {
            // The signal that ended KVM_RUN is pending here, blocked again:
            // its handler runs now (it records and kicks), or every later
            // KVM_RUN would return at once.
            // SAFETY: valid sigsets; the handlers are async-signal-safe.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_SETMASK, &ctl.mask, std::ptr::null_mut());
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            }
        }
        ctl.errno.store(errno, Ordering::Relaxed);
        ctl.done.store(1, Ordering::SeqCst);
        if ctl.waiter.load(Ordering::SeqCst) != 0 {
            futex_wake(&ctl.done);
        }
    }
}

/// KVM_RUN: _IO(KVMIO, 0x80).
const KVM_RUN: libc::c_ulong = 0xae80;

/// The ring of one vCPU, and its runner.
pub struct Ring {
    page: *mut Page,
    /// Keeps the mapping of `page` alive.
    _mem: GuestMemory,
    ctl: Arc<Ctl>,
    thread: Option<std::thread::JoinHandle<()>>,
    runner_tid: i32,
    /// The vCPU's `kvm_run.immediate_exit`.
    kick: *mut u8,
    in_flight: bool,
    awake: bool,
    last_call: Instant,
    taken: Option<Taken>,
    tuning: Tuning,
    calls: [u64; RING_CALLS / 64],
    /// How the traps came since the last look at how the ring fares.
    window: Window,
    /// The VMM thread enters the guest itself (the ring does not pay now),
    /// at least until `direct_until`.
    direct: bool,
    direct_until: Instant,
    backoff: Duration,
    /// Wall time per trap of the last window of direct entry.
    direct_cost: Option<Duration>,
    pub stats: RingStats,
}

/// How a trap came, for the choice between the ring and entering the
/// guest directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A call served on the page.
    Served,
    /// An exit with a call the ring serves (parked, or a wait).
    Servable,
    /// The stub waited for a call the service had taken (it finished too
    /// late for the spin): that call cost an exit after all.
    Late,
    /// Any other exit.
    Other,
}

struct Window {
    total: u32,
    served: u32,
    servable: u32,
    start: Instant,
}

impl Default for Window {
    fn default() -> Window {
        Window { total: 0, served: 0, servable: 0, start: Instant::now() }
    }
}

/// Traps per look at how the ring fares.
const WINDOW: u32 = 64;
/// The longest the service stays parked after the ring did not pay.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

impl Ring {
    /// Sets up the page at `gpa` serving the call numbers in `calls`, and
    /// starts the runner of vCPU `fd` (from the VMM thread, after the jail:
    /// the runner adds its own filter to the one it inherits).
    pub fn start(
        mem: &GuestMemory,
        gpa: u64,
        (fd, kick, trap_tsc): (RawFd, *mut u8, bool),
        calls: &[u64],
    ) -> Result<Ring, RingError> {
        let p = mem.host_ptr(gpa, std::mem::size_of::<Page>() as u64).ok_or(RingError::Page(gpa))?;
        if !(p as usize).is_multiple_of(std::mem::align_of::<Page>()) {
            return Err(RingError::Page(gpa));
        }
        let mask = set_kvm_sigmask(fd)?;
        let mut bits = [0u64; RING_CALLS / 64];
        for &nr in calls {
            if (nr as usize) < RING_CALLS {
                bits[nr as usize / 64] |= 1 << (nr % 64);
            }
        }
        let tuning = Tuning::from_env();
        let page = p as *mut Page;
        let ctl = Arc::new(Ctl {
            fd,
            trap_tsc,
            mask,
            go: AtomicU32::new(0),
            done: AtomicU32::new(0),
            errno: AtomicI32::new(0),
            waiter: AtomicU32::new(0),
            sleeper: AtomicU32::new(0),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name("dmvx-vcpu".into())
            .stack_size(64 << 10)
            .spawn(move || runner(c, tx))
            .map_err(RingError::Spawn)?;
        let runner_tid = rx.recv().map_err(|_| RingError::Spawn(std::io::Error::other("the runner ended at once")))?;
        let mut ring = Ring {
            page,
            _mem: mem.clone(),
            ctl,
            thread: Some(thread),
            runner_tid,
            kick,
            in_flight: false,
            awake: false,
            last_call: Instant::now(),
            taken: None,
            tuning,
            calls: bits,
            window: Window::default(),
            direct: false,
            direct_until: Instant::now(),
            backoff: Duration::ZERO,
            direct_cost: None,
            stats: RingStats::default(),
        };
        ring.reset_page();
        crate::kernel::signal::host::set_runner_thread(runner_tid);
        Ok(ring)
    }

    fn state(&self) -> &AtomicU32 {
        // SAFETY: the page lies in guest memory, mapped while `_mem` lives,
        // 4-byte aligned (checked); the guest writes it concurrently, which
        // atomics tolerate.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.page).state)) }
    }

    fn service(&self) -> &AtomicU32 {
        // SAFETY: as in `state`.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.page).service)) }
    }

    /// The page as the service leaves it: idle, parked, its settings.
    fn reset_page(&mut self) {
        self.state().store(RING_IDLE, Ordering::SeqCst);
        self.service().store(RING_PARKED, Ordering::SeqCst);
        self.awake = false;
        // SAFETY: as in `state`; plain stores of VMM-chosen values.
        unsafe {
            std::ptr::addr_of_mut!((*self.page).spin).write_volatile(self.tuning.spin);
            std::ptr::addr_of_mut!((*self.page).calls).write_volatile(self.calls);
        }
    }

    /// Whether call `nr` is one the stub posts.
    pub fn serves(&self, nr: u64) -> bool {
        (nr as usize) < RING_CALLS && self.calls[nr as usize / 64] & (1 << (nr % 64)) != 0
    }

    /// The service polls from now on (the program is making calls it
    /// serves), unless it backs off.
    pub fn wake(&mut self) {
        self.last_call = Instant::now();
        if !self.awake && !self.direct {
            self.awake = true;
            self.service().store(RING_AWAKE, Ordering::SeqCst);
        }
    }

    /// Counts how a trap came (`Event`) and, once a window is full,
    /// decides whether the ring pays. It does not while fewer than half of
    /// the traps are calls served on the page (each exit also pays the
    /// hand-over between the two threads, and a wait the stub's whole
    /// spin), nor while a window on the ring took longer per trap than the
    /// last one of direct entry (CPUs too busy for both threads): then the
    /// VMM thread enters the guest itself for a while (`direct`), doubling
    /// from 1 ms to [`MAX_BACKOFF`], and tries the ring again when calls it
    /// serves are most of the exits.
    pub fn note(&mut self, ev: Event) {
        let w = &mut self.window;
        match ev {
            Event::Served => w.served += 1,
            Event::Servable => w.servable += 1,
            Event::Late => {
                // Counted as served when it was taken.
                w.served = w.served.saturating_sub(1);
                w.servable += 1;
                return;
            }
            Event::Other => {}
        }
        w.total += 1;
        if w.total < WINDOW {
            return;
        }
        let w = std::mem::take(&mut self.window);
        let now = Instant::now();
        // Wall time per trap in this window: the program's own work between
        // calls is the same either way, so the cheaper way wins.
        let per_trap = now.saturating_duration_since(w.start) / w.total;
        if !self.direct {
            let slower = self.direct_cost.is_some_and(|d| per_trap > d);
            if w.served * 2 < w.total || slower {
                self.backoff = (self.backoff * 2).clamp(Duration::from_millis(1), MAX_BACKOFF);
                self.direct_until = now + self.backoff;
                self.stats.backoffs += 1;
                self.go_direct();
            } else {
                self.backoff /= 2;
            }
        } else {
            self.direct_cost = Some(per_trap);
            if now >= self.direct_until && w.servable * 2 > w.total {
                self.direct = false;
                crate::kernel::signal::host::set_runner_thread(self.runner_tid);
                self.wake();
            }
        }
        self.window.start = Instant::now();
    }

    /// The VMM thread enters the guest itself from now on (the runner
    /// idles): no hand-over per exit, the stub exits at once.
    fn go_direct(&mut self) {
        self.direct = true;
        self.park();
        crate::kernel::signal::host::set_runner_thread(0);
        crate::kernel::signal::host::set_vcpu_thread_here();
    }

    /// Whether the runner is in KVM_RUN.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether the VMM thread enters the guest itself for now.
    pub fn direct(&self) -> bool {
        self.direct
    }

    fn park(&mut self) {
        self.awake = false;
        self.service().store(RING_PARKED, Ordering::SeqCst);
        self.stats.parks += 1;
    }

    /// A request posted on the page, taken and copied once.
    fn take_request(&mut self) -> Option<kvm_regs> {
        let st = self.state();
        if st.load(Ordering::Relaxed) != RING_REQUEST
            || st.compare_exchange(RING_REQUEST, RING_TAKEN, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return None;
        }
        // SAFETY: as in `state`; one volatile copy of the page's request
        // into VMM memory, whatever the guest writes meanwhile.
        let p: Page = unsafe { std::ptr::read_volatile(self.page) };
        self.last_call = Instant::now();
        let a = p.args;
        Some(kvm_regs {
            rax: p.nr,
            rdi: a[0],
            rsi: a[1],
            rdx: a[2],
            r10: a[3],
            r8: a[4],
            r9: a[5],
            rcx: p.rcx,
            r11: p.r11,
            rsp: p.rsp,
            rip: p.rcx,
            rflags: p.r11,
            ..Default::default()
        })
    }

    /// Lets the runner enter the guest, unless it is already in.
    fn launch(&mut self) {
        if self.in_flight {
            return;
        }
        self.in_flight = true;
        self.ctl.done.store(0, Ordering::SeqCst);
        self.ctl.go.store(GO_RUN, Ordering::SeqCst);
        if self.ctl.sleeper.load(Ordering::SeqCst) != 0 {
            futex_wake(&self.ctl.go);
        }
    }

    /// Enters the guest (through the runner) and waits for its exit or for
    /// a request on the page: `Stop(regs)` is a request, taken.
    pub fn enter<D>(&mut self, wrap: impl Fn(kvm_regs) -> D) -> Entered<D> {
        self.launch();
        let mut rounds = 0u32;
        loop {
            if self.ctl.done.load(Ordering::Acquire) != 0 {
                self.in_flight = false;
                let e = self.ctl.errno.load(Ordering::Relaxed);
                return Entered::Ran(if e == 0 { Ok(()) } else { Err(e) });
            }
            if self.awake {
                if let Some(r) = self.take_request() {
                    return Entered::Stop(wrap(r));
                }
                rounds = rounds.wrapping_add(1);
                if rounds.is_multiple_of(self.tuning.yield_every) {
                    yield_now();
                }
                if rounds.is_multiple_of(64) && self.last_call.elapsed() > self.tuning.poll {
                    self.park();
                    // A call posted before the stub saw the service parked.
                    if let Some(r) = self.take_request() {
                        self.wake();
                        return Entered::Stop(wrap(r));
                    }
                }
                std::hint::spin_loop();
                continue;
            }
            self.ctl.waiter.store(1, Ordering::SeqCst);
            if self.ctl.done.load(Ordering::SeqCst) == 0 {
                futex_wait(&self.ctl.done, 0);
            }
            self.ctl.waiter.store(0, Ordering::SeqCst);
        }
    }

    /// The kernel will not serve the request it was handed: the stub exits.
    pub fn refuse(&mut self) {
        self.stats.refused += 1;
        self.taken = Some(Taken::Refused);
        self.state().store(RING_EXIT, Ordering::Release);
    }

    /// The kernel handled the request: `regs` is how the program continues;
    /// `plain` if only rax changed and nothing is left to do on the way
    /// back (then the stub returns by itself).
    pub fn complete(&mut self, regs: kvm_regs, plain: bool) {
        if plain {
            self.stats.done += 1;
            self.taken = Some(Taken::Done(regs.rax));
            // SAFETY: as in `state`; the result, then the state that publishes it.
            unsafe { std::ptr::addr_of_mut!((*self.page).ret).write_volatile(regs.rax) };
            self.state().store(RING_DONE, Ordering::Release);
        } else {
            self.stats.via_exit += 1;
            self.taken = Some(Taken::Exit(regs));
            self.state().store(RING_EXIT, Ordering::Release);
        }
    }

    /// The stub's exit to `PORT_RING_WAIT` with system call registers
    /// `ctx` (rip and rflags from rcx and r11).
    pub fn on_wait(&mut self, mut ctx: kvm_regs) -> Waited {
        self.wake();
        let st = self.state();
        if st.compare_exchange(RING_REQUEST, RING_IDLE, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            // Posted and never taken: the service was parked or slow.
            self.taken = None;
            return Waited::Call(ctx);
        }
        st.store(RING_IDLE, Ordering::Relaxed);
        match self.taken.take() {
            Some(Taken::Done(ret)) => {
                // Done, but after the stub's spin: it cost an exit after all.
                self.stats.done = self.stats.done.saturating_sub(1);
                self.stats.late += 1;
                ctx.rax = ret;
                Waited::Finished(ctx)
            }
            Some(Taken::Exit(r)) => {
                ctx.rax = r.rax;
                ctx.rip = r.rip;
                ctx.rsp = r.rsp;
                ctx.rflags = r.rflags;
                Waited::Finished(ctx)
            }
            Some(Taken::Refused) | None => Waited::Call(ctx),
        }
    }

    /// Stops a guest that is still running (the run ends while the
    /// runner is in KVM_RUN): kicks it out and waits for the exit, which is
    /// dropped.
    pub fn stop_flight(&mut self) {
        if !self.in_flight {
            return;
        }
        self.park();
        while self.ctl.done.load(Ordering::Acquire) == 0 {
            // SAFETY: kick is the vCPU's immediate_exit byte, alive with it.
            unsafe { self.kick.write_volatile(1) };
            // SAFETY: tgkill has no memory preconditions; the thread is the
            // runner, whose handler only sets immediate_exit.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    self.runner_tid,
                    crate::kernel::signal::host::link_kick_signal(),
                )
            };
            std::thread::sleep(Duration::from_micros(100));
        }
        self.in_flight = false;
    }

    /// In a forked VMM: the runner was the parent's (threads do not survive
    /// fork), so nothing is joined.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.stop_flight();
        self.reset_page();
        self.ctl.go.store(GO_QUIT, Ordering::SeqCst);
        futex_wake(&self.ctl.go);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        crate::kernel::signal::host::set_runner_thread(0);
    }
}

/// Inside KVM_RUN, whichever thread issues it: the VMM thread's current
/// signal mask (the runner blocks every signal outside KVM_RUN).
fn set_kvm_sigmask(fd: RawFd) -> Result<libc::sigset_t, RingError> {
    // SAFETY: plain-data sigset; valid pointers.
    let cur = unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
        cur
    };
    super::slices::set_kvm_sigmask(fd, &cur).map_err(RingError::Mask)?;
    Ok(cur)
}

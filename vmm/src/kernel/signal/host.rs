//! Signals that reach the VMM process itself:
//! - SIGTERM, SIGINT, ... sent to `dmvx-vmm` are meant for the program;
//! - a guest signal from another of the program's processes arrives as one
//!   real-time host signal whose value says which signal and from whom (the
//!   sending VMM found this VMM's host pid in the process table);
//! - SIGCHLD says a child VMM (a guest child process) ended;
//! - the stop notice says another process of this variant diverged.
//!
//! The handlers only record and kick every vCPU out of KVM_RUN; the kernel
//! takes what they recorded at its next chance (`collect_host_signals`).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::{bit, SigInfo, Signal, SI_USER};
use crate::kernel::Kernel;

/// Signals sent to the VMM that are passed on to the program.
pub const FORWARDED: [i32; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGWINCH,
];

/// The value of a message that is the stop notice, not a guest signal.
const STOP_NOTICE: usize = 0xffff_ffff;

/// Signals caught by the VMM and not yet handed to the program.
static HOST_PENDING: AtomicU64 = AtomicU64::new(0);
/// Guest signals from the program's other processes, and their senders.
static GUEST_PENDING: AtomicU64 = AtomicU64::new(0);
static GUEST_SENDER: [AtomicU32; 65] = [const { AtomicU32::new(0) }; 65];
/// A child VMM ended.
static CHILD_ENDED: AtomicBool = AtomicBool::new(false);
/// Another process of this variant diverged: stop.
static STOP: AtomicBool = AtomicBool::new(false);
/// The link asked this VMM to look at it (a peer's control message or a
/// link failure), whatever the program is doing.
static LINK_NOTICE: AtomicBool = AtomicBool::new(false);
/// The host thread that runs the vCPU (0: none yet).
static VCPU_TID: AtomicI32 = AtomicI32::new(0);
/// The ring's runner thread, which issues KVM_RUN when the exit-less call
/// path is on (0: none; the VMM thread enters the guest itself).
static RUNNER_TID: AtomicI32 = AtomicI32::new(0);
/// The `kvm_run.immediate_exit` bytes of the running vCPUs (null: free).
static KICKS: [AtomicPtr<u8>; MAX_VCPUS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_VCPUS];
const MAX_VCPUS: usize = 64;

/// The host signal that carries a guest signal between VMMs.
pub fn guest_signal_carrier() -> i32 {
    libc::SIGRTMIN() + 4
}

fn kick_all() {
    for k in &KICKS {
        let p = k.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: p points at the live kvm_run of a vCPU (its guard
            // clears the slot before that mapping goes away); a volatile byte
            // store is async-signal-safe.
            unsafe { p.write_volatile(1) };
        }
    }
    // With the ring, KVM_RUN runs in the runner thread: setting
    // immediate_exit does not end a KVM_RUN under way, a signal does.
    let runner = RUNNER_TID.load(Ordering::SeqCst);
    // SAFETY: gettid and tgkill are async-signal-safe and take no pointers;
    // the runner's handler of the kick only sets immediate_exit.
    unsafe {
        if runner > 0 && libc::gettid() != runner {
            libc::syscall(libc::SYS_tgkill, libc::getpid(), runner, link_kick_signal());
        }
    }
}

/// The ring's runner thread (0: none) is the one to kick out of KVM_RUN.
pub fn set_runner_thread(tid: i32) {
    RUNNER_TID.store(tid, Ordering::SeqCst);
}

/// The host signal that kicks the vCPU thread out of KVM_RUN for the link
/// (not the time slices' SIGRTMIN+5, which stays blocked outside KVM_RUN
/// and is drained as a slice's end).
pub fn link_kick_signal() -> i32 {
    libc::SIGRTMIN() + 6
}

extern "C" fn on_link_kick(_sig: libc::c_int) {
    kick_all();
}

/// From any thread (the link's I/O thread): the vCPU thread leaves guest
/// code at once and the kernel looks at the link (`take_link_notice`).
pub fn kick_for_link() {
    LINK_NOTICE.store(true, Ordering::SeqCst);
    kick_all();
    let tid = VCPU_TID.load(Ordering::SeqCst);
    if tid > 0 && RUNNER_TID.load(Ordering::SeqCst) == 0 {
        // SAFETY: tgkill has no memory preconditions; the thread is this
        // process's vCPU thread, whose handler only sets immediate_exit.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, link_kick_signal()) };
    }
}

/// Whether the link asked to be looked at since the last call.
pub fn take_link_notice() -> bool {
    LINK_NOTICE.swap(false, Ordering::SeqCst)
}

/// The host signals caught and not yet collected (bits), left pending.
pub fn peek_host_pending() -> u64 {
    HOST_PENDING.load(Ordering::SeqCst)
}

/// The calling thread runs the vCPU again (the ring was turned off).
pub fn set_vcpu_thread_here() {
    set_vcpu_thread();
}

fn set_vcpu_thread() {
    // SAFETY: gettid has no preconditions.
    VCPU_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
}

extern "C" fn on_host_signal(sig: libc::c_int) {
    HOST_PENDING.fetch_or(bit(sig), Ordering::SeqCst);
    kick_all();
}

extern "C" fn on_child(_sig: libc::c_int) {
    CHILD_ENDED.store(true, Ordering::SeqCst);
    kick_all();
}

extern "C" fn on_carrier(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let value = unsafe { (*info).si_value().sival_ptr } as usize;
    if value == STOP_NOTICE {
        STOP.store(true, Ordering::SeqCst);
    } else {
        let (sig, from) = (value & 0xff, (value >> 8) as u32);
        if (1..=64).contains(&sig) {
            GUEST_SENDER[sig].store(from, Ordering::SeqCst);
            GUEST_PENDING.fetch_or(1 << (sig - 1), Ordering::SeqCst);
        }
    }
    kick_all();
}

extern "C" fn on_timer(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let value = unsafe { (*info).si_value().sival_ptr } as usize;
    crate::kernel::timers::on_carrier(value);
    kick_all();
}

/// Installs a handler; a zeroed sigaction is valid.
fn install(sig: i32, handler: usize, flags: i32) {
    // SAFETY: the handlers only touch atomics and volatile bytes
    // (async-signal-safe). No SA_RESTART: blocking host calls must return
    // EINTR so the VMM can act.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Installs the VMM's handlers and registers a vCPU to kick; the
/// registration is undone on drop.
pub struct SignalGuard {
    slot: Option<usize>,
}

impl SignalGuard {
    /// Registers `kick` (a vCPU's `kvm_run.immediate_exit`, alive as long as
    /// the guard). A follower ignores its host's forwarded signals (the
    /// leader's are replicated); everyone else catches them for the program.
    pub fn install(kick: *mut u8, ignore: bool) -> SignalGuard {
        let slot = register(kick);
        for sig in FORWARDED {
            if ignore {
                // SAFETY: installing SIG_IGN has no preconditions.
                unsafe { libc::signal(sig, libc::SIG_IGN) };
            } else {
                install(sig, on_host_signal as *const () as usize, 0);
            }
        }
        install(libc::SIGCHLD, on_child as *const () as usize, libc::SA_NOCLDSTOP);
        install(guest_signal_carrier(), on_carrier as *const () as usize, libc::SA_SIGINFO);
        install(crate::kernel::timers::carrier(), on_timer as *const () as usize, libc::SA_SIGINFO);
        // SA_RESTART: the kick may land outside KVM_RUN, in a host call the
        // VMM makes for the program, which must not fail for it.
        install(link_kick_signal(), on_link_kick as *const () as usize, libc::SA_RESTART);
        set_vcpu_thread();
        SignalGuard { slot }
    }
}

fn register(kick: *mut u8) -> Option<usize> {
    KICKS
        .iter()
        .position(|k| k.compare_exchange(std::ptr::null_mut(), kick, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            KICKS[i].store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

/// In a forked child: nothing of the parent's vCPUs or pending signals.
pub fn after_fork() {
    for k in &KICKS {
        k.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
    HOST_PENDING.store(0, Ordering::SeqCst);
    GUEST_PENDING.store(0, Ordering::SeqCst);
    CHILD_ENDED.store(false, Ordering::SeqCst);
    LINK_NOTICE.store(false, Ordering::SeqCst);
    RUNNER_TID.store(0, Ordering::SeqCst);
    set_vcpu_thread();
}

/// Every signal blocked in the calling thread until `restore` (around a
/// fork, so that none reaches the child before it is ready for it).
pub struct BlockedSignals {
    old: libc::sigset_t,
}

impl BlockedSignals {
    pub fn all() -> BlockedSignals {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask get
        // valid pointers to it.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            BlockedSignals { old }
        }
    }

    /// Puts the mask from before back; pending signals arrive now.
    pub fn restore(self) {
        // SAFETY: self.old is the mask pthread_sigmask returned.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Registers the child's new vCPU for kicks (the parent's guard, inherited,
/// still names the old one's slot).
pub fn register_kick(kick: *mut u8) {
    register(kick);
}

/// Sends guest signal `sig` from process `from` to the VMM at `host_pid`.
pub fn send_guest_signal(host_pid: i32, sig: i32, from: u32) -> std::io::Result<()> {
    queue(host_pid, (sig as usize & 0xff) | ((from as usize) << 8))
}

/// Tells the VMM at `host_pid` that the run stops (another process diverged).
pub fn send_stop_notice(host_pid: i32) -> std::io::Result<()> {
    queue(host_pid, STOP_NOTICE)
}

fn queue(host_pid: i32, value: usize) -> std::io::Result<()> {
    let v = libc::sigval { sival_ptr: value as *mut libc::c_void };
    // SAFETY: sigqueue copies the value; no pointer is dereferenced.
    if unsafe { libc::sigqueue(host_pid, guest_signal_carrier(), v) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for a host signal the VMM handles, unless `ready` (evaluated with
/// those signals blocked, so none is missed between the look and the wait)
/// says there is no need.
pub fn wait_unless(mut ready: impl FnMut() -> bool) {
    // SAFETY: sigset_t is plain data; the sigset and sigmask calls get valid
    // pointers; sigsuspend returns when a handler ran.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for s in FORWARDED {
            libc::sigaddset(&mut block, s);
        }
        libc::sigaddset(&mut block, libc::SIGCHLD);
        libc::sigaddset(&mut block, guest_signal_carrier());
        libc::sigaddset(&mut block, crate::kernel::timers::carrier());
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        if !ready() {
            libc::sigsuspend(&old);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// Whether anything is recorded that the kernel has not taken yet.
pub fn pending() -> bool {
    HOST_PENDING.load(Ordering::SeqCst) != 0
        || GUEST_PENDING.load(Ordering::SeqCst) != 0
        || CHILD_ENDED.load(Ordering::SeqCst)
        || STOP.load(Ordering::SeqCst)
        || crate::kernel::timers::fired()
}

/// Whether another process of this variant diverged.
pub fn stop_noticed() -> bool {
    STOP.load(Ordering::SeqCst)
}

impl Kernel {
    /// Moves signals the VMM caught into the program's pending set, reaps
    /// ended child VMMs and raises the guest's SIGCHLD for them. A follower
    /// ignores its host's signals for the program: it takes the leader's.
    pub(crate) fn collect_host_signals(&mut self) {
        let caught = HOST_PENDING.swap(0, Ordering::SeqCst);
        let guest = GUEST_PENDING.swap(0, Ordering::SeqCst);
        let children = CHILD_ENDED.swap(false, Ordering::SeqCst);
        let exit_signals = if children { self.reap_children() } else { 0 };
        let timers = crate::kernel::timers::take_fired();
        if self.is_follower() {
            return;
        }
        if timers != 0 {
            self.raise_timer_signals(timers);
        }
        for sig in FORWARDED {
            if caught & bit(sig) != 0 {
                self.raise_in_process(Signal(sig), SigInfo { code: SI_USER, ..Default::default() });
                self.host_raised |= bit(sig);
            }
        }
        for n in 1..=64 {
            if guest & bit(n) != 0 && !self.tg().sighand.ignored(Signal(n)) {
                let from = GUEST_SENDER[n as usize].load(Ordering::SeqCst);
                // si_pid and si_uid share the word after si_code.
                let uid = self.tg().creds.uid as u64;
                self.raise_in_process(
                    Signal(n),
                    SigInfo { code: SI_USER, addr: from as u64 | uid << 32, ..Default::default() },
                );
                self.host_raised |= bit(n);
            }
        }
        self.raise_exit_signals(exit_signals);
    }

    /// Raises the exit signals of ended children (leader or alone; a
    /// follower takes the leader's).
    pub(crate) fn raise_exit_signals(&mut self, sigs: u64) {
        if sigs == 0 || self.is_follower() {
            return;
        }
        for n in 1..=64 {
            // An ignored SIGCHLD (its default) is discarded, as on Linux: it
            // interrupts nothing.
            if sigs & bit(n) != 0 && !self.tg().sighand.ignored(Signal(n)) {
                self.task.sig.raise(Signal(n), SigInfo { code: SI_USER, ..Default::default() });
                self.host_raised |= bit(n);
            }
        }
    }
}

//! A thread group: what Linux calls a process — a pid, signal
//! dispositions, resource limits, credentials, the program it runs. Shared
//! by its tasks.

use std::sync::Mutex;

use super::creds::Creds;
use super::signal::SigHand;
use super::syscall::proc::Limits;

/// The state of a thread group that its tasks change.
pub struct TgState {
    pub sighand: SigHand,
    pub limits: Limits,
    pub creds: Creds,
    /// The program's path inside the root (/proc/self/exe).
    pub exe: Vec<u8>,
    /// The command name (prctl PR_SET_NAME, /proc/self/comm).
    pub name: [u8; 16],
    /// POSIX timers (timer_create).
    pub timers: super::timers::Timers,
}

/// One thread group.
pub struct ThreadGroup {
    /// Virtual process id (the same in every variant).
    pub pid: u32,
    /// Virtual parent process id.
    pub ppid: u32,
    pub state: Mutex<TgState>,
}

impl ThreadGroup {
    /// A thread group running `exe`.
    pub fn new(pid: u32, ppid: u32, creds: Creds, exe: Vec<u8>, name: [u8; 16]) -> ThreadGroup {
        ThreadGroup {
            pid,
            ppid,
            state: Mutex::new(TgState {
                sighand: SigHand::default(),
                limits: Limits::default(),
                creds,
                exe,
                name,
                timers: Default::default(),
            }),
        }
    }
}

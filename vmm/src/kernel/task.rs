//! A task: one thread of execution of the program, with its registers and
//! per-thread state. Its resources (fd table, file-system context) and its
//! thread group are shared or copied as clone flags say.

use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_xsave;

use super::fd_table::FdTable;
use super::fs_context::FsContext;
use super::signal::SigState;
use super::thread_group::ThreadGroup;

/// One thread.
pub struct Task {
    /// Virtual thread id (the same in every variant).
    pub tid: u32,
    pub tg: Arc<ThreadGroup>,
    pub files: Arc<Mutex<FdTable>>,
    pub fs: Arc<Mutex<FsContext>>,
    pub sig: SigState,
    /// The mask before a call replaced it for its wait (ppoll, pselect6,
    /// epoll_pwait, rt_sigsuspend); restored when the call returns.
    pub saved_mask: Option<u64>,
    /// FS and GS bases (arch_prctl).
    pub fs_base: u64,
    pub gs_base: u64,
    /// The bases changed and must be loaded before the task runs again.
    pub bases_dirty: bool,
    /// FPU state to load before the task runs again (rt_sigreturn).
    pub pending_fpu: Option<Box<kvm_xsave>>,
    /// set_tid_address, set_robust_list.
    pub clear_child_tid: u64,
    pub robust_list: (u64, u64),
    /// The stack pointer at the current system call.
    pub entry_rsp: u64,
    /// The system call being handled.
    pub nr: Option<u64>,
    /// When the poll or epoll_wait this thread issues again times out.
    pub poll_deadline: Option<std::time::Instant>,
    /// sched_setaffinity's set (None: every virtual CPU).
    pub affinity: Option<super::cpus::CpuSet>,
    /// The descriptor whose connection this thread started without
    /// blocking and waits for (a process with threads: `connect`).
    pub connecting: Option<u64>,
    /// The call could not finish without blocking: the thread waits as a
    /// poller and issues it again.
    pub reissue: bool,
    /// ppoll, select or pselect6 only looks (timeout 0): `poll_probe`;
    /// Some(true) for the last look (its time is up).
    pub look_only: Option<bool>,
}

impl Task {
    /// A task of `tg` with the given resources and default per-thread state.
    pub fn new(tid: u32, tg: Arc<ThreadGroup>, files: Arc<Mutex<FdTable>>, fs: Arc<Mutex<FsContext>>) -> Task {
        Task {
            tid,
            tg,
            files,
            fs,
            sig: SigState::default(),
            saved_mask: None,
            fs_base: 0,
            gs_base: 0,
            bases_dirty: false,
            pending_fpu: None,
            clear_child_tid: 0,
            robust_list: (0, 0),
            entry_rsp: 0,
            nr: None,
            poll_deadline: None,
            affinity: None,
            connecting: None,
            reissue: false,
            look_only: None,
        }
    }
}

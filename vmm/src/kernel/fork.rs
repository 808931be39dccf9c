//! New processes. Each guest process runs in a VM of its own, in a VMM
//! process of its own: the VMM forks on the host, so the child inherits the
//! guest's memory copy-on-write and every host descriptor (a shared file
//! offset, as Linux shares it), and builds a new VM and vCPU over that
//! memory in which the guest's child continues. The process table gives
//! both their virtual pids.
//!
//! In a cluster the leader chooses the child's pid and opens a listener for
//! the child's event stream; followers take both from the leader's entry,
//! so the k-th child of a matched parent is matched too, and every child
//! gets an authenticated link of its own.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::errno::{self, Errno};
use super::file::lock;
use super::proc_table::TableError;
use super::signal::host;
use super::syscall::clone::ForkRequest;
use super::task::Task;
use super::thread_group::ThreadGroup;
use super::{Kernel, KernelError};
use crate::monitor::Out;
use crate::platform::{Platform, UserRegs};

/// How a fork went, for the process that continues here.
pub(crate) enum Forked {
    /// The parent: the call returns this (the child's pid, or an error);
    /// a vfork parent then waits on `vfork` until the child execs or ends
    /// (after the call's event went out: the child's stream needs it).
    Parent(i64, Option<OwnedFd>),
    /// The child, with its registers: its first instruction is the one
    /// after the call.
    Child(UserRegs),
}

impl Kernel {
    /// Creates the child process `req` asks for; `ctx` is the calling
    /// task's registers after the call.
    pub(crate) fn fork(
        &mut self,
        plat: &mut Platform,
        req: &ForkRequest,
        ctx: UserRegs,
    ) -> Result<Forked, KernelError> {
        let parent = self.task.tg.pid;
        // Shared memory must be one set of frames for parent and child.
        if self.mm.share_for_fork().is_err() {
            return Ok(Forked::Parent(-(libc::ENOMEM as i64), None));
        }
        // The pid and, in a cluster, where the child's stream listens.
        let mut port = [0u8; 2];
        let mut place = 0;
        let mut listener = None;
        let mode = self.op_mode(true);
        let pid = if mode == crate::monitor::OpMode::Replay {
            let ret = self.replay_op(&mut [Out::Buf(&mut port)]);
            if ret < 0 {
                return Ok(Forked::Parent(ret, None));
            }
            match self.procs.fork(parent, Some(ret as u32), req.exit_signal) {
                Ok((pid, k)) => {
                    place = k;
                    pid
                }
                // The leader made this child; a follower that cannot is a divergence.
                Err(source) => return Err(KernelError::ForkAsLeader { pid: ret as u32, source }),
            }
        } else {
            let r = self.procs.fork(parent, None, req.exit_signal).map_err(|e| match e {
                TableError::Full(_) => Errno::EAGAIN,
                TableError::NoSuchProcess => Errno::ESRCH,
            });
            let r = r.and_then(|(pid, k)| {
                place = k;
                if let Some(m) = self.monitor.as_ref() {
                    match m.spec.child_listener() {
                        Ok(l) => {
                            let p = l.local_addr().map(|a| a.port()).unwrap_or(0);
                            port = p.to_le_bytes();
                            listener = Some(l);
                        }
                        Err(e) => {
                            self.procs.unfork(pid);
                            eprintln!("dmvx: {e}");
                            return Err(Errno::EAGAIN);
                        }
                    }
                }
                Ok(pid)
            });
            let ret = errno::to_neg(r.map(u64::from));
            if mode == crate::monitor::OpMode::Record {
                self.record_op(ret, &mut [Out::Buf(&mut port)]);
            }
            match r {
                Ok(pid) => pid,
                Err(_) => return Ok(Forked::Parent(ret, None)),
            }
        };
        let fpu = plat.fpu()?;
        // vfork: the parent waits until the child execs or ends, which
        // closes the child's end of this pipe.
        let vfork_pipe = if req.vfork { Some(pipe()?) } else { None };
        if let Some(m) = self.monitor.as_mut() {
            // Nothing of the parent's batch may be lost to the child.
            m.flush_link();
        }
        let blocked = host::BlockedSignals::all();
        // SAFETY: fork has no memory-safety preconditions; the child touches
        // only state this thread owns (the kernel, the VM's memory) and never
        // the other threads' (the parent's link), which it leaves behind.
        let host = unsafe { libc::fork() };
        // Signals stayed blocked across fork: one sent to the child before it
        // forgot the parent's pending state below (a kill of its group right
        // after the fork returned in the parent) waits for the unblock.
        if host == 0 {
            host::after_fork();
        }
        blocked.restore();
        if host < 0 {
            // Too late to fail alike in every variant: the leader said yes.
            self.procs.unfork(pid);
            return Err(KernelError::Fork(std::io::Error::last_os_error()));
        }
        if host > 0 {
            drop(listener);
            self.procs.set_host_pid(pid, host);
            if let Some(va) = req.parent_tid {
                let _ = self.mm.write_val(va, &pid);
            }
            let wait = vfork_pipe.map(|(r, _)| r);
            return Ok(Forked::Parent(pid as i64, wait));
        }
        // The child.
        // SAFETY: getpid has no preconditions.
        self.procs.set_host_pid(pid, unsafe { libc::getpid() });
        self.vfork_done = vfork_pipe.map(|(_, w)| w);
        self.root = false;
        self.become_child(pid, parent, req);
        let fs = req.tls.unwrap_or(self.task.fs_base);
        plat.rebuild(&self.mm, fs, self.task.gs_base, &fpu)?;
        // The new vCPU is the one a signal handler must kick now (after_fork
        // forgot the parent's).
        host::register_kick(plat.kick_target());
        if let Some(m) = self.monitor.take() {
            let spec = m.spec.clone();
            // The child's paths name the leader's temporaries as the parent's do.
            let names = m.names.clone();
            // Its link's threads stayed with the parent: never touch it.
            std::mem::forget(m);
            let port = u16::from_le_bytes(port);
            let mut child = spec.child(pid, place, listener, port)?;
            child.names = names;
            self.monitor = Some(Box::new(child));
        }
        let mut child = ctx;
        child.rax = 0;
        if let Some(sp) = req.stack {
            child.rsp = sp;
        }
        Ok(Forked::Child(child))
    }

    /// Turns this kernel's state into the child's: a task and thread group
    /// of its own with copies of the parent's tables.
    fn become_child(&mut self, pid: u32, parent: u32, req: &ForkRequest) {
        let tgs = lock(&self.task.tg.state);
        let mut sighand = tgs.sighand.clone();
        if req.clear_sighand {
            sighand.reset_on_exec();
        }
        let tg = ThreadGroup::new(pid, parent, tgs.creds.clone(), tgs.exe.clone(), tgs.name);
        {
            let mut s = lock(&tg.state);
            s.sighand = sighand;
            s.limits = tgs.limits.clone();
        }
        drop(tgs);
        let files = Arc::new(Mutex::new(lock(&self.task.files).clone()));
        let fs = Arc::new(Mutex::new(lock(&self.task.fs).clone()));
        let mut task = Task::new(pid, Arc::new(tg), files, fs);
        task.sig.mask = self.task.sig.mask;
        task.sig.altstack = self.task.sig.altstack;
        task.affinity = self.task.affinity.clone();
        task.fs_base = req.tls.unwrap_or(self.task.fs_base);
        task.gs_base = self.task.gs_base;
        task.clear_child_tid = req.clear_tid.unwrap_or(0);
        self.task = task;
        // Only the calling thread lives on in the child.
        self.sched = Default::default();
        self.host_raised = 0;
        self.timer_raised.clear();
        self.reported.clear();
        self.stats = Default::default();
        if let Some(va) = req.child_tid {
            let _ = self.mm.write_val(va, &pid);
        }
    }
}

/// A pipe whose ends close on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), KernelError> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid out-parameter for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(KernelError::Fork(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Blocks until the other end of `r` is closed (a vfork child exec'd or
/// ended).
pub(crate) fn wait_closed(r: &OwnedFd) {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: b is a valid one-byte buffer; r is open.
        let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(r), b.as_mut_ptr().cast(), 1) };
        if n >= 0 || errno::Errno::last() != Errno::EINTR {
            return;
        }
    }
}

//! A process's children: reaping their VMMs on the host, and wait4/waitid
//! over the process table.
//!
//! A child VMM records its guest's wait status in the table before it
//! exits; the host process is reaped at once (its SIGCHLD), while the
//! guest's zombie stays in the table until the guest parent waits for it.
//! A child VMM that died without recording (killed on the host) counts as
//! killed by SIGKILL.

use super::errno::{Errno, SysResult};
use super::proc_table::{Proc, State};
use super::Kernel;

/// Which children a wait selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Any,
    Pid(u32),
    Group(u32),
}

/// What a wait found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub pid: u32,
    pub wait_status: i32,
}

impl Kernel {
    /// Reaps ended child VMMs (host processes); returns the exit signals to
    /// raise for guest children that ended since the last look.
    pub(crate) fn reap_children(&mut self) -> u64 {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-parameter; WNOHANG never blocks.
            let host = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
            if host <= 0 {
                break;
            }
            // A VMM that ended without recording its guest's status.
            let gone = self.procs.select(|p| p.host_pid == host && p.state == State::Alive);
            for p in gone {
                let (_, orphans) = self.procs.exit(p.pid, libc::SIGKILL);
                self.send_pdeathsig(&orphans);
            }
        }
        self.exited_children()
    }

    /// The exit signals of children that ended since the last look (each
    /// child's once).
    fn exited_children(&mut self) -> u64 {
        let me = self.task.tg.pid;
        let mut sigs = 0u64;
        for p in self.procs.select(|p| p.ppid == me && p.state == State::Zombie) {
            if self.reported.insert(p.pid) && (1..=64).contains(&p.exit_signal) {
                sigs |= super::signal::bit(p.exit_signal);
            }
        }
        sigs
    }

    /// Sends the parent-death signals of the children of an ended process.
    pub(crate) fn send_pdeathsig(&self, orphans: &[Proc]) {
        for o in orphans {
            let _ = super::signal::host::send_guest_signal(o.host_pid, o.pdeathsig, self.task.tg.pid);
        }
    }

    /// Whether a wait for `which` would block: children exist and none
    /// has ended. Looks only (nothing is reaped or raised).
    pub(crate) fn wait_would_block(&self, which: Which) -> bool {
        let kids = self.children(which);
        !kids.is_empty() && !kids.iter().any(|p| p.state == State::Zombie)
    }

    /// The children `which` selects, alive or ended.
    fn children(&self, which: Which) -> Vec<Proc> {
        let me = self.task.tg.pid;
        self.procs.select(|p| {
            p.ppid == me
                && match which {
                    Which::Any => true,
                    Which::Pid(pid) => p.pid == pid,
                    Which::Group(g) => p.pgid == g,
                }
        })
    }

    /// One ended child `which` selects, reaped unless `keep` (WNOWAIT);
    /// None if they all still run (ECHILD if there are none). With `block`,
    /// waits until one ends or a signal the program will take arrives.
    pub(crate) fn wait_child(&mut self, which: Which, block: bool, keep: bool) -> SysResult<Option<Reaped>> {
        loop {
            let kids = self.children(which);
            if kids.is_empty() {
                return Err(Errno::ECHILD);
            }
            if let Some(z) = kids.iter().find(|p| p.state == State::Zombie) {
                // Its SIGCHLD came before the wait returns, as on Linux.
                let sigs = self.exited_children();
                self.raise_exit_signals(sigs);
                if !keep {
                    self.procs.reap(z.pid);
                    self.reported.remove(&z.pid);
                }
                return Ok(Some(Reaped { pid: z.pid, wait_status: z.wait_status }));
            }
            if !block {
                return Ok(None);
            }
            if !self.settle_before_blocking() {
                return Err(Errno::EINTR);
            }
            // A child's end arrives as SIGCHLD.
            let procs = self.procs.clone();
            let me = self.task.tg.pid;
            super::signal::host::wait_unless(|| {
                super::signal::host::pending()
                    || procs.select(|p| p.ppid == me && p.state == State::Zombie).iter().any(|p| match which {
                        Which::Any => true,
                        Which::Pid(pid) => p.pid == pid,
                        Which::Group(g) => p.pgid == g,
                    })
            });
            self.collect_host_signals();
            if self.task.sig.has_deliverable() || self.stop.is_some() {
                return Err(Errno::EINTR);
            }
        }
    }

    /// Follower: the leader reaped child `pid`; this variant's child must
    /// end the same way (its own stream checks that), so wait for it, then
    /// reap it here too.
    pub(crate) fn reap_as_leader_did(&mut self, pid: u32, keep: bool) {
        let deadline =
            std::time::Instant::now() + self.monitor.as_ref().map_or(std::time::Duration::from_secs(10), |m| m.timeout);
        while std::time::Instant::now() < deadline {
            match self.procs.get(pid) {
                Some(p) if p.state == State::Zombie => {
                    if !keep {
                        self.procs.reap(pid);
                        self.reported.remove(&pid);
                    }
                    return;
                }
                Some(_) => {
                    self.collect_host_signals();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                None => return,
            }
        }
    }
}

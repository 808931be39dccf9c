//! POSIX per-process timers (timer_create). Each is a host timer of the
//! VMM process whose expiry arrives as a carrier signal naming the timer;
//! the kernel raises the program's signal at its next chance
//! (`collect_host_signals`), so in a cluster it is the leader's and ships
//! with the leader's next event. Followers keep the table (ids, signals)
//! but no host timers: their host calls take the leader's results.

use std::sync::atomic::{AtomicU64, Ordering};

use super::errno::{Errno, SysResult};

/// Timers a process may have (Linux bounds them by RLIMIT_SIGPENDING).
pub const MAX_TIMERS: usize = 64;

/// sigev_notify values.
pub const SIGEV_SIGNAL: i32 = 0;
pub const SIGEV_NONE: i32 = 1;
pub const SIGEV_THREAD_ID: i32 = 4;

/// si_code of a timer's signal.
pub const SI_TIMER: i32 = -2;

/// Timers whose host timer expired and whose signal is not raised yet.
static FIRED: AtomicU64 = AtomicU64::new(0);

/// How a timer tells its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// Nothing (timer_gettime only).
    None,
    /// A signal to the process.
    Process(i32),
    /// A signal to one thread (its virtual tid).
    Thread(i32, u32),
}

/// One timer of the program.
#[derive(Debug)]
pub struct Timer {
    pub notify: Notify,
    /// sigev_value, passed in the signal's si_value.
    pub value: u64,
    /// The host timer (leader or alone; None in a follower).
    pub host: Option<usize>,
}

/// The program's timers, by id (the slot: the lowest free one, as Linux's
/// ids start at 0, the same in every variant).
#[derive(Debug, Default)]
pub struct Timers {
    slots: Vec<Option<Timer>>,
}

impl Timers {
    /// A free id, or EAGAIN.
    pub fn free_id(&self) -> SysResult<usize> {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => Ok(i),
            None if self.slots.len() < MAX_TIMERS => Ok(self.slots.len()),
            None => Err(Errno::EAGAIN),
        }
    }

    pub fn insert(&mut self, id: usize, t: Timer) {
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, || None);
        }
        self.slots[id] = Some(t);
    }

    pub fn get(&self, id: u64) -> SysResult<&Timer> {
        self.slots.get(id as usize).and_then(Option::as_ref).ok_or(Errno::EINVAL)
    }

    pub fn remove(&mut self, id: u64) -> SysResult<Timer> {
        let t = self.slots.get_mut(id as usize).and_then(Option::take).ok_or(Errno::EINVAL)?;
        FIRED.fetch_and(!(1u64 << id), Ordering::SeqCst);
        Ok(t)
    }

    /// Every timer ends (execve; the process's end).
    pub fn clear(&mut self) {
        for (id, t) in self.slots.drain(..).enumerate() {
            if let Some(h) = t.and_then(|t| t.host) {
                delete_host(h);
            }
            FIRED.fetch_and(!(1u64 << id), Ordering::SeqCst);
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The host signal that carries a timer's expiry (its value: the id).
pub fn carrier() -> i32 {
    libc::SIGRTMIN() + 7
}

/// The carrier's handler: records the expiry; the kernel takes it.
pub(super) fn on_carrier(value: usize) {
    if value < MAX_TIMERS {
        FIRED.fetch_or(1u64 << value, Ordering::SeqCst);
    }
}

/// Whether a timer expired that the kernel has not taken yet.
pub fn fired() -> bool {
    FIRED.load(Ordering::SeqCst) != 0
}

/// Takes the expired timers (bits by id).
pub fn take_fired() -> u64 {
    FIRED.swap(0, Ordering::SeqCst)
}

/// Creates the host timer of timer `id` on `clock`.
pub fn create_host(clock: libc::clockid_t, id: usize) -> SysResult<usize> {
    // SAFETY: sigevent is plain data; zeroed is a valid start.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_SIGNAL;
    sev.sigev_signo = carrier();
    sev.sigev_value = libc::sigval { sival_ptr: id as *mut libc::c_void };
    let mut t: libc::timer_t = std::ptr::null_mut();
    // SAFETY: sev and t are valid for the call.
    if unsafe { libc::timer_create(clock, &mut sev, &mut t) } != 0 {
        return Err(Errno::last());
    }
    Ok(t as usize)
}

fn delete_host(h: usize) {
    // SAFETY: h is a host timer this module created and not deleted yet.
    unsafe { libc::timer_delete(h as libc::timer_t) };
}

/// Deletes a timer's host timer.
pub fn delete(t: Timer) {
    if let Some(h) = t.host {
        delete_host(h);
    }
}

/// The 32 bytes of an itimerspec, checked as Linux does.
pub fn valid_spec(spec: &libc::itimerspec) -> SysResult<()> {
    for ts in [spec.it_interval, spec.it_value] {
        if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
            return Err(Errno::EINVAL);
        }
    }
    Ok(())
}

impl super::Kernel {
    /// Raises the signals of the timers in `fired` (bits by id), as Linux
    /// does at expiry: SI_TIMER, the id, the overrun count, si_value.
    pub(crate) fn raise_timer_signals(&mut self, fired: u64) {
        for id in 0..MAX_TIMERS {
            if fired & (1u64 << id) == 0 {
                continue;
            }
            let (notify, value, host) = match self.tg().timers.get(id as u64) {
                Ok(t) => (t.notify, t.value, t.host),
                Err(_) => continue,
            };
            // SAFETY: h is this timer's live host timer.
            let overrun = host.map_or(0, |h| unsafe { libc::timer_getoverrun(h as libc::timer_t) }.max(0));
            let info = super::signal::SigInfo {
                code: SI_TIMER,
                addr: id as u64 | (overrun as u32 as u64) << 32,
                value,
                ..Default::default()
            };
            let sig = match notify {
                Notify::None => continue,
                Notify::Process(s) | Notify::Thread(s, _) => super::signal::Signal(s),
            };
            if self.tg().sighand.ignored(sig) {
                continue;
            }
            match notify {
                Notify::Thread(_, tid) if tid != self.task.tid => match self.sched.find(tid) {
                    Some(i) => self.signal_parked(i, sig, info),
                    None => self.raise_in_process(sig, info),
                },
                Notify::Thread(..) => self.task.sig.raise(sig, info),
                _ => self.raise_in_process(sig, info),
            }
            self.host_raised |= super::signal::bit(sig.0);
            self.timer_raised.retain(|&(s, _)| s != sig.0);
            self.timer_raised.push((sig.0, info.addr));
        }
    }
}

impl super::Kernel {
    /// Follower: raises the leader's timer signal `sig` (`addr`: the id and
    /// overrun it shipped) as the leader did, with this variant's value.
    pub(crate) fn raise_shipped_timer_signal(&mut self, sig: i32, addr: u64) {
        let (notify, value) = match self.tg().timers.get(addr & 0xffff_ffff) {
            Ok(t) => (t.notify, t.value),
            Err(_) => (Notify::Process(sig), 0),
        };
        let info = super::signal::SigInfo { code: SI_TIMER, addr, value, ..Default::default() };
        let sig = super::signal::Signal(sig);
        match notify {
            Notify::Thread(_, tid) if tid != self.task.tid => match self.sched.find(tid) {
                Some(i) => self.signal_parked(i, sig, info),
                None => self.raise_in_process(sig, info),
            },
            Notify::Thread(..) => self.task.sig.raise(sig, info),
            _ if self.sched.others.is_empty() => self.task.sig.raise(sig, info),
            _ => self.raise_in_process(sig, info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timer {
        Timer { notify: Notify::None, value: 0, host: None }
    }

    #[test]
    fn ids_are_the_lowest_free_and_bounded() {
        let mut ts = Timers::default();
        for want in 0..MAX_TIMERS {
            let id = ts.free_id().unwrap();
            assert_eq!(id, want);
            ts.insert(id, t());
        }
        assert_eq!(ts.free_id(), Err(Errno::EAGAIN));
        ts.remove(5).unwrap();
        assert_eq!(ts.free_id(), Ok(5));
        assert_eq!(ts.remove(5).unwrap_err(), Errno::EINVAL);
        assert!(ts.get(1000).is_err());
    }

    #[test]
    fn specs_are_checked() {
        let ok = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: 1, tv_nsec: 999_999_999 },
        };
        assert!(valid_spec(&ok).is_ok());
        let mut bad = ok;
        bad.it_value.tv_nsec = 1_000_000_000;
        assert!(valid_spec(&bad).is_err());
        bad = ok;
        bad.it_interval.tv_sec = -1;
        assert!(valid_spec(&bad).is_err());
    }
}

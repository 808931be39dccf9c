//! dmvx-netdelay: a TCP relay that adds a fixed one-way delay in each
//! direction. Test hosts use `tc netem` for delay; on kernels built without
//! netem (CONFIG_NET_SCH_NETEM), this relay between a variant and its leader
//! stands in for it.
//!
//! Usage: dmvx-netdelay LISTEN_ADDR TARGET_ADDR DELAY_MICROSECONDS
//!
//! The relay shares the machine with what it measures, so it is built to
//! cost little: one thread per connection serves both directions with
//! `ppoll` (a wake-up when bytes arrive, one when they are due), and the
//! timer slack is 1 ns so that the delay is what was asked for, not up to
//! 50 us more.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Bytes queued in one direction before the relay stops reading it.
const MAX_QUEUED: usize = 8 << 20;
const READ_CHUNK: usize = 64 * 1024;

/// One direction: bytes read from `from` wait in `queue` until due.
struct Direction {
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes of the queue's head already written.
    written: usize,
    queued: usize,
    eof: bool,
    shut: bool,
    /// The last write would have blocked: wait for POLLOUT, not for time.
    blocked: bool,
}

impl Direction {
    fn new() -> Self {
        Direction { queue: VecDeque::new(), written: 0, queued: 0, eof: false, shut: false, blocked: false }
    }

    fn wants_input(&self) -> bool {
        !self.eof && self.queued < MAX_QUEUED
    }

    /// Reads what is there; every chunk is due `delay` after it arrived.
    fn read_from(&mut self, mut from: &TcpStream, delay: Duration, buf: &mut [u8]) -> std::io::Result<()> {
        loop {
            match from.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    let chunk = buf.get(..n).unwrap_or_default().to_vec();
                    self.queued += n;
                    self.queue.push_back((Instant::now() + delay, chunk));
                    if n < buf.len() || !self.wants_input() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes every chunk that is due; half-closes `to` once the other side
    /// closed and everything before it was delivered.
    fn write_due(&mut self, mut to: &TcpStream, now: Instant) -> std::io::Result<()> {
        self.blocked = false;
        while let Some((due, chunk)) = self.queue.front() {
            if *due > now {
                break;
            }
            match to.write(chunk.get(self.written..).unwrap_or_default()) {
                Ok(n) => {
                    self.written += n;
                    if self.written == chunk.len() {
                        self.queued -= chunk.len();
                        self.written = 0;
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.eof && self.queue.is_empty() && !self.shut {
            self.shut = true;
            let _ = to.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// When the next chunk is due, unless the relay waits for POLLOUT.
    fn next_due(&self) -> Option<Instant> {
        if self.blocked {
            return None;
        }
        self.queue.front().map(|(due, _)| *due)
    }
}

/// Relays between `a` and `b` until both directions are closed or one
/// side fails.
fn relay(a: TcpStream, b: TcpStream, delay: Duration) -> std::io::Result<()> {
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    let socks = [&a, &b];
    // dirs[0]: a -> b, dirs[1]: b -> a.
    let mut dirs = [Direction::new(), Direction::new()];
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let now = Instant::now();
        dirs[0].write_due(&b, now)?;
        dirs[1].write_due(&a, now)?;
        if dirs.iter().all(|d| d.shut) {
            return Ok(());
        }
        // Socket i is read for direction i and written for the other.
        let mut fds = [0usize, 1].map(|i| {
            let mut events = 0;
            if dirs[i].wants_input() {
                events |= libc::POLLIN;
            }
            if dirs[1 - i].blocked {
                events |= libc::POLLOUT;
            }
            libc::pollfd { fd: if events == 0 { -1 } else { socks[i].as_raw_fd() }, events, revents: 0 }
        });
        let due = dirs.iter().filter_map(Direction::next_due).min();
        let timeout = due.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(left.subsec_nanos()),
            }
        });
        let tp = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a valid array of two pollfd for the call's
        // duration; `tp` is null or points to `timeout`, alive until return.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tp, std::ptr::null()) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for i in 0..2 {
            let hit = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
            if fds[i].revents & hit != 0 && dirs[i].wants_input() {
                dirs[i].read_from(socks[i], delay, &mut buf)?;
            }
        }
    }
}

fn fail(msg: String) -> ! {
    eprintln!("dmvx-netdelay: {msg}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        fail("usage: dmvx-netdelay LISTEN_ADDR TARGET_ADDR DELAY_MICROSECONDS".into());
    }
    let micros: u64 = args[3].parse().unwrap_or_else(|_| fail(format!("{:?} is not a delay in microseconds", args[3])));
    let delay = Duration::from_micros(micros);
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let listener = TcpListener::bind(&args[1]).unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", args[1])));
    println!("relaying {} -> {} with {delay:?} each way", args[1], args[2]);
    for conn in listener.incoming().flatten() {
        let target = args[2].clone();
        std::thread::spawn(move || {
            // Threads inherit the timer slack of their creator.
            let Ok(up) = TcpStream::connect(&target) else { return };
            let _ = up.set_nodelay(true);
            let _ = conn.set_nodelay(true);
            if let Err(e) = relay(conn, up, delay) {
                if !matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
                    eprintln!("dmvx-netdelay: connection ended: {e}");
                }
            }
        });
    }
}

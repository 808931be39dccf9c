//! The one call a fresh temporary name may add to a variant's stream.
//!
//! glibc's tempname draws a name from the clock and a stack address, and
//! rejects the draw about once in 22 (when it falls above the largest
//! multiple of 62^10), drawing again with getrandom(8). The address differs
//! by design, so one variant may make that getrandom where another goes
//! straight to the create. The create itself compares masked
//! (`dmvx_sync::tempname`); this lets a follower match streams around it:
//! - the leader, before waiting for its followers at a create of a fresh
//!   name, says so (CTRL_WAITING); a follower at a getrandom then knows the
//!   leader made none there, performs its own locally and leaves the event
//!   out of the stream;
//! - a follower at such a create first looks at the leader's entry for its
//!   event: a getrandom there was the leader's extra draw, and is skipped.
//!
//! Only under policies where getrandom is relaxed (the dmvx preset): a
//! lockstep getrandom of the leader waits for its followers instead.
//! Nothing else is tolerated: any other difference is a divergence, and the
//! random bytes only ever feed a name that is then bound to the leader's.

use std::time::Duration;

use dmvx_sync::policy::{Check, Class};
use dmvx_sync::record::{decode, has_temp_name, EntryView, Event};
use dmvx_sync::wire::Control;

use super::{Monitor, OpMode, Stop};
use crate::kernel::syscall::names;

/// Custom control from the leader: "I wait for your acknowledgement of
/// event N, the create of a fresh name" (payload: N, little-endian).
pub(super) const CTRL_WAITING: u32 = 3;
/// How long one look at the link waits before checking it is alive.
const LOOK: Duration = Duration::from_millis(50);

/// What a follower found for its event.
enum Found {
    /// The leader's entry for it (in `leader_entry`, kept as prefetched).
    Entry,
    /// The leader waits at it for a fresh-name create.
    LeaderWaiting,
}

impl Monitor {
    /// Leader, before waiting for followers at a lockstep call.
    pub(super) fn announce_wait(&mut self, seq: u64) -> Result<(), Stop> {
        if has_temp_name(self.rec.as_bytes()) {
            let c = Control::Custom { kind: CTRL_WAITING, payload: seq.to_le_bytes().to_vec() };
            self.leader().send_control(&c).map_err(Monitor::link_stop)?;
        }
        Ok(())
    }

    /// Follower: a CTRL_WAITING control.
    pub(super) fn on_waiting(&mut self, payload: &[u8]) {
        if let Ok(b) = <[u8; 8]>::try_from(payload) {
            self.leader_waiting = Some(u64::from_le_bytes(b));
        }
    }

    /// Follower, at event `self.seq` before anything else: Ok(true) if the
    /// event is left out of the stream (a local getrandom the leader did not
    /// make). A create of a fresh name may move `self.seq` past the leader's
    /// extra getrandom.
    pub(super) fn match_fresh_name(&mut self, lockstep: bool) -> Result<bool, Stop> {
        // Only where getrandom is relaxed: a lockstep getrandom of the
        // leader waits for this follower, which then must not wait for it.
        let relaxed = self.policy.rule(libc::SYS_getrandom as u64, Class::Random).check != Check::Lockstep;
        let getrandom = relaxed && !lockstep && self.nr == libc::SYS_getrandom as u64;
        let create = relaxed && lockstep && has_temp_name(self.rec.as_bytes());
        if !getrandom && !create {
            return Ok(false);
        }
        loop {
            match self.find(self.seq)? {
                Found::LeaderWaiting if getrandom => {
                    // Not in the stream: this variant's own draw.
                    self.seq -= 1;
                    self.mode = OpMode::Direct;
                    self.skip_event = true;
                    return Ok(true);
                }
                Found::Entry if create && self.leader_made_getrandom() => {
                    // The leader's extra draw (draws, if that one was
                    // rejected too): its bytes were for its own name.
                    self.prefetched = None;
                    self.seq += 1;
                }
                Found::LeaderWaiting | Found::Entry => return Ok(false),
            }
        }
    }

    fn leader_made_getrandom(&self) -> bool {
        let Ok(view) = EntryView::decode(&self.leader_entry) else { return false };
        matches!(decode(view.record, names::name), Ok(Event::Call { nr, .. }) if nr as i64 == libc::SYS_getrandom)
    }

    /// Waits for the leader's entry `seq` or its word that it waits there.
    fn find(&mut self, seq: u64) -> Result<Found, Stop> {
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            if self.prefetched == Some(seq) {
                return Ok(Found::Entry);
            }
            if self.leader_waiting == Some(seq) {
                return Ok(Found::LeaderWaiting);
            }
            if self.fetch_leader_entry_within(seq, LOOK)? {
                self.prefetched = Some(seq);
                return Ok(Found::Entry);
            }
            if self.follower().check().is_err() || std::time::Instant::now() >= deadline {
                let mine = self.rec.as_bytes().to_vec();
                return Err(self.diverge(dmvx_sync::report::Kind::Silent, seq, None, Some(&mine), 0, false));
            }
        }
    }
}

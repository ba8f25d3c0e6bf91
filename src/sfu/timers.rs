//! The shard's timer: every connection's next deadline (`rtc`'s `poll_timeout`: report,
//! NACK and TWCC-feedback intervals, DTLS retransmissions), kept on a coarse grid so that
//! the deadlines of many connections share one wake-up and one turn.
//!
//! A deadline is rounded *up* to the next instant on the grid (never early), so every
//! connection due within one tick is served by the same turn, whether that turn was
//! woken by the timer or by a datagram; a quiet connection with several of `rtc`'s
//! timers close together gets one `handle_timeout` for all of them. A deadline that is
//! already due when it is armed is not moved: it fires in the turn that armed it (the
//! state machine asked to run again now). Pure: the caller passes `now`, nothing here
//! sleeps or reads a clock.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::idmap::IdMap;

/// The shard's grid. `rtc`'s intervals are 100 ms (TWCC feedback) to 1 s (reports), our
/// NACK generator's at least 20 ms, DTLS retransmissions from 1 s: 10 ms late is within
/// what each tolerates, and 100 quiet connections then wake the shard at most 100 times
/// a second between them, not once per connection per interval.
pub const TIMER_TICK: Duration = Duration::from_millis(10);

/// How long a connected connection must have moved no RTP, either way, to be quiet (see
/// [`quiet_slot`]).
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// A quiet connection's grid: its deadlines fire at most once per this (issue 13, the idle
/// cost).
pub const QUIET_TICK: Duration = Duration::from_secs(1);

/// How often, at most, a connected connection's timer runs `rtc`'s `handle_timeout` for
/// anything but the NACK generator (see [`connected_due`]).
pub const CONNECTED_SWEEP: Duration = Duration::from_secs(1);

/// When a connected connection's timer serves `rtc`'s deadline `at` (its `poll_timeout`: the
/// earliest of all its handlers' and interceptors'), given `nack`, our NACK generator's
/// deadline (a publisher's; `None` when nothing is missing or it is a subscriber), and
/// `swept`, when the timer last ran `rtc`'s `handle_timeout`.
///
/// Once a connection is up, in our configuration, only the NACK generator needs its time:
/// `rtc`'s ICE agent asks to run every 200 ms, but with ICE-lite and its disconnected and
/// failed timeouts off (the shard judges consent) a run only marks the selected pair
/// connected again; the sender-report interceptor runs once a second; DTLS retransmits
/// only during its handshake, before the connection is up; there are no data channels, so
/// no SCTP timers. The shard's own timers (receipts, our sender reports, speakers, quality)
/// are not `rtc`'s. So `at` is served as it is when it is the NACK generator's, and
/// otherwise no sooner than [`CONNECTED_SWEEP`] after the last run (already due or not: an
/// overdue ICE run is as idle as a timely one), but never after the NACK generator's.
/// Each run is a sweep of `rtc`'s whole pipeline and the drive after it five more (issue 13):
/// a busy connection was swept about five times a second for nothing. A sender report
/// due a second after the last run is served on time.
pub fn connected_due(at: Instant, nack: Option<Instant>, swept: Option<Instant>) -> Instant {
    if nack.is_some_and(|n| n <= at) {
        return at;
    }
    let Some(swept) = swept else {
        return at;
    };
    let relaxed = at.max(swept + CONNECTED_SWEEP);
    nack.map_or(relaxed, |n| relaxed.min(n))
}

/// Whether a connection is quiet at `now`: up (`connected`: DTLS done, so no handshake
/// retransmission is pending) and no RTP read from it or written into it since
/// [`QUIET_AFTER`] (`last_media`: the last one, if any). RTCP does not count: a browser
/// keeps reporting on streams that carry nothing.
pub fn is_quiet(connected: bool, last_media: Option<Instant>, now: Instant) -> bool {
    connected && last_media.is_none_or(|at| now.saturating_duration_since(at) >= QUIET_AFTER)
}

/// A quiet connection's place on [`QUIET_TICK`]: its deadlines fire at `phase` past each
/// whole quiet tick of the grid, a multiple of [`TIMER_TICK`] spread evenly over the quiet
/// tick by the connection's id (consecutive ids a prime number of ticks apart), so that a
/// shard of quiet connections fires about as many of them in each of its ticks rather than
/// all in one turn a second (a turn that would delay the busy rooms' packets).
pub fn quiet_phase(id: u64) -> Duration {
    let ticks = (QUIET_TICK.as_nanos() / TIMER_TICK.as_nanos()) as u64;
    TIMER_TICK * (id.wrapping_mul(37) % ticks) as u32
}

/// When a quiet connection's deadline `at`, armed at `now`, fires: the first instant at or
/// after `at` that lies `phase` ([`quiet_phase`]) past a whole [`QUIET_TICK`] from `epoch`
/// (the grid's origin), so never early and at most a quiet tick late, and on the
/// [`TIMER_TICK`] grid as well. A deadline already due is not moved.
///
/// What fires on a quiet connection can wait that long: `rtc`'s ICE agent runs every 200 ms
/// once its remote description is set, which in our configuration (ICE-lite, its
/// disconnected and failed timeouts off, consent judged by the shard) only looks at the
/// selected pair; receiver and sender reports (every second) report streams that carry
/// nothing; NACK and TWCC feedback need media. DTLS retransmissions happen before the
/// connection is up, when it is not quiet. The first packet either way makes it busy
/// again, and its next re-arm (at most a tick later) takes `rtc`'s deadline as it is.
pub fn quiet_slot(at: Instant, now: Instant, epoch: Instant, phase: Duration) -> Instant {
    if at <= now {
        return at;
    }
    let origin = epoch + phase;
    let tick = QUIET_TICK.as_nanos();
    let since = at.saturating_duration_since(origin).as_nanos();
    let slots = since.div_ceil(tick);
    let offset = slots.saturating_mul(tick);
    let slot = origin + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
    // A deadline before the origin (the grid's first second): the origin is after it.
    slot.max(at)
}

/// The deadlines of a set of keys (connections), at most one per key.
#[derive(Debug)]
pub struct Deadlines<K> {
    /// The grid's origin: slots are `epoch + n * tick`.
    epoch: Instant,
    /// The grid's spacing: how late a deadline may fire to share a wake-up.
    tick: Duration,
    /// Each armed key's slot, to move or remove its queue entry without a scan.
    armed: IdMap<K, Instant>,
    /// Slots in firing order; equal slots in key order (deterministic turns).
    queue: BTreeSet<(Instant, K)>,
}

impl<K: Copy + Ord + Hash> Deadlines<K> {
    /// An empty set on a grid of `tick` from `epoch`. A zero `tick` keeps every deadline exact.
    pub fn new(epoch: Instant, tick: Duration) -> Self {
        Self {
            epoch,
            tick,
            armed: IdMap::default(),
            queue: BTreeSet::new(),
        }
    }

    /// When a deadline `at`, armed at `now`, fires: the first grid instant at or after
    /// `at`, or `at` itself when it is already due (or lies before the epoch).
    pub fn slot(&self, at: Instant, now: Instant) -> Instant {
        if at <= now || self.tick.is_zero() {
            return at;
        }
        let tick = self.tick.as_nanos();
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let extra = since.div_ceil(tick).saturating_mul(tick) - since;
        // `extra` < `tick`, which fits in a u64 of nanoseconds for any sane tick.
        at + Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
    }

    /// Arms `key` for `at` (`None` disarms it), replacing its previous deadline.
    /// Returns whether its slot changed (most re-arms after a packet land in the slot
    /// already armed and cost one map lookup).
    pub fn arm(&mut self, key: K, at: Option<Instant>, now: Instant) -> bool {
        let Some(at) = at else {
            return self.remove(key);
        };
        let slot = self.slot(at, now);
        match self.armed.insert(key, slot) {
            Some(old) if old == slot => false,
            old => {
                if let Some(old) = old {
                    self.queue.remove(&(old, key));
                }
                self.queue.insert((slot, key));
                true
            }
        }
    }

    /// Arms `key` for `at` unless it is armed for an earlier slot already (a deadline
    /// learned outside `rtc`'s own `poll_timeout`, which only ever comes sooner).
    pub fn arm_by(&mut self, key: K, at: Instant, now: Instant) -> bool {
        let slot = self.slot(at, now);
        if self.armed.get(&key).is_some_and(|&armed| armed <= slot) {
            return false;
        }
        self.arm(key, Some(at), now)
    }

    /// Forgets `key`'s deadline; returns whether it had one.
    pub fn remove(&mut self, key: K) -> bool {
        match self.armed.remove(&key) {
            Some(slot) => {
                self.queue.remove(&(slot, key));
                true
            }
            None => false,
        }
    }

    /// The grid's origin (for [`quiet_slot`]).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The slot `key` is armed for.
    #[cfg(test)]
    pub fn armed(&self, key: K) -> Option<Instant> {
        self.armed.get(&key).copied()
    }

    /// The earliest slot: when the shard must wake up next.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|&(slot, _)| slot)
    }

    /// Disarms and appends to `due` every key whose slot is at or before `now`, earliest
    /// first. A key re-armed while the caller handles these is not in this batch even
    /// if it is due again: it waits for the next call (no turn loops on one connection).
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<K>) {
        while let Some(&(slot, key)) = self.queue.first() {
            if slot > now {
                break;
            }
            self.queue.pop_first();
            self.armed.remove(&key);
            due.push(key);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }
}

/// Settling put off (issue 13). Settling a connection (`Peers::settle`) takes out what it
/// queued to send (`rtc`'s `poll_write` until it finds nothing) and re-arms its timer
/// (`poll_timeout`); each of those calls is a sweep of `rtc`'s whole pipeline and
/// interceptor chain, found or not. A connection that forwards or receives many packets a
/// second used to pay the sweep that finds nothing, and the re-arm, after every packet,
/// while what media changes in its deadlines (the first report's timer, a NACK after a gap,
/// the first TWCC feedback after a quiet spell) may fire a tick late anyway, as the grid
/// ([`Deadlines`]) already lets every deadline do. So a connection settled less than a tick
/// ago only owes the rest of its settling; everything owed is paid together one tick after
/// the first debt (on the grid), so nothing waits more than about two ticks.
#[derive(Debug)]
pub struct Deferred<K> {
    tick: Duration,
    owed: std::collections::HashSet<K, std::hash::BuildHasherDefault<super::idmap::IdHasher>>,
    /// When the debts are paid: set by the first debt, cleared when paid.
    due: Option<Instant>,
}

impl<K: Copy + Eq + Hash> Deferred<K> {
    pub fn new(tick: Duration) -> Self {
        Self {
            tick,
            owed: Default::default(),
            due: None,
        }
    }

    /// Whether a key last settled (re-armed) at `last` may put its settling off at `now`:
    /// that was less than a tick ago.
    pub fn may_defer(&self, last: Option<Instant>, now: Instant) -> bool {
        last.is_some_and(|last| now.saturating_duration_since(last) < self.tick)
    }

    /// `key` owes its settling, to be paid at `pay_at` unless debts are due earlier already.
    pub fn owe(&mut self, key: K, pay_at: Instant) {
        self.owed.insert(key);
        self.due.get_or_insert(pay_at);
    }

    /// A bench hook: how long a key may put its settling off from now on (debts stay
    /// owed). Zero never defers (every settle complete, as before issue 13's lever).
    pub fn set_tick(&mut self, tick: Duration) {
        self.tick = tick;
    }

    /// When the debts are to be paid (the shard must wake up then).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Forgets `key`'s debt (a connection gone).
    pub fn forget(&mut self, key: K) {
        self.owed.remove(&key);
    }

    /// Every key owing its settling into `out`, if the debts are due by `now`.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<K>) {
        if self.due.is_some_and(|due| due <= now) {
            out.extend(self.owed.drain());
            self.due = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn due(d: &mut Deadlines<u64>, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        d.take_due(now, &mut out);
        out
    }

    #[test]
    fn a_connection_is_quiet_once_up_and_without_rtp_for_a_while() {
        let t0 = Instant::now();
        assert!(!is_quiet(false, None, t0), "not up yet: a handshake may retransmit");
        assert!(!is_quiet(false, Some(t0), t0 + ms(5_000)));
        assert!(is_quiet(true, None, t0), "up and never moved media");
        assert!(!is_quiet(true, Some(t0), t0), "media just now");
        assert!(!is_quiet(true, Some(t0), t0 + QUIET_AFTER - ms(1)));
        assert!(is_quiet(true, Some(t0), t0 + QUIET_AFTER));
        assert!(
            !is_quiet(true, Some(t0 + ms(10)), t0),
            "a clock read out of order is not quiet"
        );
    }

    /// Every case of [`connected_due`]: the NACK generator's deadline as it is (due or not),
    /// any other at most once per sweep period after the last run (overdue ones too), never
    /// after the NACK generator's, and as it is before the first run.
    #[test]
    fn a_connected_connection_runs_rtc_once_a_sweep_period_but_nacks_on_time() {
        let t0 = Instant::now();
        let swept = Some(t0);
        // Before any run: as it is.
        assert_eq!(connected_due(t0 + ms(200), None, None), t0 + ms(200));
        assert_eq!(connected_due(t0, None, None), t0);
        // The ICE agent's 200 ms, or one overdue: a sweep period after the last run.
        assert_eq!(connected_due(t0 + ms(200), None, swept), t0 + CONNECTED_SWEEP);
        assert_eq!(connected_due(t0 - ms(5), None, swept), t0 + CONNECTED_SWEEP);
        // A sender report due a second after the run: on time; later ones as they are.
        assert_eq!(connected_due(t0 + ms(1000), None, swept), t0 + ms(1000));
        assert_eq!(connected_due(t0 + ms(1700), None, swept), t0 + ms(1700));
        // The NACK generator's deadline is `rtc`'s earliest: as it is, due or not.
        assert_eq!(connected_due(t0 + ms(20), Some(t0 + ms(20)), swept), t0 + ms(20));
        assert_eq!(connected_due(t0 - ms(3), Some(t0 - ms(3)), swept), t0 - ms(3));
        assert_eq!(connected_due(t0 + ms(20), Some(t0 + ms(20)), None), t0 + ms(20));
        // Something else earlier than the NACK generator's: put off, but not past it.
        assert_eq!(connected_due(t0 + ms(200), Some(t0 + ms(400)), swept), t0 + ms(400));
        assert_eq!(
            connected_due(t0 + ms(200), Some(t0 + ms(1400)), swept),
            t0 + CONNECTED_SWEEP
        );
        // Random cases against the rule's definition.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for _ in 0..10_000 {
            let at = t0 + ms(rng.random_range(0..3000));
            let swept = rng.random_bool(0.8).then(|| t0 + ms(rng.random_range(0..2000)));
            let nack = match rng.random_range(0..3) {
                0 => None,
                1 => Some(at),
                _ => Some(at + ms(rng.random_range(1..3000))),
            };
            let due = connected_due(at, nack, swept);
            assert!(due >= at, "never before rtc asks: {at:?} {nack:?} {swept:?}");
            if let Some(n) = nack {
                assert!(due <= n, "never after the NACK generator's");
            }
            match (nack == Some(at), swept) {
                (true, _) | (false, None) => assert_eq!(due, at),
                (false, Some(s)) => {
                    assert!(due >= s + CONNECTED_SWEEP || Some(due) == nack, "at most once a period");
                    assert!(due == at || due == s + CONNECTED_SWEEP || Some(due) == nack);
                }
            }
        }
    }

    #[test]
    fn quiet_phases_are_grid_ticks_spread_evenly_over_the_quiet_tick() {
        let slots = (QUIET_TICK.as_millis() / TICK.as_millis()) as usize;
        let mut per_slot = vec![0usize; slots];
        for id in 0..10 * slots as u64 {
            let phase = quiet_phase(id);
            assert!(phase < QUIET_TICK, "{phase:?}");
            assert_eq!(phase.as_nanos() % TICK.as_nanos(), 0, "on the grid: {phase:?}");
            per_slot[(phase.as_nanos() / TICK.as_nanos()) as usize] += 1;
        }
        assert!(
            per_slot.iter().all(|&n| n == 10),
            "consecutive ids fill every tick alike: {per_slot:?}"
        );
        assert_ne!(quiet_phase(1), quiet_phase(2), "neighbours fire in different turns");
    }

    #[test]
    fn a_quiet_deadline_fires_on_its_phase_never_early_at_most_a_quiet_tick_late() {
        let epoch = Instant::now();
        let phase = ms(370);
        let now = epoch + ms(5_000);
        // Due already: not moved.
        assert_eq!(quiet_slot(now, now, epoch, phase), now);
        assert_eq!(quiet_slot(now - ms(1), now, epoch, phase), now - ms(1));
        // rtc's 200 ms ICE tick and its 1 s report fall into the same slot.
        assert_eq!(quiet_slot(now + ms(200), now, epoch, phase), epoch + ms(5_370));
        assert_eq!(
            quiet_slot(now + ms(370), now, epoch, phase),
            epoch + ms(5_370),
            "on the slot"
        );
        assert_eq!(quiet_slot(now + ms(371), now, epoch, phase), epoch + ms(6_370));
        assert_eq!(quiet_slot(now + ms(1_000), now, epoch, phase), epoch + ms(6_370));
        for k in 1..3_000u64 {
            let at = now + Duration::from_micros(k * 997);
            let slot = quiet_slot(at, now, epoch, phase);
            assert!(slot >= at && slot - at < QUIET_TICK, "{k}: {:?} late", slot - at);
            assert_eq!(
                (slot - epoch - phase).as_nanos() % QUIET_TICK.as_nanos(),
                0,
                "{k}: on its phase"
            );
            // And on the shard's grid, so arming it there does not move it.
            let d = Deadlines::<u64>::new(epoch, TICK);
            assert_eq!(d.slot(slot, now), slot, "{k}");
        }
        // Before the grid's first quiet slot.
        assert_eq!(quiet_slot(epoch + ms(100), epoch, epoch, phase), epoch + phase);
    }

    #[test]
    fn deadlines_round_up_to_the_grid_and_never_fire_early() {
        let t0 = Instant::now();
        let d = Deadlines::<u64>::new(t0, TICK);
        assert_eq!(d.slot(t0 + ms(10), t0), t0 + ms(10), "on the grid already");
        for offset in [1, 3, 9] {
            assert_eq!(d.slot(t0 + ms(offset), t0), t0 + ms(10), "{offset} ms");
        }
        assert_eq!(d.slot(t0 + ms(10_001), t0), t0 + ms(10_010));
        for nanos in [1u64, 999_999, 10_000_001, 123_456_789, 86_400_000_000_001] {
            let at = t0 + Duration::from_nanos(nanos);
            let slot = d.slot(at, t0);
            assert!(slot >= at && slot - at < TICK, "{nanos} ns");
            assert_eq!((slot - t0).as_nanos() % TICK.as_nanos(), 0, "{nanos} ns on the grid");
        }
    }

    #[test]
    fn a_deadline_already_due_is_not_moved() {
        let t0 = Instant::now();
        let d = Deadlines::<u64>::new(t0, TICK);
        let now = t0 + ms(25);
        assert_eq!(d.slot(t0 + ms(21), now), t0 + ms(21));
        assert_eq!(d.slot(now, now), now);
        // Before the epoch (a connection older than the shard's clock): exact.
        let earlier = t0 - ms(5);
        assert_eq!(d.slot(earlier, earlier - ms(1)), earlier);
        let exact = Deadlines::<u64>::new(t0, Duration::ZERO);
        assert_eq!(
            exact.slot(t0 + ms(3), t0),
            t0 + ms(3),
            "a zero tick keeps deadlines exact"
        );
    }

    #[test]
    fn keys_fire_in_deadline_order_and_equal_slots_in_key_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, TICK);
        for (key, at) in [(5, 35), (1, 12), (9, 3), (2, 19), (7, 40)] {
            assert!(d.arm(key, Some(t0 + ms(at)), t0));
        }
        assert_eq!(d.len(), 5);
        assert_eq!(d.next(), Some(t0 + ms(10)));
        assert_eq!(due(&mut d, t0 + ms(9)), Vec::<u64>::new(), "nothing before its slot");
        assert_eq!(due(&mut d, t0 + ms(10)), vec![9]);
        // 12 and 19 share the 20 ms slot; 35 and 40 the 40 ms one.
        assert_eq!(due(&mut d, t0 + ms(20)), vec![1, 2]);
        assert_eq!(d.next(), Some(t0 + ms(40)));
        assert_eq!(due(&mut d, t0 + ms(1000)), vec![5, 7]);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }

    #[test]
    fn many_equal_deadlines_fire_in_one_batch() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, TICK);
        // 1000 connections, deadlines spread over one tick: one wake-up for all.
        for key in 0..1000u64 {
            d.arm(key, Some(t0 + ms(100) + Duration::from_micros(key * 9)), t0);
        }
        assert_eq!(d.next(), Some(t0 + ms(100)), "the first is on the grid");
        assert_eq!(due(&mut d, t0 + ms(100)), vec![0], "only the one exactly on the grid");
        let batch = due(&mut d, t0 + ms(110));
        assert_eq!(batch, (1..1000).collect::<Vec<_>>());
        assert!(d.is_empty());
    }

    #[test]
    fn rearming_moves_a_key_and_disarming_removes_it() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, TICK);
        assert!(d.arm(1u64, Some(t0 + ms(15)), t0));
        assert!(!d.arm(1, Some(t0 + ms(18)), t0), "same slot: nothing to do");
        assert_eq!(d.armed(1), Some(t0 + ms(20)));
        assert!(d.arm(1, Some(t0 + ms(55)), t0), "later slot");
        assert_eq!(due(&mut d, t0 + ms(30)), Vec::<u64>::new(), "the old slot is gone");
        assert!(d.arm(1, Some(t0 + ms(4)), t0), "earlier slot");
        assert_eq!(d.len(), 1);
        assert_eq!(due(&mut d, t0 + ms(10)), vec![1]);
        assert_eq!(d.armed(1), None, "fired keys are disarmed");
        assert!(d.arm(2, Some(t0 + ms(30)), t0));
        assert!(d.arm(2, None, t0), "None disarms");
        assert!(!d.remove(2), "already gone");
        assert!(d.arm(3, Some(t0 + ms(30)), t0));
        assert!(d.remove(3));
        assert!(d.is_empty());
        assert_eq!(due(&mut d, t0 + ms(1000)), Vec::<u64>::new());
    }

    #[test]
    fn a_key_rearmed_while_its_batch_is_handled_waits_for_the_next_call() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, TICK);
        d.arm(1u64, Some(t0 + ms(5)), t0);
        d.arm(2, Some(t0 + ms(6)), t0);
        let now = t0 + ms(10);
        let batch = due(&mut d, now);
        assert_eq!(batch, vec![1, 2]);
        // Handling 1 asks to run again at once: due now, fires on the next call.
        assert!(d.arm(1, Some(now), now));
        assert_eq!(d.next(), Some(now));
        assert_eq!(due(&mut d, now), vec![1]);
    }

    #[test]
    fn settling_is_put_off_only_within_a_tick_of_the_last_and_paid_together() {
        let t0 = Instant::now();
        let mut d = Deferred::<u64>::new(TICK);
        assert!(!d.may_defer(None, t0), "never re-armed: at once");
        assert!(d.may_defer(Some(t0), t0));
        assert!(d.may_defer(Some(t0), t0 + ms(9)));
        assert!(!d.may_defer(Some(t0), t0 + ms(10)), "a tick since: at once");
        assert!(
            d.may_defer(Some(t0 + ms(5)), t0),
            "re-armed later in the turn than its `now`"
        );
        assert_eq!(d.due(), None);
        let mut out = Vec::new();
        d.take_due(t0 + ms(1000), &mut out);
        assert!(out.is_empty(), "nothing owed");
        d.owe(1, t0 + ms(20));
        d.owe(2, t0 + ms(30));
        d.owe(1, t0 + ms(30));
        assert_eq!(d.due(), Some(t0 + ms(20)), "the first debt sets the payday");
        d.take_due(t0 + ms(19), &mut out);
        assert!(out.is_empty(), "not before it");
        d.forget(2);
        d.take_due(t0 + ms(20), &mut out);
        assert_eq!(out, vec![1], "each once, the forgotten not at all");
        assert_eq!(d.due(), None);
        out.clear();
        d.take_due(t0 + ms(1000), &mut out);
        assert!(out.is_empty(), "paid");
        d.owe(3, t0 + ms(50));
        assert_eq!(d.due(), Some(t0 + ms(50)), "a new debt, a new payday");
    }

    /// Against a brute-force model: random arms, re-arms, removals and firings.
    #[test]
    fn agrees_with_a_model_under_random_operations() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0, TICK);
        let mut model: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
        let mut now = t0;
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let key = next(50);
            match next(10) {
                0..=5 => {
                    let at = now + Duration::from_micros(next(60_000));
                    d.arm(key, Some(at), now);
                    model.insert(key, d.slot(at, now));
                }
                6 => {
                    assert_eq!(d.remove(key), model.remove(&key).is_some());
                }
                _ => {
                    now += Duration::from_micros(next(8_000));
                    let mut expected: Vec<(Instant, u64)> = model
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(k, at)| (*at, *k))
                        .collect();
                    expected.sort();
                    for (_, k) in &expected {
                        model.remove(k);
                    }
                    let fired = due(&mut d, now);
                    assert_eq!(fired, expected.into_iter().map(|(_, k)| k).collect::<Vec<_>>());
                }
            }
            assert_eq!(d.len(), model.len());
            assert_eq!(d.next(), model.values().min().copied());
            for (k, at) in &model {
                assert!(at >= &t0);
                assert_eq!(d.armed(*k), Some(*at));
            }
        }
    }
}

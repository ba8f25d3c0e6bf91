//! Receive coalescing: under load, a shard lets a turn's datagrams gather before it reads
//! them, so one wake-up serves several packets (issue 13, "the cost of a wake-up must be
//! shared by many packets").
//!
//! Browsers send independently, so a busy shard woken by every arrival reads one or two
//! datagrams per wake-up and pays a sleep, a context switch and three system calls
//! (`epoll_wait`, `recvmmsg`, `sendmmsg`) for them. A network card solves the same problem
//! with interrupt moderation, and Linux's NAPI with `gro_flush_timeout`: wait a little
//! after a burst so the next one is taken whole. This is that policy for a shard, as a pure
//! state machine; the shard's loop pauses for what [`Coalescer::turn`] says after a turn.
//!
//! - **Only under load.** The arrival rate is measured over periods of [`PERIOD`]; a pause
//!   is considered only while the last period's rate would gather at least [`MIN_GATHER`]
//!   datagrams in a window. A quiet shard answers every datagram at once, as before.
//! - **Only where it pays**, judged by what it is for: the shard thread's sleeps (its
//!   voluntary context switches, in `epoll_wait` or in a pause) per datagram. Periods take
//!   turns: one in [`SAMPLE_EVERY`] does the other thing (waits while pausing pays, pauses
//!   while it does not; the first busy periods try each once), and the sleeps per datagram
//!   of pausing and of waiting periods are averaged apart; the shard pauses where pausing
//!   periods sleep at least [`MIN_SAVING_PERCENT`] less. Independent senders (browsers)
//!   gain so; clients that send a batch per tick do not (the shard takes their batch in
//!   turns that do not sleep, and a pause between two batches is one more sleep).
//!   Counting datagrams per turn does not tell these apart; counting sleeps does. (The
//!   thread's CPU time tells them apart too, but a period's CPU per datagram varies with
//!   the timers that fell into it far more than its sleeps do.)
//! - **Bounded.** A pause is at most the window, and never runs past the shard's next
//!   timer deadline. So a packet waits at most the window (half of it on average).
//! - **Not after a full batch.** A turn that filled its receive batches leaves datagrams in
//!   the socket; the next turn reads them at once.
//! - **Once per wake.** The turn after a pause (which reads what the pause gathered) does
//!   not pause again: the shard waits for the next datagram instead. Arrivals come in
//!   clumps, and a second blind pause after a clump's tail ended with nothing in it a third
//!   of the time, then waited for the next datagram all the same; pausing once per wake
//!   cost 4 % less CPU per forwarded packet at 30 and 60 calls (BENCHMARKS §3, "Receive
//!   coalescing").

use std::time::{Duration, Instant};

/// The period the arrival rate and the sleeps per datagram are measured over.
pub const PERIOD: Duration = Duration::from_millis(50);

/// Datagrams a window must be expected to gather for pausing to be tried at all.
pub const MIN_GATHER: u64 = 2;

/// One period in this many does the other thing, so both keep being measured. The other
/// thing is the dearer one, so this is what the measuring costs: with independent senders
/// a waiting period sleeps about once per datagram, a pausing one once per five to eight,
/// and one period in eight spent waiting was a quarter of a busy shard's sleeps (1 650 a
/// second at 30 calls; one in 32: 1 280, BENCHMARKS §3 "Receive coalescing").
pub const SAMPLE_EVERY: u32 = 32;

/// Pausing must save this share of the sleeps per datagram to be worth its latency.
pub const MIN_SAVING_PERCENT: u64 = 20;

/// Datagrams a period needs for its sleeps to be counted.
pub const MIN_DATAGRAMS: u64 = 100;

/// Pauses shorter than this are not taken (a sleep costs its wake-up whatever its length).
pub const MIN_PAUSE: Duration = Duration::from_micros(50);

/// The default window (`--media-coalesce-us`).
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(500);

/// The calling thread's sleeps so far: its voluntary context switches
/// (`getrusage(RUSAGE_THREAD)`), what [`Coalescer::turn`] reads once a period. Zero where
/// they cannot be read (then neither kind of period looks cheaper: no pauses).
pub fn thread_sleeps() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an all-zero `rusage` is a valid value for the call to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable `rusage`.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0 {
            return usage.ru_nvcsw as u64;
        }
    }
    0
}

/// A moving average of the sleeps per thousand datagrams of one kind of period.
#[derive(Debug, Clone, Copy, Default)]
struct Cost(Option<u64>);

impl Cost {
    fn add(&mut self, per_thousand: u64) {
        // A quarter of each new period: the last few periods of the kind weigh most.
        self.0 = Some(self.0.map_or(per_thousand, |avg| (3 * avg + per_thousand) / 4));
    }
}

#[derive(Debug, Clone)]
pub struct Coalescer {
    window: Duration,
    /// When the current period began, the thread's sleeps then, and the datagrams
    /// received in it so far.
    period_start: Option<Instant>,
    sleeps_start: u64,
    count: u64,
    /// Datagrams per second in the last whole period.
    rate: u64,
    /// Whether this period's eligible turns pause, and whether its cost counts (it began busy).
    pausing: bool,
    measured: bool,
    /// Sleeps per thousand datagrams of pausing and of waiting periods.
    cost_pausing: Cost,
    cost_waiting: Cost,
    /// Periods since the last one that did the other thing.
    cycle: u32,
    /// The last turn paused: this one reads what the pause gathered, and does not pause.
    paused_last: bool,
}

impl Coalescer {
    /// A window of zero never pauses.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            period_start: None,
            sleeps_start: 0,
            count: 0,
            rate: 0,
            pausing: false,
            measured: false,
            cost_pausing: Cost::default(),
            cost_waiting: Cost::default(),
            cycle: 0,
            paused_last: false,
        }
    }

    /// Datagrams per second over the last whole period.
    #[cfg(test)]
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether this period's eligible turns pause.
    #[cfg(test)]
    pub fn pausing(&self) -> bool {
        self.pausing
    }

    /// Sleeps per thousand datagrams of pausing and of waiting periods, once measured.
    #[cfg(test)]
    pub fn costs(&self) -> (Option<u64>, Option<u64>) {
        (self.cost_pausing.0, self.cost_waiting.0)
    }

    /// Whether pausing periods sleep enough less than waiting ones.
    fn pausing_pays(&self) -> bool {
        match (self.cost_pausing.0, self.cost_waiting.0) {
            (Some(pausing), Some(waiting)) => 100 * pausing <= (100 - MIN_SAVING_PERCENT) * waiting,
            _ => false,
        }
    }

    /// Closes the period if it ended by `now` (`sleeps`: the thread's sleeps so far, read
    /// then). A period with no turn in it counts as quiet.
    fn roll(&mut self, now: Instant, sleeps: impl FnOnce() -> u64) {
        let Some(start) = self.period_start else {
            self.period_start = Some(now);
            self.sleeps_start = sleeps();
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < PERIOD {
            return;
        }
        let sleeps_now = sleeps();
        if elapsed < 2 * PERIOD {
            // count / elapsed, in datagrams per second.
            self.rate = (self.count as u128 * 1_000_000 / elapsed.as_micros().max(1)) as u64;
            if self.measured && self.count >= MIN_DATAGRAMS {
                let per_thousand = sleeps_now.saturating_sub(self.sleeps_start) * 1000 / self.count;
                if self.pausing {
                    self.cost_pausing.add(per_thousand);
                } else {
                    self.cost_waiting.add(per_thousand);
                }
            }
        } else {
            // A whole period or more went by without a turn: quiet.
            self.rate = 0;
        }
        // rate * window >= MIN_GATHER, in integers (rate per second, window in microseconds).
        let busy =
            !self.window.is_zero() && (self.rate as u128) * self.window.as_micros() >= MIN_GATHER as u128 * 1_000_000;
        self.cycle = (self.cycle + 1) % SAMPLE_EVERY;
        self.measured = busy;
        // The first busy periods measure each kind once (waiting first), then the cheaper
        // kind wins but for one period in SAMPLE_EVERY.
        let untried = self.cost_waiting.0.is_some() && self.cost_pausing.0.is_none();
        self.pausing = busy && (untried || self.pausing_pays() != (self.cycle == 0));
        self.count = 0;
        self.period_start = Some(now);
        self.sleeps_start = sleeps_now;
    }

    /// A turn ended at `now` having read `read` datagrams (`full`: its last batch was full,
    /// so more are waiting): how long to pause before the next turn, if at all. `deadline`
    /// tells when the shard's next timer is due, asked only when a pause is wanted; `sleeps`
    /// reads the thread's sleeps so far ([`thread_sleeps`]), called when a period ends. So a
    /// turn that does not pause costs a comparison or two.
    pub fn turn(
        &mut self,
        now: Instant,
        read: usize,
        full: bool,
        deadline: impl FnOnce() -> Option<Instant>,
        sleeps: impl FnOnce() -> u64,
    ) -> Option<Duration> {
        self.roll(now, sleeps);
        self.count += read as u64;
        let after_pause = std::mem::take(&mut self.paused_last);
        if !self.pausing || read == 0 || full || after_pause {
            return None;
        }
        let until_deadline = deadline().map_or(self.window, |at| at.saturating_duration_since(now));
        let pause = self.window.min(until_deadline);
        self.paused_last = pause >= MIN_PAUSE;
        self.paused_last.then_some(pause)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const W: Duration = Duration::from_micros(500);
    const STEP: Duration = Duration::from_micros(50);
    /// Turns in a period at one per [`STEP`].
    const TURNS: u32 = 1_000;

    /// A shard under test: its coalescer, its clock, its thread's sleeps so far, and the
    /// sleeps per hundred datagrams while pausing and while waiting.
    struct Sim {
        c: Coalescer,
        now: Instant,
        sleeps: Cell<u64>,
        cost: (u64, u64),
    }

    impl Sim {
        fn new(window: Duration, cost: (u64, u64)) -> Self {
            Self {
                c: Coalescer::new(window),
                now: Instant::now(),
                sleeps: Cell::new(0),
                cost,
            }
        }

        /// One turn reading `read` datagrams, `STEP` after the last; the pause asked for.
        fn turn(&mut self, read: usize) -> Option<Duration> {
            let per = if self.c.pausing() { self.cost.0 } else { self.cost.1 };
            self.sleeps.set(self.sleeps.get() + per * read as u64);
            self.now += STEP;
            let sleeps = &self.sleeps;
            self.c.turn(self.now, read, false, || None, || sleeps.get() / 100)
        }

        /// A period of turns reading `read` datagrams each: the pauses asked for.
        fn period(&mut self, read: usize) -> u32 {
            (0..TURNS).map(|_| u32::from(self.turn(read).is_some())).sum()
        }

        /// Which of `n` periods paused (each reading one datagram a turn: 20 000 a second).
        fn periods(&mut self, n: usize) -> Vec<bool> {
            (0..n).map(|_| self.period(1) > 0).collect()
        }
    }

    fn count(periods: &[bool]) -> usize {
        periods.iter().filter(|p| **p).count()
    }

    /// A shard where pausing pays, settled, just after a turn that paused (so in a pausing
    /// period, whose end is still far).
    fn pausing() -> Sim {
        let mut sim = Sim::new(W, (10, 15));
        sim.periods(2 * SAMPLE_EVERY as usize);
        while sim.turn(1).is_none() {}
        // The turn after a pause does not pause again; the next one that reads would.
        assert_eq!(sim.turn(1), None);
        sim
    }

    #[test]
    fn a_quiet_shard_never_pauses() {
        // 500 us gathers 2 datagrams from 4 000 a second: 3 000 a second (a datagram every
        // 6th turn here, 20 a period) is below that, however much pausing would save.
        let mut sim = Sim::new(W, (1, 100));
        let mut pauses = 0;
        for i in 0..20 * TURNS {
            pauses += u32::from(sim.turn(usize::from(i % 6 == 0)).is_some());
        }
        assert_eq!(pauses, 0);
        assert!((3_000..=3_500).contains(&sim.c.rate()), "{}", sim.c.rate());
        assert_eq!(sim.c.costs(), (None, None), "quiet periods are not measured");
    }

    #[test]
    fn a_busy_shard_pauses_where_pausing_costs_less() {
        let mut sim = Sim::new(W, (10, 15));
        let warm = sim.periods(2 * SAMPLE_EVERY as usize);
        assert!(count(&warm) >= 2, "pausing is tried: {warm:?}");
        // Then every period pauses but one in SAMPLE_EVERY, which measures waiting.
        let settled = sim.periods(4 * SAMPLE_EVERY as usize);
        assert_eq!(count(&settled), 4 * (SAMPLE_EVERY as usize - 1), "{settled:?}");
        assert_eq!(sim.c.costs(), (Some(100), Some(150)), "sleeps per thousand datagrams");
        // A pausing period pauses after every other turn that read something (once per
        // wake: not after the turn that read what a pause gathered), for the window.
        let pauses: Vec<u32> = (0..SAMPLE_EVERY).map(|_| sim.period(1)).collect();
        assert_eq!(
            pauses.iter().filter(|p| **p == TURNS / 2).count(),
            SAMPLE_EVERY as usize - 1,
            "{pauses:?}"
        );
        assert_eq!(pauses.iter().filter(|p| **p == 0).count(), 1, "{pauses:?}");
        let mut sim = pausing();
        let now = sim.now;
        assert_eq!(sim.c.turn(now, 1, false, || None, || 0), Some(W));
    }

    #[test]
    fn a_busy_shard_tries_each_kind_once_in_its_first_periods() {
        // The first period has no rate yet; the second, busy, measures waiting; the third
        // tries pausing; from the fourth the cheaper kind wins, not SAMPLE_EVERY periods on.
        let mut sim = Sim::new(W, (10, 15));
        assert_eq!(sim.periods(4), vec![false, false, true, true]);
        assert_eq!(sim.c.costs(), (Some(100), Some(150)));
        let mut sim = Sim::new(W, (15, 14));
        assert_eq!(sim.periods(4), vec![false, false, true, false]);
    }

    #[test]
    fn a_busy_shard_waits_where_pausing_costs_more_or_saves_too_little() {
        // Costs more (batches per tick), or saves only 10 %.
        for cost in [(15, 14), (90, 100)] {
            let mut sim = Sim::new(W, cost);
            sim.periods(2 * SAMPLE_EVERY as usize);
            let settled = sim.periods(4 * SAMPLE_EVERY as usize);
            assert_eq!(
                count(&settled),
                4,
                "one period in SAMPLE_EVERY samples pausing: {cost:?} {settled:?}"
            );
        }
    }

    #[test]
    fn the_choice_follows_the_costs() {
        let mut sim = pausing();
        // The clients change: now pausing costs more.
        sim.cost = (20, 15);
        sim.periods(4 * SAMPLE_EVERY as usize);
        // (`pausing` left the turns mid-period: count pauses, not periods.)
        let pauses: u32 = (0..2 * SAMPLE_EVERY).map(|_| sim.period(1)).sum();
        assert_eq!(pauses, TURNS, "two sampled periods' worth, a pause every other turn");
    }

    #[test]
    fn a_pause_is_followed_by_a_wait_not_by_another_pause() {
        let mut sim = pausing();
        let (now, sleeps) = (sim.now, 0);
        assert_eq!(sim.c.turn(now, 3, false, || None, || sleeps), Some(W));
        // This turn read what the pause gathered: the shard waits for the next datagram.
        assert_eq!(sim.c.turn(now, 8, false, || None, || sleeps), None);
        // Woken by it, the next turn pauses again.
        assert_eq!(sim.c.turn(now, 1, false, || None, || sleeps), Some(W));
        // A pause too short to take does not count as one.
        let soon = now + Duration::from_micros(20);
        assert_eq!(sim.c.turn(now, 1, false, || None, || sleeps), None);
        assert_eq!(sim.c.turn(now, 1, false, || Some(soon), || sleeps), None);
        assert_eq!(sim.c.turn(now, 1, false, || None, || sleeps), Some(W));
    }

    #[test]
    fn no_pause_after_a_full_batch_or_a_turn_without_datagrams() {
        let mut sim = pausing();
        let (now, sleeps) = (sim.now, 0);
        assert_eq!(sim.c.turn(now, 64, true, || None, || sleeps), None);
        assert_eq!(sim.c.turn(now, 0, false, || None, || sleeps), None);
        assert_eq!(sim.c.turn(now, 2, false, || None, || sleeps), Some(W));
    }

    #[test]
    fn a_pause_ends_at_the_next_deadline() {
        let mut sim = pausing();
        let (now, sleeps) = (sim.now, 0);
        let soon = now + Duration::from_micros(200);
        assert_eq!(
            sim.c.turn(now, 1, false, || Some(soon), || sleeps),
            Some(Duration::from_micros(200))
        );
        // Too short to be worth a sleep of its own, or already due.
        let too_soon = now + Duration::from_micros(20);
        assert_eq!(sim.c.turn(now, 1, false, || Some(too_soon), || sleeps), None);
        assert_eq!(sim.c.turn(now, 1, false, || Some(now), || sleeps), None);
        // A deadline past the window does not lengthen it.
        let later = now + Duration::from_secs(1);
        assert_eq!(sim.c.turn(now, 1, false, || Some(later), || sleeps), Some(W));
    }

    #[test]
    fn the_deadline_is_asked_for_only_when_a_pause_is_wanted() {
        let asked = Cell::new(0);
        let deadline = || {
            asked.set(asked.get() + 1);
            None
        };
        // Quiet: never.
        let mut c = Coalescer::new(W);
        let t0 = Instant::now();
        for i in 0..10 * TURNS {
            c.turn(t0 + STEP * i * 10, 1, false, deadline, || 0);
        }
        assert_eq!(asked.get(), 0);
        // Pausing: once per pause.
        let mut sim = pausing();
        let now = sim.now;
        assert_eq!(sim.c.turn(now, 1, false, deadline, || 0), Some(W));
        assert_eq!(sim.c.turn(now, 0, false, deadline, || 0), None);
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn a_zero_window_never_pauses() {
        let mut sim = Sim::new(Duration::ZERO, (1, 100));
        assert_eq!(count(&sim.periods(3 * SAMPLE_EVERY as usize)), 0);
        assert!(sim.c.rate() > 0);
    }

    #[test]
    fn a_long_silence_counts_as_quiet() {
        let mut sim = pausing();
        // The next datagram comes a second later: the periods between were quiet, whatever
        // the count of the unfinished one.
        sim.now += Duration::from_secs(1);
        assert_eq!(sim.turn(1), None);
        assert_eq!(sim.c.rate(), 0);
        assert!(!sim.c.pausing());
    }

    #[test]
    fn the_sleeps_are_read_once_a_period() {
        let mut c = Coalescer::new(W);
        let reads = Cell::new(0);
        let t0 = Instant::now();
        for i in 0..10 * TURNS {
            c.turn(
                t0 + STEP * i,
                1,
                false,
                || None,
                || {
                    reads.set(reads.get() + 1);
                    0
                },
            );
        }
        // The first turn, then once for each of the 9 periods that ended.
        assert_eq!(reads.get(), 10);
        // This thread slept.
        let before = thread_sleeps();
        std::thread::sleep(Duration::from_millis(1));
        assert!(thread_sleeps() > before);
    }
}

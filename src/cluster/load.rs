//! A node's load over the last beat, from running totals: the media packets forwarded
//! so far and the CPU time used so far become rates per second. Pure: the caller reads
//! the totals and the clock.

use super::placement::Load;

/// Turns running totals into the rates of the last interval.
#[derive(Debug, Clone)]
pub struct LoadSampler {
    /// The machine's cores: CPU time is reported as a share of all of them.
    cores: u32,
    /// The previous sample: when (ms), packets forwarded so far, CPU seconds so far.
    last: Option<(u64, u64, Option<f64>)>,
}

impl LoadSampler {
    pub fn new(cores: u32) -> Self {
        LoadSampler {
            cores: cores.max(1),
            last: None,
        }
    }

    /// The load since the previous sample (rates 0 on the first, or when no time passed).
    /// A total that went backwards (a counter reset) counts as no work rather than a wrap.
    pub fn sample(&mut self, now_ms: u64, participants: u64, forwarded_total: u64, cpu_seconds: Option<f64>) -> Load {
        let mut load = Load {
            participants,
            ..Load::default()
        };
        if let Some((at, forwarded, cpu)) = self.last
            && now_ms > at
        {
            let secs = (now_ms - at) as f64 / 1000.0;
            load.packets_per_sec = (forwarded_total.saturating_sub(forwarded) as f64 / secs).round() as u64;
            if let (Some(before), Some(now)) = (cpu, cpu_seconds) {
                let share = (now - before).max(0.0) / secs / self.cores as f64;
                load.cpu_permille = (share * 1000.0).round().min(u32::MAX as f64) as u32;
            }
        }
        self.last = Some((now_ms, forwarded_total, cpu_seconds));
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_has_no_rates() {
        let mut s = LoadSampler::new(2);
        let l = s.sample(1000, 4, 10_000, Some(3.0));
        assert_eq!((l.participants, l.packets_per_sec, l.cpu_permille), (4, 0, 0));
    }

    #[test]
    fn rates_over_the_interval_and_cpu_as_a_share_of_the_cores() {
        let mut s = LoadSampler::new(2);
        s.sample(1000, 0, 1000, Some(10.0));
        // 2 s later: 3000 packets, 1 CPU second over 2 cores: 25 %.
        let l = s.sample(3000, 6, 4000, Some(11.0));
        assert_eq!((l.participants, l.packets_per_sec, l.cpu_permille), (6, 1500, 250));
        // The next interval is measured from this sample, not the first.
        let l = s.sample(3500, 6, 4100, Some(11.5));
        assert_eq!((l.packets_per_sec, l.cpu_permille), (200, 500));
    }

    #[test]
    fn no_time_passed_a_reset_counter_or_no_cpu_figure_are_zero_not_garbage() {
        let mut s = LoadSampler::new(0);
        s.sample(1000, 0, 1000, Some(5.0));
        let l = s.sample(1000, 0, 9000, Some(9.0));
        assert_eq!((l.packets_per_sec, l.cpu_permille), (0, 0), "same instant");
        let l = s.sample(2000, 0, 10, Some(1.0));
        assert_eq!((l.packets_per_sec, l.cpu_permille), (0, 0), "totals went backwards");
        let l = s.sample(3000, 0, 110, None);
        assert_eq!(
            (l.packets_per_sec, l.cpu_permille),
            (100, 0),
            "no CPU figure on this platform"
        );
        // Zero cores is taken as one: a whole CPU second in a second is 100 %.
        let mut s = LoadSampler::new(0);
        s.sample(0, 0, 0, Some(0.0));
        assert_eq!(s.sample(1000, 0, 0, Some(1.0)).cpu_permille, 1000);
    }
}

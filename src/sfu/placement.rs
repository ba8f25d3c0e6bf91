//! Which shard a participant entering a meeting's call goes to (pure).
//!
//! A meeting stays on one shard while it is small, so its fan-out never crosses threads.
//! Once the shards holding it have [`split_at`](Loads::split_at) of its participants each,
//! the next one goes to the least busy shard, and the meeting spreads over the cores: its
//! publishers' tracks are relayed once to each other shard holding it (`relay`,
//! `media_room::mirror`), where that shard's subscribers get their legs.

/// What the choice looks at: per shard, how many participants of this meeting it holds,
/// how many participants it holds in all, and whether it runs.
#[derive(Debug, Clone, Copy)]
pub struct Loads<'a> {
    pub meeting: &'a [usize],
    pub total: &'a [usize],
    pub alive: &'a [bool],
    /// A shard takes at most this many of one meeting's participants before the meeting
    /// spreads to another (at least 1).
    pub split_at: usize,
}

/// The shard for a new participant of the meeting, `None` when no shard runs.
///
/// 1. A running shard holding the meeting with room (fewer than `split_at` of it): the one
///    holding most of it (the meeting stays as compact as it can), the lowest index on a tie.
/// 2. Otherwise (a new meeting, or every shard holding it is full): the running shard with the
///    fewest participants in all among those not full of the meeting (among all when every
///    one is), the lowest index on a tie.
pub fn choose(loads: Loads<'_>) -> Option<usize> {
    let split_at = loads.split_at.max(1);
    let alive = |i: &usize| loads.alive.get(*i).copied().unwrap_or(false);
    let count = |v: &[usize], i: usize| v.get(i).copied().unwrap_or(0);
    let shards = 0..loads.alive.len();
    let with_room = shards
        .clone()
        .filter(alive)
        .filter(|&i| (1..split_at).contains(&count(loads.meeting, i)))
        .max_by_key(|&i| (count(loads.meeting, i), std::cmp::Reverse(i)));
    let full = |i: usize| count(loads.meeting, i) >= split_at;
    with_room.or_else(|| {
        shards
            .filter(alive)
            .min_by_key(|&i| (full(i), count(loads.total, i), i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose_with(meeting: &[usize], total: &[usize], alive: &[bool], split_at: usize) -> Option<usize> {
        choose(Loads {
            meeting,
            total,
            alive,
            split_at,
        })
    }

    #[test]
    fn a_new_meeting_goes_to_the_least_busy_running_shard() {
        assert_eq!(choose_with(&[0, 0, 0], &[5, 2, 2], &[true; 3], 100), Some(1));
        assert_eq!(choose_with(&[0, 0, 0], &[5, 2, 1], &[true, true, false], 100), Some(1));
        assert_eq!(choose_with(&[0, 0], &[0, 0], &[false, false], 100), None);
    }

    #[test]
    fn a_meeting_stays_on_its_shard_until_it_holds_split_at() {
        assert_eq!(choose_with(&[0, 99], &[0, 500], &[true; 2], 100), Some(1));
        assert_eq!(choose_with(&[0, 100], &[0, 500], &[true; 2], 100), Some(0));
    }

    #[test]
    fn a_full_meeting_spreads_by_total_load_then_fills_the_new_shard() {
        // Shard 0 full of the meeting: the next goes to the least busy shard overall.
        assert_eq!(choose_with(&[3, 0, 0], &[3, 7, 4], &[true; 3], 3), Some(2));
        // Then shard 2 holds some with room: it is filled before another shard is opened.
        assert_eq!(choose_with(&[3, 0, 1], &[3, 7, 5], &[true; 3], 3), Some(2));
        // Shard 1 is not full of it: it comes before the holders, however busy.
        assert_eq!(choose_with(&[3, 0, 3], &[3, 30, 7], &[true; 3], 3), Some(1));
        // Every shard full of it: by total load (lowest index on a tie).
        assert_eq!(choose_with(&[3, 3, 3], &[3, 3, 7], &[true; 3], 3), Some(0));
    }

    #[test]
    fn split_at_one_puts_every_participant_on_the_least_busy_shard() {
        assert_eq!(choose_with(&[1, 0], &[1, 0], &[true; 2], 1), Some(1));
        assert_eq!(choose_with(&[1, 1], &[1, 1], &[true; 2], 1), Some(0));
        assert_eq!(choose_with(&[1, 0], &[1, 0], &[true; 2], 0), Some(1), "0 counts as 1");
    }

    #[test]
    fn a_dead_shard_is_never_chosen_even_if_it_holds_the_meeting() {
        assert_eq!(choose_with(&[5, 0], &[5, 9], &[false, true], 100), Some(1));
    }

    #[test]
    fn the_holder_with_most_of_the_meeting_wins_among_those_with_room() {
        assert_eq!(choose_with(&[2, 4, 0], &[2, 4, 0], &[true; 3], 10), Some(1));
        assert_eq!(choose_with(&[4, 4, 0], &[9, 4, 0], &[true; 3], 10), Some(0));
    }
}

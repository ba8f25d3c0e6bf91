//! Maps keyed by ids the shard hands out itself (connection ids): hashed with one
//! multiplication instead of the standard library's SipHash.
//!
//! A forwarded packet looks up its connections several times on its way through the shard
//! (routing, admission, the `rtc` calls under `Peers::guard`, the timer grid); with SipHash
//! those lookups were about 7 % of the shard's whole path per packet (issue 13, profile in
//! docs/BENCHMARKS.md). SipHash's keyed randomness guards against keys an attacker chooses;
//! these keys are counters of ours, so a multiplicative (Fibonacci) hash is enough. Keys that
//! come from the network keep a seeded hasher: ufrags the standard one, source addresses
//! (looked up for every datagram, `demux::Router`) `foldhash`'s per-process seeded one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by one of our own integer ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of integer keys: the key times 2^64 / phi, so that consecutive ids
/// spread over the whole word (hashbrown reads the top bits for its control bytes and the
/// low bits for the bucket).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const PHI: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; correct (if slower) for anything else.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(PHI);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Consecutive ids land far apart in both the top 7 bits (hashbrown's tag) and the low
    /// bits (its bucket index), and a map keyed by them behaves as a map.
    #[test]
    fn consecutive_ids_spread_and_the_map_works() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1u64..=64).map(|id| build.hash_one(id)).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 63).collect();
        assert!(tags.len() > 32, "top bits: {} distinct of 64", tags.len());
        assert!(buckets.len() > 32, "low bits: {} distinct of 64", buckets.len());

        let mut map: IdMap<u64, u64> = IdMap::default();
        for id in 1..=10_000u64 {
            map.insert(id, id * 2);
        }
        map.remove(&5000);
        assert_eq!(map.len(), 9_999);
        assert_eq!(map.get(&4999), Some(&9998));
        assert_eq!(map.get(&5000), None);
        assert_eq!(map.get(&10_001), None);
    }
}

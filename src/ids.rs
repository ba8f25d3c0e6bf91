//! Random identifiers and the wall clock, the two impure inputs of the control plane.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random base62 characters from the OS-seeded CSPRNG.
pub fn random_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A prefixed id such as `m_3fZ...` (96 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_code(16))
}

/// An unguessable link code (about 131 bits).
pub fn link_code() -> String {
    random_code(22)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! Property-test inputs for the decoders' fuzz tests (`proptest`): arbitrary
//! bytes and text, and valid encodings mutated the way a damaged stream or
//! file damages them (bits flipped, bytes inserted, removed or overwritten,
//! the tail cut off), plus the case count every decoder runs in CI.
//!
//! This module only generates inputs; it must never decide what a decoder
//! should answer (each test asserts that itself: no panic, a clear error).

use proptest::prelude::*;

/// Cases per decoder property: the acceptance bar of issue 14.
pub const CASES: u32 = 10_000;

/// A `ProptestConfig` running [`CASES`] cases, without writing failure
/// persistence files into the source tree (a failing input is printed and
/// goes into the module's regression tests instead).
pub fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// One change to a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR the byte at (index modulo length) with a non-zero mask.
    Flip(usize, u8),
    /// Insert a byte at (index modulo length + 1).
    Insert(usize, u8),
    /// Remove the byte at (index modulo length).
    Remove(usize),
    /// Overwrite the byte at (index modulo length) with an extreme value
    /// (0x00, 0x7f, 0x80 or 0xff: the ends of length and count fields).
    Extreme(usize, u8),
    /// Keep only the first (index modulo length) bytes.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        2 => (any::<usize>(), prop::sample::select(vec![0x00u8, 0x7f, 0x80, 0xff])).prop_map(|(i, b)| Mutation::Extreme(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Applies `mutations` to `bytes` in order.
pub fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, mask) if len > 0 => bytes[i % len] ^= mask,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Mutation::Extreme(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Truncate(i) if len > 0 => bytes.truncate(i % len),
            _ => {}
        }
    }
    bytes
}

/// One of `seeds` (valid encodings) with one to four mutations applied.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..=4)).prop_map(|(s, m)| apply(s, &m))
}

/// Arbitrary bytes up to `max` long.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// One of `seeds` (valid texts) mutated as bytes and read back lossily as
/// UTF-8, so that the result is text close to a valid one.
pub fn mutated_text(seeds: Vec<String>) -> impl Strategy<Value = String> {
    mutated(seeds.into_iter().map(String::into_bytes).collect()).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

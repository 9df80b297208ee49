//! Shared set-up for the criterion benches. The data set and the signed views come
//! from `keygate::testkit` (feature `test-util`, which the bench targets require);
//! here: the allocator the service uses and a picker spreading callers over the data.
//! Every request is signed fresh, with a unique nonce and the timestamp the decision
//! runs at, so no measured decision is a replay.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub use keygate::testkit::*;

/// The allocator the `keygate` binary uses, so the benches measure what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A cheap deterministic sequence (SplitMix64) to pick apps all over the key space,
/// so lookups in a large index are not served from a hot cache line.
pub struct Picker(u64);

impl Picker {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

//! The replay cache: remembers each nonce for as long as its request could still be
//! accepted, and refuses it a second time.
//!
//! Owns: bounded memory (a fixed number of entries, split over independently locked
//! shards so concurrent checks rarely contend) and the rule that a nonce still inside
//! its window is never forgotten: when a shard is full of live nonces, new ones are
//! refused (`Full`) rather than evicting one that could then be replayed. Expired
//! entries are swept on insert, oldest first, so the cost per insert stays bounded.
//!
//! Entries are 128-bit digests of (scope, nonce): exact in practice, and the memory per
//! entry does not depend on what a client sends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

const SHARDS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The nonce was already used inside its window.
    Replayed,
    /// Every slot holds a live nonce; accepting more would mean forgetting one.
    Full,
}

type Digest16 = [u8; 16];

#[derive(Default)]
struct Shard {
    /// digest -> expiry (ms)
    live: HashMap<Digest16, i64>,
    /// expiry order, for sweeping
    by_expiry: BinaryHeap<Reverse<(i64, Digest16)>>,
}

impl Shard {
    fn sweep(&mut self, now_ms: i64) {
        while let Some(Reverse((exp, d))) = self.by_expiry.peek().copied() {
            if exp > now_ms {
                break;
            }
            self.by_expiry.pop();
            if self.live.get(&d) == Some(&exp) {
                self.live.remove(&d);
            }
        }
    }
}

pub struct ReplayGuard {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl ReplayGuard {
    /// A cache holding at most `capacity` nonces (rounded up to a multiple of the
    /// shard count).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn digest(scope: &str, nonce: &str) -> Digest16 {
        let mut h = Sha256::new();
        h.update((scope.len() as u64).to_be_bytes());
        h.update(scope.as_bytes());
        h.update(nonce.as_bytes());
        let full = h.finalize();
        let mut d = [0u8; 16];
        d.copy_from_slice(&full[..16]);
        d
    }

    /// Records `nonce` for `scope` (scheme + AppKey) until `now_ms + ttl_ms`, unless it is
    /// already live (`Replayed`) or there is no room (`Full`).
    pub fn check_and_insert(
        &self,
        scope: &str,
        nonce: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), ReplayError> {
        let d = Self::digest(scope, nonce);
        let shard = &self.shards[usize::from(d[0]) % SHARDS];
        let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
        s.sweep(now_ms);
        if s.live.get(&d).is_some_and(|&exp| exp > now_ms) {
            return Err(ReplayError::Replayed);
        }
        if s.live.len() >= self.per_shard {
            return Err(ReplayError::Full);
        }
        let exp = now_ms.saturating_add(ttl_ms.max(1));
        s.live.insert(d, exp);
        s.by_expiry.push(Reverse((exp, d)));
        Ok(())
    }

    /// Live entries (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).live.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_is_refused_inside_the_window_only() {
        let g = ReplayGuard::new(100);
        assert_eq!(g.check_and_insert("aliyun/k", "n1", 1_000, 900_000), Ok(()));
        assert_eq!(
            g.check_and_insert("aliyun/k", "n1", 2_000, 900_000),
            Err(ReplayError::Replayed)
        );
        // Another key may use the same nonce.
        assert_eq!(
            g.check_and_insert("aliyun/k2", "n1", 2_000, 900_000),
            Ok(())
        );
        // After the window it is forgotten and accepted again.
        assert_eq!(
            g.check_and_insert("aliyun/k", "n1", 901_000, 900_000),
            Ok(())
        );
    }

    #[test]
    fn full_cache_refuses_instead_of_forgetting() {
        let g = ReplayGuard::new(SHARDS); // one slot per shard
        let mut full = 0;
        let mut accepted = Vec::new();
        for i in 0..200 {
            match g.check_and_insert("s", &format!("n{i}"), 0, 1_000) {
                Ok(()) => accepted.push(i),
                Err(ReplayError::Full) => full += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(full > 0);
        assert!(g.len() <= g.capacity());
        // Every accepted nonce is still refused: none was evicted to make room.
        for i in accepted {
            assert_eq!(
                g.check_and_insert("s", &format!("n{i}"), 500, 1_000),
                Err(ReplayError::Replayed)
            );
        }
        // Once they expire, room comes back.
        assert_eq!(g.check_and_insert("s", "fresh", 1_001, 1_000), Ok(()));
    }

    /// The expiry heap never outgrows the map (no hidden unbounded memory).
    fn heap_matches_map(g: &ReplayGuard) {
        for shard in &g.shards {
            let s = shard.lock().unwrap();
            assert!(s.live.len() <= g.per_shard);
            assert_eq!(s.by_expiry.len(), s.live.len());
        }
    }

    #[test]
    fn a_flood_of_unique_nonces_stays_within_capacity() {
        let g = ReplayGuard::new(1_000);
        let (mut ok, mut full) = (0, 0);
        for i in 0..100_000 {
            match g.check_and_insert("aliyun/k", &format!("n{i}"), 10_000, 1_800_000) {
                Ok(()) => ok += 1,
                Err(ReplayError::Full) => full += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok, g.capacity());
        assert_eq!(ok + full, 100_000);
        assert_eq!(g.len(), g.capacity());
        heap_matches_map(&g);
        // After the window every slot is reusable.
        assert_eq!(
            g.check_and_insert("aliyun/k", "later", 1_810_000, 1_800_000),
            Ok(())
        );
        heap_matches_map(&g);
    }

    use proptest::prelude::*;

    proptest! {
        /// Against a model: a nonce live in its window is always `Replayed` (never
        /// forgotten, whatever else comes), a nonce not live is never `Replayed`, the
        /// size never exceeds the capacity and the expiry heap tracks the map exactly.
        #[test]
        fn behaves_like_a_bounded_set_with_expiry(
            capacity in 1usize..64,
            ops in proptest::collection::vec((0u8..3, 0u16..200, 0i64..50, 1i64..200), 1..400),
        ) {
            let g = ReplayGuard::new(capacity);
            let mut model: HashMap<(u8, u16), i64> = HashMap::new();
            let mut now = 0i64;
            for (scope, nonce, step, ttl) in ops {
                now += step;
                let live = model.get(&(scope, nonce)).is_some_and(|&exp| exp > now);
                let got = g.check_and_insert(&format!("s{scope}"), &format!("n{nonce}"), now, ttl);
                match got {
                    Err(ReplayError::Replayed) => prop_assert!(live, "replayed but not live"),
                    Ok(()) => {
                        prop_assert!(!live, "a live nonce was accepted again");
                        model.insert((scope, nonce), now + ttl);
                    }
                    Err(ReplayError::Full) => prop_assert!(!live, "a live nonce reported as Full"),
                }
                prop_assert!(g.len() <= g.capacity());
                heap_matches_map(&g);
            }
        }
    }
}

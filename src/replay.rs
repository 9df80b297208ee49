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
//! entry does not depend on what a client sends. An accepted nonce is handed back as an
//! [`Entry`] (digest, expiry, share counter) so a journal can persist it and a later
//! process can [`restore`](ReplayGuard::restore) it under the same salt.
//!
//! Fairness: each scope (scheme + AppKey) may hold at most `per_key` live nonces. A key
//! over its share is refused (`KeyFull`) while every other key keeps working, so no one
//! caller, granted or not, can fill the cache for the others; filling it takes
//! `capacity / per_key` keys at their share at once. Nonces are recorded only after the
//! signature verified, so the keys are real ones.
//!
//! A nonce stays live up to and including its expiry instant: a request is fresh at
//! exactly the edge of its window, so its nonce must still be refused there.

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
    /// This key holds its whole share of the cache.
    KeyFull,
}

pub type Digest16 = [u8; 16];
/// Short digest of a scope, the key of the per-key counters.
pub type ScopeId = u64;

/// One remembered nonce: what a journal writes and a restart restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub digest: Digest16,
    /// Live up to and including this instant (ms since the epoch).
    pub expires_ms: i64,
    pub scope: ScopeId,
}

#[derive(Default)]
struct Shard {
    /// digest -> (expiry ms, owning scope)
    live: HashMap<Digest16, (i64, ScopeId)>,
    /// expiry order, for sweeping
    by_expiry: BinaryHeap<Reverse<(i64, Digest16)>>,
}

/// Live nonces per scope, sharded by scope. Locked after a nonce shard, never before.
type Owners = Mutex<HashMap<ScopeId, u32>>;

impl Shard {
    fn sweep(&mut self, now_ms: i64, owners: &[Owners]) {
        while let Some(Reverse((exp, d))) = self.by_expiry.peek().copied() {
            if exp >= now_ms {
                break;
            }
            self.by_expiry.pop();
            if let Some(&(e, scope)) = self.live.get(&d)
                && e == exp
            {
                self.live.remove(&d);
                release(owners, scope);
            }
        }
    }
}

fn owners_of(owners: &[Owners], scope: ScopeId) -> &Owners {
    &owners[(scope as usize) % owners.len()]
}

fn release(owners: &[Owners], scope: ScopeId) {
    let mut o = owners_of(owners, scope)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = o.get_mut(&scope) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            o.remove(&scope);
        }
    }
}

/// How full the keys' shares are, for `/metrics`: bounded labels, whatever the number
/// of keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyPressure {
    /// Keys holding at least one live nonce.
    pub keys: usize,
    /// Keys at half their share or more.
    pub half: usize,
    /// Keys at 90 % or more.
    pub ninety: usize,
    /// Keys at their whole share: their nonce-carrying requests are being refused.
    pub full: usize,
}

pub struct ReplayGuard {
    shards: Vec<Mutex<Shard>>,
    owners: Vec<Owners>,
    per_shard: usize,
    per_key: usize,
    /// Secret salt of the share counters: a caller cannot aim its scopes at another's
    /// counter. Random per process, or a journal's, so restored entries count again.
    salt: [u8; 16],
}

impl ReplayGuard {
    /// A cache holding at most `capacity` nonces (rounded up to a multiple of the
    /// shard count), of which one scope may hold at most `per_key`.
    pub fn new(capacity: usize, per_key: usize) -> Self {
        let mut salt = [0u8; 16];
        // Without the OS's randomness the salt is fixed: counters can then be aimed at,
        // which costs fairness between keys, never a replay.
        let _ = getrandom::getrandom(&mut salt);
        Self::with_salt(capacity, per_key, salt)
    }

    /// As `new`, with the share counters salted by `salt` (a journal's, so that the
    /// entries it restores are charged to the same keys as before).
    pub fn with_salt(capacity: usize, per_key: usize, salt: [u8; 16]) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            owners: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            per_key: per_key.max(1),
            salt,
        }
    }

    /// The digest a (scope, nonce) pair is remembered by: also the key other nonce
    /// stores use, so the nonce itself is never stored anywhere.
    pub fn digest(scope: &str, nonce: &str) -> Digest16 {
        let mut h = Sha256::new();
        h.update((scope.len() as u64).to_be_bytes());
        h.update(scope.as_bytes());
        h.update(nonce.as_bytes());
        let full = h.finalize();
        let mut d = [0u8; 16];
        d.copy_from_slice(&full[..16]);
        d
    }

    /// The share counter a scope is charged to: salted, so callers cannot choose
    /// collisions, and stable under the same salt, so a restart restores the counts.
    fn scope_id(&self, scope: &str) -> ScopeId {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(scope.as_bytes());
        let full = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&full[..8]);
        u64::from_be_bytes(id)
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
        self.claim(scope, nonce, now_ms, ttl_ms).map(|_| ())
    }

    /// As `check_and_insert`, returning what was remembered (for a journal).
    pub fn claim(
        &self,
        scope: &str,
        nonce: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Entry, ReplayError> {
        let d = Self::digest(scope, nonce);
        let id = self.scope_id(scope);
        let shard = &self.shards[usize::from(d[0]) % SHARDS];
        // A key's count includes its expired nonces not yet swept from other shards;
        // before refusing a key, sweep them all once and look again.
        for attempt in 0..2 {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            s.sweep(now_ms, &self.owners);
            if s.live.get(&d).is_some_and(|&(exp, _)| exp >= now_ms) {
                return Err(ReplayError::Replayed);
            }
            if s.live.len() >= self.per_shard {
                return Err(ReplayError::Full);
            }
            {
                let mut o = owners_of(&self.owners, id)
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let held = o.entry(id).or_insert(0);
                if *held as usize >= self.per_key {
                    if attempt == 0 {
                        drop(o);
                        drop(s);
                        self.sweep_all(now_ms);
                        continue;
                    }
                    return Err(ReplayError::KeyFull);
                }
                *held += 1;
            }
            let exp = now_ms.saturating_add(ttl_ms.max(1));
            if let Some((_, old)) = s.live.insert(d, (exp, id)) {
                // An expired entry of the same digest not swept yet: its slot is reused.
                release(&self.owners, old);
            }
            s.by_expiry.push(Reverse((exp, d)));
            return Ok(Entry {
                digest: d,
                expires_ms: exp,
                scope: id,
            });
        }
        Err(ReplayError::KeyFull)
    }

    /// Puts back an entry a journal kept, unless it has expired. Capacity does not
    /// apply: a live nonce is never forgotten, so a smaller cache than before only
    /// refuses new nonces until enough of the restored ones expire.
    pub fn restore(&self, e: Entry, now_ms: i64) {
        if e.expires_ms < now_ms {
            return;
        }
        let mut s = self.shards[usize::from(e.digest[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match s.live.get(&e.digest) {
            Some(&(exp, _)) if exp >= e.expires_ms => return,
            Some(&(_, old)) => release(&self.owners, old),
            None => {}
        }
        *owners_of(&self.owners, e.scope)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(e.scope)
            .or_insert(0) += 1;
        s.live.insert(e.digest, (e.expires_ms, e.scope));
        s.by_expiry.push(Reverse((e.expires_ms, e.digest)));
    }

    /// Whether `nonce` is remembered for `scope` at `now_ms`, changing nothing
    /// (`explain`).
    pub fn is_live(&self, scope: &str, nonce: &str, now_ms: i64) -> bool {
        let d = Self::digest(scope, nonce);
        self.shards[usize::from(d[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .get(&d)
            .is_some_and(|&(exp, _)| exp >= now_ms)
    }

    /// Every entry still live at `now_ms`, one shard locked at a time (for compacting
    /// a journal: an entry added meanwhile is journaled after the copy, so none is lost).
    pub fn live(&self, now_ms: i64) -> Vec<Entry> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(s.live.iter().filter(|(_, (exp, _))| *exp >= now_ms).map(
                |(d, &(expires_ms, scope))| Entry {
                    digest: *d,
                    expires_ms,
                    scope,
                },
            ));
        }
        out
    }

    /// Sweeps every shard, one lock at a time (never two nonce shards at once).
    fn sweep_all(&self, now_ms: i64) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sweep(now_ms, &self.owners);
        }
    }

    /// Most live nonces one scope may hold.
    pub fn per_key(&self) -> usize {
        self.per_key
    }

    /// How full the keys' shares are (a scan of the counters: for scrapes, not checks).
    pub fn key_pressure(&self) -> KeyPressure {
        let mut p = KeyPressure::default();
        let per_key = self.per_key as u64;
        for o in &self.owners {
            let o = o.lock().unwrap_or_else(PoisonError::into_inner);
            for &n in o.values() {
                let n = u64::from(n);
                p.keys += 1;
                p.half += usize::from(n * 2 >= per_key);
                p.ninety += usize::from(n * 10 >= per_key * 9);
                p.full += usize::from(n >= per_key);
            }
        }
        p
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
        let g = ReplayGuard::new(100, 100);
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
            g.check_and_insert("aliyun/k", "n1", 901_001, 900_000),
            Ok(())
        );
    }

    #[test]
    fn full_cache_refuses_instead_of_forgetting() {
        let g = ReplayGuard::new(SHARDS, SHARDS); // one slot per shard
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
        let g = ReplayGuard::new(1_000, 2_000);
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
            g.check_and_insert("aliyun/k", "later", 1_810_001, 1_800_000),
            Ok(())
        );
        heap_matches_map(&g);
    }

    #[test]
    fn a_nonce_is_still_refused_at_the_very_edge_of_its_window() {
        let g = ReplayGuard::new(100, 100);
        g.check_and_insert("s", "n", 0, 1_800_000).unwrap();
        assert_eq!(
            g.check_and_insert("s", "n", 1_800_000, 1_800_000),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn one_key_at_its_share_never_refuses_another_key() {
        let g = ReplayGuard::new(1_600, 100);
        let mut refused = 0;
        for i in 0..10_000 {
            match g.check_and_insert("aliyun/flooder", &format!("n{i}"), 0, 1_000_000) {
                Ok(()) => {}
                Err(ReplayError::KeyFull) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(refused, 10_000 - 100);
        for k in 0..10 {
            for i in 0..50 {
                assert_eq!(
                    g.check_and_insert(&format!("aliyun/k{k}"), &format!("n{i}"), 1, 1_000_000),
                    Ok(()),
                    "key k{k} refused because another key flooded"
                );
            }
        }
        let p = g.key_pressure();
        assert_eq!((p.keys, p.full, p.half), (11, 1, 11));
        // Its share comes back as its nonces expire.
        assert_eq!(
            g.check_and_insert("aliyun/flooder", "later", 1_000_001, 1_000),
            Ok(())
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// Against a model: a nonce live in its window is always `Replayed` (never
        /// forgotten, whatever else comes), a nonce not live is never `Replayed`, the
        /// size never exceeds the capacity and the expiry heap tracks the map exactly.
        #[test]
        fn behaves_like_a_bounded_set_with_expiry(
            capacity in 1usize..64,
            per_key in 1usize..64,
            ops in proptest::collection::vec((0u8..3, 0u16..200, 0i64..50, 1i64..200), 1..400),
        ) {
            let g = ReplayGuard::new(capacity, per_key);
            let mut model: HashMap<(u8, u16), i64> = HashMap::new();
            let mut now = 0i64;
            for (scope, nonce, step, ttl) in ops {
                now += step;
                let live = model.get(&(scope, nonce)).is_some_and(|&exp| exp >= now);
                let held = model.iter().filter(|entry| entry.0.0 == scope && *entry.1 >= now).count();
                let got = g.check_and_insert(&format!("s{scope}"), &format!("n{nonce}"), now, ttl);
                match got {
                    Err(ReplayError::Replayed) => prop_assert!(live, "replayed but not live"),
                    Ok(()) => {
                        prop_assert!(!live, "a live nonce was accepted again");
                        model.insert((scope, nonce), now + ttl);
                    }
                    Err(ReplayError::Full) => prop_assert!(!live, "a live nonce reported as Full"),
                    Err(ReplayError::KeyFull) => {
                        prop_assert!(!live, "a live nonce reported as KeyFull");
                        prop_assert!(held >= per_key, "refused under its share: {held} < {per_key}");
                    }
                }
                prop_assert!(held <= per_key);
                prop_assert!(g.len() <= g.capacity());
                heap_matches_map(&g);
            }
        }
    }
}

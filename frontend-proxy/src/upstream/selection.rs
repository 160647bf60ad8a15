//! Load-balancing policies Pingora does not ship, as Pingora
//! [`BackendSelection`]s: LEAST_REQUEST (power of N choices) and MAGLEV.
//! ROUND_ROBIN, RANDOM and RING_HASH use Pingora's own selections.

use super::discovery::host_of;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use rand::Rng;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Envoy's LEAST_REQUEST: draw `choice_count` hosts at random and take the
/// one with the fewest active requests relative to its weight.
pub struct LeastRequest {
    backends: Box<[Backend]>,
    choice_count: usize,
}

impl BackendSelection for LeastRequest {
    type Iter = LeastRequestIter;
    type Config = u32;

    fn build_with_config(backends: &BTreeSet<Backend>, choice_count: &u32) -> Self {
        Self { backends: backends.iter().cloned().collect(), choice_count: (*choice_count).max(2) as usize }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &2)
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastRequestIter {
        let n = self.backends.len();
        let mut rng = rand::thread_rng();
        let first = (n > 0).then(|| {
            let mut best = rng.gen_range(0..n);
            for _ in 1..self.choice_count {
                let c = rng.gen_range(0..n);
                if self.load(c) < self.load(best) {
                    best = c;
                }
            }
            best
        });
        LeastRequestIter { sel: self.clone(), first, step: 0 }
    }
}

impl LeastRequest {
    /// Active requests per unit of weight, compared as a fraction.
    fn load(&self, i: usize) -> f64 {
        let b = &self.backends[i];
        let active = host_of(b).map(|h| h.active_requests().max(0)).unwrap_or(0) as f64;
        (active + 1.0) / b.weight.max(1) as f64
    }
}

/// Yields the chosen host, then every host in order (for callers that skip
/// unhealthy or already-tried hosts).
pub struct LeastRequestIter {
    sel: Arc<LeastRequest>,
    first: Option<usize>,
    step: usize,
}

impl BackendIter for LeastRequestIter {
    fn next(&mut self) -> Option<&Backend> {
        let n = self.sel.backends.len();
        let start = self.first?;
        if self.step >= n {
            return None;
        }
        let i = (start + self.step) % n;
        self.step += 1;
        self.sel.backends.get(i)
    }
}

/// Maglev consistent hashing (Eisenbud et al., NSDI'16) with Envoy's
/// default table size. Each host fills table slots in its own permutation
/// order, `weight` slots per round.
pub struct Maglev {
    backends: Box<[Backend]>,
    table: Box<[u32]>,
}

/// Envoy's default MAGLEV table size (a prime).
const MAGLEV_TABLE_SIZE: usize = 65537;

fn hash_with_seed<T: Hash + ?Sized>(v: &T, seed: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    v.hash(&mut h);
    h.finish()
}

impl BackendSelection for Maglev {
    type Iter = MaglevIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let backends: Box<[Backend]> = backends.iter().cloned().collect();
        let m = MAGLEV_TABLE_SIZE;
        let mut table = vec![u32::MAX; m];
        if !backends.is_empty() {
            let perms: Vec<(usize, usize)> = backends
                .iter()
                .map(|b| {
                    let key = b.addr.to_string();
                    let offset = (hash_with_seed(&key, 0xA5A5) % m as u64) as usize;
                    let skip = (hash_with_seed(&key, 0x5A5A) % (m as u64 - 1)) as usize + 1;
                    (offset, skip)
                })
                .collect();
            let mut next = vec![0usize; backends.len()];
            let mut filled = 0;
            'fill: loop {
                for (i, b) in backends.iter().enumerate() {
                    for _ in 0..b.weight.max(1) {
                        let (offset, skip) = perms[i];
                        let mut slot = (offset + next[i] * skip) % m;
                        while table[slot] != u32::MAX {
                            next[i] += 1;
                            slot = (offset + next[i] * skip) % m;
                        }
                        table[slot] = i as u32;
                        next[i] += 1;
                        filled += 1;
                        if filled == m {
                            break 'fill;
                        }
                    }
                }
            }
        }
        Self { backends, table: table.into_boxed_slice() }
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> MaglevIter {
        let slot = (hash_with_seed(key, 0) % self.table.len() as u64) as usize;
        MaglevIter { sel: self.clone(), slot, step: 0 }
    }
}

/// Yields the table's choice, then the following slots' hosts.
pub struct MaglevIter {
    sel: Arc<Maglev>,
    slot: usize,
    step: usize,
}

impl BackendIter for MaglevIter {
    fn next(&mut self) -> Option<&Backend> {
        if self.sel.backends.is_empty() || self.step >= self.sel.table.len() {
            return None;
        }
        let idx = self.sel.table[(self.slot + self.step) % self.sel.table.len()];
        self.step += 1;
        self.sel.backends.get(idx as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn backends(n: usize) -> BTreeSet<Backend> {
        (0..n).map(|i| Backend::new(&format!("10.0.0.{}:80", i + 1)).unwrap()).collect()
    }

    #[test]
    fn maglev_spreads_keys_and_is_stable() {
        let sel = Arc::new(Maglev::build(&backends(3)));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in 0..3000u32 {
            let b = sel.iter(&k.to_le_bytes()).next().unwrap().addr.to_string();
            *counts.entry(b).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|c| (800..1200).contains(c)), "{counts:?}");
        // same key, same host
        let a = sel.iter(b"user-42").next().unwrap().addr.to_string();
        let b = sel.iter(b"user-42").next().unwrap().addr.to_string();
        assert_eq!(a, b);
    }

    #[test]
    fn maglev_moves_few_keys_when_a_host_leaves() {
        let before = Arc::new(Maglev::build(&backends(4)));
        let mut fewer = backends(4);
        let last = fewer.iter().last().cloned().unwrap();
        fewer.remove(&last);
        let after = Arc::new(Maglev::build(&fewer));
        let mut moved = 0;
        for k in 0..4000u32 {
            let a = before.iter(&k.to_le_bytes()).next().unwrap().addr.to_string();
            let b = after.iter(&k.to_le_bytes()).next().unwrap().addr.to_string();
            if a != b && a != last.addr.to_string() {
                moved += 1;
            }
        }
        assert!(moved < 400, "{moved} keys moved between surviving hosts");
    }

    #[test]
    fn least_request_visits_every_backend_once() {
        let sel = Arc::new(LeastRequest::build(&backends(3)));
        let mut it = sel.iter(b"");
        let mut seen = BTreeSet::new();
        while let Some(b) = it.next() {
            seen.insert(b.addr.to_string());
        }
        assert_eq!(seen.len(), 3);
    }
}

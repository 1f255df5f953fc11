//! The shared-prefix KV cache: keys and values of token sequences a run
//! already computed, so that a request sharing a prefix with one of them (a
//! chat template's system prompt, a conversation's earlier turns) starts
//! after it.
//!
//! The keys and values of position `p` depend only on the model and the
//! token ids `0..=p` (the engine's determinism guarantee), so a stored
//! sequence serves every request whose tokens begin with any prefix of it,
//! and the run that continues from it computes the bits a cold run computes.
//! An entry is found by its key ([`CacheKey`]: the model file's SHA-256, or
//! one engine's own model, and the scope the run names) and the longest
//! common prefix of its token ids with the request's; text is never part of
//! the key. Network runs are scoped by their requester's account: a prefix
//! one requester computed never serves another, so the time to a first token
//! tells nobody what another client's prompts began with.
//!
//! Memory is bounded by [`PrefixLimits`] (entries and bytes); the least
//! recently used entries are evicted first. A sequence another entry already
//! extends is not stored again, and a new sequence replaces the entries it
//! extends (a conversation's turn replaces its previous turn).
//!
//! One [`PrefixCache`] can be shared by several engines of one model (a
//! verifier's checkers): it is a handle to one locked store, and the copy
//! of an entry's keys and values into a run happens outside the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::attention::KvCache;

/// What the keys and values were computed from, besides the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKey {
    /// The SHA-256 of the model file (engines loaded from the same bytes
    /// compute the same keys and values).
    File([u8; 32]),
    /// One engine's own model, when the file's hash is not known.
    Engine(u64),
}

impl ModelKey {
    /// A key no other engine of this process has.
    pub(crate) fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ModelKey::Engine(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Which runs an entry may serve: those of the same model and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// What computed the keys and values.
    pub model: ModelKey,
    /// Who may reuse them (the requester's account for network runs; `None`
    /// for local runs such as benchmarks).
    pub scope: Option<[u8; 32]>,
}

impl From<ModelKey> for CacheKey {
    fn from(model: ModelKey) -> Self {
        CacheKey { model, scope: None }
    }
}

impl ModelKey {
    /// This model's key within `scope`.
    pub(crate) fn scoped(self, scope: Option<[u8; 32]>) -> CacheKey {
        CacheKey { model: self, scope }
    }
}

/// Bounds of a [`PrefixCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLimits {
    /// Entries kept at most.
    pub max_entries: usize,
    /// Bytes of keys, values and token ids kept at most.
    pub max_bytes: usize,
}

impl PrefixLimits {
    /// A cache that keeps nothing (every run is cold).
    pub const OFF: PrefixLimits = PrefixLimits {
        max_entries: 0,
        max_bytes: 0,
    };
}

impl Default for PrefixLimits {
    /// 64 entries and 128 MiB: the default model's conversations of a few
    /// hundred tokens take about 46 KiB per token.
    fn default() -> Self {
        PrefixLimits {
            max_entries: 64,
            max_bytes: 128 << 20,
        }
    }
}

/// Counters of a [`PrefixCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Entries held.
    pub entries: usize,
    /// Bytes held.
    pub bytes: usize,
    /// Runs that asked for a prefix.
    pub lookups: u64,
    /// Runs that reused one.
    pub hits: u64,
    /// Positions reused, over all runs.
    pub reused_tokens: u64,
    /// Entries evicted to stay within the limits.
    pub evicted: u64,
}

struct Entry {
    model: CacheKey,
    tokens: Vec<u32>,
    kv: Arc<KvCache>,
    bytes: usize,
    used: u64,
}

struct Store {
    limits: PrefixLimits,
    entries: Vec<Entry>,
    clock: u64,
    stats: PrefixStats,
}

/// A bounded, least-recently-used store of computed prefixes (see the
/// module docs). Cloning gives another handle to the same store.
#[derive(Clone)]
pub struct PrefixCache {
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache")
            .field("limits", &self.limits())
            .field("stats", &self.stats())
            .finish()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// An empty cache within `limits`.
    pub fn new(limits: PrefixLimits) -> Self {
        PrefixCache {
            store: Arc::new(Mutex::new(Store {
                limits,
                entries: Vec::new(),
                clock: 0,
                stats: PrefixStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        verinfer_types::sync::lock(&self.store)
    }

    /// Its limits.
    pub fn limits(&self) -> PrefixLimits {
        self.lock().limits
    }

    /// Its counters.
    pub fn stats(&self) -> PrefixStats {
        let s = self.lock();
        PrefixStats {
            entries: s.entries.len(),
            bytes: s.entries.iter().map(|e| e.bytes).sum(),
            ..s.stats
        }
    }

    /// Drop every entry.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// Copy into `dst` the keys and values of the longest prefix of
    /// `tokens`, at most `max` long (and `dst`'s capacity), that an entry of
    /// `model` holds; return its length (0 when none).
    pub(crate) fn restore(
        &self,
        model: impl Into<CacheKey>,
        tokens: &[u32],
        max: usize,
        dst: &mut KvCache,
    ) -> usize {
        let model = model.into();
        let max = max.min(dst.capacity());
        let found = {
            let mut s = self.lock();
            s.stats.lookups += 1;
            let best = s
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.model == model)
                .map(|(i, e)| (common_prefix(&e.tokens, tokens).min(max), i))
                .max();
            match best {
                Some((n, i)) if n > 0 => {
                    s.clock += 1;
                    let clock = s.clock;
                    s.stats.hits += 1;
                    s.stats.reused_tokens += n as u64;
                    let e = &mut s.entries[i];
                    e.used = clock;
                    Some((n, e.kv.clone()))
                }
                _ => None,
            }
        };
        match found {
            Some((n, kv)) => {
                dst.copy_prefix(&kv, n);
                n
            }
            None => 0,
        }
    }

    /// Keep `kv`, which holds the keys and values of `tokens` (positions
    /// `0..tokens.len()`, computed with `model`), evicting the least
    /// recently used entries beyond the limits.
    pub(crate) fn keep(&self, model: impl Into<CacheKey>, tokens: Vec<u32>, kv: KvCache) {
        let model = model.into();
        let n = tokens.len();
        if n == 0 {
            return;
        }
        let kv = kv.into_prefix(n);
        let bytes = kv.bytes() + n * std::mem::size_of::<u32>();
        let mut s = self.lock();
        if s.limits.max_entries == 0 || bytes > s.limits.max_bytes {
            return;
        }
        s.clock += 1;
        let clock = s.clock;
        // Already held by an entry that extends it: that entry serves it.
        if let Some(e) = s
            .entries
            .iter_mut()
            .find(|e| e.model == model && e.tokens.len() >= n && e.tokens[..n] == tokens[..])
        {
            e.used = clock;
            return;
        }
        // Entries this one extends serve nothing it does not.
        s.entries
            .retain(|e| !(e.model == model && tokens.starts_with(&e.tokens)));
        s.entries.push(Entry {
            model,
            tokens,
            kv: Arc::new(kv),
            bytes,
            used: clock,
        });
        let mut total: usize = s.entries.iter().map(|e| e.bytes).sum();
        while s.entries.len() > s.limits.max_entries || total > s.limits.max_bytes {
            let Some(oldest) = (0..s.entries.len()).min_by_key(|&i| s.entries[i].used) else {
                break;
            };
            total -= s.entries.swap_remove(oldest).bytes;
            s.stats.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, Config};

    fn config() -> Config {
        Config {
            arch: Arch::Llama,
            n_layer: 2,
            dim: 64,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 16,
            q_dim: 64,
            ffn_dim: 32,
            vocab: 10,
            ctx_len: 128,
            rope_base: 10000.0,
            rope_dim: 16,
            eps: 1e-5,
            rope_base_swa: 10000.0,
            sliding_window: None,
        }
    }

    /// A cache of `n` positions whose values name the position.
    fn kv(n: usize) -> KvCache {
        let cfg = config();
        let mut kv = KvCache::new(&cfg, n);
        let w = cfg.n_kv_head * cfg.head_dim;
        for l in 0..cfg.n_layer {
            for p in 0..n {
                let x = vec![(l * 1000 + p) as f32; w];
                kv.store(l, p, &x, &x);
            }
        }
        kv
    }

    fn seq(first: u32, n: usize) -> Vec<u32> {
        (first..first + n as u32).collect()
    }

    const MODEL: ModelKey = ModelKey::File([7; 32]);

    #[test]
    fn the_least_recently_used_entries_go_first_within_entries_and_bytes() {
        let one = kv(20).into_prefix(20).bytes() + 20 * 4;
        let cache = PrefixCache::new(PrefixLimits {
            max_entries: 3,
            max_bytes: usize::MAX,
        });
        for i in 0..3 {
            cache.keep(MODEL, seq(100 * i, 20), kv(20));
        }
        // Entry 0 is used again, so entry 1 is the least recently used.
        let mut dst = KvCache::new(&config(), 32);
        assert_eq!(cache.restore(MODEL, &seq(0, 30), 29, &mut dst), 20);
        cache.keep(MODEL, seq(300, 20), kv(20));
        let s = cache.stats();
        assert_eq!((s.entries, s.evicted, s.bytes), (3, 1, 3 * one));
        assert_eq!(cache.restore(MODEL, &seq(100, 20), 19, &mut dst), 0);
        for first in [0, 200, 300] {
            assert_eq!(cache.restore(MODEL, &seq(first, 20), 19, &mut dst), 19);
        }

        // Bytes: room for two entries and a half.
        let cache = PrefixCache::new(PrefixLimits {
            max_entries: 100,
            max_bytes: one * 5 / 2,
        });
        for i in 0..10 {
            cache.keep(MODEL, seq(100 * i, 20), kv(20));
            let s = cache.stats();
            assert!(s.bytes <= one * 5 / 2 && s.entries <= 2, "{s:?}");
        }
        assert_eq!(cache.stats().evicted, 8);
        // An entry larger than the whole budget is not kept.
        cache.keep(MODEL, seq(5000, 200), kv(200));
        assert_eq!(cache.restore(MODEL, &seq(5000, 30), 29, &mut dst), 0);
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn entries_bind_the_model_and_a_longer_sequence_replaces_its_prefix() {
        let cache = PrefixCache::new(PrefixLimits::default());
        cache.keep(MODEL, seq(0, 10), kv(10));
        let mut dst = KvCache::new(&config(), 40);
        let other = ModelKey::File([8; 32]);
        assert_eq!(cache.restore(other, &seq(0, 10), 9, &mut dst), 0);
        assert_eq!(
            cache.restore(ModelKey::unique(), &seq(0, 10), 9, &mut dst),
            0
        );
        // A conversation's next turn replaces the turn it extends ...
        cache.keep(MODEL, seq(0, 30), kv(30));
        assert_eq!(cache.stats().entries, 1);
        // ... and a prefix of a held entry adds nothing.
        cache.keep(MODEL, seq(0, 5), kv(5));
        assert_eq!(cache.stats().entries, 1);
        // Any common prefix is served, bounded by what the run asks for.
        let mut asked = seq(0, 17);
        asked.push(999);
        assert_eq!(cache.restore(MODEL, &asked, 40, &mut dst), 17);
        assert_eq!(cache.restore(MODEL, &seq(0, 30), 12, &mut dst), 12);
        // The copied positions hold the entry's values; the rest are untouched.
        let mut fresh = KvCache::new(&config(), 40);
        assert_eq!(cache.restore(MODEL, &seq(0, 30), 12, &mut fresh), 12);
        let want = kv(30);
        for l in 0..2 {
            for p in 0..40 {
                let got = fresh.position(l, p);
                if p < 12 {
                    assert_eq!(got, want.position(l, p), "layer {l} position {p}");
                } else {
                    assert!(got.0.iter().chain(&got.1).all(|&x| x == 0.0));
                }
            }
        }
    }

    #[test]
    fn a_scope_never_serves_another() {
        let cache = PrefixCache::new(PrefixLimits::default());
        let (alice, bob) = (MODEL.scoped(Some([1; 32])), MODEL.scoped(Some([2; 32])));
        cache.keep(alice, seq(0, 20), kv(20));
        let mut dst = kv(40);
        assert_eq!(cache.restore(bob, &seq(0, 30), 29, &mut dst), 0);
        assert_eq!(cache.restore(MODEL, &seq(0, 30), 29, &mut dst), 0);
        assert_eq!(cache.restore(alice, &seq(0, 30), 29, &mut dst), 20);
        // Bob's own copy of the same tokens does not replace Alice's.
        cache.keep(bob, seq(0, 25), kv(25));
        assert_eq!(cache.restore(alice, &seq(0, 30), 29, &mut dst), 20);
        assert_eq!(cache.restore(bob, &seq(0, 30), 29, &mut dst), 25);
    }
}

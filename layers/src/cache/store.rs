//! Where cached answers live.

use super::CacheKey;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A store of recorded answers: in this process ([`MemoryStore`]), or shared by several
/// (aiproxy's Redis store), which may answer a lookup only after a round trip.
pub trait CacheStore<E>: Send + Sync + 'static {
    /// The answer stored under `key`, if it is there and fresh.
    fn get(&self, key: &CacheKey) -> Lookup<E>;
    /// Stores `events` (about `weight` bytes) under `key`. A shared store writes in the
    /// background: the answer that was recorded is already on its way to its client.
    fn put(&self, key: CacheKey, events: Arc<[E]>, weight: u32);
    /// Bytes held (an estimate).
    fn bytes(&self) -> u64;
    /// Entries held.
    fn entries(&self) -> u64;
}

/// A recorded answer, shared by every replay.
pub type Events<E> = Arc<[E]>;

/// A lookup's answer: at once (memory), or after a round trip (a shared store).
pub enum Lookup<E> {
    /// Known now.
    Now(Option<Events<E>>),
    /// Known when the future completes.
    Later(Pin<Box<dyn Future<Output = Option<Events<E>>> + Send>>),
}

impl<E> Lookup<E> {
    /// The answer, waiting for it if it is not known yet.
    pub async fn answer(self) -> Option<Arc<[E]>> {
        match self {
            Self::Now(answer) => answer,
            Self::Later(answer) => answer.await,
        }
    }
}

/// An in-memory store bounded by bytes, with a time to live (moka: a TinyLFU admission
/// filter, so one huge answer does not evict many small, popular ones).
pub struct MemoryStore<E: Send + Sync + 'static> {
    cache: moka::sync::Cache<CacheKey, Weighted<E>>,
}

struct Weighted<E> {
    events: Arc<[E]>,
    weight: u32,
}

// Not derived: cloning shares the events, whatever `E` is.
impl<E> Clone for Weighted<E> {
    fn clone(&self) -> Self {
        Self {
            events: Arc::clone(&self.events),
            weight: self.weight,
        }
    }
}

impl<E: Send + Sync + 'static> std::fmt::Debug for MemoryStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// What one entry costs besides its events (key, bookkeeping).
const ENTRY_OVERHEAD: u32 = 128;

impl<E: Send + Sync + 'static> MemoryStore<E> {
    /// At most `max_bytes` of answers, each for at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .time_to_live(ttl)
                .weigher(|_key, value: &Weighted<E>| value.weight)
                .build(),
        }
    }
}

impl<E: Send + Sync + 'static> MemoryStore<E> {
    /// [`CacheStore::get`], known at once.
    pub fn get_now(&self, key: &CacheKey) -> Option<Arc<[E]>> {
        self.cache.get(key).map(|entry| entry.events)
    }
}

impl<E: Send + Sync + 'static> CacheStore<E> for MemoryStore<E> {
    fn get(&self, key: &CacheKey) -> Lookup<E> {
        Lookup::Now(self.get_now(key))
    }

    fn put(&self, key: CacheKey, events: Arc<[E]>, weight: u32) {
        let weight = weight.saturating_add(ENTRY_OVERHEAD);
        self.cache.insert(key, Weighted { events, weight });
    }

    // moka counts lazily: pending inserts and evictions are applied first, so a scrape
    // right after a store sees it.
    fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    fn entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

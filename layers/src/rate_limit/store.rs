//! Where the buckets live: the [`RateLimitStore`] interface and its in-memory
//! implementation.

use super::{LimitKind, RateLimitStatus, RequestQuota, Window};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::RateLimiter;
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A refused take: how long until it would pass (`None`: never, it is larger than the
/// bucket), and the bucket as it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The wait.
    pub wait: Option<Duration>,
    /// The bucket.
    pub window: Window,
}

/// What one request asks of its client's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The request bucket's quota, when requests are limited.
    pub requests: Option<RequestQuota>,
    /// The token bucket's size and the request's estimate, when tokens are limited.
    pub tokens: Option<(NonZeroU32, u64)>,
}

/// A store's answer to an [`Ask`]: both buckets as the decision left them, or which one
/// refused (then nothing was taken from either).
pub type Admission = Result<RateLimitStatus, Refused>;

/// Which bucket refused, how long until it would pass, and both buckets as they stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The bucket that refused.
    pub limit: LimitKind,
    /// Its wait and state.
    pub denied: Denied,
    /// Both buckets.
    pub status: RateLimitStatus,
}

/// A decision made at once (in memory) or one that needs a round trip (a shared store).
pub enum Decision {
    /// Decided.
    Now(Admission),
    /// Decided when the future ends.
    Later(Pin<Box<dyn Future<Output = Result<Admission, StoreUnavailable>> + Send>>),
}

/// A shared store could not decide (unreachable or too slow) and its failure mode is to
/// refuse rather than to decide locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUnavailable {
    /// What failed and what to do.
    pub message: String,
}

impl std::fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreUnavailable {}

/// The buckets of every client. Each [`admit`](RateLimitStore::admit) is one atomic
/// decision over both of a client's buckets, so clients of one key on many connections (or,
/// with a shared store, many proxies) never spend more than the limit between them.
pub trait RateLimitStore: Send + Sync {
    /// Takes what `ask` needs from `key`'s buckets: all of it, or nothing.
    fn admit(&self, key: &str, ask: Ask) -> Decision;
    /// Charges (`delta > 0`) or refunds (`delta < 0`) tokens without a check: a charge may
    /// take the bucket into debt, which later takes wait out; a refund never fills it
    /// beyond full.
    fn settle_tokens(&self, key: &str, per_minute: NonZeroU32, delta: i64);
}

type RequestLimiter =
    RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct RequestBucket {
    quota: RequestQuota,
    limiter: RequestLimiter,
}

/// The buckets in this process's memory: one per client label and limit (lock-free
/// decisions; the maps are only written when a client is first seen).
pub struct MemoryStore {
    epoch: Instant,
    requests: RwLock<HashMap<Arc<str>, Arc<RequestBucket>>>,
    tokens: RwLock<HashMap<Arc<str>, Arc<TokenBucket>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            requests: RwLock::default(),
            tokens: RwLock::default(),
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn request_bucket(&self, key: &str, quota: RequestQuota) -> Arc<RequestBucket> {
        bucket(
            &self.requests,
            key,
            |b| b.quota == quota,
            || RequestBucket {
                quota,
                limiter: RateLimiter::direct(quota.governor())
                    .with_middleware::<StateInformationMiddleware>(),
            },
        )
    }

    fn token_bucket(&self, key: &str, per_minute: NonZeroU32) -> Arc<TokenBucket> {
        bucket(
            &self.tokens,
            key,
            |b| b.per_minute == per_minute,
            || TokenBucket::new(per_minute),
        )
    }
}

/// `key`'s bucket in `map` when it has the limit (`fits`), else a new one (`make`) in its
/// place: the read lock for the usual case, the write lock only for a new client or limit.
fn bucket<B>(
    map: &RwLock<HashMap<Arc<str>, Arc<B>>>,
    key: &str,
    fits: impl Fn(&B) -> bool,
    make: impl FnOnce() -> B,
) -> Arc<B> {
    let read = map.read().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = read.get(key).filter(|b| fits(b)) {
        return Arc::clone(found);
    }
    drop(read);
    let mut write = map.write().unwrap_or_else(|e| e.into_inner());
    match write.get(key).filter(|b| fits(b)) {
        Some(found) => Arc::clone(found),
        None => {
            let made = Arc::new(make());
            write.insert(Arc::from(key), Arc::clone(&made));
            made
        }
    }
}

impl MemoryStore {
    /// Takes one request from `key`'s request bucket.
    pub fn take_request(&self, key: &str, quota: RequestQuota) -> Result<Window, Denied> {
        let bucket = self.request_bucket(key, quota);
        let limit = u64::from(quota.per_minute.get());
        let burst = u64::from(quota.burst.get());
        match bucket.limiter.check() {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                let used = u32::try_from(burst.saturating_sub(remaining)).unwrap_or(u32::MAX);
                Ok(Window {
                    limit,
                    remaining,
                    reset: quota.period() * used,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(bucket.limiter.clock().now());
                Err(Denied {
                    wait: Some(wait),
                    window: Window {
                        limit,
                        remaining: 0,
                        reset: wait + quota.period() * (quota.burst.get() - 1),
                    },
                })
            }
        }
    }

    /// Takes `tokens` from `key`'s token bucket (holding `per_minute` tokens).
    pub fn take_tokens(
        &self,
        key: &str,
        per_minute: NonZeroU32,
        tokens: u64,
    ) -> Result<Window, Denied> {
        self.token_bucket(key, per_minute)
            .take(tokens, self.now_ns())
    }

    /// Both buckets of `key`, tokens first: they are given back when the request bucket
    /// refuses (a request cannot be).
    pub fn admit_now(&self, key: &str, ask: Ask) -> Admission {
        let mut status = RateLimitStatus::default();
        if let Some((per_minute, estimate)) = ask.tokens {
            match self.take_tokens(key, per_minute, estimate) {
                Ok(window) => status.tokens = Some(window),
                Err(denied) => {
                    status.tokens = Some(denied.window);
                    return Err(Refused {
                        limit: LimitKind::Tokens,
                        denied,
                        status,
                    });
                }
            }
        }
        if let Some(quota) = ask.requests {
            match self.take_request(key, quota) {
                Ok(window) => status.requests = Some(window),
                Err(denied) => {
                    status.requests = Some(denied.window);
                    if let (Some((per_minute, estimate)), Some(tokens)) =
                        (ask.tokens, &mut status.tokens)
                    {
                        let refund = i64::try_from(estimate).unwrap_or(i64::MAX);
                        self.settle_tokens(key, per_minute, -refund);
                        tokens.remaining = (tokens.remaining + estimate).min(tokens.limit);
                    }
                    return Err(Refused {
                        limit: LimitKind::Requests,
                        denied,
                        status,
                    });
                }
            }
        }
        Ok(status)
    }
}

impl RateLimitStore for MemoryStore {
    fn admit(&self, key: &str, ask: Ask) -> Decision {
        Decision::Now(self.admit_now(key, ask))
    }

    fn settle_tokens(&self, key: &str, per_minute: NonZeroU32, delta: i64) {
        self.token_bucket(key, per_minute)
            .settle(delta, self.now_ns());
    }
}

const MINUTE_NS: u64 = 60_000_000_000;

/// GCRA over tokens, with debt: the theoretical arrival time (`tat`, in nanoseconds since
/// the store's epoch) moves forward by each token's share of a minute; a take passes while
/// it stays within a minute of now. Unlike governor's buckets, a settle moves it without a
/// check, forward (debt) or back (refund, never before now).
struct TokenBucket {
    per_minute: NonZeroU32,
    tat: AtomicU64,
}

impl TokenBucket {
    fn new(per_minute: NonZeroU32) -> Self {
        Self {
            per_minute,
            tat: AtomicU64::new(0),
        }
    }

    /// Nanoseconds of budget that `tokens` take.
    fn cost(&self, tokens: u64) -> u64 {
        let ns = u128::from(tokens) * u128::from(MINUTE_NS) / u128::from(self.per_minute.get());
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    fn window(&self, tat: u64, now: u64) -> Window {
        let used = tat.saturating_sub(now);
        let free = MINUTE_NS.saturating_sub(used);
        Window {
            limit: u64::from(self.per_minute.get()),
            remaining: u64::try_from(
                u128::from(free) * u128::from(self.per_minute.get()) / u128::from(MINUTE_NS),
            )
            .unwrap_or(u64::MAX),
            reset: Duration::from_nanos(used),
        }
    }

    fn take(&self, tokens: u64, now: u64) -> Result<Window, Denied> {
        let cost = self.cost(tokens);
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let next = current.max(now).saturating_add(cost);
            if next - now > MINUTE_NS {
                return Err(Denied {
                    wait: (cost <= MINUTE_NS).then(|| Duration::from_nanos(next - now - MINUTE_NS)),
                    window: self.window(current, now),
                });
            }
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(self.window(next, now)),
                Err(seen) => current = seen,
            }
        }
    }

    fn settle(&self, delta: i64, now: u64) {
        let cost = self.cost(delta.unsigned_abs());
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(if delta >= 0 {
                    tat.max(now).saturating_add(cost)
                } else {
                    tat.saturating_sub(cost).max(now)
                })
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1_000_000_000;

    fn bucket(per_minute: u32) -> TokenBucket {
        TokenBucket::new(NonZeroU32::new(per_minute).unwrap())
    }

    #[test]
    fn a_minute_of_tokens_passes_then_the_next_waits_its_share() {
        let b = bucket(600); // one token per 100 ms
        let w = b.take(600, 10 * NS).unwrap();
        assert_eq!(
            (w.limit, w.remaining, w.reset),
            (600, 0, Duration::from_secs(60))
        );
        let denied = b.take(10, 10 * NS).unwrap_err();
        assert_eq!(denied.wait, Some(Duration::from_secs(1)));
        // A second later ten tokens are back.
        assert!(b.take(10, 11 * NS).is_ok());
        assert!(b.take(1, 11 * NS).is_err());
    }

    #[test]
    fn more_than_a_minute_never_fits() {
        let b = bucket(100);
        let denied = b.take(101, 0).unwrap_err();
        assert_eq!(denied.wait, None);
        assert_eq!(denied.window.remaining, 100);
    }

    #[test]
    fn a_settle_charges_into_debt_and_refunds_down_to_now() {
        let b = bucket(60); // one token per second
        b.take(30, 0).unwrap();
        b.settle(60, 0); // the answer used 60 more than estimated: 90 s of budget taken
        let denied = b.take(1, 0).unwrap_err();
        assert_eq!(denied.wait, Some(Duration::from_secs(31)));
        assert_eq!(denied.window.remaining, 0);
        b.settle(-1000, 0); // a refund never fills more than full
        assert_eq!(b.take(60, 0).unwrap().remaining, 0);
        assert!(b.take(1, 0).is_err());
    }

    #[test]
    fn requests_report_remaining_and_reset() {
        let store = MemoryStore::new();
        let quota = RequestQuota {
            per_minute: NonZeroU32::new(60).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let first = store.take_request("k", quota).unwrap();
        assert_eq!((first.limit, first.remaining), (60, 1));
        assert_eq!(first.reset, Duration::from_secs(1));
        let second = store.take_request("k", quota).unwrap();
        assert_eq!(second.remaining, 0);
        let denied = store.take_request("k", quota).unwrap_err();
        assert!(denied.wait.unwrap() <= Duration::from_secs(1));
        assert_eq!(denied.window.remaining, 0);
        // Another key has its own bucket.
        assert_eq!(store.take_request("other", quota).unwrap().remaining, 1);
    }
}

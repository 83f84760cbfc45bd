//! Where the pool keeps each account's state: its health (the breaker, cooldowns,
//! disables: a [`Breaker`] on a [`HealthCell`](super::health::HealthCell)) and its load and usage (in flight, requests, errors, tokens:
//! a [`LoadCell`]). The pool only talks to these interfaces, so a store shared by several
//! proxies (Redis) plugs in without touching it.
//!
//! The cells are synchronous on purpose: the pool decides inside `poll_ready` and `call`,
//! where no round trip can wait. A shared implementation answers from a local replica and
//! applies every change as one event ([`HealthEvent`](super::health::HealthEvent),
//! [`LoadCell::begin`] / [`LoadCell::end`], ...) that it also publishes, so the replicas
//! converge; [`MemoryStore`] is that replica alone, for one process.

use super::health::{Breaker, HealthConfig};
use super::TokenUsage;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One account's load and usage, as the pool counts them.
pub trait LoadCell: Send + Sync + std::fmt::Debug {
    /// A request was sent to the account: one more in flight and one more request.
    fn begin(&self);
    /// A request's stream ended (or its call failed): one fewer in flight.
    fn end(&self);
    /// Requests in flight now (streams count until they end).
    fn in_flight(&self) -> usize;
    /// Requests in flight on every replica that shares the account, as last heard (what
    /// least-load weighs); [`LoadCell::in_flight`] when nothing is shared. The concurrency
    /// cap counts this replica's own.
    fn everywhere_in_flight(&self) -> usize {
        self.in_flight()
    }
    /// The time to the first event of a request (the latency peak-EWMA weighs).
    fn record_latency(&self, first_event: Duration);
    /// The peak-EWMA of those times, in nanoseconds (0 before the first sample).
    fn latency_ns(&self) -> u64;
    /// A request failed through the account's fault or the upstream's, with this `kind`.
    fn record_error(&self, kind: &'static str);
    /// A stream reported the tokens it used.
    fn record_usage(&self, usage: &TokenUsage);
    /// A non-secret view of the counts.
    fn view(&self) -> LoadView;
}

/// What a [`LoadCell`] counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadView {
    /// Requests in flight (streams included).
    pub in_flight: usize,
    /// Requests sent to the account.
    pub requests: u64,
    /// Requests that failed through its fault or the upstream's.
    pub errors: u64,
    /// The kind of its last error.
    pub last_error: Option<&'static str>,
    /// Its errors by kind.
    pub errors_by_kind: Vec<(&'static str, u64)>,
    /// When it was last sent a request.
    pub last_used: Option<SystemTime>,
    /// Tokens its streams reported, summed (`estimated` is false: a sum of mixed sources).
    pub tokens: TokenUsage,
}

/// The in-memory [`LoadCell`]: atomics, and a short mutex-guarded list of error kinds (a
/// closed vocabulary).
#[derive(Debug, Default)]
pub struct MemoryLoad {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    last_used_ms: AtomicU64,
    ewma_ns: AtomicU64,
    tokens: [AtomicU64; 4],
    /// Credits in millionths (an integer sum, so no float needs an atomic).
    credits_micros: AtomicU64,
    errors_by_kind: Mutex<ErrorKinds>,
}

#[derive(Debug, Default)]
struct ErrorKinds {
    last: Option<&'static str>,
    counts: Vec<(&'static str, u64)>,
}

impl MemoryLoad {
    fn kinds(&self) -> MutexGuard<'_, ErrorKinds> {
        self.errors_by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl LoadCell for MemoryLoad {
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_used_ms.store(unix_ms, Ordering::Relaxed);
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn record_latency(&self, first_event: Duration) {
        // Peak-EWMA: a slower sample is taken at once, faster ones pull it down slowly.
        let sample = u64::try_from(first_event.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .ewma_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 || sample > old {
                    sample
                } else {
                    old - (old - sample) / 4
                })
            });
    }

    fn latency_ns(&self) -> u64 {
        self.ewma_ns.load(Ordering::Relaxed)
    }

    fn record_error(&self, kind: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kinds = self.kinds();
        kinds.last = Some(kind);
        match kinds.counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, count)) => *count += 1,
            None => kinds.counts.push((kind, 1)),
        }
    }

    fn record_usage(&self, usage: &TokenUsage) {
        let figures = [
            usage.input,
            usage.output,
            usage.cache_read,
            usage.cache_write,
        ];
        for (total, figure) in self.tokens.iter().zip(figures) {
            if figure > 0 {
                total.fetch_add(figure, Ordering::Relaxed);
            }
        }
        if usage.credits > 0.0 {
            // Saturating float-to-int: a nonsense figure cannot wrap the sum.
            let micros = (usage.credits * 1e6).round() as u64;
            self.credits_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    fn view(&self) -> LoadView {
        let last_used_ms = self.last_used_ms.load(Ordering::Relaxed);
        let [input, output, cache_read, cache_write] =
            self.tokens.each_ref().map(|t| t.load(Ordering::Relaxed));
        let kinds = self.kinds();
        LoadView {
            in_flight: self.in_flight(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: kinds.last,
            errors_by_kind: kinds.counts.clone(),
            last_used: (last_used_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(last_used_ms)),
            tokens: TokenUsage {
                input,
                output,
                cache_read,
                cache_write,
                estimated: false,
                credits: self.credits_micros.load(Ordering::Relaxed) as f64 / 1e6,
            },
        }
    }
}

/// One account's state in a store.
#[derive(Clone, Debug)]
pub struct AccountState {
    /// Its breaker (a handle on the store's health cell).
    pub health: Breaker,
    /// Its load and usage.
    pub load: Arc<dyn LoadCell>,
}

impl AccountState {
    /// Whether `self` and `other` are the same state (not merely equal counts).
    pub fn same_as(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.load), Arc::as_ptr(&other.load))
    }
}

/// Where the pool finds each account's state, by account name.
pub trait PoolStore: Send + Sync + std::fmt::Debug {
    /// The state of the account `name`, made healthy and idle under `health` when the store
    /// has none; the same name gives the same state until it is forgotten.
    fn account(&self, name: &str, health: &Arc<HealthConfig>) -> AccountState;
    /// `name` left the pool, or its next configuration is another account (new
    /// credentials): its state goes, and the next [`PoolStore::account`] starts afresh.
    /// Requests still holding the old state finish with it.
    fn forget(&self, name: &str);
}

/// The in-memory [`PoolStore`] (one process).
#[derive(Debug, Default)]
pub struct MemoryStore {
    accounts: Mutex<HashMap<Arc<str>, AccountState>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, AccountState>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PoolStore for MemoryStore {
    fn account(&self, name: &str, health: &Arc<HealthConfig>) -> AccountState {
        let mut accounts = self.lock();
        if let Some(state) = accounts.get(name) {
            return state.clone();
        }
        let state = AccountState {
            health: Breaker::new(Arc::clone(health)),
            load: Arc::new(MemoryLoad::default()),
        };
        accounts.insert(Arc::from(name), state.clone());
        state
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::health::State;
    use crate::model::Penalty;
    use std::time::Instant;

    #[test]
    fn a_name_keeps_its_state_until_forgotten() {
        let store = MemoryStore::new();
        let config = Arc::new(HealthConfig::default());
        let a = store.account("a", &config);
        a.load.begin();
        a.health.on_failure(
            &Penalty::Disable {
                reason: "suspended",
                until: None,
            },
            Instant::now(),
        );
        let again = store.account("a", &config);
        assert!(again.same_as(&a));
        assert_eq!(again.load.in_flight(), 1);
        assert!(!store.account("b", &config).same_as(&a));
        store.forget("a");
        let fresh = store.account("a", &config);
        assert!(!fresh.same_as(&a));
        assert_eq!(fresh.load.view(), LoadView::default());
        assert_eq!(fresh.health.snapshot(Instant::now()).state, State::Healthy);
        // The old state still counts for whoever holds it.
        a.load.end();
        assert_eq!(a.load.in_flight(), 0);
    }

    #[test]
    fn load_counts_requests_errors_and_tokens() {
        let load = MemoryLoad::default();
        load.begin();
        load.begin();
        load.end();
        load.record_error("rate_limited");
        load.record_error("upstream");
        load.record_error("rate_limited");
        load.record_usage(&TokenUsage {
            input: 10,
            output: 5,
            cache_read: 3,
            ..TokenUsage::default()
        });
        load.record_usage(&TokenUsage {
            input: 1,
            output: 2,
            cache_write: 7,
            estimated: true,
            ..TokenUsage::default()
        });
        let view = load.view();
        assert_eq!((view.in_flight, view.requests, view.errors), (1, 2, 3));
        assert_eq!(view.last_error, Some("rate_limited"));
        assert_eq!(view.errors_by_kind, [("rate_limited", 2), ("upstream", 1)]);
        assert!(view.last_used.is_some());
        assert_eq!(
            (
                view.tokens.input,
                view.tokens.output,
                view.tokens.cache_read,
                view.tokens.cache_write
            ),
            (11, 7, 3, 7)
        );
    }

    #[test]
    fn latency_is_a_peak_ewma() {
        let load = MemoryLoad::default();
        assert_eq!(load.latency_ns(), 0);
        load.record_latency(Duration::from_nanos(400));
        load.record_latency(Duration::from_nanos(1000));
        assert_eq!(load.latency_ns(), 1000, "a slower sample is taken at once");
        load.record_latency(Duration::from_nanos(200));
        assert_eq!(
            load.latency_ns(),
            800,
            "a faster one pulls it down by a quarter"
        );
    }
}

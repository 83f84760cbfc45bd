//! Model-tier layers: a pool of accounts, retry and per-account health, generic over the
//! request, response and error types of the model tier they wrap.
//!
//! They need three things of those types, each a small trait here:
//! - [`Failure`] on the error: whose fault it is ([`Fault`]), when to come back and what it
//!   means for the account that served it ([`Penalty`]), so every layer classifies with one
//!   call;
//! - [`Observe`] on the response: one end-of-stream hook, so load, breakers and latency are
//!   accounted when the stream ends, not when its headers arrive;
//! - [`HasExtensions`] on request and response: typed values between layers
//!   ([`SessionKey`], [`Attempts`], [`Served`]).
//!
//! | module | what it does | extensions |
//! |---|---|---|
//! | [`ready`] | always ready; each call waits (bounded) for the layers below to be ready, so layers above it that answer alone (cache hits, rate-limit refusals) never wait for an account | |
//! | [`retry`] | retries failures that happened before any byte reached the client (a `tower::retry` policy with backoff, jitter and a budget) | + [`Attempts`] (request and response) |
//! | [`pool`] | picks one account per request: session affinity, power of two choices over load, weights, concurrency caps, slow start; skips accounts the [`health`] breaker keeps out | ? [`SessionKey`], ? [`Attempts`]; response + [`Served`] |
//! | [`health`] | the per-account breaker and cooldowns the pool consults and feeds | |
//! | [`store`] | where each account's health and load live (in memory here; a shared store plugs in behind the same interfaces) | |

pub mod health;
pub mod pool;
pub mod ready;
pub mod retry;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The request itself: retrying it anywhere fails the same way; no account is to blame.
    Request,
    /// The account that served it (rate limit, quota, suspension, revoked token): another
    /// account may succeed; this one should rest.
    Account,
    /// The upstream or the way to it (5xx, network, timeout, broken stream): a retry may
    /// succeed, on this account or another.
    Upstream,
    /// The proxy itself (at capacity, no account available, a bug); nothing reached the
    /// upstream's judgement.
    Local,
}

/// Why an account rests: which kind of rate limit it hit, or a refusal that may be
/// temporary; each rests for its own time (kiro-protocol.md §7.1 and §13.4 have the texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitClass {
    /// "Due to suspicious activity ...": keep traffic off the account for long.
    Suspicious,
    /// A short window ("5-minute credit limit exceeded").
    ShortWindow,
    /// Any other 429.
    Plain,
    /// A 403 suspension ("temporarily suspended"): rests for long, then is tried again.
    Suspended,
    /// A 403 that is neither a stale token nor a recognised suspension: rests the same way.
    Forbidden,
}

/// What a failure means for the account that served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Nothing: the request's fault, the client's, or the proxy's.
    None,
    /// One failure towards the account's breaker.
    Failure,
    /// Rest the account: for `retry_after` when the upstream said so, else for the class's
    /// configured time.
    Cooldown {
        /// Which limit.
        class: RateLimitClass,
        /// The upstream's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Take the account out: until `until` (a quota reset), or until the operator acts.
    Disable {
        /// Short, non-secret reason code for status views (`suspended`, `quota_exhausted`).
        reason: &'static str,
        /// When it may serve again by itself.
        until: Option<SystemTime>,
    },
}

/// What the model-tier layers need to know about an error.
pub trait Failure {
    /// Whose fault it is.
    fn fault(&self) -> Fault;
    /// When to come back, when the failure says so.
    fn retry_after(&self) -> Option<Duration>;
    /// What it means for the account that served it.
    fn penalty(&self) -> Penalty {
        match self.fault() {
            Fault::Upstream | Fault::Account => Penalty::Failure,
            Fault::Request | Fault::Local => Penalty::None,
        }
    }
    /// Stable short label (closed vocabulary) for status views and logs.
    fn kind(&self) -> &'static str;
}

/// How a response stream ended, as the layers here see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// It reached its stop event.
    Complete,
    /// It failed; the fault says whose fault.
    Failed(Fault),
    /// The client went away first: nobody's fault, counts neither way.
    Abandoned,
}

/// Tokens a response used, as its stream reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens (uncached).
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Prompt tokens read from a cache.
    pub cache_read: u64,
    /// Prompt tokens written to a cache.
    pub cache_write: u64,
    /// True when the figures are a local estimate rather than the upstream's.
    pub estimated: bool,
}

/// What an observed response stream did, handed to every end-of-stream hook.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamReport {
    /// How it ended.
    pub end: StreamEnd,
    /// Stable short label of how it failed ([`Failure::kind`], `truncated`, `abandoned`), or
    /// `None` when it completed.
    pub error_kind: Option<&'static str>,
    /// From the response to the end of the stream.
    pub duration: Duration,
    /// From the response to its first content event, if any came.
    pub time_to_first_event: Option<Duration>,
    /// The last usage the stream reported.
    pub usage: Option<TokenUsage>,
}

/// A response whose end can be observed.
pub trait Observe: Sized {
    /// Calls `hook` once when the response stream ends, fails or is dropped, with a
    /// [`StreamReport`]. Whatever `hook` owns (a load guard, a permit) lives until then.
    fn on_stream_end(self, hook: impl FnOnce(&StreamReport) + Send + 'static) -> Self;
}

/// Requests and responses that carry typed extensions.
pub trait HasExtensions {
    /// The extensions.
    fn extensions(&self) -> &http::Extensions;
    /// The extensions, to add to.
    fn extensions_mut(&mut self) -> &mut http::Extensions;
}

impl<B> HasExtensions for http::Request<B> {
    fn extensions(&self) -> &http::Extensions {
        http::Request::extensions(self)
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        http::Request::extensions_mut(self)
    }
}

/// Keeps the requests of one conversation on one account while it is healthy (a hash of a
/// session id; see the pool's affinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey(pub u64);

impl SessionKey {
    /// The key of a session id (any stable string: a client's session id, a conversation id).
    pub fn of(id: &str) -> Self {
        // FNV-1a: stable across processes and releases (affinity survives restarts, and two
        // proxies behind one balancer agree), unlike the std hasher's random seed.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in id.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Self(hash)
    }
}

/// The attempts of one client request: the retry layer adds it (clones share it), the pool
/// records each account it tried, so a retry lands on another account when there is one.
/// Also put on the response, for the `x-aiproxy-attempts` header.
#[derive(Clone, Debug, Default)]
pub struct Attempts(Arc<std::sync::Mutex<Vec<Arc<str>>>>);

impl Attempts {
    /// Accounts tried so far, in order.
    pub fn tried(&self) -> Vec<Arc<str>> {
        self.lock().clone()
    }

    /// How many attempts were made.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn record(&self, account: Arc<str>) {
        self.lock().push(account);
    }

    pub(crate) fn has_tried(&self, account: &str) -> bool {
        self.lock().iter().any(|a| &**a == account)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<str>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which pool member served a response (its name; never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served(pub Arc<str>);

/// A fast per-thread random number (xorshift seeded from the std hasher's random keys):
/// good enough to spread load and jitter waits, not for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A random duration in `[0, cap)` (zero when `cap` is): the jitter of retries and
/// cooldowns.
pub(crate) fn random_below(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % nanos)
}

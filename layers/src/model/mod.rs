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
//!   ([`SessionKey`], [`Attempts`], [`AccountId`]).
//!
//! | module | what it does | extensions |
//! |---|---|---|
//! | [`ready`] | always ready; each call waits (bounded) for the layers below to be ready, so layers above it that answer alone (cache hits, rate-limit refusals) never wait for an account | |
//! | [`retry`] | retries failures that happened before any byte reached the client (a `tower::retry` policy with backoff, jitter and a budget) | + [`Attempts`] (request and response) |
//! | [`pool`] | picks one account per request: session affinity, power of two choices over load, weights, concurrency caps, slow start; skips accounts the [`health`] breaker keeps out | ? [`SessionKey`], ? [`Attempts`]; response + [`AccountId`] |
//! | [`health`] | the per-account breaker and cooldowns the pool consults and feeds | |
//! | [`store`] | where each account's health and load live (in memory here; a shared store plugs in behind the same interfaces) | |

pub mod health;
pub mod pool;
pub mod ready;
pub mod retry;
pub mod store;

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
/// temporary; each rests for its own time (docs/kiro-protocol.md §7.1 and §13.4 have the texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// The request should go again at once, changed as this failure asks (a refreshed
    /// token, a reminder after an empty answer, reasoning sent inline): the retry layer
    /// sends it with no backoff, counted against the same retries and budget as any retry,
    /// so every upstream call a client request costs is one it sees. `None`: an ordinary
    /// failure, retried (or not) by its [`Failure::fault`].
    fn resend(&self) -> Option<Resend> {
        None
    }
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

/// Tokens (and the upstream's credits) a response used, as its stream reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// What the upstream billed for the answer, in its own unit (Kiro's credits), when it
    /// said; 0 otherwise.
    pub credits: f64,
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

/// One upstream attempt of a client request: which account, why it was made, how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The account it went to.
    pub account: Arc<str>,
    /// Why it was made: [`FIRST`], [`RETRY`] (after a failure, on another account when there
    /// is one), or the [`Resend::kind`] of the failure before it (`refresh`, `nudge`, ...).
    pub kind: &'static str,
    /// How it failed ([`Failure::kind`]), or `None` when it answered (or is still out).
    pub error: Option<&'static str>,
}

/// [`Attempt::kind`] of a request's first attempt.
pub const FIRST: &str = "first";
/// [`Attempt::kind`] of an attempt after a failure (backoff, another account).
pub const RETRY: &str = "retry";

/// A failure that asks to be sent again at once, changed (see [`Failure::resend`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resend {
    /// Why, as the next [`Attempt::kind`] says it (a short, closed vocabulary).
    pub kind: &'static str,
    /// Send it to the same account (the change is that account's: a refreshed token).
    pub same_account: bool,
}

#[derive(Debug)]
struct Record {
    list: Vec<Attempt>,
    /// Why the next attempt will be made.
    next_kind: &'static str,
    /// The next attempt should go to the account of the last one.
    stay: bool,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            next_kind: FIRST,
            stay: false,
        }
    }
}

/// The upstream attempts of one client request, in order: the pool adds each account it
/// sends the request to and how that call ended, the retry layer says why the next one is
/// made; the leaf reads what the earlier attempts ran into (to send a reminder, or
/// reasoning inline), the metrics count them by kind, the adapter lists them in the span and
/// the `x-aiproxy-attempts` header.
///
/// Shared (clones are one record), because each attempt is a clone of the request: the
/// adapter puts one on the request, and the retry layer adds one where no layer above did.
#[derive(Clone, Debug, Default)]
pub struct Attempts(Arc<std::sync::Mutex<Record>>);

impl Attempts {
    /// Accounts tried so far, in order.
    pub fn tried(&self) -> Vec<Arc<str>> {
        self.lock()
            .list
            .iter()
            .map(|a| Arc::clone(&a.account))
            .collect()
    }

    /// Calls `f` with every attempt so far, in order (no copy of the list).
    pub fn each(&self, f: impl FnMut(&Attempt)) {
        self.lock().list.iter().for_each(f);
    }

    /// How many attempts were made.
    pub fn count(&self) -> usize {
        self.lock().list.len()
    }

    /// Whether an earlier attempt failed with `kind` ([`Failure::kind`]).
    pub fn any_failed_with(&self, kind: &str) -> bool {
        self.lock().list.iter().any(|a| a.error == Some(kind))
    }

    /// `acct-a first upstream_error, acct-a retry ok`: the attempts for a span or log line.
    pub fn summary(&self) -> String {
        let record = self.lock();
        let mut out = String::new();
        for (i, attempt) in record.list.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let ended = attempt.error.unwrap_or("ok");
            out.push_str(&format!("{} {} {ended}", attempt.account, attempt.kind));
        }
        out
    }

    /// An attempt goes to `account` (the pool).
    pub(crate) fn record(&self, account: Arc<str>) {
        let mut record = self.lock();
        let kind = std::mem::replace(&mut record.next_kind, RETRY);
        record.stay = false;
        record.list.push(Attempt {
            account,
            kind,
            error: None,
        });
    }

    /// The last attempt ended (the pool, when its account answered): with `error`'s kind, or
    /// answered (`None`).
    pub(crate) fn settle(&self, error: Option<&'static str>) {
        if let Some(last) = self.lock().list.last_mut() {
            last.error = error;
        }
    }

    /// The next attempt is made for `kind`, on the same account when `stay`.
    pub(crate) fn plan(&self, kind: &'static str, stay: bool) {
        let mut record = self.lock();
        record.next_kind = kind;
        record.stay = stay;
    }

    /// The account the next attempt should stay on, if it should.
    pub(crate) fn stay_on(&self) -> Option<Arc<str>> {
        let record = self.lock();
        record
            .stay
            .then(|| record.list.last().map(|a| Arc::clone(&a.account)))
            .flatten()
    }

    pub(crate) fn has_tried(&self, account: &str) -> bool {
        self.lock().list.iter().any(|a| &*a.account == account)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which account served a response (its configured name; never a secret): the leaf sets it,
/// or the pool when the leaf did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountId(pub Arc<str>);

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

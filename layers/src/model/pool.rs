//! The account pool: one inner service per account, one account per request.
//!
//! Choice, in order:
//! 1. **Candidates**: accounts the [`Breaker`](super::health::Breaker) admits, below their `max_concurrency`, not yet
//!    tried by this request's earlier attempts ([`Attempts`]; tried ones only when nothing
//!    else is left). An account in **slow start** (just added or just recovered) is a
//!    candidate with a probability that ramps from 10 % to 100 % over `slow_start`, so it gets
//!    a growing share of traffic instead of all of it at once (the first members of an
//!    empty pool do not ramp: there is nobody to shift traffic from).
//! 2. **Session affinity**: a request with a [`SessionKey`] goes to the candidate that ranks
//!    first for that key (rendezvous hashing), so one conversation stays on one account
//!    while that account is healthy (Kiro's prompt cache stays warm and Kiro sees one user),
//!    and moves as little as possible when accounts come and go.
//! 3. Otherwise **power of two choices**: two random candidates, the one with the lower load
//!    wins. Load is the in-flight count ([`Balance::InFlight`]) or the
//!    peak-EWMA of the time to first event (the inner future's duration) times in-flight ([`Balance::PeakEwma`]); in-flight
//!    counts last until the response stream ends ([`Observe`]). The two are drawn with
//!    probability proportional to `weight`, so idle accounts split traffic by weight.
//!
//! **Panic mode** (Envoy's panic threshold): the upstream's own faults (5xx, broken streams,
//! timeouts) open an account's breaker only to send its traffic to the others. When fewer
//! than `panic_threshold` of the accounts can serve (half by default), the accounts kept out
//! by their breaker alone are admitted anyway: one flaky minute at the upstream must not
//! turn into an outage of the whole pool (with one account, of everything). The accounts'
//! own faults (rate limits, suspensions, quotas, revoked tokens) keep them out in panic mode
//! too. A request that fails still fails; the next one gets its chance, and a success
//! closes the breaker. [`Pool::status`] says when the pool is in panic mode and how many
//! requests it routed so.
//!
//! A pool-wide **rate-limit wave** (more than half of the accounts cooling down at once)
//! halves the concurrency caps of the others, so admission slows instead of burning
//! through the accounts that are left.
//!
//! A **per-account guard** (`requests_per_minute`, governor's GCRA) keeps an account below
//! the request rate its owner set, whatever the clients send: an account at its guard is
//! passed over for the others; when every candidate is at its guard, the call waits for the
//! first to have room (up to [`GUARD_MAX_WAIT`]), then fails with [`NoAccount`] naming when.
//!
//! No candidate at all: the call fails at once with [`NoAccount`] (retry-after = the earliest
//! recovery, and a message naming every account's state). All candidates full: `poll_ready`
//! is pending until a stream ends.
//!
//! # Example: an account's own 429 rests it, the other serves (mocks of feature `testing`)
//!
//! ```
//! use aiproxy_layers::model::health::State;
//! use aiproxy_layers::model::pool::{MemberSpec, Pool, PoolConfig};
//! use aiproxy_layers::model::{Fault, Penalty, RateLimitClass, StreamEnd};
//! use aiproxy_layers::testing::{MockAccount, MockError, MockRequest};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
//! let spec = |name: &str| MemberSpec {
//!     name: Arc::from(name),
//!     weight: 1,
//!     max_concurrency: 4,
//!     requests_per_minute: None,
//! };
//! let pool = Pool::new(
//!     PoolConfig { slow_start: Duration::ZERO, ..PoolConfig::default() },
//!     vec![(spec("a"), a.clone()), (spec("b"), b.clone())],
//! );
//! a.fail_always(Some(MockError::penalty(
//!     Fault::Account,
//!     Penalty::Cooldown { class: RateLimitClass::Plain, retry_after: None },
//! )));
//! // A request may land on `a` before the pool has met its 429 (the retry layer above
//! // would send it on); after that `a` rests and every request goes to `b`.
//! for _ in 0..8 {
//!     if let Ok(answer) = pool.clone().oneshot(MockRequest::default()).await {
//!         assert_eq!(answer.account, "b");
//!         answer.end(StreamEnd::Complete);
//!     }
//! }
//! assert!(a.calls() <= 1, "a rests after its 429");
//! let status = pool.status();
//! assert_eq!(status.members[0].health.state, State::Cooldown);
//! assert!(!status.panic, "b serves, so the pool is not in panic mode");
//! # }
//! ```

use super::health::{Admission, HealthConfig, Snapshot, State};
use super::store::{AccountState, LoadCell, LoadView, MemoryStore, PoolStore};
use super::{
    random_u64, AccountId, Attempts, Failure, Fault, HasExtensions, Observe, Penalty, SessionKey,
    StreamEnd,
};
use crate::quota::RequestQuota;
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::RateLimiter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};
use tower_service::Service;

/// How the pool weighs load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Requests in flight (streams count until they end).
    #[default]
    InFlight,
    /// Peak-EWMA of the time to first event, times (in flight + 1).
    PeakEwma,
}

/// The pool's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Breaker settings of every account.
    pub health: Arc<HealthConfig>,
    /// How long a new or recovered account ramps up (zero: no ramp).
    pub slow_start: Duration,
    /// The load measure.
    pub balance: Balance,
    /// Below this share of accounts able to serve, the ones kept out by their breaker alone
    /// serve anyway (panic mode; see the module docs). 0 turns panic mode off.
    pub panic_threshold: f64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            health: Arc::new(HealthConfig::default()),
            slow_start: Duration::from_secs(60),
            balance: Balance::default(),
            panic_threshold: 0.5,
        }
    }
}

/// One account of the pool, as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSpec {
    /// Display name (unique in the pool; never a secret).
    pub name: Arc<str>,
    /// Relative share of traffic (>= 1).
    pub weight: u32,
    /// Most requests in flight at once.
    pub max_concurrency: usize,
    /// Most requests sent to it per minute (and at once), whatever the clients send.
    pub requests_per_minute: Option<RequestQuota>,
}

/// The longest a request waits for an account's per-minute guard before it fails.
pub const GUARD_MAX_WAIT: Duration = Duration::from_secs(10);

/// An account's per-minute guard.
struct Guard {
    quota: RequestQuota,
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("quota", &self.quota).finish()
    }
}

impl Guard {
    fn new(quota: RequestQuota) -> Arc<Self> {
        Arc::new(Self {
            quota,
            limiter: RateLimiter::direct(quota.governor()),
        })
    }

    /// Takes one request, or says how long until one is free.
    fn take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// No account can take the request now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoAccount {
    /// Every account's state, e.g. `all 2 accounts are unavailable: a (cooldown:
    /// rate_limited, back in 12 s), b (disabled: suspended)`.
    pub message: String,
    /// When the first of them is expected back, if any is.
    pub retry_after: Option<Duration>,
}

#[derive(Debug)]
struct Member<S> {
    spec: MemberSpec,
    /// The name's hash, for rendezvous ranking (computed once, not per request).
    name_key: SessionKey,
    service: S,
    /// Its health (the breaker) and load, as the store holds them.
    state: AccountState,
    added_at: Instant,
    guard: Option<Arc<Guard>>,
}

impl<S> Member<S> {
    fn load(&self, balance: Balance) -> f64 {
        let in_flight = self.state.load.everywhere_in_flight() as f64 + 1.0;
        match balance {
            Balance::InFlight => in_flight,
            Balance::PeakEwma => {
                // An account with no sample yet looks as fast as the best (1 ms).
                let ewma = self.state.load.latency_ns().max(1_000_000);
                ewma as f64 * in_flight
            }
        }
    }

    /// Below its concurrency cap; during a rate-limit wave (see [`Admitted`]) the cap is
    /// halved, so the accounts still serving are not burnt through as well.
    fn has_room(&self, wave: bool) -> bool {
        let cap = self.spec.max_concurrency.max(1);
        let cap = if wave { (cap / 2).max(1) } else { cap };
        self.state.load.in_flight() < cap
    }
}

/// The members a request may go to now.
struct Admitted<'a, S> {
    list: Vec<&'a Arc<Member<S>>>,
    /// A pool-wide rate-limit wave is on (see [`Pool::admitted`]).
    wave: bool,
    /// How many members at the end of `list` are there only because the pool is in panic
    /// mode (their breaker keeps them out).
    panicked: usize,
}

/// The pool as a whole, for status views.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    /// Every member's state, in configuration order.
    pub members: Vec<MemberView>,
    /// The pool is in panic mode now: too few accounts can serve, so the ones kept out by
    /// their breaker alone serve too.
    pub panic: bool,
    /// Requests routed to an account that only panic mode admitted, since start.
    pub panic_requests: u64,
}

/// A member's view for status pages (never a secret).
#[derive(Clone, Debug)]
pub struct MemberView {
    /// What was configured.
    pub spec: MemberSpec,
    /// Breaker state.
    pub health: Snapshot,
    /// Load, counters and tokens.
    pub load: LoadView,
}

struct Shared<S> {
    config: PoolConfig,
    store: Arc<dyn PoolStore>,
    members: RwLock<Arc<Vec<Arc<Member<S>>>>>,
    waiters: Mutex<Vec<Waker>>,
    waiting: AtomicUsize,
    /// Requests routed by panic mode (see [`PoolStatus::panic_requests`]).
    panic_requests: AtomicU64,
    /// Whether the last pick was in panic mode, so entering and leaving it is logged once.
    in_panic: AtomicBool,
}

/// The pool service (see the module docs). Cheap to clone; clones share the accounts.
pub struct Pool<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> std::fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("members", &self.members().len())
            .finish_non_exhaustive()
    }
}

impl<S> Pool<S> {
    /// A pool of `members` (each its spec and its service), their state held in memory.
    pub fn new(config: PoolConfig, members: Vec<(MemberSpec, S)>) -> Self {
        Self::with_store(config, Arc::new(MemoryStore::new()), members)
    }

    /// A pool of `members` whose health and load live in `store`.
    pub fn with_store(
        config: PoolConfig,
        store: Arc<dyn PoolStore>,
        members: Vec<(MemberSpec, S)>,
    ) -> Self {
        let pool = Self {
            shared: Arc::new(Shared {
                config,
                store,
                members: RwLock::new(Arc::new(Vec::new())),
                waiters: Mutex::new(Vec::new()),
                waiting: AtomicUsize::new(0),
                panic_requests: AtomicU64::new(0),
                in_panic: AtomicBool::new(false),
            }),
        };
        pool.replace(members, false);
        pool
    }

    fn members(&self) -> Arc<Vec<Arc<Member<S>>>> {
        Arc::clone(
            &self
                .shared
                .members
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Replaces the member list (a pool file reload): accounts that stay keep their state
    /// and counters from the store (a disabled one gets another chance when
    /// `operator_acted`: see [`Breaker::reset`](super::health::Breaker::reset)), new ones (and ones [`Pool::forget`] was
    /// called for) join afresh in slow start, removed ones take no new requests and drain
    /// the ones they have.
    pub fn replace(&self, members: Vec<(MemberSpec, S)>, operator_acted: bool) {
        let now = Instant::now();
        let old = self.members();
        let store = &self.shared.store;
        let established = now
            .checked_sub(self.shared.config.slow_start)
            .unwrap_or(now);
        for gone in old
            .iter()
            .filter(|m| !members.iter().any(|(spec, _)| spec.name == m.spec.name))
        {
            store.forget(&gone.spec.name);
        }
        let next: Vec<Arc<Member<S>>> = members
            .into_iter()
            .map(|(spec, service)| {
                let state = store.account(&spec.name, &self.shared.config.health);
                let kept = old
                    .iter()
                    .find(|m| m.spec.name == spec.name && m.state.same_as(&state));
                if operator_acted && kept.is_some() {
                    state.health.reset(now);
                }
                // Members of a pool that had none do not ramp: the ramp shifts traffic
                // from the accounts already serving, and there are none to shift it from.
                let added_at = kept.map_or(if old.is_empty() { established } else { now }, |m| {
                    m.added_at
                });
                // A guard whose limit stays keeps what was spent (a reload is no reset).
                let guard = spec.requests_per_minute.map(|quota| {
                    kept.and_then(|m| m.guard.clone())
                        .filter(|g| g.quota == quota)
                        .unwrap_or_else(|| Guard::new(quota))
                });
                Arc::new(Member {
                    guard,
                    name_key: SessionKey::of(&spec.name),
                    spec,
                    service,
                    state,
                    added_at,
                })
            })
            .collect();
        *self
            .shared
            .members
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.shared.wake_all();
    }

    /// Takes `name` out until `until`, or until the operator acts (`reason`: a short code
    /// for status views).
    pub fn disable(&self, name: &str, reason: &'static str, until: Option<SystemTime>) {
        if let Some(member) = self.named(name) {
            member
                .state
                .health
                .on_failure(&Penalty::Disable { reason, until }, Instant::now());
        }
    }

    /// Something outside user traffic (the health probe's chat) failed on `name` with
    /// `penalty`: counted as a request's failure would be (an error of `kind`, then the
    /// breaker or a cooldown).
    pub fn penalise(&self, name: &str, penalty: &Penalty, kind: &'static str) {
        if let Some(member) = self.named(name) {
            record_failure(&member, penalty, kind);
        }
    }

    /// The next configuration of `name` is another account (new credentials): its health
    /// and counters start afresh at the next [`Pool::replace`], in slow start.
    pub fn forget(&self, name: &str) {
        self.shared.store.forget(name);
    }

    /// The health probe found `name` able to serve (see [`Breaker::on_probe_ok`](super::health::Breaker::on_probe_ok)).
    pub fn probe_passed(&self, name: &str) {
        if let Some(member) = self.named(name) {
            member.state.health.on_probe_ok(Instant::now());
        }
    }

    /// The operator reset `name`'s breaker (see [`HealthEvent::OperatorClear`](super::health::HealthEvent::OperatorClear)).
    /// Returns whether the pool has such a member.
    pub fn reset_breaker(&self, name: &str) -> bool {
        let Some(member) = self.named(name) else {
            return false;
        };
        member.state.health.clear(Instant::now());
        self.shared.wake_all();
        true
    }

    /// The member called `name` (names are unique).
    fn named(&self, name: &str) -> Option<Arc<Member<S>>> {
        self.members()
            .iter()
            .find(|m| &*m.spec.name == name)
            .cloned()
    }

    /// Every member's state, in configuration order.
    pub fn views(&self) -> Vec<MemberView> {
        views_of(&self.members(), Instant::now())
    }

    /// The pool as a whole: every member's state and whether it is in panic mode.
    pub fn status(&self) -> PoolStatus {
        let now = Instant::now();
        let members = self.members();
        let panicked = self.admitted(&members, now).panicked;
        PoolStatus {
            members: views_of(&members, now),
            panic: panicked > 0,
            panic_requests: self.shared.panic_requests.load(Ordering::Relaxed),
        }
    }

    /// The members admitted now, whether a pool-wide rate-limit wave is on (more than half
    /// of the accounts cooling down after 429s at once: Kiro limits accounts together when
    /// it limits one client, docs/kiro-protocol.md §13.4, so the rest get less traffic, not all
    /// of it), and the members only panic mode admits.
    fn admitted<'a>(&self, members: &'a [Arc<Member<S>>], now: Instant) -> Admitted<'a, S> {
        let mut cooling = 0;
        let mut list = Vec::with_capacity(members.len());
        let mut broken = Vec::new();
        for member in members {
            let (admission, state) = member.state.health.peek_state(now);
            cooling += usize::from(state == State::Cooldown);
            if admission.admits() {
                list.push(member);
            } else if matches!(state, State::Open | State::HalfOpen) {
                // Out for the upstream's faults only (the breaker), not the account's own.
                broken.push(member);
            }
        }
        let threshold = self.shared.config.panic_threshold;
        let panic = !broken.is_empty() && (list.len() as f64) < members.len() as f64 * threshold;
        let panicked = if panic { broken.len() } else { 0 };
        if panic {
            list.extend(broken);
        }
        Admitted {
            list,
            wave: members.len() >= 2 && cooling * 2 > members.len(),
            panicked,
        }
    }

    /// Logs entering and leaving panic mode once each.
    fn note_panic(&self, panic: bool, admitted: usize, total: usize) {
        // A load first: the hot path only reads the shared flag (no write per request).
        if self.shared.in_panic.load(Ordering::Relaxed) == panic
            || self.shared.in_panic.swap(panic, Ordering::Relaxed) == panic
        {
            return;
        }
        if panic {
            tracing::warn!(
                usable = admitted,
                accounts = total,
                "too few accounts can serve: the pool is in panic mode and sends traffic to \
                 accounts whose breaker is open (the upstream's faults) rather than refuse it"
            );
        } else {
            tracing::info!("the pool left panic mode: enough accounts serve again");
        }
    }

    /// Picks the account for one request, or says why there is none.
    fn pick(
        &self,
        members: &[Arc<Member<S>>],
        session: Option<SessionKey>,
        attempts: Option<&Attempts>,
        now: Instant,
    ) -> Result<Arc<Member<S>>, Pick> {
        let all = self.admitted(members, now);
        self.note_panic(
            all.panicked > 0,
            all.list.len() - all.panicked,
            members.len(),
        );
        let in_panic = all.panicked > 0;
        let chosen = self.choose(all.list, all.wave, members, session, attempts, now)?;
        // Only panic mode admits an account its breaker does not.
        if in_panic && !chosen.state.health.peek(now).admits() {
            self.shared.panic_requests.fetch_add(1, Ordering::Relaxed);
        }
        Ok(chosen)
    }

    /// [`Pool::pick`]'s choice among the `admitted` members.
    fn choose(
        &self,
        admitted: Vec<&Arc<Member<S>>>,
        wave: bool,
        members: &[Arc<Member<S>>],
        session: Option<SessionKey>,
        attempts: Option<&Attempts>,
        now: Instant,
    ) -> Result<Arc<Member<S>>, Pick> {
        let config = &self.shared.config;
        if admitted.is_empty() {
            return Err(Pick::None(no_account(members, now)));
        }
        // A resend that belongs to the account it failed on (a refreshed token) stays there
        // while it can take it.
        if let Some(stay) = attempts.and_then(Attempts::stay_on) {
            let same = admitted
                .iter()
                .find(|m| m.spec.name == stay && m.has_room(wave));
            if let Some(member) = same {
                if member.guard.as_ref().is_none_or(|g| g.take().is_ok()) {
                    return Ok(Arc::clone(member));
                }
            }
        }
        let untried = |m: &&&Arc<Member<S>>| attempts.is_none_or(|a| !a.has_tried(&m.spec.name));
        let mut candidates: Vec<&Arc<Member<S>>> = admitted
            .iter()
            .filter(|m| m.has_room(wave))
            .filter(untried)
            .copied()
            .collect();
        if candidates.is_empty() {
            // Every untried account is full or gone: a tried one with room beats waiting.
            candidates = admitted
                .iter()
                .filter(|m| m.has_room(wave))
                .copied()
                .collect();
        }
        if candidates.is_empty() {
            // All full (a race with poll_ready): the least loaded waits for a slot.
            candidates = admitted;
        }
        // Accounts the ramp holds back this time are the fallback when the others are at
        // their guards.
        let mut held_back = Vec::new();
        if session.is_none() && !config.slow_start.is_zero() && candidates.len() > 1 {
            let (ramped, rest): (Vec<_>, Vec<_>) = candidates.iter().partition(|m| {
                let since = m
                    .state
                    .health
                    .recovered_at()
                    .map_or(m.added_at, |r| r.max(m.added_at));
                ramp_admits(now.saturating_duration_since(since), config.slow_start)
            });
            if !ramped.is_empty() {
                candidates = ramped;
                held_back = rest;
            }
        }
        // The chosen account's guard takes the request, or the account is passed over.
        let mut guarded: Option<Duration> = None;
        for mut group in [candidates, held_back] {
            loop {
                let chosen = match session {
                    Some(key) => group
                        .iter()
                        .max_by_key(|m| rendezvous(key, m.name_key))
                        .copied(),
                    None => p2c(&group, config.balance),
                };
                let Some(chosen) = chosen else { break };
                match chosen.guard.as_ref().map_or(Ok(()), |g| g.take()) {
                    Ok(()) => return Ok(Arc::clone(chosen)),
                    Err(wait) => {
                        guarded = Some(guarded.map_or(wait, |w| w.min(wait)));
                        group.retain(|m| !Arc::ptr_eq(m, chosen));
                    }
                }
            }
        }
        Err(match guarded {
            Some(wait) => Pick::Guarded(wait),
            None => Pick::None(no_account(members, now)),
        })
    }
}

impl<S> Shared<S> {
    fn wake_all(&self) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let wakers = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        self.waiting.store(0, Ordering::Release);
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Why [`Pool::pick`] found no account.
enum Pick {
    /// None can serve.
    None(NoAccount),
    /// Every candidate is at its per-minute guard; the first has room again after this.
    Guarded(Duration),
}

/// Whether an account `age` into its slow start is a candidate this time: with probability
/// ramping linearly from 10 % to 100 %.
fn ramp_admits(age: Duration, window: Duration) -> bool {
    if age >= window {
        return true;
    }
    let share = 0.1 + 0.9 * age.as_secs_f64() / window.as_secs_f64();
    (random_u64() % 10_000) as f64 / 10_000.0 < share
}

/// Every member's view as of `now`, in configuration order.
fn views_of<S>(members: &[Arc<Member<S>>], now: Instant) -> Vec<MemberView> {
    members
        .iter()
        .map(|m| MemberView {
            spec: m.spec.clone(),
            health: m.state.health.snapshot(now),
            load: m.state.load.view(),
        })
        .collect()
}

/// Power of two choices: two distinct candidates drawn with probability proportional to
/// their weight, the less loaded wins (ties: the first drawn), so equal loads split traffic
/// by weight and unequal loads go to the idler account.
fn p2c<'a, S>(candidates: &[&'a Arc<Member<S>>], balance: Balance) -> Option<&'a Arc<Member<S>>> {
    let first = weighted_draw(candidates, None)?;
    let Some(second) = weighted_draw(candidates, Some(first)) else {
        return Some(candidates[first]);
    };
    let (a, b) = (candidates[first], candidates[second]);
    Some(if b.load(balance) < a.load(balance) {
        b
    } else {
        a
    })
}

/// Index of a candidate drawn with probability proportional to its weight, `skip` excluded.
fn weighted_draw<S>(candidates: &[&Arc<Member<S>>], skip: Option<usize>) -> Option<usize> {
    let weight = |i: usize| u64::from(candidates[i].spec.weight.max(1));
    let total: u64 = (0..candidates.len())
        .filter(|i| Some(*i) != skip)
        .map(weight)
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = random_u64() % total;
    (0..candidates.len())
        .filter(|i| Some(*i) != skip)
        .find(|i| {
            let w = weight(*i);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
}

/// Rank of a member (by its name's key) for `key`: the highest wins (rendezvous hashing).
fn rendezvous(key: SessionKey, name_key: SessionKey) -> u64 {
    mix(key.0 ^ name_key.0)
}

/// A 64-bit finaliser (splitmix64), so that nearby inputs rank far apart.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn no_account<S>(members: &[Arc<Member<S>>], now: Instant) -> NoAccount {
    if members.is_empty() {
        return NoAccount {
            message: "the pool has no accounts; add one to the pool file".into(),
            retry_after: None,
        };
    }
    let mut earliest: Option<Duration> = None;
    let states: Vec<String> = members
        .iter()
        .map(|m| {
            let snapshot = m.state.health.snapshot(now);
            let back = match m.state.health.peek(now) {
                Admission::Closed { until: Some(at) } => {
                    let wait = at.saturating_duration_since(now);
                    earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
                    format!(", back in {} s", wait.as_secs().max(1))
                }
                _ => String::new(),
            };
            let reason = snapshot.reason.unwrap_or("trial in flight");
            format!(
                "{} ({}: {reason}{back})",
                m.spec.name,
                snapshot.state.as_str()
            )
        })
        .collect();
    NoAccount {
        message: format!(
            "all {} accounts are unavailable: {}",
            members.len(),
            states.join(", ")
        ),
        retry_after: earliest.map(|d| d.max(Duration::from_secs(1))),
    }
}

/// The future of one request sent to a member.
type Sent<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// Holds one in-flight slot of a member until dropped.
struct Load<S> {
    shared: Arc<Shared<S>>,
    cell: Arc<dyn LoadCell>,
}

impl<S> Drop for Load<S> {
    fn drop(&mut self) {
        self.cell.end();
        self.shared.wake_all();
    }
}

impl<S, Req> Service<Req> for Pool<S>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Observe + HasExtensions + Send + 'static,
    S::Error: Failure + From<NoAccount> + Send + 'static,
    S::Future: Send + 'static,
    Req: HasExtensions + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let now = Instant::now();
        let ready = |members: &[Arc<Member<S>>]| {
            let Admitted { list, wave, .. } = self.admitted(members, now);
            // Nobody admitted: ready, so that the call answers NoAccount at once.
            list.is_empty() || list.iter().any(|m| m.has_room(wave))
        };
        if ready(&self.members()) {
            return Poll::Ready(Ok(()));
        }
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        // Checked again under the lock: a slot freed since the first look is not missed.
        if ready(&self.members()) {
            return Poll::Ready(Ok(()));
        }
        waiters.push(cx.waker().clone());
        Poll::Pending
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let session = request.extensions().get::<SessionKey>().copied();
        let attempts = request.extensions().get::<Attempts>().cloned();
        let first = self.pick(&self.members(), session, attempts.as_ref(), Instant::now());
        match first {
            Ok(member) => self.send(member, request, attempts),
            Err(Pick::None(none)) => Box::pin(std::future::ready(Err(S::Error::from(none)))),
            Err(Pick::Guarded(wait)) => {
                // Every candidate is at its guard: wait for the first to have room.
                let mut pool = self.clone();
                let deadline = Instant::now() + GUARD_MAX_WAIT;
                Box::pin(async move {
                    let mut wait = wait;
                    loop {
                        let now = Instant::now();
                        if now + wait > deadline {
                            return Err(S::Error::from(guarded(&pool.members(), wait)));
                        }
                        tokio::time::sleep(wait).await;
                        let members = pool.members();
                        match pool.pick(&members, session, attempts.as_ref(), Instant::now()) {
                            Ok(member) => return pool.send(member, request, attempts).await,
                            Err(Pick::None(none)) => return Err(S::Error::from(none)),
                            Err(Pick::Guarded(next)) => wait = next,
                        }
                    }
                })
            }
        }
    }
}

impl<S> Pool<S> {
    /// Sends `request` to `member`, accounting its load until the stream ends.
    fn send<Req>(
        &mut self,
        member: Arc<Member<S>>,
        request: Req,
        attempts: Option<Attempts>,
    ) -> Sent<S::Response, S::Error>
    where
        S: Service<Req> + Clone + Send + Sync + 'static,
        S::Response: Observe + HasExtensions + Send + 'static,
        S::Error: Failure + Send + 'static,
        S::Future: Send + 'static,
        Req: Send + 'static,
    {
        let now = Instant::now();
        // Claims the half-open trial when it is one (peek did not).
        let _ = member.state.health.admit(now);
        if let Some(attempts) = &attempts {
            attempts.record(Arc::clone(&member.spec.name));
        }
        let cell = Arc::clone(&member.state.load);
        cell.begin();
        let load = Load {
            shared: Arc::clone(&self.shared),
            cell,
        };
        let mut service = member.service.clone();
        Box::pin(async move {
            let result = match std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                Ok(()) => service.call(request).await,
                Err(error) => Err(error),
            };
            // The attempt ends here, whichever layer (if any) calls again.
            if let Some(attempts) = &attempts {
                attempts.settle(result.as_ref().err().map(Failure::kind));
            }
            match result {
                Err(error) => {
                    record_failure(&member, &error.penalty(), error.kind());
                    drop(load);
                    Err(error)
                }
                Ok(mut response) => {
                    // The inner future resolves at the first upstream event: its duration is
                    // the account's time to first token, the latency peak-EWMA weighs.
                    member.state.load.record_latency(now.elapsed());
                    if response.extensions().get::<AccountId>().is_none() {
                        response
                            .extensions_mut()
                            .insert(AccountId(Arc::clone(&member.spec.name)));
                    }
                    Ok(response.on_stream_end(move |report| {
                        drop(load);
                        if let Some(usage) = &report.usage {
                            member.state.load.record_usage(usage);
                        }
                        let now = Instant::now();
                        match report.end {
                            StreamEnd::Complete => member.state.health.on_success(now),
                            StreamEnd::Failed(Fault::Upstream | Fault::Account) => {
                                record_failure(&member, &Penalty::Failure, "stream_failed")
                            }
                            StreamEnd::Failed(_) | StreamEnd::Abandoned => {
                                member.state.health.on_neutral()
                            }
                        }
                    }))
                }
            }
        })
    }
}

/// Every candidate stayed at its per-minute guard for longer than a request waits.
fn guarded<S>(members: &[Arc<Member<S>>], wait: Duration) -> NoAccount {
    let limits: Vec<String> = members
        .iter()
        .filter_map(|m| {
            let quota = m.guard.as_ref()?.quota;
            Some(format!("{} ({}/min)", m.spec.name, quota.per_minute))
        })
        .collect();
    NoAccount {
        message: format!(
            "every account that could serve is at its requestsPerMinute guard: {}; the first \
             has room again in {} s. Retry then, or raise requestsPerMinute in the pool file",
            limits.join(", "),
            wait.as_secs().max(1)
        ),
        retry_after: Some(wait.max(Duration::from_secs(1))),
    }
}

fn record_failure<S>(member: &Member<S>, penalty: &Penalty, kind: &'static str) {
    if *penalty == Penalty::None {
        member.state.health.on_neutral();
        return;
    }
    member.state.load.record_error(kind);
    match penalty {
        Penalty::Cooldown {
            class: crate::model::RateLimitClass::Suspicious,
            ..
        } => tracing::warn!(
            account = %member.spec.name,
            "the upstream reports suspicious activity on this account; it rests for the long cooldown"
        ),
        Penalty::Cooldown {
            class: crate::model::RateLimitClass::Suspended | crate::model::RateLimitClass::Forbidden,
            ..
        } => tracing::warn!(
            account = %member.spec.name,
            kind,
            "the upstream refused this account (suspended or forbidden); it rests and is tried again later"
        ),
        Penalty::Cooldown { .. } => {
            tracing::info!(account = %member.spec.name, kind, "account rate limited; cooling down")
        }
        Penalty::Disable { reason, .. } => {
            tracing::warn!(account = %member.spec.name, reason, "account taken out of the pool")
        }
        Penalty::None | Penalty::Failure => {}
    }
    member.state.health.on_failure(penalty, Instant::now());
}

#[cfg(test)]
mod tests;

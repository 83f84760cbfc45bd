//! Per-account health: a breaker (closed -> open after consecutive failures -> half-open
//! after a backoff that doubles up to a cap -> closed on a successful trial), cooldowns per
//! rate-limit class, and disabling until a date or until the operator acts.
//!
//! Only the account's own faults count ([`Penalty`] from [`crate::model::Failure`]): a 400,
//! a client that went away or a proxy-side failure never move the breaker. Time is passed
//! in (`now`), so every transition is unit-tested without sleeping.

use super::{Penalty, RateLimitClass};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The reason code of a disable for used-up credits: one the health probe lifts.
pub const QUOTA_EXHAUSTED: &str = "quota_exhausted";
/// The reason code of a disable for a spent overage allowance (beyond the monthly credits):
/// the other the health probe lifts.
pub const OVERAGE_LIMIT: &str = "overage_limit";

/// The breaker's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open the first time; doubles on each failed trial.
    pub open_base: Duration,
    /// The cap of that doubling.
    pub open_max: Duration,
    /// Cooldown after "suspicious activity" (when no `Retry-After` says longer).
    pub suspicious_cooldown: Duration,
    /// Cooldown after a short-window limit ("5-minute credit limit").
    pub short_window_cooldown: Duration,
    /// Cooldown after any other 429 without `Retry-After` (jittered by up to +25 %).
    pub default_cooldown: Duration,
    /// Rest after a 403 suspension or an unexplained 403, before the account is tried again.
    pub suspended_cooldown: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(600),
            suspicious_cooldown: Duration::from_secs(3600),
            short_window_cooldown: Duration::from_secs(300),
            default_cooldown: Duration::from_secs(30),
            suspended_cooldown: Duration::from_secs(3600),
        }
    }
}

/// Where an account stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Serving.
    Healthy,
    /// Kept out after failures until its backoff ends.
    Open,
    /// Backoff over: one trial request decides.
    HalfOpen,
    /// Resting after a rate limit.
    Cooldown,
    /// Out until a date (quota reset) or until the operator acts.
    Disabled,
}

impl State {
    /// The name status views show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Cooldown => "cooldown",
            Self::Disabled => "disabled",
        }
    }
}

/// Whether an account may take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Open,
    /// Yes, as the half-open trial (only one at a time).
    Trial,
    /// No; it may serve again at `until` (`None`: not by itself).
    Closed {
        /// Earliest recovery.
        until: Option<Instant>,
    },
}

impl Admission {
    /// Whether a request may go.
    pub fn admits(self) -> bool {
        !matches!(self, Self::Closed { .. })
    }
}

/// A non-secret view of an account's health.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Where it stands.
    pub state: State,
    /// Short reason code of the last state change (`failures`, `rate_limited`, `suspicious`,
    /// `suspended`, ...), if not healthy.
    pub reason: Option<&'static str>,
    /// When it may serve again (wall clock), if it is out.
    pub until: Option<SystemTime>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When it last came back (slow start ramps from here).
    pub recovered_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    reason: Option<&'static str>,
    until: Option<Instant>,
    /// Wall-clock deadline for disables given as a date (a quota reset).
    until_wall: Option<SystemTime>,
    consecutive_failures: u32,
    open_for: Duration,
    trial_in_flight: bool,
    recovered_at: Option<Instant>,
}

/// What happened to an account, as its health cell is told (each one transition of the
/// breaker; a shared store replicates these).
#[derive(Clone, Debug, PartialEq)]
pub enum HealthEvent {
    /// A request succeeded: failures reset; a trial (or a request panic mode sent to an open
    /// breaker) closes the breaker.
    Success,
    /// A request ended without a verdict (the client left, or a failure that is not the
    /// account's): a claimed trial is given back.
    Neutral,
    /// A request failed with this penalty.
    Penalised(Penalty),
    /// The active health probe reached the account and found it able to serve: a breaker
    /// past its backoff closes without waiting for user traffic, and a quota disable lifts.
    /// Cooldowns run their course.
    ProbeOk,
    /// The operator acted (file change, SIGHUP): a disabled account gets another chance.
    /// Cooldowns and open breakers run their course: the upstream's verdict on the account
    /// did not change because a file did.
    OperatorReset,
    /// The operator reset the account's breaker by hand (the console): whatever its state
    /// (cooling down, open, half-open, disabled by the pool), it serves again, failures
    /// forgotten, in slow start. The operator overrules the upstream's verdict here.
    OperatorClear,
}

/// Where one account's health lives: the breaker's state machine, behind the small
/// interface the pool uses, so a store shared by several proxies can hold it (see
/// [`crate::model::store`]). Time is passed in, so every transition is testable without
/// sleeping.
pub trait HealthCell: Send + Sync + std::fmt::Debug {
    /// Whether a request may go now and the state it is in (timed states moved on first);
    /// with `claim`, a half-open trial is claimed when it is the one.
    fn admission(&self, now: Instant, claim: bool) -> (Admission, State);
    /// Applies `event`.
    fn record(&self, event: HealthEvent, now: Instant);
    /// A non-secret view, as of `now`.
    fn snapshot(&self, now: Instant) -> Snapshot;
    /// When the account last came back (its slow start ramps from here), without moving
    /// timed states on: the one field, for the pool's hot path.
    fn recovered_at(&self) -> Option<Instant>;
}

/// The in-memory [`HealthCell`]: the state machine under a mutex.
#[derive(Debug)]
pub struct MemoryHealth {
    config: Arc<HealthConfig>,
    inner: Mutex<Inner>,
}

impl MemoryHealth {
    /// A healthy account under `config`.
    pub fn new(config: Arc<HealthConfig>) -> Self {
        let open_for = config.open_base;
        Self {
            config,
            inner: Mutex::new(Inner {
                state: State::Healthy,
                reason: None,
                until: None,
                until_wall: None,
                consecutive_failures: 0,
                open_for,
                trial_in_flight: false,
                recovered_at: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic mid-update of plain fields.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HealthCell for MemoryHealth {
    fn admission(&self, now: Instant, claim: bool) -> (Admission, State) {
        let mut inner = self.lock();
        inner.advance(now);
        (inner.admission(claim), inner.state)
    }

    fn record(&self, event: HealthEvent, now: Instant) {
        let config = &self.config;
        let mut inner = self.lock();
        match event {
            HealthEvent::Success => {
                inner.consecutive_failures = 0;
                inner.trial_in_flight = false;
                // A trial's success closes the breaker; so does a success while it is open
                // (the pool's panic mode sent it traffic, and the account answered).
                if matches!(inner.state, State::HalfOpen | State::Open) {
                    inner.recover(now);
                    inner.open_for = config.open_base;
                }
            }
            HealthEvent::Neutral => inner.trial_in_flight = false,
            HealthEvent::Penalised(penalty) => {
                inner.trial_in_flight = false;
                inner.penalise(&penalty, config, now);
            }
            HealthEvent::ProbeOk => {
                inner.advance(now);
                let lifts = match inner.state {
                    State::HalfOpen => !inner.trial_in_flight,
                    State::Disabled => {
                        matches!(inner.reason, Some(QUOTA_EXHAUSTED | OVERAGE_LIMIT))
                    }
                    _ => false,
                };
                if lifts {
                    inner.recover(now);
                    inner.open_for = config.open_base;
                }
            }
            HealthEvent::OperatorReset => {
                if inner.state == State::Disabled {
                    inner.recover(now);
                    inner.open_for = config.open_base;
                }
            }
            HealthEvent::OperatorClear => {
                inner.recover(now);
                inner.open_for = config.open_base;
            }
        }
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let mut inner = self.lock();
        inner.advance(now);
        let wall_now = SystemTime::now();
        let until = inner.until_wall.or_else(|| {
            inner
                .until
                .map(|at| wall_now + at.saturating_duration_since(now))
        });
        Snapshot {
            state: inner.state,
            reason: inner.reason,
            until,
            consecutive_failures: inner.consecutive_failures,
            recovered_at: inner.recovered_at,
        }
    }

    fn recovered_at(&self) -> Option<Instant> {
        self.lock().recovered_at
    }
}

/// One account's breaker: the pool's handle on its [`HealthCell`]. Cheap to clone; clones
/// share state.
#[derive(Clone, Debug)]
pub struct Breaker(Arc<dyn HealthCell>);

impl Breaker {
    /// A healthy account under `config`, held in memory.
    pub fn new(config: Arc<HealthConfig>) -> Self {
        Self(Arc::new(MemoryHealth::new(config)))
    }

    /// The breaker of the health held in `cell` (a store's).
    pub fn of(cell: Arc<dyn HealthCell>) -> Self {
        Self(cell)
    }

    /// Whether a request may go now, without claiming the half-open trial.
    pub fn peek(&self, now: Instant) -> Admission {
        self.peek_state(now).0
    }

    /// [`Breaker::peek`] and the state it is in, with one look.
    pub fn peek_state(&self, now: Instant) -> (Admission, State) {
        self.0.admission(now, false)
    }

    /// Whether a request may go now; claims the half-open trial when it is the one.
    pub fn admit(&self, now: Instant) -> Admission {
        self.0.admission(now, true).0
    }

    /// When the account last came back (its slow start ramps from here).
    pub fn recovered_at(&self) -> Option<Instant> {
        self.0.recovered_at()
    }

    /// See [`HealthEvent::Success`].
    pub fn on_success(&self, now: Instant) {
        self.0.record(HealthEvent::Success, now);
    }

    /// See [`HealthEvent::ProbeOk`].
    pub fn on_probe_ok(&self, now: Instant) {
        self.0.record(HealthEvent::ProbeOk, now);
    }

    /// See [`HealthEvent::Neutral`].
    pub fn on_neutral(&self) {
        self.0.record(HealthEvent::Neutral, Instant::now());
    }

    /// A request failed with `penalty`.
    pub fn on_failure(&self, penalty: &Penalty, now: Instant) {
        self.0.record(HealthEvent::Penalised(penalty.clone()), now);
    }

    /// See [`HealthEvent::OperatorReset`].
    pub fn reset(&self, now: Instant) {
        self.0.record(HealthEvent::OperatorReset, now);
    }

    /// See [`HealthEvent::OperatorClear`].
    pub fn clear(&self, now: Instant) {
        self.0.record(HealthEvent::OperatorClear, now);
    }

    /// A non-secret view, as of `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        self.0.snapshot(now)
    }
}

impl Inner {
    fn penalise(&mut self, penalty: &Penalty, config: &HealthConfig, now: Instant) {
        match penalty {
            Penalty::None => {}
            Penalty::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.state == State::HalfOpen {
                    // The trial failed: out again, for twice as long.
                    self.open_for = (self.open_for * 2).min(config.open_max);
                    self.open(now, "failures");
                } else if self.state == State::Healthy
                    && self.consecutive_failures >= config.failure_threshold
                {
                    self.open_for = config.open_base;
                    self.open(now, "failures");
                }
            }
            Penalty::Cooldown { class, retry_after } => {
                let (base, reason) = match class {
                    RateLimitClass::Suspicious => (config.suspicious_cooldown, "suspicious"),
                    RateLimitClass::ShortWindow => (config.short_window_cooldown, "short_window"),
                    RateLimitClass::Plain => (jittered(config.default_cooldown, 4), "rate_limited"),
                    RateLimitClass::Suspended => (config.suspended_cooldown, "suspended"),
                    RateLimitClass::Forbidden => (config.suspended_cooldown, "forbidden"),
                };
                // Suspicious activity and refusals rest at least their configured time
                // whatever a header says; rate limits trust the upstream's Retry-After.
                let rest = match (class, retry_after) {
                    (
                        RateLimitClass::Suspicious
                        | RateLimitClass::Suspended
                        | RateLimitClass::Forbidden,
                        Some(after),
                    ) => base.max(*after),
                    (_, Some(after)) => *after,
                    (_, None) => base,
                };
                self.state = State::Cooldown;
                self.reason = Some(reason);
                self.until = Some(now + rest);
                self.until_wall = None;
            }
            Penalty::Disable { reason, until } => {
                self.state = State::Disabled;
                self.reason = Some(reason);
                self.until_wall = *until;
                self.until = None;
            }
        }
    }

    /// Moves timed states on: an open breaker whose backoff ended becomes half-open, a
    /// cooldown or dated disable that ended becomes healthy.
    fn advance(&mut self, now: Instant) {
        let due = self.until.is_some_and(|at| now >= at);
        match self.state {
            State::Open if due => {
                self.state = State::HalfOpen;
                self.until = None;
            }
            State::Cooldown if due => self.recover(now),
            State::Disabled if self.until_wall.is_some_and(|at| SystemTime::now() >= at) => {
                self.recover(now)
            }
            _ => {}
        }
    }

    fn admission(&mut self, claim: bool) -> Admission {
        match self.state {
            State::Healthy => Admission::Open,
            State::HalfOpen if !self.trial_in_flight => {
                if claim {
                    self.trial_in_flight = true;
                }
                Admission::Trial
            }
            // A trial is out: the account is expected back when it answers.
            State::HalfOpen => Admission::Closed { until: None },
            State::Open | State::Cooldown => Admission::Closed { until: self.until },
            State::Disabled => Admission::Closed {
                until: self.until_wall.map(|at| {
                    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
                }),
            },
        }
    }

    fn open(&mut self, now: Instant, reason: &'static str) {
        self.state = State::Open;
        self.reason = Some(reason);
        self.until = Some(now + self.open_for);
        self.until_wall = None;
    }

    fn recover(&mut self, now: Instant) {
        self.state = State::Healthy;
        self.reason = None;
        self.until = None;
        self.until_wall = None;
        self.consecutive_failures = 0;
        self.trial_in_flight = false;
        self.recovered_at = Some(now);
    }
}

/// `base` plus up to `base / divisor`, at random: accounts that hit a limit together do not
/// all come back in the same instant.
fn jittered(base: Duration, divisor: u32) -> Duration {
    base + super::random_below(base / divisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh breaker that just took `penalty`.
    fn after(penalty: Penalty, now: Instant) -> Breaker {
        let b = breaker();
        b.on_failure(&penalty, now);
        b
    }

    fn cooldown(class: RateLimitClass, retry_after: Option<u64>) -> Penalty {
        Penalty::Cooldown {
            class,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn disable(reason: &'static str, until: Option<SystemTime>) -> Penalty {
        Penalty::Disable { reason, until }
    }

    fn breaker() -> Breaker {
        Breaker::new(Arc::new(HealthConfig {
            failure_threshold: 3,
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(40),
            ..HealthConfig::default()
        }))
    }

    #[test]
    fn the_operator_clears_a_cooldown_an_open_breaker_and_a_disable() {
        let now = Instant::now();
        let cases = [
            cooldown(RateLimitClass::Plain, Some(600)),
            disable("suspended", None),
        ];
        for penalty in cases {
            let b = after(penalty, now);
            assert!(!b.peek(now).admits());
            // The file-reload reset leaves a cooldown alone; the console's reset does not.
            b.clear(now);
            assert_eq!(b.snapshot(now).state, State::Healthy);
            assert!(b.peek(now).admits());
        }
        let b = breaker();
        for _ in 0..3 {
            b.on_failure(&Penalty::Failure, now);
        }
        assert_eq!(b.snapshot(now).state, State::Open);
        b.clear(now);
        let snapshot = b.snapshot(now);
        assert_eq!(
            (snapshot.state, snapshot.consecutive_failures),
            (State::Healthy, 0)
        );
    }

    #[test]
    fn consecutive_failures_open_then_a_trial_decides() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.on_failure(&Penalty::Failure, t0);
        }
        assert_eq!(b.peek(t0), Admission::Open, "under the threshold");
        b.on_failure(&Penalty::Failure, t0);
        assert_eq!(b.snapshot(t0).state, State::Open);
        assert!(!b.peek(t0 + Duration::from_secs(9)).admits());
        // Backoff over: one trial at a time.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(t1), Admission::Trial);
        assert!(
            !b.admit(t1).admits(),
            "a second request waits for the trial"
        );
        // The trial fails: open for twice as long.
        b.on_failure(&Penalty::Failure, t1);
        assert!(!b.peek(t1 + Duration::from_secs(19)).admits());
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(b.admit(t2), Admission::Trial);
        b.on_success(t2);
        let s = b.snapshot(t2);
        assert_eq!((s.state, s.consecutive_failures), (State::Healthy, 0));
        assert_eq!(s.recovered_at, Some(t2));
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let b = breaker();
        let mut now = Instant::now();
        for _ in 0..3 {
            b.on_failure(&Penalty::Failure, now);
        }
        for expected in [10, 20, 40, 40] {
            assert!(!b.peek(now + Duration::from_secs(expected - 1)).admits());
            now += Duration::from_secs(expected);
            assert_eq!(b.admit(now), Admission::Trial, "after {expected} s");
            b.on_failure(&Penalty::Failure, now);
        }
    }

    #[test]
    fn a_success_between_failures_keeps_it_closed() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..10 {
            b.on_failure(&Penalty::Failure, now);
            b.on_failure(&Penalty::Failure, now);
            b.on_success(now);
        }
        assert_eq!(b.snapshot(now).state, State::Healthy);
    }

    #[test]
    fn neutral_outcomes_never_move_it() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..10 {
            b.on_failure(&Penalty::None, now);
            b.on_neutral();
        }
        assert_eq!(b.snapshot(now).state, State::Healthy);
    }

    #[test]
    fn cooldowns_follow_retry_after_or_their_class() {
        let now = Instant::now();
        let b = after(cooldown(RateLimitClass::Plain, Some(7)), now);
        let s = b.snapshot(now);
        assert_eq!((s.state, s.reason), (State::Cooldown, Some("rate_limited")));
        assert!(!b.peek(now + Duration::from_secs(6)).admits());
        assert_eq!(b.peek(now + Duration::from_secs(7)), Admission::Open);

        let b = after(cooldown(RateLimitClass::Suspicious, Some(5)), now);
        assert!(
            !b.peek(now + Duration::from_secs(3599)).admits(),
            "suspicious activity rests its hour whatever Retry-After says"
        );
        assert!(b.peek(now + Duration::from_secs(3600)).admits());

        let b = after(cooldown(RateLimitClass::ShortWindow, None), now);
        assert!(!b.peek(now + Duration::from_secs(299)).admits());
        assert!(b.peek(now + Duration::from_secs(300)).admits());

        let b = after(cooldown(RateLimitClass::Plain, None), now);
        assert!(!b.peek(now + Duration::from_secs(29)).admits());
        assert!(
            b.peek(now + Duration::from_millis(37_501)).admits(),
            "30 s + at most 25 %"
        );
    }

    #[test]
    fn disabled_until_a_date_or_the_operator() {
        let now = Instant::now();
        let b = after(disable("suspended", None), now);
        let s = b.snapshot(now + Duration::from_secs(86_400));
        assert_eq!(
            (s.state, s.reason, s.until),
            (State::Disabled, Some("suspended"), None)
        );
        b.reset(now);
        assert_eq!(b.peek(now), Admission::Open);

        let b = after(
            disable(
                QUOTA_EXHAUSTED,
                Some(SystemTime::now() + Duration::from_secs(86_400)),
            ),
            now,
        );
        b.on_probe_ok(now);
        assert_eq!(b.peek(now), Admission::Open, "the probe saw credits left");

        let b = after(disable("suspended", None), now);
        b.on_probe_ok(now);
        assert!(!b.peek(now).admits(), "a suspension waits for the operator");

        let b = breaker();
        for _ in 0..3 {
            b.on_failure(&Penalty::Failure, now);
        }
        b.on_probe_ok(now + Duration::from_secs(5));
        assert!(
            !b.peek(now + Duration::from_secs(5)).admits(),
            "still in its backoff"
        );
        b.on_probe_ok(now + Duration::from_secs(10));
        assert_eq!(
            b.peek(now + Duration::from_secs(10)),
            Admission::Open,
            "closed by the probe"
        );

        let b = breaker();
        let past = SystemTime::now() - Duration::from_secs(1);
        b.on_failure(
            &Penalty::Disable {
                reason: "quota_exhausted",
                until: Some(past),
            },
            now,
        );
        assert_eq!(b.peek(now), Admission::Open, "the reset date has passed");
    }
}

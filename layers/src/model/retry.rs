//! Retry of failures that happened before any byte reached the client: the one place in
//! the model tier that decides to call the upstream again.
//!
//! A client request costs at most `1 + max_retries` upstream calls per pass through this
//! layer (4 by default), whatever the reasons: retries after a failure, and the resends a
//! failure asks for ([`Failure::resend`]: a refreshed token, a reminder after an empty
//! answer, reasoning sent inline), which go at once but count like any retry, against the
//! same budget. Each one is in the request's [`Attempts`], with its kind and outcome.
//!
//! The model tier's futures resolve after the first upstream event (see the crate's model
//! contract), so a failed future means nothing was sent to the client and a retry cannot
//! duplicate tokens; a failure inside a stream that already started is never retried here.
//! Retried: the upstream's and the account's faults (5xx, network, timeouts before the first
//! event, 429, truncation before the first event). Never: the request's own faults (a 400
//! fails the same way everywhere). A proxy-side wait with a short `retry_after` (every
//! account cooling down for a second) is waited out once.
//!
//! # Example: retry over a pool, tested with the crate's mocks (feature `testing`)
//!
//! ```
//! use aiproxy_layers::model::pool::{MemberSpec, Pool, PoolConfig};
//! use aiproxy_layers::model::retry::{RetryConfig, RetryLayer};
//! use aiproxy_layers::model::{Attempts, StreamEnd};
//! use aiproxy_layers::testing::{MockAccount, MockError, MockRequest};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (down, up) = (MockAccount::new("down"), MockAccount::new("up"));
//! down.fail_always(Some(MockError::upstream()));
//! let spec = |name: &str| MemberSpec {
//!     name: Arc::from(name),
//!     weight: 1,
//!     max_concurrency: 8,
//!     requests_per_minute: None,
//! };
//! let pool = Pool::new(
//!     PoolConfig { slow_start: Duration::ZERO, ..PoolConfig::default() },
//!     vec![(spec("down"), down.clone()), (spec("up"), up.clone())],
//! );
//! let stack = RetryLayer::new(RetryConfig {
//!     base_delay: Duration::from_millis(1),
//!     ..RetryConfig::default()
//! })
//! .layer(pool);
//! let response = stack.oneshot(MockRequest::default()).await.unwrap();
//! // Whichever account the pool chose first, the answer comes from the one that works,
//! // and the attempts say how it got there.
//! assert_eq!(response.account, "up");
//! let attempts = response.extensions.get::<Attempts>().unwrap();
//! assert!(attempts.count() <= 2, "{}", attempts.summary());
//! response.end(StreamEnd::Complete);
//! # }
//! ```
//!
//! Each retry goes back through the layers below (the pool), which skips the accounts this
//! request already tried ([`Attempts`]). Delays: exponential backoff with full jitter
//! (`base * 2^n`, capped), or the failure's own `retry_after` when it is within the cap; a
//! retry budget ([`TpsBudget`]) keeps a failing upstream from being hammered.

use super::{random_below, Attempts, Failure, Fault, HasExtensions, RETRY};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};
use tower_layer::Layer;
use tower_service::Service;

/// The retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff base.
    pub base_delay: Duration,
    /// Backoff cap; also the longest `retry_after` that is waited out.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// The `tower::retry` policy (see the module docs). One clone per client request; it keeps
/// the last upstream error, so that when the pool has nobody left for the next attempt (every
/// account now resting because of this request's own failures) the client gets that real
/// error (a 429 with its `Retry-After`), not the pool's "no account".
#[derive(Debug)]
pub struct RetryPolicy<E> {
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
    retries: u32,
    last_upstream: Option<E>,
}

impl<E> Clone for RetryPolicy<E> {
    fn clone(&self) -> Self {
        // A fresh clone per request: the count and the last error are that request's.
        Self {
            config: Arc::clone(&self.config),
            budget: Arc::clone(&self.budget),
            retries: self.retries,
            last_upstream: None,
        }
    }
}

/// The retry budget: 20 % retries on top of 10 per second, over a 10 s window.
fn budget() -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
}

impl<E> RetryPolicy<E> {
    /// A policy with `config` and a budget of its own (see [`RetryLayer`] for one budget
    /// shared by every request).
    pub fn new(config: RetryConfig) -> Self {
        Self::for_request(&Arc::new(config), &budget())
    }

    /// One request's policy: no retries yet, the shared settings and budget.
    fn for_request(config: &Arc<RetryConfig>, budget: &Arc<TpsBudget>) -> Self {
        Self {
            config: Arc::clone(config),
            budget: Arc::clone(budget),
            retries: 0,
            last_upstream: None,
        }
    }

    /// How long to wait before retrying after `error`, or `None` when it is not retried.
    pub fn delay_for(&self, error: &impl Failure) -> Option<Duration> {
        if self.retries >= self.config.max_retries {
            return None;
        }
        let backoff = || {
            let cap = self
                .config
                .base_delay
                .saturating_mul(1 << self.retries.min(16))
                .min(self.config.max_delay);
            random_below(cap)
        };
        match (error.fault(), error.retry_after()) {
            (Fault::Request, _) => None,
            (Fault::Local, Some(after)) if after <= self.config.max_delay => Some(after),
            (Fault::Local, _) => None,
            // Another account takes it: a short pause, not the resting account's Retry-After.
            (Fault::Account, _) => Some(random_below(self.config.base_delay)),
            (Fault::Upstream, Some(after)) if after <= self.config.max_delay => Some(after),
            (Fault::Upstream, _) => Some(backoff()),
        }
    }
}

impl<E: Failure> RetryPolicy<E> {
    /// Giving up on `error`: when it is the proxy's own (nobody left to try), the client
    /// gets the last upstream error instead, which says what really happened.
    fn give_up(&mut self, error: &mut E) {
        if error.fault() == Fault::Local {
            if let Some(upstream) = self.last_upstream.take() {
                *error = upstream;
            }
        }
    }
}

impl<Req, Res, E> tower::retry::Policy<Req, Res, E> for RetryPolicy<E>
where
    Req: Clone + HasExtensions,
    E: Failure + Clone,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, request: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let attempts = request.extensions().get::<Attempts>();
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(error) => {
                if matches!(error.fault(), Fault::Upstream | Fault::Account) {
                    self.last_upstream = Some(error.clone());
                }
                // A resend goes at once; it is a retry like any other (count and budget).
                let resend = error
                    .resend()
                    .filter(|_| self.retries < self.config.max_retries);
                let delay = match resend {
                    Some(_) => Some(Duration::ZERO),
                    None => self.delay_for(error),
                };
                let Some(delay) = delay else {
                    self.give_up(error);
                    return None;
                };
                if !self.budget.withdraw() {
                    tracing::debug!(kind = error.kind(), "retry budget spent; not retrying");
                    self.give_up(error);
                    return None;
                }
                self.retries += 1;
                let next = resend.map_or(RETRY, |r| r.kind);
                if let Some(attempts) = attempts {
                    attempts.plan(next, resend.is_some_and(|r| r.same_account));
                }
                tracing::debug!(
                    kind = error.kind(),
                    retry = self.retries,
                    next,
                    delay_ms = delay.as_millis() as u64,
                    "retrying"
                );
                Some(tokio::time::sleep(delay))
            }
        }
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Adds [`Retry`] around a model service.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
}

impl RetryLayer {
    /// Retries with `config` (one budget shared by every request through this layer).
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config: Arc::new(config),
            budget: budget(),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

/// `tower::retry::Retry` with [`RetryPolicy`], plus the [`Attempts`] record: put on the
/// request before its first attempt (so clones share it) and on the response.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

impl<S, Req> Service<Req> for Retry<S>
where
    S: Service<Req> + Clone,
    S::Response: HasExtensions,
    S::Error: Failure + Clone,
    Req: HasExtensions + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RetryFuture<tower::retry::future::ResponseFuture<RetryPolicy<S::Error>, S, Req>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        // One record per client request: a layer above may have started it (the adapter,
        // for its span), and a second model call of the same request continues it.
        let attempts = match request.extensions().get::<Attempts>() {
            Some(attempts) => attempts.clone(),
            None => {
                let attempts = Attempts::default();
                request.extensions_mut().insert(attempts.clone());
                attempts
            }
        };
        let policy = RetryPolicy::for_request(&self.layer.config, &self.layer.budget);
        // The service polled ready goes into this request's retry loop; a clone stays.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        RetryFuture {
            inner: tower::retry::Retry::new(policy, ready).call(request),
            attempts,
        }
    }
}

pin_project! {
    /// [`Retry`]'s future: the retries, then the [`Attempts`] on the response.
    pub struct RetryFuture<F> {
        #[pin]
        inner: F,
        attempts: Attempts,
    }
}

impl<F, Res, E> Future for RetryFuture<F>
where
    F: Future<Output = Result<Res, E>>,
    Res: HasExtensions,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.inner.poll(cx).map(|result| {
            result.map(|mut response| {
                response.extensions_mut().insert(this.attempts.clone());
                response
            })
        })
    }
}

#[cfg(test)]
mod tests;

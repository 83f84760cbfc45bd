//! The rate-limit layer and its service (see the module docs).

use super::deferred::{AfterInner, DeferredAdmission};
use super::store::{Admission, Ask, Decision, Denied, Refused, StoreUnavailable};
use super::{LimitKind, Limits, RateLimitSlot, RateLimitStore, RateLimited, Throttled};
use crate::model::{HasExtensions, Observe};
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::KeyValue;
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

pub(super) struct Shared {
    pub(super) store: Arc<dyn RateLimitStore>,
    default: Limits,
    overrides: HashMap<Arc<str>, Limits>,
    rejected: Option<Counter<u64>>,
    defer: bool,
}

impl Shared {
    #[cfg(test)]
    pub(super) fn for_tests(store: Arc<dyn RateLimitStore>) -> Self {
        Self {
            store,
            default: Limits::default(),
            overrides: HashMap::new(),
            rejected: None,
            defer: true,
        }
    }

    fn limits(&self, key: &str) -> Limits {
        self.overrides.get(key).copied().unwrap_or(self.default)
    }
}

/// Limits each client's requests and tokens per minute (see the module docs).
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("default", &self.shared.default)
            .field("overrides", &self.shared.overrides.len())
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// `default` for every client, buckets in `store`.
    pub fn new(store: Arc<dyn RateLimitStore>, default: Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                default,
                overrides: HashMap::new(),
                rejected: None,
                defer: false,
            }),
        }
    }

    fn edit(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            store: Arc::clone(&shared.store),
            default: shared.default,
            overrides: shared.overrides.clone(),
            rejected: shared.rejected.clone(),
            defer: shared.defer,
        });
        change(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// `limits` instead of the default for the client `key`.
    pub fn with_override(self, key: impl Into<Arc<str>>, limits: Limits) -> Self {
        let key = key.into();
        self.edit(|shared| {
            shared.overrides.insert(key, limits);
        })
    }

    /// Counts refusals (`rate_limit.rejections` by `limit`: requests or tokens) on `meter`.
    pub fn with_meter(self, meter: &Meter) -> Self {
        let counter = meter
            .u64_counter("rate_limit.rejections")
            .with_description("Model requests refused by a client's rate limit, by limit")
            .build();
        self.edit(|shared| shared.rejected = Some(counter))
    }

    /// Leaves each decision to the service below, which must claim the request's
    /// [`DeferredAdmission`] before it sends anything upstream (see
    /// [`deferred`](super::deferred)): for a shared store whose leaf makes a round trip of its
    /// own, the two go as one. What no leaf claims is decided when the answer is there.
    pub fn defer_to_leaf(self) -> Self {
        self.edit(|shared| shared.defer = true)
    }

    /// True when no client is limited at all (the layer can be left out).
    pub fn is_unlimited(&self) -> bool {
        self.shared.default.is_unlimited()
            && self.shared.overrides.values().all(Limits::is_unlimited)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Tokens charged at admission, settled when the answer ends.
pub(super) struct Charge {
    pub(super) shared: Arc<Shared>,
    pub(super) key: Arc<str>,
    pub(super) per_minute: NonZeroU32,
    pub(super) estimate: u64,
    /// The deferred decision whose leaf may have parked its end, to go with the settlement.
    pub(super) ticket: Option<DeferredAdmission>,
}

impl Charge {
    fn settle(&self, used: Option<u64>) {
        let delta = i128::from(used.unwrap_or(0)) - i128::from(self.estimate);
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        match &self.ticket {
            Some(ticket) => ticket.settle(self.per_minute, delta),
            None if delta != 0 => {
                self.shared
                    .store
                    .settle_tokens(&self.key, self.per_minute, delta)
            }
            None => {}
        }
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Observe + HasExtensions + Send + 'static,
    S::Error: From<Throttled> + From<StoreUnavailable> + Send + 'static,
    Req: RateLimited + HasExtensions + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let key = request.rate_key();
        let limits = shared.limits(key);
        if limits.is_unlimited() {
            return Box::pin(self.inner.call(request));
        }
        let ask = Ask {
            requests: limits.requests,
            tokens: limits
                .tokens_per_minute
                .map(|per_minute| (per_minute, request.token_estimate())),
        };
        if shared.defer {
            let slot = request.extensions().get::<RateLimitSlot>().cloned();
            let ticket = DeferredAdmission::new(shared, Arc::from(key), ask, slot);
            let mut request = request;
            request.extensions_mut().insert(ticket.clone());
            return Box::pin(decided_below(self.inner.call(request), ticket));
        }
        match shared.store.admit(key, ask) {
            // In memory: decided here, the inner call made now (it is the readied service).
            Decision::Now(admission) => {
                match admitted(&shared, key, ask, slot(&request), admission) {
                    Ok(charge) => Box::pin(charged(self.inner.call(request), charge)),
                    Err(throttled) => Box::pin(std::future::ready(Err(S::Error::from(throttled)))),
                }
            }
            // A round trip first: the readied service goes into the future (a clone stays).
            Decision::Later(decision) => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let key: Arc<str> = Arc::from(key);
                Box::pin(async move {
                    let admission = decision.await.map_err(S::Error::from)?;
                    match admitted(&shared, &key, ask, slot(&request), admission) {
                        Ok(charge) => charged(inner.call(request), charge).await,
                        Err(throttled) => Err(S::Error::from(throttled)),
                    }
                })
            }
        }
    }
}

/// The inner call of a request whose decision was left below: a leaf decided it (its charge
/// settled through the ticket), or nobody did and it is decided here now that the answer
/// is there (a refusal drops the answer).
async fn decided_below<F, R, E>(future: F, ticket: DeferredAdmission) -> Result<R, E>
where
    F: Future<Output = Result<R, E>>,
    R: Observe,
    E: From<Throttled> + From<StoreUnavailable>,
{
    let answer = future.await;
    match ticket.after_inner() {
        AfterInner::Admitted(charge) => charged(std::future::ready(answer), charge).await,
        AfterInner::Done => answer,
        AfterInner::Undecided => {
            let response = answer?;
            let charge = ticket.decide_here::<E>().await?;
            charged(std::future::ready(Ok(response)), charge).await
        }
    }
}

fn slot<Req: HasExtensions>(request: &Req) -> Option<&RateLimitSlot> {
    request.extensions().get::<RateLimitSlot>()
}

/// The decision's status into the request's slot; a refusal into [`Throttled`] (counted);
/// an admission into the charge to settle when the answer ends.
pub(super) fn admitted(
    shared: &Arc<Shared>,
    key: &str,
    ask: Ask,
    slot: Option<&RateLimitSlot>,
    admission: Admission,
) -> Result<Option<Charge>, Throttled> {
    let status = match &admission {
        Ok(status) => *status,
        Err(refused) => refused.status,
    };
    if let Some(slot) = slot {
        slot.set(status);
    }
    match admission {
        Ok(_) => Ok(ask.tokens.map(|(per_minute, estimate)| Charge {
            shared: Arc::clone(shared),
            key: Arc::from(key),
            per_minute,
            estimate,
            ticket: None,
        })),
        Err(refused) => {
            if let Some(rejected) = &shared.rejected {
                rejected.add(1, &[KeyValue::new("limit", refused.limit.as_str())]);
            }
            Err(throttled(key, ask, refused))
        }
    }
}

/// The inner call, with its tokens settled when the answer ends (or given back when there
/// is none).
async fn charged<F, R, E>(future: F, charge: Option<Charge>) -> Result<R, E>
where
    F: Future<Output = Result<R, E>>,
    R: Observe,
{
    match future.await {
        Ok(response) => Ok(match charge {
            Some(charge) => response.on_stream_end(move |report| {
                // No usage reported (a stream that broke early): the estimate stands.
                let used = report.usage.map_or(charge.estimate, |u| {
                    u.input + u.output + u.cache_read + u.cache_write
                });
                charge.settle(Some(used));
            }),
            None => response,
        }),
        Err(error) => {
            // Nothing was answered: the tokens are given back.
            if let Some(charge) = charge {
                charge.settle(None);
            }
            Err(error)
        }
    }
}

/// A refusal in words: which limit of `key`, and what to do.
fn throttled(key: &str, ask: Ask, refused: Refused) -> Throttled {
    let Denied { wait, .. } = refused.denied;
    let message = match (refused.limit, ask.tokens, ask.requests) {
        (LimitKind::Tokens, Some((per_minute, estimate)), _) => match wait {
            Some(wait) => format!(
                "Rate limit reached for tokens: `{key}` may use {per_minute} tokens per \
                 minute and this request needs about {estimate}; retry in {}.",
                seconds(wait)
            ),
            None => format!(
                "Request too large for `{key}`'s rate limit: it needs about {estimate} \
                 tokens, more than the {per_minute} tokens per minute allowed. Send a \
                 shorter conversation or raise the limit."
            ),
        },
        (_, _, Some(quota)) => format!(
            "Rate limit reached for requests: `{key}` may send {} requests per \
             minute (bursts of {}); retry in {}.",
            quota.per_minute,
            quota.burst,
            seconds(wait.unwrap_or_default())
        ),
        // A store that refuses a bucket it was not asked about: say what is known.
        (limit, _, _) => format!(
            "Rate limit reached for {}: `{key}`; retry in {}.",
            limit.as_str(),
            seconds(wait.unwrap_or_default())
        ),
    };
    Throttled {
        limit: refused.limit,
        retry_after: wait,
        message,
        status: refused.status,
    }
}

/// A wait for a message: whole seconds, at least one.
fn seconds(wait: Duration) -> String {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if secs == 1 {
        "1 second".into()
    } else {
        format!("{secs} seconds")
    }
}

//! The rate-limit layer and its service (see the module docs).

use super::store::Denied;
use super::{
    LimitKind, Limits, RateLimitSlot, RateLimitStatus, RateLimitStore, RateLimited, Throttled,
};
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

struct Shared {
    store: Arc<dyn RateLimitStore>,
    default: Limits,
    overrides: HashMap<Arc<str>, Limits>,
    rejected: Option<Counter<u64>>,
}

impl Shared {
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
            }),
        }
    }

    fn edit(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            store: Arc::clone(&shared.store),
            default: shared.default,
            overrides: shared.overrides.clone(),
            rejected: shared.rejected.clone(),
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
struct Charge {
    shared: Arc<Shared>,
    key: Arc<str>,
    per_minute: NonZeroU32,
    estimate: u64,
}

impl Charge {
    fn settle(&self, used: Option<u64>) {
        let delta = i128::from(used.unwrap_or(0)) - i128::from(self.estimate);
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        if delta != 0 {
            self.shared
                .store
                .settle_tokens(&self.key, self.per_minute, delta);
        }
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Response: Observe + HasExtensions + Send + 'static,
    S::Error: From<Throttled> + Send + 'static,
    S::Future: Send + 'static,
    Req: RateLimited + HasExtensions,
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
        let slot = request.extensions().get::<RateLimitSlot>().cloned();
        let decided = admit(&shared, key, limits, || request.token_estimate());
        let status = match &decided {
            Ok((status, _)) => *status,
            Err(throttled) => throttled.status,
        };
        if let Some(slot) = &slot {
            slot.set(status);
        }
        let charge = match decided {
            Ok((_, charge)) => charge,
            Err(throttled) => {
                if let Some(rejected) = &shared.rejected {
                    rejected.add(1, &[KeyValue::new("limit", throttled.limit.as_str())]);
                }
                return Box::pin(std::future::ready(Err(S::Error::from(throttled))));
            }
        };
        let future = self.inner.call(request);
        Box::pin(async move {
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
        })
    }
}

/// Takes what one request costs from the client's buckets, tokens first (they can be
/// given back when the request bucket refuses; a request cannot).
fn admit(
    shared: &Arc<Shared>,
    key: &str,
    limits: Limits,
    estimate: impl FnOnce() -> u64,
) -> Result<(RateLimitStatus, Option<Charge>), Throttled> {
    let mut status = RateLimitStatus::default();
    let mut charge = None;
    if let Some(per_minute) = limits.tokens_per_minute {
        let estimate = estimate();
        match shared.store.take_tokens(key, per_minute, estimate) {
            Ok(window) => status.tokens = Some(window),
            Err(Denied { wait, window }) => {
                status.tokens = Some(window);
                let message = match wait {
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
                };
                return Err(Throttled {
                    limit: LimitKind::Tokens,
                    retry_after: wait,
                    message,
                    status,
                });
            }
        }
        charge = Some(Charge {
            shared: Arc::clone(shared),
            key: Arc::from(key),
            per_minute,
            estimate,
        });
    }
    if let Some(quota) = limits.requests {
        match shared.store.take_request(key, quota) {
            Ok(window) => status.requests = Some(window),
            Err(Denied { wait, window }) => {
                status.requests = Some(window);
                if let (Some(charge), Some(tokens)) = (&charge, &mut status.tokens) {
                    charge.settle(None);
                    tokens.remaining = (tokens.remaining + charge.estimate).min(tokens.limit);
                }
                return Err(Throttled {
                    limit: LimitKind::Requests,
                    retry_after: wait,
                    message: format!(
                        "Rate limit reached for requests: `{key}` may send {} requests per \
                         minute (bursts of {}); retry in {}.",
                        quota.per_minute,
                        quota.burst,
                        seconds(wait.unwrap_or_default())
                    ),
                    status,
                });
            }
        }
    }
    Ok((status, charge))
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

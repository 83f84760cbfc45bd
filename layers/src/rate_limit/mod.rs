//! Rate limits per client: requests per minute with a burst, and tokens per minute charged
//! with an estimate at admission and corrected with the real usage when the answer ends.
//!
//! - The client is the request's business ([`RateLimited::rate_key`]: aiproxy gives the
//!   auth layer's non-secret key label), and so is the token estimate
//!   ([`RateLimited::token_estimate`], asked only when a token limit applies).
//! - [`Limits`] apply per client: one default, overridden per key
//!   ([`RateLimitLayer::with_override`]).
//! - Requests go through a GCRA bucket (governor); tokens through a GCRA bucket of ours
//!   that can go into debt and be refunded, which governor's cannot: the estimate is
//!   charged at admission, and when the stream ends the difference to the usage it
//!   reported is charged (an answer longer than the estimate delays the next admissions)
//!   or refunded (a failed call costs nothing). Both sit behind [`RateLimitStore`];
//!   [`MemoryStore`] is the one there is, a shared one plugs in behind the same trait.
//! - Over a limit, the call fails at once with [`Throttled`] (the service's error must
//!   convert from it), with the wait until it would pass; nothing goes further down.
//! - Every decision is written to the request's [`RateLimitSlot`] when it carries one, so
//!   the caller can send the `x-ratelimit-*` headers with every answer, errors included.
//!
//! # Example: two requests a minute per client (mocks of feature `testing`)
//!
//! ```
//! use aiproxy_layers::model::StreamEnd;
//! use aiproxy_layers::rate_limit::{Limits, MemoryStore, RateLimitLayer, RequestQuota};
//! use aiproxy_layers::testing::{MockAccount, MockError, MockRequest};
//! use aiproxy_layers::ClientKey;
//! use std::num::NonZeroU32;
//! use std::sync::Arc;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let two = NonZeroU32::new(2).unwrap();
//! let limits = Limits {
//!     requests: Some(RequestQuota { per_minute: two, burst: two }),
//!     tokens_per_minute: None,
//! };
//! let limited = RateLimitLayer::new(Arc::new(MemoryStore::default()), limits)
//!     .layer(MockAccount::new("a"));
//! let from = |label: &str| {
//!     let mut request = MockRequest::default();
//!     request.extensions.insert(ClientKey::from_label(label));
//!     request
//! };
//! for _ in 0..2 {
//!     let answer = limited.clone().oneshot(from("key-1")).await.unwrap();
//!     answer.end(StreamEnd::Complete);
//! }
//! // The third request of key-1 this minute is refused at once, with the wait...
//! let refused = limited.clone().oneshot(from("key-1")).await.unwrap_err();
//! assert!(matches!(refused, MockError::Throttled(ref t) if t.retry_after.is_some()));
//! // ...while another client has its own budget.
//! assert!(limited.oneshot(from("key-2")).await.is_ok());
//! # }
//! ```

pub mod deferred;
mod layer;
pub(crate) mod store;
#[cfg(test)]
mod tests;

pub use deferred::{Claim, DeferredAdmission, EndHook, TokenSettle};
pub use layer::{RateLimit, RateLimitLayer};
pub use store::{
    Admission, Ask, Decision, Denied, MemoryStore, RateLimitStore, Refused, StoreUnavailable,
};

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Requests that rate limits apply to.
pub trait RateLimited {
    /// Whose budget the request spends (a stable, non-secret label).
    fn rate_key(&self) -> &str;
    /// The tokens the request is expected to use (its prompt, estimated locally).
    fn token_estimate(&self) -> u64;
}

pub use crate::quota::RequestQuota;

/// The limits of one client; `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute and burst.
    pub requests: Option<RequestQuota>,
    /// Tokens per minute (prompt and answer; the bucket holds a minute's worth).
    pub tokens_per_minute: Option<NonZeroU32>,
}

impl Limits {
    /// True when nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens_per_minute.is_none()
    }
}

/// One bucket's state after a decision, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The limit (requests or tokens per minute).
    pub limit: u64,
    /// What may still be spent now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// Both buckets' state after a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// The request bucket, when requests are limited.
    pub requests: Option<Window>,
    /// The token bucket, when tokens are limited.
    pub tokens: Option<Window>,
}

/// Where the layer writes its decision for the caller (put it on the request; clones share
/// it). Written once, before the call goes further down.
#[derive(Clone, Debug, Default)]
pub struct RateLimitSlot(Arc<OnceLock<RateLimitStatus>>);

impl RateLimitSlot {
    /// The decision, if the layer made one.
    pub fn get(&self) -> Option<RateLimitStatus> {
        self.0.get().copied()
    }

    fn set(&self, status: RateLimitStatus) {
        let _ = self.0.set(status);
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl LimitKind {
    /// `requests` or `tokens` (metric labels, messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// A request refused by a client's rate limit. Nothing was sent further down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// Which limit.
    pub limit: LimitKind,
    /// When the request would pass; `None` when it never can (it needs more tokens than a
    /// whole minute's budget).
    pub retry_after: Option<Duration>,
    /// What happened and what to do, naming the client label and the limit.
    pub message: String,
    /// The buckets as the decision left them.
    pub status: RateLimitStatus,
}

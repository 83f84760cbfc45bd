//! A response cache for the model tier: identical requests of one client are answered from
//! memory, as a stream or as one body, whichever the client asked for this time.
//!
//! - The key ([`CacheKey`]) is the request's own business ([`Cacheable`]): aiproxy hashes
//!   the canonical request (model, system, messages, tools, sampling, reasoning; not the
//!   stream flag) with the client's key label, so tenants never see each other's answers.
//! - A miss streams through untouched and is stored only when its stream reached its stop
//!   event; a client that goes away first does not prevent that (the rest is drained in a
//!   task of its own). Failed and truncated streams, and answers the response type calls
//!   unstorable (tool calls whose results the client has not seen), are never stored.
//! - A hit replays the stored events through [`Replay::replay`] (fresh ids).
//! - Identical misses in flight at once go upstream once: the others wait for the first to
//!   finish and replay it, or go upstream themselves if it could not be stored.
//! - [`CacheControl`] on the request (the adapter reads the `Cache-Control` header):
//!   `no_cache` skips the lookup, `no_store` skips the store.
//! - [`CacheStatus`] on the response says `hit`, `miss` or `bypass` (for the
//!   `x-aiproxy-cache` header).
//! - Entries live in a [`CacheStore`]; [`MemoryStore`] (moka, bounded by bytes and a TTL) is
//!   the one in this crate; a shared one (aiproxy keeps answers in Redis for its replicas)
//!   plugs in behind the same trait and may answer a lookup after a round trip ([`Lookup`]).
//!
//! # Example: the second identical request is answered from memory (mocks of feature `testing`)
//!
//! ```
//! use aiproxy_layers::cache::{CacheKey, CacheLayer, CacheStatus, CacheStore, MemoryStore};
//! use aiproxy_layers::model::StreamEnd;
//! use aiproxy_layers::testing::{MockAccount, MockRequest};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let account = MockAccount::new("a");
//! let store: Arc<dyn CacheStore<String>> =
//!     Arc::new(MemoryStore::new(1 << 20, Duration::from_secs(60)));
//! let cache = CacheLayer::new(store).layer(account.clone());
//! let ask = || {
//!     let mut request = MockRequest::default();
//!     request.extensions.insert(CacheKey([7; 32]));
//!     request
//! };
//! let first = cache.clone().oneshot(ask()).await.unwrap();
//! assert_eq!(first.extensions.get::<CacheStatus>(), Some(&CacheStatus::Miss));
//! first.end(StreamEnd::Complete); // only a complete answer is stored
//! let second = cache.oneshot(ask()).await.unwrap();
//! assert_eq!(second.extensions.get::<CacheStatus>(), Some(&CacheStatus::Hit));
//! assert_eq!(second.events, ["answer from a"]);
//! assert_eq!(account.calls(), 1, "the hit never reached the account");
//! # }
//! ```

mod layer;
mod store;
#[cfg(test)]
mod tests;

pub use layer::{Cache, CacheLayer};
pub use store::{CacheStore, Lookup, MemoryStore};

use std::sync::Arc;

/// A request's cache key (a 256-bit hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

/// Requests that may be cached.
pub trait Cacheable {
    /// The key, or `None` when this request must never be cached.
    fn cache_key(&self) -> Option<CacheKey>;
}

/// Responses whose events can be recorded and replayed.
pub trait Replay: Sized {
    /// One event of the response stream.
    type Event: Clone + Send + Sync + 'static;

    /// Passes the stream through unchanged and calls `done` once: with every event when the
    /// stream reached its stop event (also when the consumer dropped it first: the rest is
    /// then drained in a task of its own), or with `None` when it failed or ended early.
    fn record(self, done: impl FnOnce(Option<Vec<Self::Event>>) + Send + 'static) -> Self;

    /// A response that plays `events` again (with fresh ids).
    fn replay(events: Arc<[Self::Event]>) -> Self;

    /// Roughly how many bytes `event` holds, for the store's budget.
    fn weight(event: &Self::Event) -> usize;

    /// Whether an answer made of `events` may be stored.
    fn storable(events: &[Self::Event]) -> bool;
}

/// What the client said about caching (`Cache-Control` request directives).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-cache`: do not answer from the cache.
    pub no_cache: bool,
    /// `no-store`: do not store this answer.
    pub no_store: bool,
}

impl CacheControl {
    /// Reads a `Cache-Control` header value (directives are case-insensitive).
    pub fn parse(value: &str) -> Self {
        let mut control = Self::default();
        for directive in value.split(',').map(str::trim) {
            if directive.eq_ignore_ascii_case("no-cache") {
                control.no_cache = true;
            } else if directive.eq_ignore_ascii_case("no-store") {
                control.no_store = true;
            }
        }
        control
    }
}

/// How the cache treated a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found: answered upstream (and stored if it can be).
    Miss,
    /// Not looked up (`no-cache`, or a request that is never cached).
    Bypass,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

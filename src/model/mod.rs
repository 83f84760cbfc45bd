//! The model tier's contract: what every model-tier layer takes, returns and fails with, so
//! that retry, pool, breakers, cache, limits and metrics are ordinary tower layers.
//!
//! - [`ModelRequest`]: the canonical request behind an `Arc` (retry clones it before every
//!   attempt for the price of a refcount) plus typed [`Extensions`] that layers read and add
//!   ([`ResolvedModel`] from [`resolve`]). Whether the client streams is the adapter's
//!   business; the model tier always produces a stream.
//! - [`ModelResponse`]: the event stream plus extensions that layers fill ([`AccountId`], ...)
//!   and the adapter turns into headers and span fields.
//! - [`ChatError`]: says whose fault a failure is ([`ChatError::fault`]) and when to come
//!   back ([`ChatError::retry_after`]).
//! - The leaf ([`crate::kiro::KiroService`]) is one account. Its future resolves after the
//!   first upstream event: an error from the future means nothing reached the client, so a
//!   retry is safe. Its concurrency permit lives until the stream ends, and a full account
//!   is not ready in `poll_ready` (never an error there).
//! - [`ModelResponse::on_end`] is the one end-of-stream hook: each layer that needs the
//!   [`StreamReport`] (load, breakers, metrics, cache writes) registers its own.
//!
//! The stack, outermost first (the HTTP tier's table is in [`crate::pipeline`]):
//!
//! | # | layer | does | extensions |
//! |---|---|---|---|
//! | 1 | [`resolve`] | catalog lookup of `chat.model` (and its `-thinking` suffix), once for the whole tier | + [`ResolvedModel`], `ModelLabel` |
//! | 1a | [`rate_limit`](aiproxy_layers::rate_limit) (with `--rate-limit-*` or per-key limits) | each API key's requests and tokens per minute (tokens settled with the real usage at the end of the stream); over the limit: [`ChatError::Throttled`]; with the limits in Redis the decision is left to the Kiro service (made with an account's lease in one round trip) | writes `RateLimitSlot` (the adapter's `x-ratelimit-*` headers) |
//! | 1a' | [`search`] (requests that offer web search) | the server-side tool loop: offers the model a `web_search` tool, runs the searches it calls (each a call of its own below, with [`SearchQuery`](crate::chat::web_search::SearchQuery)), gives it the results and calls it again; the client sees search events | + `SearchQuery`, `OperationName("search")` on its searches |
//! | 1b | [`metrics`](aiproxy_layers::metrics) (switchable: `--disable-layers metrics`) | operations by provider, model and error type to the end of the stream, first token, tokens by type, streams in flight, retries | ? `ModelLabel`, ? `ProviderId`; ? response `Attempts` |
//! | 1c | [`cache`](aiproxy_layers::cache) (with `--cache-enabled`; keys and replay in [`cache`]) | answers identical requests of one client from memory, stores complete answers without tool calls, coalesces identical misses, honours `Cache-Control` | ? `CacheControl`; response + `CacheStatus` |
//! | 1d | [`emulate`] | what Kiro lacks: `max_tokens` (limit check, local cut), stop sequences, one tool call at most, forced tool choice (told, held back, asked once more); the context window; its checks need only the request and the catalog, so they answer before any wait for an account | ? [`ResolvedModel`]; + [`PromptTokens`] |
//! | 2 | [`ready`](aiproxy_layers::model::ready) | always ready itself; each call (a forced tool's second ask too) waits for the layers below to be ready (a free account slot) at most `--request-timeout`, then [`ChatError::Busy`]; so cache hits, rate-limit refusals and limit checks above it never wait for an account | |
//! | 3 | [`retry`](aiproxy_layers::model::retry) (switchable: `--disable-layers retry`) | failures before the first byte again, on another account; backoff, budget | + `Attempts` (request and response) |
//! | 4 | [`pool`](aiproxy_layers::model::pool) with [`health`](aiproxy_layers::model::health) (switchable for one account: `--disable-layers pool`) | one account per request (affinity, p2c, caps, slow start, per-account `requestsPerMinute` guards), breakers and cooldowns fed by each outcome, each account's state in a [`store`](aiproxy_layers::model::store); accounts built and reloaded by [`accounts`](crate::kiro::accounts) | ? `SessionKey`, ? `Attempts`; response + `AccountId` (when the leaf set none) |
//! | 5 | [`crate::kiro::KiroService`] | one account: token source (its tokens in a [`token_store`](crate::kiro::auth::token_store)), request builder, transport, decoder; a request with a `SearchQuery` is a web search | ? [`ResolvedModel`], ? [`PromptTokens`], ? `SearchQuery`; response + [`AccountId`] |
//!
//! The layers of 3 and 4 live in `aiproxy-layers`, generic over the request, response and
//! error through its `HasExtensions`, `Observe` and `Failure` traits, which this module and
//! [`failure`] implement for [`ModelRequest`], [`ModelResponse`] and [`ChatError`].

pub mod cache;
pub mod emulate;
pub mod failure;
pub mod resolve;
pub mod search;

use crate::chat::{ChatError, ChatEvent, ChatRequest, ChatStream, Fault, Usage};
pub use aiproxy_layers::model::StreamEnd;
use aiproxy_layers::model::{HasExtensions, Observe};
use futures_util::Stream;
pub use http::Extensions;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A model-tier request (see the module docs).
#[derive(Clone, Debug)]
pub struct ModelRequest {
    /// The canonical request.
    pub chat: Arc<ChatRequest>,
    /// Typed values layers add for the layers below them.
    pub extensions: Extensions,
}

impl ModelRequest {
    /// A request with no extensions yet.
    pub fn new(chat: ChatRequest) -> Self {
        Self {
            chat: Arc::new(chat),
            extensions: Extensions::new(),
        }
    }
}

impl From<ChatRequest> for ModelRequest {
    fn from(chat: ChatRequest) -> Self {
        Self::new(chat)
    }
}

/// The model the request resolved to, found once above the leaf.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedModel {
    /// The catalog entry (client id, Kiro id, limits, capabilities).
    pub entry: Arc<crate::catalog::ModelEntry>,
    /// Whether the `-thinking` suffix turned thinking on.
    pub thinking_suffix: bool,
}

/// The prompt's local token estimate ([`crate::token_count::estimate_request`]), made once
/// by [`emulate`] (which checks it against the context window before any wait) for the
/// request as it goes down, and reused by the leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptTokens(pub u64);

pub use aiproxy_layers::model::{AccountId, StreamReport};

/// A model-tier response (see the module docs).
pub struct ModelResponse {
    /// The events, starting with [`ChatEvent::Start`].
    pub events: ChatStream,
    /// Typed values layers add for the adapter and the layers above them.
    pub extensions: Extensions,
}

impl std::fmt::Debug for ModelResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelResponse")
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

impl ModelResponse {
    /// A response with no extensions yet.
    pub fn new(events: ChatStream) -> Self {
        Self {
            events,
            extensions: Extensions::new(),
        }
    }

    /// Calls `hook` once with the stream's [`StreamReport`] when it ends, fails or is dropped.
    /// Whatever `hook` owns (a load guard, a permit) lives until then.
    pub fn on_end(mut self, hook: impl FnOnce(&StreamReport) + Send + 'static) -> Self {
        self.events = Box::pin(Observed {
            inner: self.events,
            started: Instant::now(),
            first_event: None,
            usage: None,
            hook: Some(Box::new(hook)),
        });
        self
    }
}

impl HasExtensions for ModelRequest {
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl aiproxy_layers::rate_limit::RateLimited for ModelRequest {
    fn rate_key(&self) -> &str {
        self.chat.metadata.client.label()
    }

    /// The prompt, estimated with the local counter (what `count_tokens` answers).
    fn token_estimate(&self) -> u64 {
        crate::token_count::estimate_request(&self.chat)
    }
}

impl HasExtensions for ModelResponse {
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl Observe for ModelResponse {
    fn on_stream_end(self, hook: impl FnOnce(&StreamReport) + Send + 'static) -> Self {
        self.on_end(hook)
    }
}

type Hook = Box<dyn FnOnce(&StreamReport) + Send>;

struct Observed {
    inner: ChatStream,
    started: Instant,
    first_event: Option<Duration>,
    usage: Option<Usage>,
    hook: Option<Hook>,
}

impl Observed {
    fn finish(&mut self, error: Option<&'static str>, end: StreamEnd) {
        if let Some(hook) = self.hook.take() {
            hook(&StreamReport {
                error_kind: error,
                end,
                duration: self.started.elapsed(),
                time_to_first_event: self.first_event,
                usage: self.usage,
            });
        }
    }
}

impl Stream for Observed {
    type Item = Result<ChatEvent, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        match &item {
            Some(Ok(ChatEvent::Start { .. })) => {}
            Some(Ok(event)) => {
                if this.first_event.is_none() {
                    this.first_event = Some(this.started.elapsed());
                }
                match event {
                    ChatEvent::Usage(usage) => this.usage = Some(*usage),
                    ChatEvent::Stop(_) => this.finish(None, StreamEnd::Complete),
                    _ => {}
                }
            }
            Some(Err(error)) => this.finish(Some(error.kind()), StreamEnd::Failed(error.fault())),
            // A stream that ends without Stop is a truncation, and is told as one upstream.
            None => this.finish(Some("truncated"), StreamEnd::Failed(Fault::Upstream)),
        }
        Poll::Ready(item)
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish(Some("abandoned"), StreamEnd::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::StopReason;
    use futures_util::StreamExt;
    use std::sync::Mutex;

    fn events(items: Vec<Result<ChatEvent, ChatError>>) -> ChatStream {
        Box::pin(futures_util::stream::iter(items))
    }

    fn start() -> ChatEvent {
        ChatEvent::Start {
            id: Arc::from("msg"),
            model: Arc::from("m"),
            input_tokens: 1,
        }
    }

    fn observe(
        items: Vec<Result<ChatEvent, ChatError>>,
    ) -> (ModelResponse, Arc<Mutex<Vec<StreamReport>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let response =
            ModelResponse::new(events(items)).on_end(move |o| sink.lock().unwrap().push(*o));
        (response, seen)
    }

    #[tokio::test]
    async fn the_hook_sees_one_outcome_per_stream() {
        let usage = Usage {
            input: 3,
            output: 4,
            ..Usage::default()
        };
        let (response, seen) = observe(vec![
            Ok(start()),
            Ok(ChatEvent::TextDelta("hi".into())),
            Ok(ChatEvent::Usage(usage)),
            Ok(ChatEvent::Stop(StopReason::EndTurn)),
        ]);
        let all: Vec<_> = response.events.collect().await;
        assert_eq!(all.len(), 4);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "once, though the stream was also dropped");
        assert_eq!(seen[0].error_kind, None);
        assert_eq!(seen[0].usage, Some(usage));
        assert!(seen[0].time_to_first_event.is_some());
    }

    #[tokio::test]
    async fn errors_truncations_and_abandoned_streams_are_told_apart() {
        let (response, seen) = observe(vec![
            Ok(start()),
            Err(ChatError::Upstream {
                message: "x".into(),
            }),
        ]);
        let _ = response.events.collect::<Vec<_>>().await;
        assert_eq!(seen.lock().unwrap()[0].error_kind, Some("upstream_error"));

        let (response, seen) = observe(vec![Ok(start()), Ok(ChatEvent::TextDelta("a".into()))]);
        let _ = response.events.collect::<Vec<_>>().await;
        assert_eq!(seen.lock().unwrap()[0].error_kind, Some("truncated"));

        let (mut response, seen) = observe(vec![Ok(start()), Ok(ChatEvent::TextDelta("a".into()))]);
        let _ = response.events.next().await;
        drop(response);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].error_kind, Some("abandoned"));
        assert_eq!(
            seen[0].time_to_first_event, None,
            "Start is not an upstream event"
        );
    }
}

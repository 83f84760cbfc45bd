//! Test doubles for stacks of these layers (behind the `testing` feature, and in this
//! crate's own unit tests): a scriptable in-process model service in the spirit of
//! tower-test's mock. Each [`MockAccount`] answers from its own script, counts its calls and
//! hands out [`MockResponse`]s whose stream end the test decides; [`MockError`] is a
//! [`Failure`] of any fault and penalty, so retry, pool, breakers, rate limits and metrics
//! can all be exercised without an upstream. [`MockRequest`] is [`Cacheable`] (by the
//! [`CacheKey`] in its extensions) and [`RateLimited`] (by its [`ClientKey`] label and a
//! [`TokenEstimate`]), and [`MockResponse`] is [`Replay`]-able, so the cache and the rate
//! limits can be stacked over mock accounts too.

use crate::cache::{CacheKey, Cacheable, Replay};
use crate::model::pool::NoAccount;
use crate::model::{Failure, Fault, HasExtensions, Observe, Penalty, StreamEnd, StreamReport};
use crate::rate_limit::RateLimited;
use crate::ClientKey;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum MockError {
    Fails {
        fault: Fault,
        penalty: Penalty,
        retry_after: Option<Duration>,
    },
    None(NoAccount),
    Throttled(crate::rate_limit::Throttled),
    NotReady(crate::model::ready::NotReady),
    StoreUnavailable(crate::rate_limit::StoreUnavailable),
}

impl MockError {
    pub fn upstream() -> Self {
        Self::Fails {
            fault: Fault::Upstream,
            penalty: Penalty::Failure,
            retry_after: None,
        }
    }
    pub fn request() -> Self {
        Self::Fails {
            fault: Fault::Request,
            penalty: Penalty::None,
            retry_after: None,
        }
    }
    pub fn penalty(fault: Fault, penalty: Penalty) -> Self {
        Self::Fails {
            fault,
            penalty,
            retry_after: None,
        }
    }
}

impl From<NoAccount> for MockError {
    fn from(none: NoAccount) -> Self {
        Self::None(none)
    }
}

impl From<crate::model::ready::NotReady> for MockError {
    fn from(not_ready: crate::model::ready::NotReady) -> Self {
        Self::NotReady(not_ready)
    }
}

impl From<crate::rate_limit::Throttled> for MockError {
    fn from(throttled: crate::rate_limit::Throttled) -> Self {
        Self::Throttled(throttled)
    }
}

impl From<crate::rate_limit::StoreUnavailable> for MockError {
    fn from(down: crate::rate_limit::StoreUnavailable) -> Self {
        Self::StoreUnavailable(down)
    }
}

impl Failure for MockError {
    fn fault(&self) -> Fault {
        match self {
            Self::Fails { fault, .. } => *fault,
            Self::None(_) | Self::NotReady(_) | Self::StoreUnavailable(_) => Fault::Local,
            Self::Throttled(_) => Fault::Request,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Fails { retry_after, .. } => *retry_after,
            Self::None(none) => none.retry_after,
            Self::Throttled(t) => t.retry_after,
            Self::NotReady(_) | Self::StoreUnavailable(_) => None,
        }
    }
    fn penalty(&self) -> Penalty {
        match self {
            Self::Fails { penalty, .. } => penalty.clone(),
            Self::None(_) | Self::Throttled(_) | Self::NotReady(_) | Self::StoreUnavailable(_) => {
                Penalty::None
            }
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Fails { .. } => "mock",
            Self::None(_) => "no_account",
            Self::Throttled(_) => "throttled",
            Self::NotReady(_) => "busy",
            Self::StoreUnavailable(_) => "shared_state_unavailable",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct MockRequest {
    pub extensions: http::Extensions,
}

/// The tokens a [`MockRequest`] says it will use (an extension; 0 without one).
#[derive(Clone, Copy, Debug)]
pub struct TokenEstimate(pub u64);

impl Cacheable for MockRequest {
    /// The [`CacheKey`] extension; a request without one is never cached.
    fn cache_key(&self) -> Option<CacheKey> {
        self.extensions.get::<CacheKey>().copied()
    }
}

impl RateLimited for MockRequest {
    /// The [`ClientKey`] extension's label, `anonymous` without one.
    fn rate_key(&self) -> &str {
        self.extensions
            .get::<ClientKey>()
            .map_or("anonymous", ClientKey::label)
    }
    fn token_estimate(&self) -> u64 {
        self.extensions.get::<TokenEstimate>().map_or(0, |e| e.0)
    }
}

impl HasExtensions for MockRequest {
    fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }
}

type Hook = Box<dyn FnOnce(&StreamReport) + Send>;

pub struct MockResponse {
    /// The account that answered (`cache` for a replayed answer).
    pub account: &'static str,
    /// The answer's events: `answer from NAME` for a mock account's.
    pub events: Vec<String>,
    pub extensions: http::Extensions,
    hooks: Vec<Hook>,
}

impl std::fmt::Debug for MockResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockResponse")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl MockResponse {
    /// Ends the stream the way the test says (dropping it is `Abandoned`).
    pub fn end(self, end: StreamEnd) {
        self.end_with(StreamReport {
            end,
            error_kind: match end {
                StreamEnd::Complete => None,
                StreamEnd::Failed(_) => Some("upstream_error"),
                StreamEnd::Abandoned => Some("abandoned"),
            },
            duration: Duration::from_millis(20),
            time_to_first_event: Some(Duration::from_millis(5)),
            usage: None,
        });
    }

    /// Ends the stream with this report.
    pub fn end_with(mut self, report: StreamReport) {
        for hook in self.hooks.drain(..).rev() {
            hook(&report);
        }
    }
}

impl Drop for MockResponse {
    fn drop(&mut self) {
        let report = StreamReport {
            end: StreamEnd::Abandoned,
            error_kind: Some("abandoned"),
            duration: Duration::ZERO,
            time_to_first_event: None,
            usage: None,
        };
        for hook in self.hooks.drain(..).rev() {
            hook(&report);
        }
    }
}

impl HasExtensions for MockResponse {
    fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }
}

impl Replay for MockResponse {
    type Event = String;

    /// Hands on the events when the test ends the stream [`StreamEnd::Complete`].
    fn record(self, done: impl FnOnce(Option<Vec<String>>) + Send + 'static) -> Self {
        let events = self.events.clone();
        self.on_stream_end(move |report| {
            done((report.end == StreamEnd::Complete).then_some(events))
        })
    }
    fn replay(events: std::sync::Arc<[String]>) -> Self {
        Self {
            account: "cache",
            events: events.to_vec(),
            extensions: http::Extensions::new(),
            hooks: Vec::new(),
        }
    }
    fn weight(event: &String) -> usize {
        event.len()
    }
    fn storable(_events: &[String]) -> bool {
        true
    }
}

impl Observe for MockResponse {
    fn on_stream_end(mut self, hook: impl FnOnce(&StreamReport) + Send + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }
}

/// One scripted account: answers `Ok` unless its script says otherwise.
#[derive(Clone, Debug)]
pub struct MockAccount {
    pub name: &'static str,
    script: Arc<Mutex<VecDeque<Result<(), MockError>>>>,
    /// Fails every call with this when set.
    always: Arc<Mutex<Option<MockError>>>,
    calls: Arc<AtomicUsize>,
}

impl MockAccount {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            script: Arc::default(),
            always: Arc::default(),
            calls: Arc::default(),
        }
    }
    pub fn script(&self, answer: Result<(), MockError>) -> &Self {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(answer);
        self
    }
    pub fn fail_always(&self, error: Option<MockError>) {
        *self.always.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl tower_service::Service<MockRequest> for MockAccount {
    type Response = MockResponse;
    type Error = MockError;
    type Future = Pin<Box<dyn Future<Output = Result<MockResponse, MockError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: MockRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let scripted = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let always = self
            .always
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let answer = match (always, scripted) {
            (Some(error), _) => Err(error),
            (None, Some(answer)) => answer,
            (None, None) => Ok(()),
        };
        let account = self.name;
        Box::pin(async move {
            answer.map(|()| MockResponse {
                account,
                events: vec![format!("answer from {account}")],
                extensions: http::Extensions::new(),
                hooks: Vec::new(),
            })
        })
    }
}

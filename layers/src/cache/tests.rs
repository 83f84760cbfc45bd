//! The cache layer against a scriptable service whose answers are lists of strings.

use super::*;
use crate::model::HasExtensions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

type Done = Box<dyn FnOnce(Option<Vec<String>>) + Send>;

/// An answer: its events, whether its stream completes, and the recorder's hook.
struct Answer {
    events: Vec<String>,
    complete: bool,
    extensions: http::Extensions,
    done: Option<Done>,
}

impl Answer {
    /// Reads the answer to its end.
    fn read(mut self) -> (Vec<String>, Option<CacheStatus>) {
        self.finish();
        (
            std::mem::take(&mut self.events),
            self.extensions.get::<CacheStatus>().copied(),
        )
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.complete.then(|| self.events.clone()));
        }
    }
}

impl Drop for Answer {
    // As the real recorder does: the rest of the stream is drained, then told.
    fn drop(&mut self) {
        self.finish();
    }
}

impl HasExtensions for Answer {
    fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }
}

impl Replay for Answer {
    type Event = String;
    fn record(mut self, done: impl FnOnce(Option<Vec<String>>) + Send + 'static) -> Self {
        self.done = Some(Box::new(done));
        self
    }
    fn replay(events: Arc<[String]>) -> Self {
        Answer {
            events: events.to_vec(),
            complete: true,
            extensions: http::Extensions::new(),
            done: None,
        }
    }
    fn weight(event: &String) -> usize {
        event.len()
    }
    fn storable(events: &[String]) -> bool {
        !events.iter().any(|e| e.starts_with("tool:"))
    }
}

#[derive(Clone, Default)]
struct Ask {
    key: Option<u8>,
    extensions: http::Extensions,
}

impl Ask {
    fn key(key: u8) -> Self {
        Self {
            key: Some(key),
            ..Self::default()
        }
    }
    fn control(mut self, value: &str) -> Self {
        self.extensions.insert(CacheControl::parse(value));
        self
    }
}

impl Cacheable for Ask {
    fn cache_key(&self) -> Option<CacheKey> {
        self.key.map(|k| CacheKey([k; 32]))
    }
}

impl HasExtensions for Ask {
    fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }
}

/// Answers every call with `events` (after `delay`), counting calls.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    events: Arc<Mutex<(Vec<String>, bool)>>,
    delay: Duration,
}

impl Upstream {
    fn new(events: &[&str]) -> Self {
        Self {
            calls: Arc::default(),
            events: Arc::new(Mutex::new((
                events.iter().map(|e| e.to_string()).collect(),
                true,
            ))),
            delay: Duration::ZERO,
        }
    }
    fn truncating(self) -> Self {
        self.events.lock().unwrap().1 = false;
        self
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Ask> for Upstream {
    type Response = Answer;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Answer, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _ask: Ask) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (events, complete) = self.events.lock().unwrap().clone();
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(Answer {
                events,
                complete,
                extensions: http::Extensions::new(),
                done: None,
            })
        })
    }
}

use std::pin::Pin;

fn cache(upstream: &Upstream) -> Cache<Upstream, String> {
    let store: Arc<dyn CacheStore<String>> =
        Arc::new(MemoryStore::new(1 << 20, Duration::from_secs(60)));
    CacheLayer::new(store).layer(upstream.clone())
}

async fn ask(
    service: &mut Cache<Upstream, String>,
    ask: Ask,
) -> (Vec<String>, Option<CacheStatus>) {
    service
        .ready()
        .await
        .unwrap()
        .call(ask)
        .await
        .unwrap()
        .read()
}

#[tokio::test]
async fn a_second_identical_request_is_answered_from_the_cache() {
    let upstream = Upstream::new(&["Hel", "lo"]);
    let mut service = cache(&upstream);
    let first = ask(&mut service, Ask::key(1)).await;
    let second = ask(&mut service, Ask::key(1)).await;
    assert_eq!(
        first,
        (vec!["Hel".into(), "lo".into()], Some(CacheStatus::Miss))
    );
    assert_eq!(
        second,
        (vec!["Hel".into(), "lo".into()], Some(CacheStatus::Hit))
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn other_keys_and_uncacheable_requests_go_upstream() {
    let upstream = Upstream::new(&["a"]);
    let mut service = cache(&upstream);
    ask(&mut service, Ask::key(1)).await;
    // Another tenant's key differs, so it is its own miss.
    assert_eq!(
        ask(&mut service, Ask::key(2)).await.1,
        Some(CacheStatus::Miss)
    );
    assert_eq!(
        ask(&mut service, Ask::default()).await.1,
        Some(CacheStatus::Bypass)
    );
    assert_eq!(
        ask(&mut service, Ask::default()).await.1,
        Some(CacheStatus::Bypass)
    );
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn truncated_and_unstorable_answers_are_not_stored() {
    let truncated = Upstream::new(&["cut"]).truncating();
    let mut service = cache(&truncated);
    ask(&mut service, Ask::key(1)).await;
    assert_eq!(
        ask(&mut service, Ask::key(1)).await.1,
        Some(CacheStatus::Miss)
    );
    assert_eq!(truncated.calls(), 2);

    let tool = Upstream::new(&["let me look", "tool:search"]);
    let mut service = cache(&tool);
    ask(&mut service, Ask::key(1)).await;
    assert_eq!(
        ask(&mut service, Ask::key(1)).await.1,
        Some(CacheStatus::Miss)
    );
    assert_eq!(tool.calls(), 2);
}

#[tokio::test]
async fn no_cache_skips_the_lookup_and_no_store_the_store() {
    let upstream = Upstream::new(&["a"]);
    let mut service = cache(&upstream);
    ask(&mut service, Ask::key(1).control("no-store")).await;
    assert_eq!(
        ask(&mut service, Ask::key(1).control("No-Cache")).await.1,
        Some(CacheStatus::Bypass)
    );
    // The no-cache answer was stored (only no-store prevents that).
    assert_eq!(
        ask(&mut service, Ask::key(1)).await.1,
        Some(CacheStatus::Hit)
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn an_answer_dropped_before_its_end_is_still_stored() {
    let upstream = Upstream::new(&["a", "b"]);
    let mut service = cache(&upstream);
    let answer = service
        .ready()
        .await
        .unwrap()
        .call(Ask::key(1))
        .await
        .unwrap();
    drop(answer);
    assert_eq!(
        ask(&mut service, Ask::key(1)).await.1,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_misses_in_flight_go_upstream_once() {
    let mut upstream = Upstream::new(&["once"]);
    upstream.delay = Duration::from_millis(50);
    let service = cache(&upstream);
    let asks: Vec<_> = (0..10)
        .map(|_| {
            let mut service = service.clone();
            tokio::spawn(async move { ask(&mut service, Ask::key(7)).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for asked in asks {
        statuses.push(asked.await.unwrap().1.unwrap());
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(
        statuses.iter().filter(|s| **s == CacheStatus::Miss).count(),
        1
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == CacheStatus::Hit).count(),
        9
    );
}

#[tokio::test]
async fn the_memory_store_stays_within_its_byte_budget() {
    let store = MemoryStore::<String>::new(10_000, Duration::from_secs(60));
    for key in 0..200u8 {
        store.put(CacheKey([key; 32]), vec!["x".repeat(400)].into(), 400);
    }
    assert!(store.bytes() <= 10_000, "{} bytes", store.bytes());
    assert!(store.entries() > 0);
}

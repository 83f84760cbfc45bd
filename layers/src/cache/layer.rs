//! The cache layer and its service (see the module docs).

use super::{CacheControl, CacheKey, CacheStatus, CacheStore, Cacheable, Replay};
use crate::model::HasExtensions;
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::KeyValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

struct Shared<E> {
    store: Arc<dyn CacheStore<E>>,
    /// Misses being answered now, by key: followers wait for the sender to go away.
    flights: Mutex<HashMap<CacheKey, watch::Sender<()>>>,
    requests: Option<Counter<u64>>,
}

/// Caches answers (see the module docs).
pub struct CacheLayer<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for CacheLayer<E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E> std::fmt::Debug for CacheLayer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer").finish_non_exhaustive()
    }
}

impl<E: Send + Sync + 'static> CacheLayer<E> {
    /// A cache over `store`.
    pub fn new(store: Arc<dyn CacheStore<E>>) -> Self {
        Self::over(store, None)
    }

    fn over(store: Arc<dyn CacheStore<E>>, requests: Option<Counter<u64>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                flights: Mutex::default(),
                requests,
            }),
        }
    }

    /// Records lookups (`cache.requests` by result) and the store's size (`cache.size` in
    /// bytes, `cache.entries`) on `meter`.
    pub fn with_meter(self, meter: &Meter) -> Self {
        let store = Arc::clone(&self.shared.store);
        meter
            .u64_observable_gauge("cache.size")
            .with_unit("By")
            .with_description("Bytes of answers the cache holds (an estimate)")
            .with_callback(move |o| o.observe(store.bytes(), &[]))
            .build();
        let store = Arc::clone(&self.shared.store);
        meter
            .u64_observable_gauge("cache.entries")
            .with_description("Answers the cache holds")
            .with_callback(move |o| o.observe(store.entries(), &[]))
            .build();
        let requests = meter
            .u64_counter("cache.requests")
            .with_description("Model requests by cache result (hit, miss, bypass)")
            .build();
        Self::over(Arc::clone(&self.shared.store), Some(requests))
    }
}

impl<S, E> Layer<S> for CacheLayer<E> {
    type Service = Cache<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`CacheLayer`].
pub struct Cache<S, E> {
    inner: S,
    shared: Arc<Shared<E>>,
}

impl<S: Clone, E> Clone for Cache<S, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, E> std::fmt::Debug for Cache<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The first of identical misses in flight: when it is dropped (the answer stored, or
/// not), the others stop waiting.
struct Lead<E> {
    shared: Arc<Shared<E>>,
    key: CacheKey,
}

impl<E> Drop for Lead<E> {
    fn drop(&mut self) {
        self.shared
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

enum Flight<E> {
    Lead(Lead<E>),
    Follow(watch::Receiver<()>),
}

impl<E> Shared<E> {
    fn flight(self: &Arc<Self>, key: CacheKey) -> Flight<E> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = flights.get(&key) {
            return Flight::Follow(sender.subscribe());
        }
        flights.insert(key, watch::channel(()).0);
        Flight::Lead(Lead {
            shared: Arc::clone(self),
            key,
        })
    }

    fn count(&self, status: CacheStatus) {
        if let Some(requests) = &self.requests {
            requests.add(1, &[KeyValue::new("result", status.as_str())]);
        }
    }
}

impl<S, E, Req> Service<Req> for Cache<S, E>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Replay<Event = E> + HasExtensions + Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    Req: Cacheable + HasExtensions + Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        // The ready service takes the call; a fresh clone waits for the next poll_ready.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let control = request
            .extensions()
            .get::<CacheControl>()
            .copied()
            .unwrap_or_default();
        let key = request.cache_key();
        Box::pin(async move {
            let mut lead = None;
            let status = match key {
                Some(key) if !control.no_cache => {
                    if let Some(hit) = hit::<S::Response>(&shared, &key).await {
                        return Ok(hit);
                    }
                    if !control.no_store {
                        match shared.flight(key) {
                            Flight::Lead(first) => lead = Some(first),
                            Flight::Follow(mut first) => {
                                // Ends when the first one's answer is stored or given up.
                                let _ = first.changed().await;
                                if let Some(hit) = hit::<S::Response>(&shared, &key).await {
                                    return Ok(hit);
                                }
                            }
                        }
                    }
                    CacheStatus::Miss
                }
                _ => CacheStatus::Bypass,
            };
            shared.count(status);
            let mut inner = inner;
            let mut response = inner.call(request).await?;
            if let (Some(key), false) = (key, control.no_store) {
                let store = Arc::clone(&shared.store);
                response = response.record(move |events| {
                    if let Some(events) = events.filter(|e| S::Response::storable(e)) {
                        let weight: usize = events.iter().map(S::Response::weight).sum();
                        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
                        store.put(key, events.into(), weight);
                    }
                    drop(lead);
                });
            }
            response.extensions_mut().insert(status);
            Ok(response)
        })
    }
}

async fn hit<R: Replay + HasExtensions>(shared: &Shared<R::Event>, key: &CacheKey) -> Option<R> {
    let events = shared.store.get(key).answer().await?;
    shared.count(CacheStatus::Hit);
    let mut response = R::replay(events);
    response.extensions_mut().insert(CacheStatus::Hit);
    Some(response)
}

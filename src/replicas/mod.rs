//! State shared between replicas through Redis (or Valkey: same protocol).
//!
//! With `--redis-url`, the stores that must agree across replicas use Redis: the client
//! rate limits ([`rate_limit`], one Lua script per admission), the Responses API's stored
//! responses ([`responses`]), the answer cache ([`cache`]), each login's tokens with its
//! refresh lock ([`tokens`]), the accounts' health and load ([`health`]) and their
//! `maxConcurrency` leases ([`leases`]). Without it nothing here exists and every store
//! stays in the process.
//!
//! The client is the `redis` crate's [`ConnectionManager`]: one multiplexed connection
//! (requests of every task pipelined on it, no pool to size) that reconnects by itself. It
//! is made in the background, so a replica starts (and serves, in `open` mode) while Redis
//! is still down. Every call on the request path has a deadline (`--redis-timeout-ms`);
//! what happens past it is the failure mode: `open` decides on the replica's own state,
//! warns once per outage and counts `redis.fallbacks`; `closed` refuses with a 503.

pub mod cache;
pub mod health;
pub mod leases;
pub mod rate_limit;
pub mod responses;
pub mod tokens;

use crate::config::{FailureMode, RedisSettings};
use opentelemetry::metrics::{Counter, Meter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// How often a call goes through to a Redis that is down (the others fail at once).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// `duration` in whole milliseconds, as Redis takes TTLs (saturating).
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A replica's link to Redis; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    /// For the connections of their own (the health events' subscription).
    client: redis::Client,
    /// Set once connected; the manager reconnects by itself after that.
    connection: OnceLock<ConnectionManager>,
    /// Wakes the calls that came before the first connection.
    connected: tokio::sync::Notify,
    /// [`UP`], [`DOWN`] or [`UNKNOWN`] (before the first call): one warning per change to
    /// down, the first included, one line when it is back.
    link: AtomicU8,
    /// While Redis is down, calls fail at once instead of each waiting out the deadline;
    /// one goes through per [`PROBE_EVERY`] to find out whether it is back. Milliseconds
    /// since `started` of the last call that went through.
    last_try_ms: AtomicU64,
    started: std::time::Instant,
    fallbacks: AtomicU64,
    fallback_counter: Counter<u64>,
    /// Round trips made for requests (admission, end, cache, stored responses, refresh
    /// locks), so the cost per request can be measured from outside.
    round_trips: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("endpoint", &self.inner.settings.endpoint)
            .finish_non_exhaustive()
    }
}

/// A Redis call that did not answer in time or failed.
#[derive(Debug)]
pub struct RedisDown(pub String);

impl Redis {
    /// Starts connecting in the background (needs a tokio runtime). The URL was checked
    /// when the configuration was read.
    pub fn start(settings: RedisSettings, meter: &Meter) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.expose()).map_err(|error| {
            format!(
                "the Redis URL for {} is not usable ({:?}); check --redis-url",
                settings.endpoint,
                error.kind()
            )
        })?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "Redis needs the tokio runtime to connect".to_string())?;
        let redis = Self {
            inner: Arc::new(Inner {
                client: client.clone(),
                connection: OnceLock::new(),
                connected: tokio::sync::Notify::new(),
                link: AtomicU8::new(UNKNOWN),
                last_try_ms: AtomicU64::new(0),
                started: std::time::Instant::now(),
                fallbacks: AtomicU64::new(0),
                round_trips: AtomicU64::new(0),
                fallback_counter: meter
                    .u64_counter("redis.fallbacks")
                    .with_description(
                        "Decisions made on this replica's own state because Redis failed or was slow",
                    )
                    .build(),
                settings,
            }),
        };
        let link = redis.clone();
        runtime.spawn(async move { link.connect(client).await });
        Ok(redis)
    }

    /// Connects, retrying every second until Redis answers; the manager reconnects by
    /// itself after that.
    async fn connect(self, client: redis::Client) {
        let timeout = self.inner.settings.timeout.max(Duration::from_millis(500));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        loop {
            match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(manager) => {
                    let _ = self.inner.connection.set(manager);
                    self.inner.connected.notify_waiters();
                    self.succeeded();
                    return;
                }
                Err(error) => {
                    self.failed(&error.to_string());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The client, for a connection of its own (a subscription cannot share the
    /// multiplexed one).
    pub fn client(&self) -> redis::Client {
        self.inner.client.clone()
    }

    /// The settings (prefix, mode, deadline).
    pub fn settings(&self) -> &RedisSettings {
        &self.inner.settings
    }

    /// A key under the configured prefix.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.settings.prefix.clone();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(part);
        }
        key
    }

    /// The connection, waiting at most `deadline` for the first one (a call made while
    /// the replica starts must not decide alone only because the connection is not up yet).
    async fn connection(&self, deadline: tokio::time::Instant) -> Option<ConnectionManager> {
        loop {
            let notified = self.inner.connected.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(connection) = self.inner.connection.get() {
                return Some(connection.clone());
            }
            tokio::time::timeout_at(deadline, notified).await.ok()?;
        }
    }

    /// Runs `call` on the connection within the deadline: a round trip made for a request
    /// (counted in `/health`'s `round_trips`).
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, RedisDown>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        self.call_in_background(call).await
    }

    /// [`call`](Self::call) for the replicas' own upkeep (publishing health, sharing load,
    /// renewing leases), which no request waits for: not counted as a request's round trip.
    pub async fn call_in_background<T, F, Fut>(&self, call: F) -> Result<T, RedisDown>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.may_try() {
            return Err(RedisDown("down; retried in the background".into()));
        }
        let deadline = tokio::time::Instant::now() + self.inner.settings.timeout;
        let Some(connection) = self.connection(deadline).await else {
            let why = "not connected yet".to_string();
            self.failed(&why);
            return Err(RedisDown(why));
        };
        let answer = tokio::time::timeout_at(deadline, call(connection)).await;
        match answer {
            Ok(Ok(value)) => {
                self.succeeded();
                Ok(value)
            }
            Ok(Err(error)) => {
                let why = error.to_string();
                self.failed(&why);
                Err(RedisDown(why))
            }
            Err(_) => {
                let why = format!(
                    "no answer within {} ms",
                    self.inner.settings.timeout.as_millis()
                );
                self.failed(&why);
                Err(RedisDown(why))
            }
        }
    }

    /// Runs `call` in the background, its answer not awaited by anyone (a release whose
    /// failure leaves a key that expires by itself). Nothing runs outside a tokio runtime.
    pub fn spawn_call<T, F, Fut>(&self, call: F)
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let redis = self.clone();
            runtime.spawn(async move {
                let _ = redis.call(call).await;
            });
        }
    }

    /// The failure mode applied to a failed call: `open` takes this replica's own answer
    /// (`local`, counted in `redis.fallbacks`); `closed` gives what the 503 says.
    pub fn fall_back<T>(&self, down: &RedisDown, local: impl FnOnce() -> T) -> Result<T, String> {
        match self.inner.settings.failure_mode {
            FailureMode::Open => {
                self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.inner.fallback_counter.add(1, &[]);
                Ok(local())
            }
            FailureMode::Closed => Err(self.unavailable_message(down)),
        }
    }

    fn unavailable_message(&self, why: &RedisDown) -> String {
        format!(
            "the shared state of the replicas (Redis at {}) cannot be reached ({}), and \
             --redis-failure-mode is closed, so this replica does not decide alone; retry \
             shortly, or use --redis-failure-mode open",
            self.inner.settings.endpoint, why.0
        )
    }

    /// Whether a call may go to Redis now: always while it answers; while it is down, one
    /// per [`PROBE_EVERY`].
    fn may_try(&self) -> bool {
        if self.inner.link.load(Ordering::Acquire) != DOWN {
            return true;
        }
        let now = millis(self.inner.started.elapsed());
        let last = self.inner.last_try_ms.load(Ordering::Acquire);
        now.saturating_sub(last) >= millis(PROBE_EVERY)
            && self
                .inner
                .last_try_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn failed(&self, why: &str) {
        if self.inner.link.swap(DOWN, Ordering::AcqRel) != DOWN {
            tracing::warn!(
                endpoint = %self.inner.settings.endpoint,
                mode = self.inner.settings.failure_mode.as_str(),
                "Redis cannot be reached ({why}); {}",
                match self.inner.settings.failure_mode {
                    FailureMode::Open => "deciding on this replica's own state until it is back",
                    FailureMode::Closed => "answering 503 until it is back",
                }
            );
        }
    }

    fn succeeded(&self) {
        if self.inner.link.swap(UP, Ordering::AcqRel) != UP {
            tracing::info!(endpoint = %self.inner.settings.endpoint, "Redis reachable: state is shared");
        }
    }

    /// The status as `/health` and `/loadbalancer/instances` show it: where Redis is (no
    /// credentials), whether the last call succeeded, the failure mode, and how many
    /// decisions this replica made on its own state because Redis failed, and how many round
    /// trips it made for requests.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": "redis",
            "endpoint": self.inner.settings.endpoint,
            "reachable": self.inner.link.load(Ordering::Acquire) == UP,
            "failure_mode": self.inner.settings.failure_mode.as_str(),
            "fallbacks": self.inner.fallbacks.load(Ordering::Relaxed),
            "round_trips": self.inner.round_trips.load(Ordering::Relaxed),
        })
    }
}

//! Each account's `maxConcurrency` held across the replicas: a lease per upstream call, in
//! one sorted set per account (`{prefix}lease:{account}`, lease id scored by its expiry on
//! Redis's clock).
//!
//! - Taking one is one script: drop the expired leases, count the rest, add this one if
//!   there is room. A call that finds no room waits (polling every 20 ms) up to the request
//!   timeout, then gets a 503 `busy`.
//! - A replica renews all its leases in one round trip every [`LEASE_TTL`] / 3; one that
//!   dies stops renewing, and its leases expire within [`LEASE_TTL`]: a crashed replica's
//!   load does not stick.
//! - The lease is removed when the call's stream ends (or the call fails).
//! - Only accounts with their own `maxConcurrency` take leases: the default connection cap
//!   is each replica's own, and costs no round trip.
//! - Redis down: `open` calls without a lease (each replica holds its own cap), `closed`
//!   answers 503.

use super::Redis;
use crate::chat::ChatError;
use crate::kiro::service::{Lease, LeaseGate};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a lease outlives a replica that stopped renewing it.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

const POLL: Duration = Duration::from_millis(20);

/// KEYS: the account's set. ARGV: lease id, cap, TTL in ms. 1 taken, 0 full.
static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
",
    )
});

/// KEYS: sets. ARGV: TTL in ms, then per key the number of its leases and their ids.
/// Pushes the expiry of each lease still there (`XX`: an expired one is not brought back).
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local at = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  for i = 1, n do
    redis.call('ZADD', key, 'XX', now + ttl, ARGV[at + i])
  end
  at = at + n + 1
  redis.call('PEXPIRE', key, ttl)
end
return 1
",
    )
});

/// The replica's leases in Redis (see the module docs).
#[derive(Debug)]
pub struct RedisLeases {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    redis: Redis,
    wait: Duration,
    /// The leases this replica holds: id -> the account's set.
    held: Mutex<HashMap<String, String>>,
}

impl RedisLeases {
    /// Leases waited for at most `wait`; renewed in the background (needs a tokio runtime).
    pub fn start(redis: Redis, wait: Duration) -> Self {
        let shared = Arc::new(Shared {
            redis,
            wait,
            held: Mutex::default(),
        });
        tokio::spawn(renew(Arc::downgrade(&shared)));
        Self { shared }
    }
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LeaseGate for RedisLeases {
    fn acquire(
        &self,
        account: Arc<str>,
        cap: usize,
    ) -> BoxFuture<'static, Result<Lease, ChatError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let key = shared.redis.key(&["lease", &account]);
            let id = uuid::Uuid::new_v4().simple().to_string();
            let ttl_ms = super::millis(LEASE_TTL);
            let started = Instant::now();
            loop {
                let (k, i) = (key.clone(), id.clone());
                let taken = shared
                    .redis
                    .call(|mut connection| async move {
                        ACQUIRE
                            .key(k)
                            .arg(i)
                            .arg(cap)
                            .arg(ttl_ms)
                            .invoke_async::<i64>(&mut connection)
                            .await
                    })
                    .await;
                match taken {
                    Ok(1) => {
                        shared.held().insert(id.clone(), key.clone());
                        return Ok(Box::new(Held { shared, id, key }) as Lease);
                    }
                    Ok(_) if started.elapsed() < shared.wait => tokio::time::sleep(POLL).await,
                    Ok(_) => {
                        return Err(ChatError::Busy {
                            message: format!(
                            "Kiro account `{account}` stayed at its maxConcurrency ({cap}) across \
                                 the replicas for {} s; retry shortly, or raise its maxConcurrency \
                                 in the pool file",
                            shared.wait.as_secs()
                        ),
                            retry_after: Some(Duration::from_secs(1)),
                        })
                    }
                    Err(down) => {
                        return shared
                            .redis
                            .fall_back(&down, || Box::new(()) as Lease)
                            .map_err(|message| ChatError::SharedStateUnavailable { message })
                    }
                }
            }
        })
    }
}

/// A lease; removed from Redis when dropped.
struct Held {
    shared: Arc<Shared>,
    id: String,
    key: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.held().remove(&self.id);
        let (id, key) = (std::mem::take(&mut self.id), std::mem::take(&mut self.key));
        // In the background: the stream has ended. A removal that fails leaves a lease
        // that expires, as a dead replica's does.
        self.shared.redis.spawn_call(|mut connection| async move {
            redis::AsyncCommands::zrem::<_, _, i64>(&mut connection, key, id).await
        });
    }
}

/// Renews this replica's leases every third of their TTL, in one round trip.
async fn renew(shared: Weak<Shared>) {
    let ttl_ms = super::millis(LEASE_TTL);
    loop {
        tokio::time::sleep(LEASE_TTL / 3).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (id, key) in shared.held().iter() {
            by_key.entry(key.clone()).or_default().push(id.clone());
        }
        if by_key.is_empty() {
            continue;
        }
        let mut script = RENEW.prepare_invoke();
        script.arg(ttl_ms);
        for (key, ids) in &by_key {
            script.key(key).arg(ids.len()).arg(ids);
        }
        let _ = shared
            .redis
            .call(|mut connection| async move { script.invoke_async::<i64>(&mut connection).await })
            .await;
    }
}

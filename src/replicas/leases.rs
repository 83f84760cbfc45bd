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
//! - A request whose client rate limit was left to the leaf (the limits are in Redis too)
//!   has it decided in the same script: limit and lease are taken together or not at all,
//!   one round trip. At the end, the lease goes back with the token settlement in one more
//!   (the release waits on the request's ticket the few microseconds until the rate-limit
//!   layer settles).
//! - The lease is removed when the call's stream ends (or the call fails).
//! - Only accounts with their own `maxConcurrency` take leases: the default connection cap
//!   is each replica's own, and costs no round trip.
//! - Redis down: `open` calls without a lease (each replica holds its own cap), `closed`
//!   answers 503.

use super::rate_limit::{
    admission, rate_check_lua, rate_settle_lua, settle_args, RateArgs, RedisRateLimits,
};
use super::{Redis, RedisDown};
use crate::chat::ChatError;
use crate::kiro::service::{Lease, LeaseGate, LeaseGuard};
use aiproxy_layers::rate_limit::{Claim, DeferredAdmission, EndHook, Throttled, TokenSettle};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a lease outlives a replica that stopped renewing it.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

const POLL: Duration = Duration::from_millis(20);

/// Lua: `lease_take(key, id, cap, ttl_ms)` drops the account's expired leases and adds
/// `id` if fewer than `cap` are left (true), on Redis's clock.
macro_rules! lease_take_lua {
    () => {
        r"
local function lease_take(key, id, cap, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= cap then return false end
  redis.call('ZADD', key, now + ttl, id)
  redis.call('PEXPIRE', key, ttl)
  return true
end
"
    };
}

/// KEYS: the account's set. ARGV: lease id, cap, TTL in ms. 1 taken, 0 full.
static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        lease_take_lua!(),
        r"
if lease_take(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])) then return 1 end
return 0
"
    ))
});

/// The client's rate limit and the account's lease in one round trip, both or neither.
/// KEYS: token bucket, request bucket, the account's set. ARGV: the four of `rate_check`,
/// then lease id, cap, TTL in ms. Returns `rate_check`'s answer (a refusal takes no lease),
/// or {3} when the limit admits but the account is full (nothing written).
static ADMIT_AND_ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        rate_check_lua!(),
        lease_take_lua!(),
        r"
local now = now_us()
local answer, tok_next, req_next = rate_check(now)
if answer[1] ~= 0 then return answer end
if not lease_take(KEYS[3], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])) then return {3} end
rate_commit(now, tok_next, req_next)
return answer
"
    ))
});

/// The end of a request whose admission took a lease: the lease removed and the tokens
/// settled in one round trip. KEYS: the account's set, then the token bucket when there is
/// a settlement. ARGV: lease id, then tokens per minute and delta when there is one.
static RELEASE_AND_SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        rate_settle_lua!(),
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
if KEYS[2] then rate_settle(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3])) end
return 1
"
    ))
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
    /// The client limits in Redis, whose decision a lease takes in the same round trip;
    /// their local buckets decide when Redis does not answer (`open`).
    limits: Option<Arc<RedisRateLimits>>,
    /// The leases this replica holds: id -> the account's set.
    held: Mutex<HashMap<String, String>>,
}

impl RedisLeases {
    /// Leases waited for at most `wait`, each taken with the client's rate-limit decision
    /// when the request left it to the leaf (`limits`: the store that decision belongs to);
    /// renewed in the background (needs a tokio runtime).
    pub fn start(redis: Redis, wait: Duration, limits: Option<Arc<RedisRateLimits>>) -> Self {
        let shared = Arc::new(Shared {
            redis,
            wait,
            limits,
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

/// What one try to take a lease came to.
enum Try {
    Taken,
    Full,
    Throttled(Throttled),
}

impl LeaseGate for RedisLeases {
    fn acquire(
        &self,
        account: Arc<str>,
        cap: usize,
        admission: Option<DeferredAdmission>,
    ) -> BoxFuture<'static, Result<Lease, ChatError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let key = shared.redis.key(&["lease", &account]);
            let id = uuid::Uuid::new_v4().simple().to_string();
            // The client's limit goes with the lease when this store holds it.
            let mut claim = match (&admission, &shared.limits) {
                (Some(ticket), Some(_)) => ticket.claim(),
                _ => None,
            };
            let started = Instant::now();
            loop {
                let tried = match claim.take() {
                    Some(with) => {
                        let (tried, undecided) = shared.try_with_limit(&key, &id, cap, with).await;
                        claim = undecided;
                        tried
                    }
                    None => shared.try_alone(&key, &id, cap).await,
                };
                match tried {
                    Ok(Try::Taken) => {
                        shared.held().insert(id.clone(), key.clone());
                        return Ok(Box::new(Held {
                            shared,
                            id,
                            key,
                            admission,
                        }) as Lease);
                    }
                    Ok(Try::Throttled(throttled)) => return Err(throttled.into()),
                    Ok(Try::Full) if started.elapsed() < shared.wait => {
                        tokio::time::sleep(POLL).await
                    }
                    Ok(Try::Full) => {
                        return Err(ChatError::Busy {
                            message: format!(
                                "Kiro account `{account}` stayed at its maxConcurrency ({cap}) \
                                 across the replicas for {} s; retry shortly, or raise its \
                                 maxConcurrency in the pool file",
                                shared.wait.as_secs()
                            ),
                            retry_after: Some(Duration::from_secs(1)),
                        })
                    }
                    Err(down) => {
                        let lease = shared
                            .redis
                            .fall_back(&down, || Box::new(()) as Lease)
                            .map_err(|message| ChatError::SharedStateUnavailable { message })?;
                        // Open: this replica's own buckets decide.
                        if let (Some(claim), Some(limits)) = (claim, &shared.limits) {
                            let local = limits.admit_locally(claim.key(), claim.ask());
                            claim.decide(local)?;
                        }
                        return Ok(lease);
                    }
                }
            }
        })
    }
}

impl Shared {
    async fn try_alone(&self, key: &str, id: &str, cap: usize) -> Result<Try, RedisDown> {
        let (key, id) = (key.to_owned(), id.to_owned());
        let ttl_ms = super::millis(LEASE_TTL);
        let taken = self
            .redis
            .call(|mut connection| async move {
                ACQUIRE
                    .key(key)
                    .arg(id)
                    .arg(cap)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await?;
        Ok(if taken == 1 { Try::Taken } else { Try::Full })
    }

    /// One round trip for the client's limit and the lease; the claim back when nothing
    /// was decided (the account full, or Redis down).
    async fn try_with_limit(
        &self,
        key: &str,
        id: &str,
        cap: usize,
        claim: Claim,
    ) -> (Result<Try, RedisDown>, Option<Claim>) {
        let ask = claim.ask();
        let args = RateArgs::new(&self.redis, claim.key(), ask);
        let (key, id) = (key.to_owned(), id.to_owned());
        let ttl_ms = super::millis(LEASE_TTL);
        let answer = self
            .redis
            .call(|mut connection| async move {
                let mut script = ADMIT_AND_ACQUIRE.prepare_invoke();
                args.add_to(&mut script);
                script.key(key).arg(id).arg(cap).arg(ttl_ms);
                script.invoke_async::<Vec<i64>>(&mut connection).await
            })
            .await;
        match answer {
            Ok(numbers) if numbers.first() == Some(&3) => (Ok(Try::Full), Some(claim)),
            Ok(numbers) => match claim.decide(admission(ask, &numbers)) {
                Ok(()) => (Ok(Try::Taken), None),
                Err(throttled) => (Ok(Try::Throttled(throttled)), None),
            },
            Err(down) => (Err(down), Some(claim)),
        }
    }
}

/// A lease; removed from Redis when dropped, or, when its stream ended and the request
/// still has tokens to settle, with the settlement in one round trip.
struct Held {
    shared: Arc<Shared>,
    id: String,
    key: String,
    /// The request's deferred rate-limit decision, where the end can wait for the settle.
    admission: Option<DeferredAdmission>,
}

impl LeaseGuard for Held {
    fn stream_ended(mut self: Box<Self>) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let (id, key) = (std::mem::take(&mut self.id), std::mem::take(&mut self.key));
        let end: EndHook = Box::new(move |settle| release(&shared, id, key, settle));
        if let Err(end) = admission.defer_end(end) {
            end(None);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            let (id, key) = (std::mem::take(&mut self.id), std::mem::take(&mut self.key));
            release(&self.shared, id, key, None);
        }
    }
}

/// Removes a lease (and settles the request's tokens, when given) in the background: the
/// stream has ended. A removal that fails leaves a lease that expires, as a dead replica's
/// does; a settlement that fails goes into this replica's own buckets.
fn release(shared: &Arc<Shared>, id: String, key: String, settle: Option<TokenSettle>) {
    shared.held().remove(&id);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let shared = Arc::clone(shared);
    runtime.spawn(async move {
        let done = shared
            .redis
            .call(|mut connection| {
                let mut script = RELEASE_AND_SETTLE.prepare_invoke();
                script.key(key).arg(id);
                if let Some(settle) = &settle {
                    settle_args(&shared.redis, settle, &mut script);
                }
                async move { script.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        if let (Err(_), Some(settle), Some(limits)) = (done, &settle, &shared.limits) {
            limits.settle_locally(settle);
        }
    });
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
            .call_in_background(|mut connection| async move {
                script.invoke_async::<i64>(&mut connection).await
            })
            .await;
    }
}

//! Client rate limits shared by every replica: both of a client's buckets (tokens, then
//! requests) checked and charged in one Lua script, atomically, on Redis's clock, so N
//! replicas together hold the configured limit. The arithmetic is the in-memory store's
//! (GCRA: a bucket is its theoretical arrival time, in microseconds here), so a replica that
//! falls back to its own buckets (`open` mode) answers the same way.

use super::Redis;
use aiproxy_layers::rate_limit::{
    Admission, Ask, Decision, Denied, LimitKind, MemoryStore, RateLimitStore, Refused,
    StoreUnavailable, TokenSettle,
};
use aiproxy_layers::rate_limit::{RateLimitStatus, Window};
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const MINUTE_US: i64 = 60_000_000;

/// Lua: `rate_check(now)` decides a client's admission on KEYS[1] (token bucket) and
/// KEYS[2] (request bucket) without writing anything; ARGV[1..4]: tokens per minute (0: not limited), the request's token estimate, the request bucket's
/// emission interval in µs (0: not limited), its burst. Returns {refused (0 none, 1 tokens,
/// 2 requests), token tat - now, token wait (-1: never), request tat - now, request wait}
/// (µs), then the two new arrival times to write (nil: nothing). `rate_commit` writes them.
/// Shared by the admission script and the one that also takes a lease.
macro_rules! rate_check_lua {
    () => {
        r"
local function rate_check(now)
  local minute = 60000000
  local per_minute, estimate = tonumber(ARGV[1]), tonumber(ARGV[2])
  local interval, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
  local tok_used, tok_now, req_used = 0, 0, 0
  local tok_next, req_next
  if per_minute > 0 then
    local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
    local cost = math.floor(estimate * minute / per_minute)
    tok_next = tat + cost
    tok_now = tat - now
    if tok_next - now > minute then
      local wait = -1
      if cost <= minute then wait = tok_next - now - minute end
      return {1, tat - now, wait, 0, 0}
    end
    tok_used = tok_next - now
  end
  if interval > 0 then
    local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
    local tolerance = interval * (burst - 1)
    if tat - now > tolerance then
      return {2, tok_now, 0, tat - now, tat - now - tolerance}
    end
    req_next = tat + interval
    req_used = req_next - now
  end
  return {0, tok_used, 0, req_used, 0}, tok_next, req_next
end
local function rate_commit(now, tok_next, req_next)
  if tok_next then
    redis.call('SET', KEYS[1], string.format('%.0f', tok_next), 'PX', math.floor((tok_next - now) / 1000) + 1000)
  end
  if req_next then
    redis.call('SET', KEYS[2], string.format('%.0f', req_next), 'PX', math.floor((req_next - now) / 1000) + 1000)
  end
end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"
    };
}
pub(super) use rate_check_lua;

/// Lua: `rate_settle(key, per_minute, delta)` charges (`delta > 0`, may go into debt) or
/// refunds (`delta < 0`, never beyond full) a token bucket, on Redis's clock.
macro_rules! rate_settle_lua {
    () => {
        r"
local function rate_settle(key, per_minute, delta)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', key) or '0')
  local cost = math.floor(math.abs(delta) * 60000000 / per_minute)
  if delta >= 0 then tat = math.max(tat, now) + cost else tat = math.max(tat - cost, now) end
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
end
"
    };
}
pub(super) use rate_settle_lua;

/// KEYS: token bucket, request bucket. ARGV: as `rate_check` takes them. Returns its answer;
/// nothing is written on a refusal.
static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        rate_check_lua!(),
        r"
local now = now_us()
local answer, tok_next, req_next = rate_check(now)
if answer[1] == 0 then rate_commit(now, tok_next, req_next) end
return answer
"
    ))
});

/// KEYS: token bucket. ARGV: tokens per minute, tokens to charge (> 0) or refund (< 0).
static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        rate_settle_lua!(),
        r"
rate_settle(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return 0
"
    ))
});

/// The Redis store, with the in-memory one for `open` mode's fallback.
#[derive(Debug)]
pub struct RedisRateLimits {
    redis: Redis,
    local: Arc<MemoryStore>,
}

impl RedisRateLimits {
    /// Buckets in `redis`.
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            local: Arc::new(MemoryStore::new()),
        }
    }
}

fn token_key(redis: &Redis, key: &str, per_minute: NonZeroU32) -> String {
    redis.key(&["rl", "tok", &per_minute.to_string(), key])
}

/// A client's buckets as `rate_check` takes them: KEYS[1] and KEYS[2], four ARGV.
pub(super) struct RateArgs {
    token_key: String,
    request_key: String,
    numbers: [i64; 4],
}

impl RateArgs {
    pub(super) fn new(redis: &Redis, key: &str, ask: Ask) -> Self {
        let (per_minute, estimate) = ask.tokens.map_or((0, 0), |(p, e)| (p.get(), e));
        let (interval_us, burst) = ask.requests.map_or((0, 0), |q| {
            let interval = i64::try_from(q.period().as_micros()).unwrap_or(i64::MAX);
            (interval, q.burst.get())
        });
        Self {
            token_key: ask
                .tokens
                .map_or_else(String::new, |(p, _)| token_key(redis, key, p)),
            request_key: ask.requests.map_or_else(String::new, |q| {
                redis.key(&[
                    "rl",
                    "req",
                    &q.per_minute.to_string(),
                    &q.burst.to_string(),
                    key,
                ])
            }),
            numbers: [
                i64::from(per_minute),
                i64::try_from(estimate).unwrap_or(i64::MAX),
                interval_us,
                i64::from(burst),
            ],
        }
    }

    /// Its keys and arguments, first in `script`'s.
    pub(super) fn add_to(&self, script: &mut redis::ScriptInvocation<'_>) {
        script.key(&self.token_key).key(&self.request_key);
        for number in self.numbers {
            script.arg(number);
        }
    }
}

/// The settle of `settle` into `script`: the token bucket's key and two ARGV.
pub(super) fn settle_args(
    redis: &Redis,
    settle: &TokenSettle,
    script: &mut redis::ScriptInvocation<'_>,
) {
    script
        .key(token_key(redis, &settle.key, settle.per_minute))
        .arg(settle.per_minute.get())
        .arg(settle.delta);
}

impl RedisRateLimits {
    /// What `open` mode decides when Redis does not answer: this replica's own buckets.
    pub(super) fn admit_locally(&self, key: &str, ask: Ask) -> Admission {
        self.local.admit_now(key, ask)
    }

    /// A settle Redis did not take, into this replica's own buckets.
    pub(super) fn settle_locally(&self, settle: &TokenSettle) {
        self.local
            .settle_tokens(&settle.key, settle.per_minute, settle.delta);
    }
}

impl RateLimitStore for RedisRateLimits {
    fn admit(&self, key: &str, ask: Ask) -> Decision {
        let redis = self.redis.clone();
        let local = Arc::clone(&self.local);
        let key = key.to_owned();
        Decision::Later(Box::pin(async move {
            let args = RateArgs::new(&redis, &key, ask);
            let answer = redis
                .call(|mut connection| async move {
                    let mut script = ADMIT.prepare_invoke();
                    args.add_to(&mut script);
                    script.invoke_async::<Vec<i64>>(&mut connection).await
                })
                .await;
            match answer {
                Ok(numbers) => Ok(admission(ask, &numbers)),
                Err(down) => redis
                    .fall_back(&down, || local.admit_now(&key, ask))
                    .map_err(|message| StoreUnavailable { message }),
            }
        }))
    }

    fn settle_tokens(&self, key: &str, per_minute: NonZeroU32, delta: i64) {
        let redis = self.redis.clone();
        let local = Arc::clone(&self.local);
        let settle = TokenSettle {
            key: Arc::from(key),
            per_minute,
            delta,
        };
        // Off the request path: the answer has been sent; nobody waits for the settle.
        tokio::spawn(async move {
            let done = redis
                .call(|mut connection| {
                    let mut script = SETTLE.prepare_invoke();
                    settle_args(&redis, &settle, &mut script);
                    async move { script.invoke_async::<i64>(&mut connection).await }
                })
                .await;
            if done.is_err() {
                local.settle_tokens(&settle.key, per_minute, delta);
            }
        });
    }
}

/// The script's numbers as the windows the in-memory store reports.
pub(super) fn admission(ask: Ask, numbers: &[i64]) -> Admission {
    let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
    let (refused, tok_used, tok_wait, req_used, req_wait) = (at(0), at(1), at(2), at(3), at(4));
    let micros = |us: i64| Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(0));
    let mut status = RateLimitStatus::default();
    if let Some((per_minute, _)) = ask.tokens {
        status.tokens = Some(token_window(per_minute, tok_used));
    }
    if let Some(quota) = ask.requests {
        let limit = u64::from(quota.per_minute.get());
        let interval = i64::try_from(quota.period().as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        status.requests = match refused {
            2 => Some(Window {
                limit,
                remaining: 0,
                reset: micros(req_wait) + quota.period() * (quota.burst.get() - 1),
            }),
            1 => None,
            _ => {
                let used = (req_used + interval - 1) / interval;
                let burst = i64::from(quota.burst.get());
                Some(Window {
                    limit,
                    remaining: u64::try_from(burst - used).unwrap_or(0),
                    reset: quota.period() * u32::try_from(used).unwrap_or(u32::MAX),
                })
            }
        };
    }
    let denied = |limit: LimitKind, wait: Option<Duration>, window: Option<Window>| Refused {
        limit,
        denied: Denied {
            wait,
            window: window.unwrap_or(Window {
                limit: 0,
                remaining: 0,
                reset: Duration::ZERO,
            }),
        },
        status,
    };
    match refused {
        1 => Err(denied(
            LimitKind::Tokens,
            (tok_wait >= 0).then(|| micros(tok_wait)),
            status.tokens,
        )),
        2 => Err(denied(
            LimitKind::Requests,
            Some(micros(req_wait)),
            status.requests,
        )),
        _ => Ok(status),
    }
}

/// A token bucket whose arrival time is `used` µs ahead of now.
fn token_window(per_minute: NonZeroU32, used: i64) -> Window {
    let used = used.clamp(0, i64::MAX);
    let free = (MINUTE_US - used).max(0);
    Window {
        limit: u64::from(per_minute.get()),
        remaining: u64::try_from(
            i128::from(free) * i128::from(per_minute.get()) / i128::from(MINUTE_US),
        )
        .unwrap_or(0),
        reset: Duration::from_micros(u64::try_from(used).unwrap_or(0)),
    }
}

//! The answer cache shared by the replicas: an answer recorded on one is a hit on the
//! others.
//!
//! Each replica keeps its in-memory store (moka) in front: a hit there costs no round trip.
//! A local miss asks Redis; what Redis has is copied into the local store. A recorded answer
//! goes to both, Redis's write in the background (the answer is already on its way).
//!
//! In Redis an entry is written once (a second replica that recorded the same answer does
//! not rewrite it), expires with the cache's TTL, and counts against the cache's byte
//! budget, shared: a script adds it, dropping the entries past their expiry and then the
//! oldest until it fits. Answers of 512 bytes or more are LZ4-compressed when that makes
//! them smaller (JSON text usually halves).
//!
//! A cache is never a reason to refuse a request: Redis down or slow is a miss, in either
//! failure mode (counted in `redis.fallbacks`, as every decision made without Redis).

use super::Redis;
use crate::chat::ChatEvent;
use aiproxy_layers::cache::{CacheKey, CacheStore, Lookup, MemoryStore};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Below this, compression does not pay for its header.
const COMPRESS_FROM: usize = 512;
const RAW: u8 = 0;
const LZ4: u8 = 1;

/// Stores an entry once, within the shared byte budget (see the module docs).
/// KEYS: entry, index (entries by expiry), sizes (entry -> bytes), total bytes.
/// ARGV: the blob, its size, the TTL in ms, the budget. Answers 1 stored, 0 already there,
/// -1 larger than the whole budget.
static PUT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local size, ttl, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if size > budget then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop(k)
  local s = tonumber(redis.call('HGET', KEYS[3], k) or '0')
  redis.call('HDEL', KEYS[3], k)
  redis.call('ZREM', KEYS[2], k)
  redis.call('DEL', k)
  redis.call('DECRBY', KEYS[4], s)
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do drop(k) end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
while total + size > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('INCRBY', KEYS[4], size)
return 1
",
    )
});

/// Answers in Redis behind this replica's memory (see the module docs).
pub struct RedisCache {
    redis: Redis,
    local: Arc<MemoryStore<ChatEvent>>,
    ttl: Duration,
    max_bytes: u64,
}

impl RedisCache {
    /// A cache of `max_bytes` (in this replica's memory, and in Redis for all of them),
    /// each answer kept for `ttl`.
    pub fn new(redis: Redis, max_bytes: u64, ttl: Duration) -> Self {
        Self {
            redis,
            local: Arc::new(MemoryStore::new(max_bytes, ttl)),
            ttl,
            max_bytes,
        }
    }

    fn key(redis: &Redis, key: &CacheKey) -> String {
        use std::fmt::Write;
        let mut hex = String::with_capacity(64);
        for byte in key.0 {
            let _ = write!(hex, "{byte:02x}");
        }
        redis.key(&["cache", &hex])
    }
}

/// The blob Redis keeps: a format byte, the weight the answer had (4 bytes, little
/// endian), then the events as JSON, raw or LZ4 with its size in front.
fn encode(events: &[ChatEvent], weight: u32) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(events).ok()?;
    let compressed = (json.len() >= COMPRESS_FROM)
        .then(|| lz4_flex::compress_prepend_size(&json))
        .filter(|c| c.len() < json.len());
    let (format, body) = match compressed {
        Some(compressed) => (LZ4, compressed),
        None => (RAW, json),
    };
    let mut blob = Vec::with_capacity(5 + body.len());
    blob.push(format);
    blob.extend_from_slice(&weight.to_le_bytes());
    blob.extend_from_slice(&body);
    Some(blob)
}

/// The events and their weight; `None` for a blob that is not one of ours, or one that
/// would unpack to more than `max_bytes`.
fn decode(blob: &[u8], max_bytes: u64) -> Option<(Arc<[ChatEvent]>, u32)> {
    let (&format, rest) = blob.split_first()?;
    let (weight, body) = rest.split_first_chunk::<4>()?;
    let json = match format {
        RAW => std::borrow::Cow::Borrowed(body),
        LZ4 => {
            let (size, _) = body.split_first_chunk::<4>()?;
            if u64::from(u32::from_le_bytes(*size)) > max_bytes {
                return None;
            }
            std::borrow::Cow::Owned(lz4_flex::decompress_size_prepended(body).ok()?)
        }
        _ => return None,
    };
    let events = serde_json::from_slice::<Vec<ChatEvent>>(&json).ok()?;
    Some((events.into(), u32::from_le_bytes(*weight)))
}

impl CacheStore<ChatEvent> for RedisCache {
    fn get(&self, key: &CacheKey) -> Lookup<ChatEvent> {
        if let Some(hit) = self.local.get_now(key) {
            return Lookup::Now(Some(hit));
        }
        let (redis, local, key, max_bytes) = (
            self.redis.clone(),
            Arc::clone(&self.local),
            *key,
            self.max_bytes,
        );
        Lookup::Later(Box::pin(async move {
            let entry = Self::key(&redis, &key);
            let found = redis
                .call(|mut connection| async move {
                    redis::AsyncCommands::get::<_, Option<Vec<u8>>>(&mut connection, entry).await
                })
                .await;
            let blob = match found {
                Ok(blob) => blob?,
                Err(down) => {
                    let _ = redis.fall_back(&down, || ());
                    return None;
                }
            };
            let (events, weight) = decode(&blob, max_bytes)?;
            local.put(key, Arc::clone(&events), weight);
            Some(events)
        }))
    }

    fn put(&self, key: CacheKey, events: Arc<[ChatEvent]>, weight: u32) {
        self.local.put(key, Arc::clone(&events), weight);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (redis, ttl_ms, budget) = (self.redis.clone(), super::millis(self.ttl), self.max_bytes);
        runtime.spawn(async move {
            let Some(blob) = encode(&events, weight) else {
                return;
            };
            let entry = Self::key(&redis, &key);
            let (index, sizes, total) = (
                redis.key(&["cache", "index"]),
                redis.key(&["cache", "sizes"]),
                redis.key(&["cache", "bytes"]),
            );
            let size = blob.len();
            let stored = redis
                .call(|mut connection| async move {
                    PUT.key(entry)
                        .key(index)
                        .key(sizes)
                        .key(total)
                        .arg(blob)
                        .arg(size)
                        .arg(ttl_ms)
                        .arg(budget)
                        .invoke_async::<i64>(&mut connection)
                        .await
                })
                .await;
            if let Err(down) = stored {
                let _ = redis.fall_back(&down, || ());
            }
        });
    }

    fn bytes(&self) -> u64 {
        self.local.bytes()
    }

    fn entries(&self) -> u64 {
        self.local.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{StopReason, Usage};

    fn answer(text: &str) -> Vec<ChatEvent> {
        vec![
            ChatEvent::Start {
                id: "msg_1".into(),
                model: "claude-sonnet-4.5".into(),
                input_tokens: 12,
            },
            ChatEvent::TextDelta(text.to_owned()),
            ChatEvent::Usage(Usage {
                input: 12,
                output: 40,
                ..Usage::default()
            }),
            ChatEvent::Stop(StopReason::EndTurn),
        ]
    }

    #[test]
    fn a_short_answer_is_kept_raw_and_a_long_one_compressed() {
        let short = answer("hi");
        let blob = encode(&short, 99).unwrap();
        assert_eq!(blob[0], RAW);
        let (events, weight) = decode(&blob, 1 << 20).unwrap();
        assert_eq!(&*events, &short[..]);
        assert_eq!(weight, 99);

        let long = answer(&"the same words again and again ".repeat(200));
        let blob = encode(&long, 7000).unwrap();
        assert_eq!(blob[0], LZ4);
        let json = serde_json::to_vec(&long).unwrap();
        assert!(
            blob.len() * 4 < json.len(),
            "{} of {} bytes",
            blob.len(),
            json.len()
        );
        let (events, _) = decode(&blob, 1 << 20).unwrap();
        assert_eq!(&*events, &long[..]);
    }

    #[test]
    fn blobs_that_are_not_ours_or_too_big_are_misses() {
        assert!(decode(b"", 1 << 20).is_none());
        assert!(
            decode(b"\x07\0\0\0\0{}", 1 << 20).is_none(),
            "unknown format"
        );
        assert!(decode(b"\0\0\0\0\0not json", 1 << 20).is_none());
        let long = answer(&"x".repeat(5000));
        let blob = encode(&long, 5000).unwrap();
        assert!(
            decode(&blob, 1000).is_none(),
            "unpacks past the cache's budget"
        );
    }
}

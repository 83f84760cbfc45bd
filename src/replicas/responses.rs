//! The Responses API's stored responses, shared by every replica: a follow-up with
//! `previous_response_id`, `GET`, `DELETE` and `input_items` work on whichever replica they
//! land. Each entry is one Redis string (the stored response as JSON) under the calling
//! key's label, with the store's time to live; an entry larger than the store's byte bound is
//! kept on this replica only, as the in-memory store would refuse it anyway.
//!
//! Every entry is also kept in this replica's memory store, so `open` mode (Redis down)
//! still finds what this replica answered; `closed` mode answers 503 instead.

use super::Redis;
use crate::api::responses::store::{Answer, MemoryStore, ResponseStore, StoreDown, Stored};
use aiproxy_layers::ClientKey;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;

/// Stored responses in Redis, with a copy in this replica's memory.
#[derive(Debug)]
pub struct RedisResponses {
    redis: Redis,
    local: Arc<MemoryStore>,
    ttl: Duration,
    max_bytes: u64,
}

impl RedisResponses {
    /// Entries kept for `ttl`; one larger than `max_bytes` stays local.
    pub fn new(redis: Redis, max_bytes: u64, ttl: Duration) -> Self {
        Self {
            redis,
            local: Arc::new(MemoryStore::new(max_bytes, ttl)),
            ttl,
            max_bytes,
        }
    }

    fn key(&self, client: &ClientKey, id: &str) -> String {
        self.redis.key(&["resp", &client.shared(), id])
    }
}

impl ResponseStore for RedisResponses {
    fn put(&self, client: &ClientKey, id: &str, stored: Stored) -> Answer<()> {
        let stored = Arc::new(stored);
        self.local.put_now(client, id, Arc::clone(&stored));
        if u64::from(stored.weight()) > self.max_bytes {
            return Box::pin(std::future::ready(Ok(())));
        }
        let (redis, key) = (self.redis.clone(), self.key(client, id));
        let ttl_ms = super::millis(self.ttl);
        Box::pin(async move {
            let Ok(json) = serde_json::to_vec(&*stored) else {
                return Ok(());
            };
            // A failed write leaves the local copy: this replica still continues it.
            let _ = redis
                .call(|mut connection| async move {
                    connection.pset_ex::<_, _, ()>(key, json, ttl_ms).await
                })
                .await;
            Ok(())
        })
    }

    fn get(&self, client: &ClientKey, id: &str) -> Answer<Option<Arc<Stored>>> {
        let (redis, key) = (self.redis.clone(), self.key(client, id));
        let local = self.local.get_now(client, id);
        Box::pin(async move {
            let found = redis
                .call(
                    |mut connection| async move { connection.get::<_, Option<Vec<u8>>>(key).await },
                )
                .await;
            match found {
                Ok(Some(json)) => Ok(serde_json::from_slice::<Stored>(&json)
                    .ok()
                    .map(Arc::new)
                    .or(local)),
                // Deleted or expired in Redis: gone for every replica.
                Ok(None) => Ok(None),
                Err(down) => redis.fall_back(&down, || local).map_err(StoreDown),
            }
        })
    }

    fn delete(&self, client: &ClientKey, id: &str) -> Answer<bool> {
        let (redis, key) = (self.redis.clone(), self.key(client, id));
        let local = self.local.delete_now(client, id);
        Box::pin(async move {
            let deleted = redis
                .call(|mut connection| async move { connection.del::<_, u64>(key).await })
                .await;
            match deleted {
                Ok(n) => Ok(n > 0 || local),
                Err(down) => redis.fall_back(&down, || local).map_err(StoreDown),
            }
        })
    }
}

//! Stored responses (`store: true`, the API's default): what `previous_response_id`,
//! `GET /v1/responses/{id}`, `DELETE` and `input_items` read. Behind [`ResponseStore`], so a
//! shared store (Redis) can replace the in-memory one without touching the handlers.
//!
//! Entries are scoped by client key: a response is found only with the key that made it.
//! The in-memory store ([`MemoryStore`]) is bounded by the bytes it holds (an estimate of
//! each entry's size) and expires entries after a time to live; both are set with
//! `--responses-store-max-bytes` and `--responses-store-ttl`.

use crate::chat::{Message, Part};
use aiproxy_layers::ClientKey;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// One stored response (serialisable: a shared store keeps it as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    /// The `Response` object, as `GET` answers it.
    pub response: Value,
    /// The whole conversation up to and including this response's output: what a
    /// follow-up with `previous_response_id` continues.
    pub conversation: Vec<Message>,
    /// System text from `system`/`developer` input items along the chain.
    pub system: Vec<String>,
    /// This response's input items (for `GET .../input_items`).
    pub input_items: Vec<Value>,
}

impl Stored {
    /// Approximate bytes held, for the store's bound.
    pub fn weight(&self) -> u32 {
        let parts: usize = self
            .conversation
            .iter()
            .flat_map(|m| &m.parts)
            .map(|p| match p {
                Part::Text(t) | Part::Thinking(t) | Part::RedactedThinking(t) => t.len(),
                Part::SignedThinking { text, signature } => text.len() + signature.len(),
                Part::Image { data, .. } => data.len(),
                Part::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
                Part::ToolResult { content, .. } => content.len(),
            })
            .sum();
        let json = self.response.to_string().len()
            + self
                .input_items
                .iter()
                .map(|i| i.to_string().len())
                .sum::<usize>();
        u32::try_from(parts + json + 256).unwrap_or(u32::MAX)
    }
}

/// A store that could not answer (a shared store that is down, in `closed` mode): what to
/// tell the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDown(pub String);

/// An answer of the store: at once (in memory) or after a round trip (shared).
pub type Answer<T> = BoxFuture<'static, Result<T, StoreDown>>;

/// Where stored responses live. The in-memory store answers at once; a shared one (Redis,
/// `crate::replicas::responses`) after a round trip.
pub trait ResponseStore: Send + Sync + std::fmt::Debug {
    /// Keeps `stored` under `id` for `client`. The in-memory store has it before this
    /// returns; a shared one when the future ends (callers that cannot wait spawn it).
    fn put(&self, client: &ClientKey, id: &str, stored: Stored) -> Answer<()>;
    /// The response `id` of `client`, if kept and not expired.
    fn get(&self, client: &ClientKey, id: &str) -> Answer<Option<Arc<Stored>>>;
    /// Forgets it; whether it was there.
    fn delete(&self, client: &ClientKey, id: &str) -> Answer<bool>;
}

/// The in-memory store: bounded by bytes, entries expire.
#[derive(Debug)]
pub struct MemoryStore {
    cache: moka::sync::Cache<String, Arc<Stored>>,
}

impl MemoryStore {
    /// At most about `max_bytes`, each entry for `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key: &String, value: &Arc<Stored>| value.weight())
                .time_to_live(ttl)
                .build(),
        }
    }
}

fn key(client: &ClientKey, id: &str) -> String {
    format!("{client}\n{id}")
}

impl MemoryStore {
    /// Keeps `stored` (at once).
    pub fn put_now(&self, client: &ClientKey, id: &str, stored: Arc<Stored>) {
        self.cache.insert(key(client, id), stored);
    }

    /// The response `id` of `client`, if kept and not expired.
    pub fn get_now(&self, client: &ClientKey, id: &str) -> Option<Arc<Stored>> {
        self.cache.get(&key(client, id))
    }

    /// Forgets it; whether it was there.
    pub fn delete_now(&self, client: &ClientKey, id: &str) -> bool {
        self.cache.remove(&key(client, id)).is_some()
    }
}

impl ResponseStore for MemoryStore {
    fn put(&self, client: &ClientKey, id: &str, stored: Stored) -> Answer<()> {
        self.put_now(client, id, Arc::new(stored));
        Box::pin(std::future::ready(Ok(())))
    }

    fn get(&self, client: &ClientKey, id: &str) -> Answer<Option<Arc<Stored>>> {
        Box::pin(std::future::ready(Ok(self.get_now(client, id))))
    }

    fn delete(&self, client: &ClientKey, id: &str) -> Answer<bool> {
        Box::pin(std::future::ready(Ok(self.delete_now(client, id))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;

    fn stored(text: &str) -> Stored {
        Stored {
            response: serde_json::json!({"id": "resp_1"}),
            conversation: vec![Message::text(Role::User, text)],
            system: Vec::new(),
            input_items: Vec::new(),
        }
    }

    #[test]
    fn entries_are_scoped_per_client_and_expire() {
        let store = MemoryStore::new(1 << 20, Duration::from_millis(50));
        let alice = ClientKey::from_label("alice");
        let bob = ClientKey::from_label("bob");
        store.put_now(&alice, "resp_1", Arc::new(stored("hi")));
        assert!(store.get_now(&alice, "resp_1").is_some());
        assert!(
            store.get_now(&bob, "resp_1").is_none(),
            "another key sees nothing"
        );
        assert!(!store.delete_now(&bob, "resp_1"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(store.get_now(&alice, "resp_1").is_none(), "expired");
        store.put_now(&alice, "resp_2", Arc::new(stored("hi")));
        assert!(store.delete_now(&alice, "resp_2"));
        assert!(store.get_now(&alice, "resp_2").is_none());
    }

    #[test]
    fn the_store_is_bounded_by_bytes() {
        let store = MemoryStore::new(10_000, Duration::from_secs(60));
        let client = ClientKey::from_label("c");
        for i in 0..100 {
            store.put_now(
                &client,
                &format!("resp_{i}"),
                Arc::new(stored(&"x".repeat(1_000))),
            );
        }
        store.cache.run_pending_tasks();
        assert!(
            store.cache.weighted_size() <= 10_000,
            "{}",
            store.cache.weighted_size()
        );
    }
}

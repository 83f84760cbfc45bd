//! Account health shared by the replicas: an account that one replica found suspended,
//! rate limited, out of credits or failing is skipped by all of them.
//!
//! The pool decides inside `poll_ready` and `call`, where no round trip can wait, so each
//! replica keeps its own copy of every account's breaker (a [`MemoryHealth`]) and the copies
//! converge by events: every [`HealthEvent`] that changes something (a penalty, a probe that
//! found the account well, an operator's reset, and a success only when it ends failures or
//! a rest) is applied here and published on one Redis channel; every replica applies the
//! others' events to its copy. Pub/sub delivers in milliseconds (`tests/replicas.rs`
//! measures it).
//!
//! A replica that starts later learns of the rests still running from one key per account
//! (`{prefix}health:{name}`, the last lasting event, expiring when the rest ends): it
//! applies that event from its own start, so it may rest an account a little longer than
//! the others, never shorter. An operator's reset deletes the key.
//!
//! Load: every [`LOAD_EVERY`] each replica writes its in-flight count per account into one
//! hash per account (`{prefix}load:{name}`, a field per replica, stamped) and reads the
//! others', in one round trip for all accounts; least-load then weighs the requests of every
//! replica. A replica that stops writing (it died) is ignored after [`LOAD_STALE`] and its
//! field removed; a hash nobody writes expires.
//!
//! What is not shared: request, error and token counters (each replica's own traffic),
//! half-open trials (each replica may send one), and events published while Redis was
//! unreachable (the replicas decide on their own copies meanwhile; counted in
//! `redis.fallbacks`). Health is advice, so `closed` mode does not refuse requests over it.
//!
//! `forget` (an account left this replica's pool file) drops only this replica's copy: the
//! key in Redis is the other replicas' too, and it expires by itself.

use super::Redis;
use aiproxy_layers::model::health::{
    Breaker, HealthCell, HealthConfig, HealthEvent, MemoryHealth, Snapshot, State,
};
use aiproxy_layers::model::store::{AccountState, LoadCell, LoadView, MemoryLoad, PoolStore};
use aiproxy_layers::model::{Penalty, RateLimitClass};
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How long a disable with no end date is remembered for replicas that start later.
const OPEN_ENDED: Duration = Duration::from_secs(24 * 3600);

/// How often a replica shares its in-flight counts and reads the others'.
pub const LOAD_EVERY: Duration = Duration::from_millis(200);

/// A replica's count older than this is ignored (and removed): it stopped writing.
pub const LOAD_STALE: Duration = Duration::from_secs(2);

/// An event as the replicas exchange it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    Success,
    Failure,
    Cooldown {
        class: RateLimitClass,
        retry_after_ms: Option<u64>,
    },
    Disable {
        reason: String,
        until_ms: Option<u64>,
    },
    ProbeOk,
    OperatorReset,
    OperatorClear,
}

/// One published event: which replica, which account.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    from: String,
    name: String,
    event: Wire,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, super::millis)
}

impl Wire {
    /// The event to publish, if it is one the others need.
    fn of(event: &HealthEvent) -> Option<Self> {
        Some(match event {
            HealthEvent::Success => Self::Success,
            HealthEvent::Neutral => return None,
            HealthEvent::Penalised(Penalty::None) => return None,
            HealthEvent::Penalised(Penalty::Failure) => Self::Failure,
            HealthEvent::Penalised(Penalty::Cooldown { class, retry_after }) => Self::Cooldown {
                class: *class,
                retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(0)),
            },
            HealthEvent::Penalised(Penalty::Disable { reason, until }) => Self::Disable {
                reason: (*reason).to_owned(),
                until_ms: until.map(unix_ms),
            },
            HealthEvent::ProbeOk => Self::ProbeOk,
            HealthEvent::OperatorReset => Self::OperatorReset,
            HealthEvent::OperatorClear => Self::OperatorClear,
        })
    }

    fn event(self) -> HealthEvent {
        match self {
            Self::Success => HealthEvent::Success,
            Self::Failure => HealthEvent::Penalised(Penalty::Failure),
            Self::Cooldown {
                class,
                retry_after_ms,
            } => HealthEvent::Penalised(Penalty::Cooldown {
                class,
                retry_after: retry_after_ms.map(Duration::from_millis),
            }),
            Self::Disable { reason, until_ms } => HealthEvent::Penalised(Penalty::Disable {
                reason: intern(&reason),
                until: until_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            }),
            Self::ProbeOk => HealthEvent::ProbeOk,
            Self::OperatorReset => HealthEvent::OperatorReset,
            Self::OperatorClear => HealthEvent::OperatorClear,
        }
    }
}

/// Reason codes are `&'static str` in the pool; those that come from other replicas are
/// kept once each (a closed vocabulary; past 64 distinct ones, anything new reads
/// `disabled`, so a hostile Redis cannot grow this).
fn intern(reason: &str) -> &'static str {
    static KNOWN: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = known.get(reason) {
        return found;
    }
    if known.len() >= 64 {
        return "disabled";
    }
    let kept: &'static str = Box::leak(reason.to_owned().into_boxed_str());
    known.insert(kept);
    kept
}

/// What the publisher task sends.
struct Outgoing {
    name: Arc<str>,
    event: Wire,
    /// How long the event's effect lasts, if it is a rest: then it is also kept in the
    /// account's key for replicas that start later. `Some(ZERO)`: the account is well
    /// again, the key goes.
    lasting: Option<Duration>,
}

/// One account's health on this replica, publishing what changes.
#[derive(Debug)]
struct SharedHealth {
    name: Arc<str>,
    local: MemoryHealth,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl SharedHealth {
    /// How long the state after an event lasts, for the account's key.
    fn lasting(after: &Snapshot) -> Option<Duration> {
        match after.state {
            State::Healthy => Some(Duration::ZERO),
            State::Cooldown | State::Disabled => Some(
                after
                    .until
                    .and_then(|until| until.duration_since(SystemTime::now()).ok())
                    .unwrap_or(OPEN_ENDED),
            ),
            State::Open | State::HalfOpen => None,
        }
    }
}

impl HealthCell for SharedHealth {
    fn admission(
        &self,
        now: Instant,
        claim: bool,
    ) -> (aiproxy_layers::model::health::Admission, State) {
        self.local.admission(now, claim)
    }

    fn record(&self, event: HealthEvent, now: Instant) {
        let Some(wire) = Wire::of(&event) else {
            self.local.record(event, now);
            return;
        };
        // A success tells the others nothing unless it ends failures or a rest here.
        let was_clean = matches!(wire, Wire::Success) && {
            let before = self.local.snapshot(now);
            before.state == State::Healthy && before.consecutive_failures == 0
        };
        self.local.record(event, now);
        if was_clean {
            return;
        }
        let lasting = match wire {
            Wire::Failure => None,
            _ => Self::lasting(&self.local.snapshot(now)),
        };
        let _ = self.outgoing.send(Outgoing {
            name: Arc::clone(&self.name),
            event: wire,
            lasting,
        });
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        self.local.snapshot(now)
    }

    fn recovered_at(&self) -> Option<Instant> {
        self.local.recovered_at()
    }
}

/// The accounts' state on this replica, health shared through Redis (see the module docs).
#[derive(Debug)]
pub struct RedisPool {
    shared: Arc<Shared>,
}

/// An account's state as the pool gets it, its health cell (for others' events) and its
/// load (for others' counts).
type Held = (AccountState, Arc<SharedHealth>, Arc<SharedLoad>);

/// One account's load on this replica, plus what the other replicas last said they have
/// in flight.
#[derive(Debug, Default)]
struct SharedLoad {
    local: MemoryLoad,
    others: AtomicUsize,
}

impl LoadCell for SharedLoad {
    fn begin(&self) {
        self.local.begin();
    }
    fn end(&self) {
        self.local.end();
    }
    fn in_flight(&self) -> usize {
        self.local.in_flight()
    }
    fn everywhere_in_flight(&self) -> usize {
        self.local.in_flight() + self.others.load(Ordering::Relaxed)
    }
    fn record_latency(&self, first_event: Duration) {
        self.local.record_latency(first_event);
    }
    fn latency_ns(&self) -> u64 {
        self.local.latency_ns()
    }
    fn record_error(&self, kind: &'static str) {
        self.local.record_error(kind);
    }
    fn record_usage(&self, usage: &aiproxy_layers::model::TokenUsage) {
        self.local.record_usage(usage);
    }
    fn view(&self) -> LoadView {
        self.local.view()
    }
}

#[derive(Debug)]
struct Shared {
    redis: Redis,
    /// This replica, in the messages it publishes (its own come back to it).
    replica: String,
    accounts: Mutex<HashMap<Arc<str>, Held>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

/// The channel every replica's events go through.
fn channel(redis: &Redis) -> String {
    redis.key(&["health", "events"])
}

/// Where an account's lasting rest is kept for replicas that start later.
fn state_key(redis: &Redis, name: &str) -> String {
    redis.key(&["health", name])
}

impl Shared {
    fn cell(&self, name: &str) -> Option<Arc<SharedHealth>> {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|(_, cell, _)| Arc::clone(cell))
    }

    /// Applies another replica's event to this replica's copy (not published again).
    fn apply(&self, message: Message) {
        if message.from == self.replica {
            return;
        }
        if let Some(cell) = self.cell(&message.name) {
            cell.local.record(message.event.event(), Instant::now());
        }
    }
}

impl RedisPool {
    /// The store, with its publisher and subscriber running (needs a tokio runtime).
    pub fn start(redis: Redis) -> Self {
        let (outgoing, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            redis,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            accounts: Mutex::default(),
            outgoing,
        });
        // The publisher holds no handle on the store: it ends when the store and its
        // accounts (the senders) are gone.
        tokio::spawn(publish(shared.redis.clone(), shared.replica.clone(), queue));
        tokio::spawn(subscribe(Arc::downgrade(&shared)));
        tokio::spawn(share_load(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// Applies the account's lasting state from Redis, if another replica left one.
    fn learn(&self, name: Arc<str>, cell: Arc<SharedHealth>) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let key = state_key(&shared.redis, &name);
            let found = shared
                .redis
                .call_in_background(|mut connection| async move {
                    connection.get::<_, Option<Vec<u8>>>(key).await
                })
                .await;
            if let Some(wire) = found
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<Wire>(&bytes).ok())
            {
                tracing::info!(account = %name, "another replica left this account resting; resting it here too");
                cell.local.record(wire.event(), Instant::now());
            }
        });
    }
}

impl PoolStore for RedisPool {
    fn account(&self, name: &str, health: &Arc<HealthConfig>) -> AccountState {
        let mut accounts = self
            .shared
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((state, _, _)) = accounts.get(name) {
            return state.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let cell = Arc::new(SharedHealth {
            name: Arc::clone(&name),
            local: MemoryHealth::new(Arc::clone(health)),
            outgoing: self.shared.outgoing.clone(),
        });
        let load = Arc::new(SharedLoad::default());
        let state = AccountState {
            health: Breaker::of(Arc::clone(&cell) as Arc<dyn HealthCell>),
            load: Arc::clone(&load) as Arc<dyn LoadCell>,
        };
        accounts.insert(Arc::clone(&name), (state.clone(), Arc::clone(&cell), load));
        drop(accounts);
        self.learn(name, cell);
        state
    }

    fn forget(&self, name: &str) {
        self.shared
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// Publishes this replica's events in order, and keeps each account's lasting state.
async fn publish(redis: Redis, replica: String, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(out) = queue.recv().await {
        let message = Message {
            from: replica.clone(),
            name: out.name.to_string(),
            event: out.event,
        };
        let (Ok(payload), Ok(state)) = (
            serde_json::to_vec(&message),
            serde_json::to_vec(&message.event),
        ) else {
            continue;
        };
        let (events, key) = (channel(&redis), state_key(&redis, &message.name));
        let sent = redis
            .call_in_background(|mut connection| async move {
                let mut pipe = redis::pipe();
                pipe.publish(events, payload).ignore();
                match out.lasting {
                    Some(Duration::ZERO) => {
                        pipe.del(key).ignore();
                    }
                    Some(rest) => {
                        let ms = super::millis(rest).max(1);
                        pipe.pset_ex(key, state, ms).ignore();
                    }
                    None => {}
                }
                pipe.query_async::<()>(&mut connection).await
            })
            .await;
        if let Err(down) = sent {
            let _ = redis.fall_back(&down, || ());
        }
    }
}

/// Every [`LOAD_EVERY`]: writes this replica's in-flight count of each account and reads
/// the others' (one round trip for all accounts). Ends when the store is dropped.
async fn share_load(shared: Weak<Shared>) {
    let stale_ms = super::millis(LOAD_STALE);
    loop {
        tokio::time::sleep(LOAD_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let accounts: Vec<(String, Arc<SharedLoad>)> = shared
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, (_, _, load))| (shared.redis.key(&["load", name]), Arc::clone(load)))
            .collect();
        if accounts.is_empty() {
            continue;
        }
        let now = unix_ms(SystemTime::now());
        let mut pipe = redis::pipe();
        for (key, load) in &accounts {
            pipe.hset(key, &shared.replica, format!("{}:{now}", load.in_flight()))
                .ignore()
                .pexpire(key, i64::try_from(stale_ms).unwrap_or(i64::MAX))
                .ignore()
                .hgetall(key);
        }
        let answer = shared
            .redis
            .call_in_background(|mut connection| async move {
                pipe.query_async::<Vec<HashMap<String, String>>>(&mut connection)
                    .await
            })
            .await;
        let Ok(counts) = answer else {
            // Redis is away: each replica weighs its own load until it is back.
            for (_, load) in &accounts {
                load.others.store(0, Ordering::Relaxed);
            }
            continue;
        };
        let mut gone = redis::pipe();
        let mut any_gone = false;
        for ((key, load), fields) in accounts.iter().zip(counts) {
            let mut others = 0;
            for (replica, value) in fields.iter().filter(|(r, _)| **r != shared.replica) {
                match parse_count(value) {
                    Some((count, at)) if now.saturating_sub(at) <= stale_ms => others += count,
                    _ => {
                        gone.hdel(key, replica).ignore();
                        any_gone = true;
                    }
                }
            }
            load.others.store(others, Ordering::Relaxed);
        }
        if any_gone {
            let _ = shared
                .redis
                .call_in_background(|mut connection| async move {
                    gone.query_async::<()>(&mut connection).await
                })
                .await;
        }
    }
}

/// A replica's `count:unix-ms` field.
fn parse_count(value: &str) -> Option<(usize, u64)> {
    let (count, at) = value.split_once(':')?;
    Some((count.parse().ok()?, at.parse().ok()?))
}

/// Listens for the other replicas' events, reconnecting after a Redis outage. Ends when the
/// store is dropped.
async fn subscribe(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let (client, events) = (strong.redis.client(), channel(&strong.redis));
        drop(strong);
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe(&events).await.is_ok() {
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Some(strong) = shared.upgrade() else {
                        return;
                    };
                    if let Ok(message) =
                        serde_json::from_slice::<Message>(message.get_payload_bytes())
                    {
                        strong.apply(message);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_whole_and_quiet_ones_stay_home() {
        let events = [
            HealthEvent::Success,
            HealthEvent::Penalised(Penalty::Failure),
            HealthEvent::Penalised(Penalty::Cooldown {
                class: RateLimitClass::Suspended,
                retry_after: Some(Duration::from_millis(1500)),
            }),
            HealthEvent::Penalised(Penalty::Disable {
                reason: "quota_exhausted",
                until: Some(UNIX_EPOCH + Duration::from_millis(1_900_000_000_000)),
            }),
            HealthEvent::ProbeOk,
            HealthEvent::OperatorReset,
            HealthEvent::OperatorClear,
        ];
        for event in events {
            let wire = Wire::of(&event).unwrap();
            let json = serde_json::to_vec(&wire).unwrap();
            let back = serde_json::from_slice::<Wire>(&json).unwrap().event();
            assert_eq!(back, event);
        }
        assert_eq!(Wire::of(&HealthEvent::Neutral), None);
        assert_eq!(Wire::of(&HealthEvent::Penalised(Penalty::None)), None);
    }

    #[test]
    fn reasons_from_elsewhere_are_kept_once_and_bounded() {
        let a = intern("suspended_elsewhere");
        let b = intern(&String::from("suspended_elsewhere"));
        assert!(std::ptr::eq(a, b));
        for i in 0..100 {
            let _ = intern(&format!("reason-{i}"));
        }
        assert_eq!(intern("one more"), "disabled");
    }
}

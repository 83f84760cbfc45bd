//! The open client connections: a bounded set, each with the state its timers and the
//! eviction policy read.
//!
//! A connection is *silent* until it has finished a request (it connected, or started
//! sending headers, and nothing more), *busy* while a request or stream is in flight, and
//! *idle* between requests (keep-alive). Only the client's silence counts against it: a busy
//! connection is never timed out here, however long its stream (the body-read timeout and
//! the upstream timeouts cover a stalled request).
//!
//! At the cap, a newcomer is let in by closing, first, the oldest silent connection, then
//! the oldest idle one; only when every slot is busy is the newcomer refused. So hundreds of
//! silent sockets cannot lock real clients out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// `in_flight` of a connection chosen for eviction: no request may start on it any more.
const CLOSING: u32 = u32::MAX;

/// The timers of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a new connection may take to complete its first request's headers.
    pub header_read: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle: Duration,
}

/// One open connection, shared by its task, its requests and the registry.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    accepted: Instant,
    /// Requests (HTTP/2: streams) in flight, or [`CLOSING`].
    in_flight: AtomicU32,
    /// Requests finished on this connection.
    served: AtomicU64,
    /// When the last request finished, in ms after `accepted`.
    idle_since_ms: AtomicU64,
    /// Woken when the registry closes the connection to make room.
    evicted: Notify,
}

/// How a connection stands, as the eviction policy and the timers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// No request finished yet, none in flight: since when.
    Silent(Instant),
    /// A request is in flight.
    Busy,
    /// Between requests: since when.
    Idle(Instant),
}

impl Connection {
    /// Its number, unique in its server.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn standing(&self) -> Standing {
        match self.in_flight.load(Ordering::Acquire) {
            0 if self.served.load(Ordering::Acquire) == 0 => Standing::Silent(self.accepted),
            0 => Standing::Idle(
                self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)),
            ),
            _ => Standing::Busy,
        }
    }

    /// When the connection's silence runs out, if it is not busy.
    pub fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        match self.standing() {
            Standing::Silent(since) => Some(since + timeouts.header_read),
            Standing::Idle(since) => Some(since + timeouts.idle),
            Standing::Busy => None,
        }
    }

    /// A request starts. `false` when the connection is being closed to make room: the
    /// request must be refused (its client may retry on a new connection).
    pub fn begin(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != CLOSING).then(|| n + 1)
            })
            .is_ok()
    }

    /// A request (its response body included) ended.
    pub fn end(&self) {
        let elapsed = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(elapsed, Ordering::Release);
        self.served.fetch_add(1, Ordering::AcqRel);
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != CLOSING && n > 0).then(|| n - 1)
            });
    }

    /// Completes when the registry closed this connection to make room.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Claims the connection for eviction if nothing is in flight.
    fn claim(&self) -> bool {
        self.in_flight
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Why a newcomer could not get a slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// The cap.
    pub cap: usize,
}

/// The bounded set of open connections.
#[derive(Debug)]
pub struct Registry {
    cap: usize,
    state: Mutex<State>,
    /// Connections evicted whose task has not closed the socket yet: their descriptors
    /// are still open, so the accept loop waits for them (see [`Registry::settled`]).
    closing: std::sync::atomic::AtomicUsize,
    /// Signalled whenever a slot is given back.
    freed: Notify,
}

/// Evicted connections still closing beyond which the accept loop waits: without the
/// wait, a burst of newcomers is accepted faster than the evicted sockets close, and the
/// descriptors run out although the set is within its cap.
const MAX_CLOSING: usize = 8;

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
}

/// A slot in the registry, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Registry>,
    connection: Arc<Connection>,
}

impl Slot {
    /// The connection holding this slot.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let evicted = self
            .registry
            .lock()
            .open
            .remove(&self.connection.id)
            .is_none();
        if evicted {
            self.registry.closing.fetch_sub(1, Ordering::AcqRel);
        }
        self.registry.freed.notify_waiters();
    }
}

impl Registry {
    /// A registry of at most `cap` connections (at least 1).
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            state: Mutex::new(State::default()),
            closing: std::sync::atomic::AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Completes when few enough evicted connections are still closing that another may be
    /// accepted (waits at most 100 ms each time, so a stuck close cannot stop the server).
    pub async fn settled(&self) {
        while self.closing.load(Ordering::Acquire) > MAX_CLOSING {
            let freed = self.freed.notified();
            if self.closing.load(Ordering::Acquire) <= MAX_CLOSING {
                return;
            }
            if tokio::time::timeout(std::time::Duration::from_millis(100), freed)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives a newly accepted connection a slot, closing a silent or idle one when the set
    /// is full (see the module docs).
    pub fn admit(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut state = self.lock();
        if state.open.len() >= self.cap {
            let victim = pick_victim(&state.open).ok_or(Full { cap: self.cap })?;
            if let Some(victim) = state.open.remove(&victim) {
                self.closing.fetch_add(1, Ordering::AcqRel);
                victim.evicted.notify_one();
            }
        }
        state.next_id += 1;
        let connection = Arc::new(Connection {
            id: state.next_id,
            accepted: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            evicted: Notify::new(),
        });
        state.open.insert(connection.id, Arc::clone(&connection));
        Ok(Slot {
            registry: Arc::clone(self),
            connection,
        })
    }
}

/// The oldest silent connection, else the oldest idle one, claimed so that no request can
/// start on it any more.
fn pick_victim(open: &HashMap<u64, Arc<Connection>>) -> Option<u64> {
    let mut silent: Vec<(Instant, &Arc<Connection>)> = Vec::new();
    let mut idle: Vec<(Instant, &Arc<Connection>)> = Vec::new();
    for connection in open.values() {
        match connection.standing() {
            Standing::Silent(since) => silent.push((since, connection)),
            Standing::Idle(since) => idle.push((since, connection)),
            Standing::Busy => {}
        }
    }
    silent.sort_unstable_by_key(|(since, c)| (*since, c.id));
    idle.sort_unstable_by_key(|(since, c)| (*since, c.id));
    silent
        .into_iter()
        .chain(idle)
        .find(|(_, connection)| connection.claim())
        .map(|(_, connection)| connection.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    /// Runs one request to its end on `slot`'s connection.
    fn serve_one(slot: &Slot) {
        assert!(slot.connection().begin());
        slot.connection().end();
    }

    #[tokio::test(start_paused = true)]
    async fn silent_then_idle_are_evicted_oldest_first_busy_never() {
        let registry = Registry::new(3);
        let busy = registry.admit().unwrap();
        assert!(busy.connection().begin());
        tokio::time::advance(Duration::from_secs(1)).await;
        let idle = registry.admit().unwrap();
        serve_one(&idle);
        tokio::time::advance(Duration::from_secs(1)).await;
        let silent = registry.admit().unwrap();

        // Full: the silent connection goes, though the idle one is older.
        let newcomer = registry.admit().unwrap();
        assert!(!silent.connection().begin(), "claimed for eviction");
        assert_eq!(registry.len(), 3);

        // The newcomer finishes a request, so no silent one is left: the oldest idle goes.
        tokio::time::advance(Duration::from_secs(1)).await;
        serve_one(&newcomer);
        let _last = registry.admit().unwrap();
        assert!(
            !idle.connection().begin(),
            "the older idle connection was closed"
        );
        serve_one(&newcomer);
        assert!(
            busy.connection().begin(),
            "a busy connection is never chosen"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_busy_refuses_the_newcomer() {
        let registry = Registry::new(2);
        let a = registry.admit().unwrap();
        let b = registry.admit().unwrap();
        assert!(a.connection().begin() && b.connection().begin());
        assert_eq!(registry.admit().unwrap_err(), Full { cap: 2 });
        b.connection().end();
        assert!(registry.admit().is_ok(), "b became idle and made room");
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_standing() {
        let registry = Registry::new(4);
        let slot = registry.admit().unwrap();
        let connection = slot.connection();
        let accepted = Instant::now();
        assert_eq!(
            connection.deadline(TIMEOUTS),
            Some(accepted + TIMEOUTS.header_read)
        );
        assert!(connection.begin());
        assert_eq!(connection.deadline(TIMEOUTS), None, "busy: never timed out");
        tokio::time::advance(Duration::from_secs(5)).await;
        connection.end();
        assert_eq!(
            connection.deadline(TIMEOUTS),
            Some(accepted + Duration::from_secs(5) + TIMEOUTS.idle)
        );
        drop(slot);
        assert!(registry.is_empty());
    }
}

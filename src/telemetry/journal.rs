//! The console's record of recent traffic (kept only when the console is on: a server
//! without `--admin-key` has no journal and spends nothing on it): the last
//! [`RECENT`] model requests, one-minute totals of the last hour for the overview's
//! chart, and totals per API key label. One short mutex section per request, at its end.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many requests the log keeps.
pub const RECENT: usize = 500;
/// Minutes of history the overview shows.
pub const MINUTES: usize = 60;
/// The longest prompt text kept per entry (with `--console-log-bodies`).
pub const PROMPT_CHARS: usize = 2000;

/// One finished model request.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The client's key label (`key-1`, ...; never the key).
    pub key: Arc<str>,
    /// The model asked for.
    pub model: Arc<str>,
    /// The account that answered (or was last tried).
    pub account: Option<Arc<str>>,
    /// HTTP status of the answer (200 for a stream that started, whatever came later).
    pub status: u16,
    /// The error's type when it failed (before or during the stream).
    pub error: Option<&'static str>,
    /// Upstream calls made.
    pub attempts: u32,
    /// From the call to the end of the answer, in milliseconds.
    pub latency_ms: u64,
    /// Input tokens (cache reads and writes included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Kiro credits.
    pub credits: f64,
    /// `hit`, `miss`, `bypass`, or none (no cache layer).
    pub cache: Option<&'static str>,
    /// Whether it was a stream.
    pub stream: bool,
    /// The last user text, only with `--console-log-bodies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

impl Entry {
    /// The overview's error class: `rate_limited` (ours or Kiro's 429), `client` (4xx),
    /// `upstream` (5xx, timeouts, broken streams). A stream the client left early is not
    /// an error (the log still says `abandoned`).
    pub fn class(&self) -> Option<&'static str> {
        match (self.status, self.error) {
            (429, _) => Some("rate_limited"),
            (400..=499, _) => Some("client"),
            (_, Some("abandoned")) => None,
            (_, Some(_)) => Some("upstream"),
            (500.., None) => Some("upstream"),
            _ => None,
        }
    }
}

/// One minute's totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Minute {
    /// Start of the minute, in seconds since the Unix epoch.
    pub at: u64,
    /// Requests.
    pub requests: u64,
    /// Failed ones, by class.
    pub rate_limited: u64,
    /// 4xx other than 429.
    pub client_errors: u64,
    /// 5xx, timeouts, broken streams.
    pub upstream_errors: u64,
    /// Sum of latencies, in milliseconds (the chart shows the mean).
    pub latency_ms_sum: u64,
    /// The slowest request.
    pub latency_ms_max: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Credits.
    pub credits: f64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache lookups (hits and misses).
    pub cache_lookups: u64,
}

/// Totals of one API key label since start.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyTotals {
    /// Requests.
    pub requests: u64,
    /// Failed ones.
    pub errors: u64,
    /// Refused by the rate limits (429).
    pub rate_limited: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Credits.
    pub credits: f64,
    /// The last request, in milliseconds since the Unix epoch.
    pub last_at_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Entry>,
    minutes: VecDeque<Minute>,
    keys: HashMap<Arc<str>, KeyTotals>,
}

/// The journal. Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
    log_bodies: bool,
}

fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Journal {
    /// An empty journal; `log_bodies` keeps prompt text (`--console-log-bodies`).
    pub fn new(log_bodies: bool) -> Self {
        Self {
            inner: Arc::default(),
            log_bodies,
        }
    }

    /// Whether entries keep prompt text.
    pub fn logs_bodies(&self) -> bool {
        self.log_bodies
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a finished request.
    pub fn record(&self, mut entry: Entry) {
        if !self.log_bodies {
            entry.prompt = None;
        }
        let minute = entry.at_ms / 60_000 * 60;
        let class = entry.class();
        let mut inner = self.lock();
        let totals = inner.keys.entry(Arc::clone(&entry.key)).or_default();
        totals.requests += 1;
        totals.errors += u64::from(class.is_some());
        totals.rate_limited += u64::from(class == Some("rate_limited"));
        totals.input_tokens += entry.input_tokens;
        totals.output_tokens += entry.output_tokens;
        totals.credits += entry.credits;
        totals.last_at_ms = totals.last_at_ms.max(entry.at_ms);
        if inner.minutes.back().is_none_or(|m| m.at < minute) {
            inner.minutes.push_back(Minute {
                at: minute,
                ..Minute::default()
            });
            while inner.minutes.len() > MINUTES {
                inner.minutes.pop_front();
            }
        }
        if let Some(bucket) = inner.minutes.iter_mut().rev().find(|m| m.at <= minute) {
            bucket.requests += 1;
            match class {
                Some("rate_limited") => bucket.rate_limited += 1,
                Some("client") => bucket.client_errors += 1,
                Some(_) => bucket.upstream_errors += 1,
                None => {}
            }
            bucket.latency_ms_sum += entry.latency_ms;
            bucket.latency_ms_max = bucket.latency_ms_max.max(entry.latency_ms);
            bucket.input_tokens += entry.input_tokens;
            bucket.output_tokens += entry.output_tokens;
            bucket.credits += entry.credits;
            bucket.cache_hits += u64::from(entry.cache == Some("hit"));
            bucket.cache_lookups += u64::from(matches!(entry.cache, Some("hit" | "miss")));
        }
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(entry);
    }

    /// The last requests, newest first.
    pub fn recent(&self) -> Vec<Entry> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    /// The last hour, one entry per minute (minutes without traffic included), oldest first.
    pub fn minutes(&self, now: SystemTime) -> Vec<Minute> {
        let this_minute = since_epoch(now).as_secs() / 60 * 60;
        let inner = self.lock();
        (0..MINUTES as u64)
            .rev()
            .map(|back| {
                let at = this_minute.saturating_sub(back * 60);
                inner
                    .minutes
                    .iter()
                    .find(|m| m.at == at)
                    .cloned()
                    .unwrap_or(Minute {
                        at,
                        ..Minute::default()
                    })
            })
            .collect()
    }

    /// Totals per API key label.
    pub fn keys(&self) -> Vec<(Arc<str>, KeyTotals)> {
        let mut keys: Vec<_> = self
            .lock()
            .keys
            .iter()
            .map(|(k, v)| (Arc::clone(k), v.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch(SystemTime::now()).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64, status: u16, cache: Option<&'static str>) -> Entry {
        Entry {
            at_ms,
            key: Arc::from("key-1"),
            model: Arc::from("claude-sonnet-4"),
            account: Some(Arc::from("a")),
            status,
            error: (status != 200).then_some("api_error"),
            attempts: 1,
            latency_ms: 40,
            input_tokens: 10,
            output_tokens: 5,
            credits: 0.5,
            cache,
            stream: false,
            prompt: Some("secret prompt".into()),
        }
    }

    #[test]
    fn minutes_keys_and_the_log_add_up() {
        let journal = Journal::new(false);
        let now = SystemTime::now();
        let ms = u64::try_from(since_epoch(now).as_millis()).unwrap();
        journal.record(entry(ms, 200, Some("hit")));
        journal.record(entry(ms, 200, Some("miss")));
        journal.record(entry(ms, 429, None));
        journal.record(entry(ms, 502, None));
        journal.record(Entry {
            error: Some("abandoned"),
            ..entry(ms, 200, None)
        });
        let minutes = journal.minutes(now);
        assert_eq!(minutes.len(), MINUTES);
        let last = minutes.last().unwrap();
        assert_eq!(
            (
                last.requests,
                last.rate_limited,
                last.upstream_errors,
                last.cache_hits,
                last.cache_lookups
            ),
            (5, 1, 1, 1, 2)
        );
        assert_eq!(minutes[0].requests, 0);
        let keys = journal.keys();
        assert_eq!(keys[0].1.requests, 5);
        assert_eq!(keys[0].1.errors, 2, "a client leaving early is no error");
        assert_eq!(keys[0].1.rate_limited, 1);
        assert!((keys[0].1.credits - 2.5).abs() < 1e-9);
        let recent = journal.recent();
        assert_eq!(recent[1].status, 502, "newest first");
        assert!(
            recent.iter().all(|e| e.prompt.is_none()),
            "no prompt text unless asked"
        );
    }

    #[test]
    fn the_log_keeps_the_last_entries_only() {
        let journal = Journal::new(true);
        for i in 0..(RECENT as u64 + 10) {
            journal.record(entry(i, 200, None));
        }
        let recent = journal.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].at_ms, RECENT as u64 + 9);
        assert_eq!(recent[0].prompt.as_deref(), Some("secret prompt"));
    }
}

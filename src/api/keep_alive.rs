//! The keep-alive of SSE responses: after this much quiet on the stream, the encoder sends
//! something that clients ignore (an Anthropic `ping` event, an SSE comment line on OpenAI
//! streams), so that clients and load balancers do not cut long upstream silences (a large
//! tool call being generated produces no bytes for a minute).
//!
//! Sending a chunk only notes the time; the timer is re-armed when it fires, so a busy
//! stream costs a clock read per chunk, not a timer reset.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Quiet time after which a keep-alive is sent.
pub const INTERVAL: Duration = Duration::from_secs(15);

/// See the module docs.
#[derive(Debug)]
pub struct KeepAlive {
    interval: Duration,
    last_sent: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl KeepAlive {
    /// A keep-alive after `interval` of quiet.
    pub fn new(interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            interval,
            last_sent: now,
            sleep: Box::pin(tokio::time::sleep_until(now + interval)),
        }
    }

    /// Something was sent.
    pub fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Whether a keep-alive is due now (then it counts as sent); otherwise the task is
    /// woken when it will be.
    pub fn due(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let due = self.last_sent + self.interval;
            if now >= due {
                self.last_sent = now;
                self.sleep.as_mut().reset(now + self.interval);
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

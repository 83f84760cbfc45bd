//! A requests-per-minute quota: what the client rate limits ([`crate::rate_limit`]) and the
//! pool's per-account guards ([`crate::model::pool`]) both count, in its own module so that
//! neither of the two imports the other.

use governor::Quota;
use std::num::NonZeroU32;
use std::time::Duration;

/// A requests-per-minute limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestQuota {
    /// Requests per minute, sustained.
    pub per_minute: NonZeroU32,
    /// Requests that may come at once (the bucket's size).
    pub burst: NonZeroU32,
}

impl RequestQuota {
    /// `per_minute`, with a burst of a whole minute's worth.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            per_minute,
            burst: per_minute,
        }
    }

    /// Time for one request to be replenished.
    pub fn period(self) -> Duration {
        Duration::from_secs(60) / self.per_minute.get()
    }
}

impl RequestQuota {
    /// The same quota as governor's GCRA takes it.
    pub(crate) fn governor(self) -> Quota {
        Quota::with_period(self.period())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }
}

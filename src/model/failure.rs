//! What a [`ChatError`] means to the model-tier layers of `aiproxy-layers` (pool, retry,
//! breakers): its fault, when to come back, and the penalty for the account that served it
//! (docs/kiro-protocol.md §7.1 and §13.4).

use crate::chat::{ChatError, Fault};
use aiproxy_layers::model::pool::NoAccount;
use aiproxy_layers::model::{Failure, Penalty, RateLimitClass, Resend};
use aiproxy_layers::rate_limit::Throttled;
use std::time::{Duration, SystemTime};

impl Failure for ChatError {
    fn fault(&self) -> Fault {
        ChatError::fault(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        ChatError::retry_after(self)
    }

    fn penalty(&self) -> Penalty {
        match self {
            Self::RateLimited {
                message,
                retry_after,
            } => Penalty::Cooldown {
                class: rate_limit_class(message),
                retry_after: *retry_after,
            },
            // Kiro resets monthly quotas at the start of the month (UTC); the health probe
            // replaces this guess with `nextDateReset` when it has one.
            Self::QuotaExhausted { overage, .. } => Penalty::Disable {
                reason: if *overage {
                    aiproxy_layers::model::health::OVERAGE_LIMIT
                } else {
                    aiproxy_layers::model::health::QUOTA_EXHAUSTED
                },
                until: Some(next_month_start(SystemTime::now())),
            },
            Self::AccountUnavailable { message } => account_penalty(message),
            // Not a failure of the account: it just does not serve this model; its token was
            // refreshed and the request goes again.
            Self::NotServedHere { .. } | Self::TokenRejected { .. } => Penalty::None,
            _ => match ChatError::fault(self) {
                Fault::Upstream | Fault::Account => Penalty::Failure,
                Fault::Request | Fault::Local => Penalty::None,
            },
        }
    }

    fn kind(&self) -> &'static str {
        ChatError::kind(self)
    }

    fn resend(&self) -> Option<Resend> {
        let kind = match self {
            Self::TokenRejected { .. } => "refresh",
            Self::EmptyTurn { nudged: false, .. } => "nudge",
            Self::SignatureRefused { .. } => "inline_reasoning",
            _ => return None,
        };
        // Each stays on its account: the token was refreshed there, and its prompt cache is
        // warm for the same conversation.
        Some(Resend {
            kind,
            same_account: true,
        })
    }
}

impl From<Throttled> for ChatError {
    fn from(throttled: Throttled) -> Self {
        Self::Throttled {
            message: throttled.message,
            retry_after: throttled.retry_after,
        }
    }
}

impl From<aiproxy_layers::rate_limit::StoreUnavailable> for ChatError {
    fn from(down: aiproxy_layers::rate_limit::StoreUnavailable) -> Self {
        Self::SharedStateUnavailable {
            message: down.message,
        }
    }
}

impl From<aiproxy_layers::model::ready::NotReady> for ChatError {
    fn from(not_ready: aiproxy_layers::model::ready::NotReady) -> Self {
        Self::Busy {
            message: format!(
                "every upstream slot of every account stayed busy for {} s; retry shortly, or \
                 raise --max-connections (or maxConcurrency in the pool file)",
                not_ready.waited.as_secs()
            ),
            retry_after: Some(std::time::Duration::from_secs(1)),
        }
    }
}

impl From<NoAccount> for ChatError {
    fn from(none: NoAccount) -> Self {
        Self::NoAccount {
            message: none.message,
            retry_after: none.retry_after,
        }
    }
}

/// The cooldown class of a 429 from its text (§13.4).
fn rate_limit_class(message: &str) -> RateLimitClass {
    let lower = message.to_ascii_lowercase();
    if lower.contains("suspicious activity") {
        RateLimitClass::Suspicious
    } else if lower.contains("5-minute") || message.contains("DAILY_REQUEST_COUNT") {
        RateLimitClass::ShortWindow
    } else {
        RateLimitClass::Plain
    }
}

/// What an account problem means: a suspension ("temporarily", Kiro says) or an
/// unexplained 403 rests the account for long and it is tried again after; a revoked
/// refresh token or a token Kiro keeps rejecting needs a new login (the operator acts).
fn account_penalty(message: &str) -> Penalty {
    let rest = |class| Penalty::Cooldown {
        class,
        retry_after: None,
    };
    if message.contains("invalid_grant") {
        Penalty::Disable {
            reason: "invalid_grant",
            until: None,
        }
    } else if message.contains("suspended") {
        rest(RateLimitClass::Suspended)
    } else if message.contains("Kiro refused this account") {
        rest(RateLimitClass::Forbidden)
    } else {
        Penalty::Disable {
            reason: "account_unavailable",
            until: None,
        }
    }
}

/// 00:00 UTC on the first day of the month after `now`.
fn next_month_start(now: SystemTime) -> SystemTime {
    let now = time::OffsetDateTime::from(now);
    let (year, month) = match now.month() {
        time::Month::December => (now.year() + 1, time::Month::January),
        month => (now.year(), month.next()),
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|date| SystemTime::from(date.midnight().assume_utc()))
        .unwrap_or(SystemTime::now() + Duration::from_secs(31 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(message: &str) -> Penalty {
        ChatError::RateLimited {
            message: message.into(),
            retry_after: None,
        }
        .penalty()
    }

    #[test]
    fn each_429_text_has_its_cooldown_class() {
        let class = |p| match p {
            Penalty::Cooldown { class, .. } => class,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            class(limited(
                "Due to suspicious activity, we are imposing temporary limits on your account."
            )),
            RateLimitClass::Suspicious
        );
        assert_eq!(
            class(limited(
                "5-minute credit limit exceeded (reason: DAILY_REQUEST_COUNT)"
            )),
            RateLimitClass::ShortWindow
        );
        assert_eq!(
            class(limited(
                "Too many requests, please wait before trying again."
            )),
            RateLimitClass::Plain
        );
    }

    #[test]
    fn account_problems_disable_and_request_problems_do_not_count() {
        let suspended = ChatError::AccountUnavailable {
            message: "The Kiro account is suspended (Kiro: temporarily suspended).".into(),
        };
        let rests = |class| Penalty::Cooldown {
            class,
            retry_after: None,
        };
        assert_eq!(
            suspended.penalty(),
            rests(RateLimitClass::Suspended),
            "rests, not disabled for good"
        );
        let odd = ChatError::AccountUnavailable {
            message: "Kiro refused this account (403 Forbidden): Not authorized".into(),
        };
        assert_eq!(odd.penalty(), rests(RateLimitClass::Forbidden));
        let revoked = ChatError::AccountUnavailable {
            message: "the refresh token was rejected (invalid_grant)".into(),
        };
        assert_eq!(
            revoked.penalty(),
            Penalty::Disable {
                reason: "invalid_grant",
                until: None
            }
        );
        let overage = ChatError::QuotaExhausted {
            message: "x".into(),
            overage: true,
        };
        assert!(
            matches!(
                overage.penalty(),
                Penalty::Disable {
                    reason: "overage_limit",
                    ..
                }
            ),
            "{overage:?}"
        );
        let Penalty::Disable { reason, until } = ChatError::QuotaExhausted {
            message: "x".into(),
            overage: false,
        }
        .penalty() else {
            panic!("quota disables")
        };
        assert_eq!(reason, "quota_exhausted");
        assert!(until.unwrap() > SystemTime::now());
        for error in [
            ChatError::invalid("model", "x"),
            ChatError::UpstreamRejected {
                message: "x".into(),
            },
            ChatError::Busy {
                message: "x".into(),
                retry_after: None,
            },
        ] {
            assert_eq!(error.penalty(), Penalty::None, "{error:?}");
        }
        assert_eq!(
            ChatError::Timeout {
                message: "x".into()
            }
            .penalty(),
            Penalty::Failure
        );
    }

    #[test]
    fn the_month_rolls_over() {
        let at = |text| {
            SystemTime::from(
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .unwrap(),
            )
        };
        assert_eq!(
            next_month_start(at("2026-12-15T10:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_month_start(at("2026-03-31T23:59:59Z")),
            at("2026-04-01T00:00:00Z")
        );
    }
}

//! Classification of Kiro's HTTP errors (docs/kiro-protocol.md §7.1) into [`ChatError`].

use crate::chat::ChatError;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "Message")]
    message_upper: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    error: Option<NestedError>,
}

#[derive(Deserialize, Default)]
struct NestedError {
    #[serde(default)]
    reason: Option<String>,
}

/// Text of the 403 that means "refresh the token" (§7.1).
pub const BEARER_INVALID: &str = "The bearer token included in the request is invalid";

/// Whether a 401/403 body says the access token is stale (refreshable).
pub fn is_bearer_invalid(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::UNAUTHORIZED
        || (status == StatusCode::FORBIDDEN
            && String::from_utf8_lossy(body).contains(BEARER_INVALID))
}

/// Kiro's refusal of a replayed reasoning signature (§13.1: 400 `THINKING_SIGNATURE_INVALID`,
/// "messages.N.content.0: Invalid signature ...").
pub fn is_signature_invalid(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::BAD_REQUEST
        && String::from_utf8_lossy(body).contains("THINKING_SIGNATURE_INVALID")
}

/// Whether a 400 says the conversation is over the model's context or Kiro's payload limit
/// (§7.1, §13.4): reason `CONTENT_LENGTH_EXCEEDS_THRESHOLD` or "Input is too long". The
/// caller words it as [`ChatError::ContextOverflow`], which needs the request's figures.
pub fn is_context_overflow(status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::BAD_REQUEST {
        return false;
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let reason = parsed
        .reason
        .or_else(|| parsed.error.and_then(|e| e.reason));
    reason.as_deref() == Some("CONTENT_LENGTH_EXCEEDS_THRESHOLD")
        || String::from_utf8_lossy(body).contains("Input is too long")
}

/// Whether a 403 body is Kiro's account suspension (§7.1).
pub fn is_suspension(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("suspended")
}

/// Turns a non-2xx answer of `generateAssistantResponse` into an error (a context overflow
/// is told apart first, with [`is_context_overflow`]).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ChatError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let reason = parsed
        .reason
        .or_else(|| parsed.error.and_then(|e| e.reason))
        .unwrap_or_default();
    let raw = String::from_utf8_lossy(body);
    // Only Kiro's documented fields, cut to a sane length (the rest of a body never reaches
    // a client).
    let message: String = parsed
        .message
        .or(parsed.message_upper)
        .unwrap_or_else(|| raw.to_string())
        .chars()
        .take(300)
        .collect();
    let reason: String = reason.chars().take(64).collect();
    match status.as_u16() {
        400 => ChatError::UpstreamRejected {
            message: if reason.is_empty() {
                format!("{message} aiproxy repairs the usual causes before sending; if this repeats, report the request shape.")
            } else {
                format!("{message} (reason: {reason})")
            },
        },
        402 if reason == "MONTHLY_REQUEST_COUNT" || raw.contains("MONTHLY_REQUEST_COUNT") => {
            ChatError::QuotaExhausted {
                message: format!("{message} The account's monthly quota is used up; it can serve again after Kiro's monthly reset."),
                overage: false,
            }
        }
        402 if reason == "OVERAGE_REQUEST_LIMIT_EXCEEDED"
            || raw.contains("OVERAGE_REQUEST_LIMIT_EXCEEDED") =>
        {
            ChatError::QuotaExhausted {
                message: format!("{message} The account has spent the overage it allows beyond its monthly credits; raise its overage limit in Kiro, or it serves again after Kiro's monthly reset."),
                overage: true,
            }
        }
        401 | 403 if is_bearer_invalid(status, body) => ChatError::AccountUnavailable {
            message: "Kiro rejected the account's access token and refreshing it did not help. \
                      Sign in to Kiro again and update the credentials."
                .into(),
        },
        403 if is_suspension(body) => ChatError::AccountUnavailable {
            message: "The Kiro account is suspended (Kiro: temporarily suspended). \
                      It rests here and is tried again later; contact Kiro support if it stays so."
                .into(),
        },
        402 | 403 => ChatError::AccountUnavailable {
            message: format!("Kiro refused this account ({status}): {message}"),
        },
        // The reason tells the cooldown classes apart (`DAILY_REQUEST_COUNT`: §13.4).
        429 => ChatError::RateLimited {
            message: if reason.is_empty() {
                message
            } else {
                format!("{message} (reason: {reason})")
            },
            retry_after: retry_after(headers),
        },
        500..=599 => ChatError::Upstream {
            message: format!("Kiro answered {status}: {message}"),
        },
        _ => ChatError::Upstream {
            message: format!("Kiro answered with unexpected status {status}: {message}"),
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Kiro).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_body(status: u16, body: &str) -> ChatError {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn each_documented_error_maps_to_its_class() {
        assert!(matches!(
            classify_body(
                400,
                r#"{"message":"Improperly formed request.","reason":null}"#
            ),
            ChatError::UpstreamRejected { .. }
        ));
        assert!(matches!(
            classify_body(
                402,
                r#"{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}"#
            ),
            ChatError::QuotaExhausted { overage: false, .. }
        ));
        let overage = classify_body(
            402,
            r#"{"message":"You have reached the limit for overages.","reason":"OVERAGE_REQUEST_LIMIT_EXCEEDED"}"#,
        );
        assert!(
            matches!(overage, ChatError::QuotaExhausted { overage: true, .. }),
            "{overage:?}"
        );
        assert!(overage
            .to_string()
            .starts_with("The account's overage limit is exhausted"));
        assert!(matches!(
            classify_body(
                403,
                r#"{"message":"The bearer token included in the request is invalid."}"#
            ),
            ChatError::AccountUnavailable { .. }
        ));
        let suspended = classify_body(
            403,
            r#"{"message":"Your User ID (x) temporarily is suspended."}"#,
        );
        assert!(suspended.to_string().contains("suspended"));
        assert!(matches!(
            classify_body(500, "boom"),
            ChatError::Upstream { .. }
        ));
    }

    #[test]
    fn overflow_answers_are_told_apart() {
        let bad = StatusCode::BAD_REQUEST;
        assert!(is_context_overflow(
            bad,
            br#"{"message":"Input is too long.","reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}"#
        ));
        assert!(is_context_overflow(
            bad,
            br#"{"error":{"reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}}"#
        ));
        assert!(is_context_overflow(
            bad,
            b"Input is too long for this model"
        ));
        assert!(!is_context_overflow(
            bad,
            br#"{"message":"Improperly formed request.","reason":null}"#
        ));
        assert!(!is_context_overflow(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"Input is too long"
        ));
    }

    #[test]
    fn rate_limit_carries_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        let err = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            b"Too many requests",
        );
        assert_eq!(
            err,
            ChatError::RateLimited {
                message: "Too many requests".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }
}

//! [`ChatError`] -> HTTP status and API error, in one place for every adapter.

use crate::chat::ChatError;
use aiproxy_layers::Rejection;
use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;

/// The API error for a chat failure, with `Retry-After` when the failure says when to
/// come back.
pub fn rejection(error: &ChatError) -> Rejection {
    let rejection = classified(error);
    match error.retry_after() {
        Some(wait) => rejection.with_header(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1))),
        None => rejection,
    }
}

fn classified(error: &ChatError) -> Rejection {
    let message = error.to_string();
    match error {
        ChatError::InvalidRequest { param, .. } => {
            let r = Rejection::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
            match param {
                Some(param) => r.with_param(param.clone()),
                None => r,
            }
        }
        ChatError::ContextOverflow { .. } => {
            Rejection::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
                .with_code("context_length_exceeded")
                .with_param("messages")
        }
        ChatError::ModelNotFound { .. } | ChatError::NotServedHere { .. } => {
            Rejection::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
                .with_code("model_not_found")
                .with_param("model")
        }
        ChatError::UpstreamRejected { .. } => {
            Rejection::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
                .with_code("upstream_rejected")
        }
        ChatError::RateLimited { .. } => {
            Rejection::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                .with_code("rate_limit_exceeded")
        }
        ChatError::Throttled { .. } => {
            Rejection::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                .with_code("rate_limit_exceeded")
        }
        ChatError::QuotaExhausted { .. } => {
            Rejection::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
                .with_code("insufficient_quota")
        }
        ChatError::AccountUnavailable { .. } | ChatError::TokenRejected { .. } => {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
                .with_code("account_unavailable")
        }
        ChatError::Upstream { .. } | ChatError::EmptyTurn { .. } => {
            Rejection::new(StatusCode::BAD_GATEWAY, "api_error", message)
                .with_code("upstream_error")
        }
        ChatError::SignatureRefused { .. } => {
            Rejection::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
                .with_code("reasoning_signature_invalid")
        }
        ChatError::Unfulfilled { .. } => {
            Rejection::new(StatusCode::BAD_GATEWAY, "api_error", message)
                .with_code("requirement_unmet")
        }
        ChatError::Timeout { .. } => {
            Rejection::new(StatusCode::GATEWAY_TIMEOUT, "api_error", message)
                .with_code("upstream_timeout")
        }
        ChatError::Truncated { .. } => {
            Rejection::new(StatusCode::BAD_GATEWAY, "api_error", message)
                .with_code("upstream_truncated")
        }
        ChatError::Busy { .. } => {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
                .with_code("capacity_exhausted")
        }
        ChatError::SharedStateUnavailable { .. } => {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
                .with_code("shared_state_unavailable")
        }
        ChatError::NoAccount { .. } => {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
                .with_code("no_account_available")
        }
        ChatError::Internal { .. } => {
            Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message)
                .with_code("internal_error")
        }
    }
}

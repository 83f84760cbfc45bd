//! Context overflow, worded so that clients compact (docs/kiro-protocol.md §13.1, §13.4).
//!
//! Kiro refuses a conversation that is over its weighted payload limit or the model's
//! window with a 400 (`CONTENT_LENGTH_EXCEEDS_THRESHOLD`, "Input is too long"). Claude Code
//! and other agents compact their history only when they read Anthropic's own wording,
//! `prompt is too long: N tokens > M maximum`, so both the local guard (which predicts the
//! refusal and spares the upstream call) and Kiro's own refusal become
//! [`ChatError::ContextOverflow`].
//!
//! `N` is the local token estimate, raised to the window scaled by how far the body is over
//! Kiro's weighted limit when that is larger: a client that compacts by the ratio `N / M`
//! then drops enough, even for text (CJK, say) that fills the payload limit long before the
//! token window.

use crate::chat::ChatError;
use crate::kiro::protocol::wire::{weighted_payload_size, MAX_WEIGHTED_PAYLOAD};

/// The sizes of one Kiro request, against its model's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measure {
    /// Local estimate of the input tokens.
    pub estimate: u64,
    /// The model's context window in tokens.
    pub window: u64,
    /// The body's size as Kiro's payload limit counts it.
    pub weighted: usize,
}

impl Measure {
    /// Measures a serialised Kiro body.
    pub fn new(estimate: u64, window: u64, body: &[u8]) -> Self {
        Self {
            estimate,
            window,
            weighted: weighted_payload_size(body),
        }
    }

    /// The local guard: an error, without any upstream call, when Kiro would refuse.
    pub fn check(&self) -> Result<(), ChatError> {
        if self.weighted > MAX_WEIGHTED_PAYLOAD || self.estimate > self.window {
            return Err(self.error(self.estimate));
        }
        Ok(())
    }

    /// The error for Kiro's own overflow answer: it says the request is over, so `N` is at
    /// least one past the window.
    pub fn upstream_error(&self) -> ChatError {
        self.error(self.window.saturating_add(1))
    }

    fn error(&self, at_least: u64) -> ChatError {
        let by_payload =
            (self.window as u128 * self.weighted as u128).div_ceil(MAX_WEIGHTED_PAYLOAD as u128);
        let by_payload = u64::try_from(by_payload).unwrap_or(u64::MAX);
        let tokens = if self.weighted > MAX_WEIGHTED_PAYLOAD {
            self.estimate.max(by_payload)
        } else {
            self.estimate
        };
        ChatError::ContextOverflow {
            tokens: tokens.max(at_least),
            limit: self.window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(estimate: u64, weighted: usize) -> Measure {
        Measure {
            estimate,
            window: 200_000,
            weighted,
        }
    }

    #[test]
    fn within_both_limits_passes() {
        assert!(measure(200_000, MAX_WEIGHTED_PAYLOAD).check().is_ok());
    }

    #[test]
    fn over_the_window_reports_the_estimate() {
        let error = measure(200_001, 1_000).check().unwrap_err();
        assert_eq!(
            error.to_string(),
            "prompt is too long: 200001 tokens > 200000 maximum"
        );
    }

    #[test]
    fn over_the_payload_limit_reports_the_scaled_window() {
        // 10 % over Kiro's weighted limit, few tokens (CJK text): N is 10 % over the window.
        let weighted = MAX_WEIGHTED_PAYLOAD + MAX_WEIGHTED_PAYLOAD / 10;
        let error = measure(150_000, weighted).check().unwrap_err();
        assert_eq!(
            error,
            ChatError::ContextOverflow {
                tokens: 220_000,
                limit: 200_000
            }
        );
    }

    #[test]
    fn kiros_refusal_is_always_over_the_window() {
        assert_eq!(
            measure(1_000, 5_000).upstream_error(),
            ChatError::ContextOverflow {
                tokens: 200_001,
                limit: 200_000
            }
        );
        assert_eq!(
            measure(250_000, 5_000).upstream_error(),
            ChatError::ContextOverflow {
                tokens: 250_000,
                limit: 200_000
            }
        );
    }
}

//! A string that must never be printed: tokens, refresh tokens, client secrets, API keys.

use std::fmt;
use std::sync::Arc;

/// Holds a secret. `Debug` and `Display` print `***`; use [`Secret::expose`] where the
/// value must go on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
// Shared, not owned: an account's bearer is cloned for every upstream call, and a clone of
// an `Arc<str>` is a count, not a copy.
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The value, for the wire or a credential file only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// 32 random bytes from the system's CSPRNG, base64url: an unguessable token (a PKCE
/// verifier or state, a console session, a CSRF token).
pub fn random_token() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The system RNG does not fail on the platforms we build for; were it to, two UUIDs'
    // randomness still make an unguessable value.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}

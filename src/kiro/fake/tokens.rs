//! Token issuing and rotation of the fake: every refresh retires the refresh token it used
//! (a second use gets `invalid_grant`) and issues a new pair. A refresh token the fake has
//! never seen is accepted once, so any credential file works against a fresh fake.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Token bookkeeping.
#[derive(Debug, Default)]
pub struct Tokens {
    access: HashMap<String, Instant>,
    retired: HashSet<String>,
    /// Access tokens an external identity provider issued (sent with `TokenType: EXTERNAL_IDP`).
    external: HashSet<String>,
}

/// A freshly issued pair.
pub struct Issued {
    /// Access token.
    pub access: String,
    /// Rotated refresh token.
    pub refresh: String,
}

impl Tokens {
    /// Exchanges a refresh token, or `None` for `invalid_grant`.
    pub fn refresh(&mut self, refresh_token: &str, ttl: Duration) -> Option<Issued> {
        if refresh_token.is_empty() || !self.retired.insert(refresh_token.to_owned()) {
            return None;
        }
        Some(self.issue(ttl))
    }

    /// A new pair for a sign-in (no refresh token consumed).
    pub fn issue(&mut self, ttl: Duration) -> Issued {
        let access = format!("fake-at-{}", uuid::Uuid::new_v4().simple());
        self.access.insert(access.clone(), Instant::now() + ttl);
        Issued {
            access,
            refresh: format!("fake-rt-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// [`Tokens::refresh`] at an external identity provider's endpoint: its access tokens
    /// go with `TokenType: EXTERNAL_IDP`.
    pub fn refresh_external(&mut self, refresh_token: &str, ttl: Duration) -> Option<Issued> {
        let issued = self.refresh(refresh_token, ttl)?;
        self.external.insert(issued.access.clone());
        Some(issued)
    }

    /// Whether the token came from an external identity provider.
    pub fn is_external(&self, access_token: &str) -> bool {
        self.external.contains(access_token)
    }

    /// Whether an access token was issued here and has not expired.
    pub fn is_valid(&self, access_token: &str) -> bool {
        self.access
            .get(access_token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Makes every issued access token invalid.
    pub fn expire_all(&mut self) {
        self.access.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_retires_the_old_refresh_token() {
        let mut tokens = Tokens::default();
        let first = tokens
            .refresh("seed-token", Duration::from_secs(60))
            .unwrap();
        assert!(tokens.is_valid(&first.access));
        assert!(tokens
            .refresh("seed-token", Duration::from_secs(60))
            .is_none());
        let second = tokens
            .refresh(&first.refresh, Duration::from_secs(60))
            .unwrap();
        assert!(tokens.is_valid(&second.access));
        tokens.expire_all();
        assert!(!tokens.is_valid(&second.access));
    }
}

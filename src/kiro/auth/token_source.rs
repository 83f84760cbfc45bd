//! Where an account's bearer tokens come from: the small interface the leaf service uses,
//! so a live [`Account`] (refresh, rotation, write-back) and a mock account ([`FixedToken`],
//! for the in-process fake) are interchangeable, and pool tests run in-process.

use crate::chat::ChatError;
use crate::kiro::auth::account::{AccessToken, Account};
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use std::sync::{Mutex, MutexGuard};

/// An account's tokens, as the leaf service needs them.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// The account's display name (never a secret).
    fn name(&self) -> &str;
    /// Stable 64-hex machine id of the account's IDE identity.
    fn machine_id(&self) -> &str;
    /// A usable access token (refreshed first when needed).
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, ChatError>>;
    /// The upstream rejected `rejected`: a fresh token, refreshed at most once.
    fn token_after_rejection<'a>(
        &'a self,
        rejected: &'a Secret,
    ) -> BoxFuture<'a, Result<AccessToken, ChatError>>;
    /// The account cannot serve any more (suspended, revoked) until the operator acts;
    /// `code` is a short reason for status views, `reason` the full text.
    fn mark_unusable(&self, code: &'static str, reason: String);
}

impl TokenSource for Account {
    fn name(&self) -> &str {
        Account::name(self)
    }

    fn machine_id(&self) -> &str {
        Account::machine_id(self)
    }

    fn token(&self) -> BoxFuture<'_, Result<AccessToken, ChatError>> {
        Box::pin(Account::token(self))
    }

    fn token_after_rejection<'a>(
        &'a self,
        rejected: &'a Secret,
    ) -> BoxFuture<'a, Result<AccessToken, ChatError>> {
        Box::pin(Account::token_after_rejection(self, rejected))
    }

    fn mark_unusable(&self, code: &'static str, reason: String) {
        Account::mark_unusable(self, code, reason);
    }
}

/// Machine id of mock accounts.
const MOCK_MACHINE_ID: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A mock account: one fixed token that never expires, which the in-process fake accepts;
/// it can still be disabled, like a live account.
#[derive(Debug)]
pub struct FixedToken {
    name: String,
    token: Secret,
    unusable: Mutex<Option<String>>,
}

impl FixedToken {
    /// A mock account called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            token: Secret::new("mock-access-token".to_owned()),
            unusable: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.unusable.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Result<AccessToken, ChatError> {
        match self.lock().as_ref() {
            Some(reason) => Err(ChatError::AccountUnavailable {
                message: reason.clone(),
            }),
            // The fake's profile, so the mock account can list the fake's models.
            None => Ok(AccessToken {
                token: self.token.clone(),
                profile_arn: Some(crate::kiro::fake::FAKE_PROFILE_ARN.to_owned()),
                token_type: None,
            }),
        }
    }
}

impl TokenSource for FixedToken {
    fn name(&self) -> &str {
        &self.name
    }

    fn machine_id(&self) -> &str {
        MOCK_MACHINE_ID
    }

    fn token(&self) -> BoxFuture<'_, Result<AccessToken, ChatError>> {
        Box::pin(std::future::ready(self.current()))
    }

    fn token_after_rejection<'a>(
        &'a self,
        _rejected: &'a Secret,
    ) -> BoxFuture<'a, Result<AccessToken, ChatError>> {
        // A fixed token cannot be refreshed: a rejection of it is final.
        let reason = format!("mock account `{}`: its fixed token was rejected", self.name);
        Box::pin(std::future::ready(Err(ChatError::AccountUnavailable {
            message: reason,
        })))
    }

    fn mark_unusable(&self, code: &'static str, reason: String) {
        tracing::warn!(account = %self.name, code, %reason, "account disabled");
        *self.lock() = Some(reason);
    }
}

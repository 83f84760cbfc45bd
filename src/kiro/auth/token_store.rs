//! Where an account's tokens are kept between refreshes: what the next start reads, and what
//! every other holder of the same login (a second aiproxy, the Kiro IDE) reads before it
//! spends the refresh token. The account's refresh logic only talks to [`TokenStore`], so a
//! store shared by several proxies (Redis) plugs in without touching it.
//!
//! - [`FileStore`]: the credential file itself (merged in place, atomically, keeping the
//!   keys other tools wrote), or for base64 sources a state file under `--state-dir`; the
//!   rotation lock is an advisory lock beside it ([`crate::kiro::auth::file_lock`]).
//! - [`MemoryStore`]: in-process, for logins with nowhere to write and for tests; accounts
//!   built on one share its rotation lock.
//! - Replicas sharing state wrap an account's own store ([`SharedTokens`]): the lock and the
//!   tokens then also live in Redis (`crate::replicas` makes that store; this module only
//!   knows the hook, so the accounts do not depend on the replicas).

use crate::kiro::auth::credentials::{self, format_time};
use crate::kiro::{auth::file_lock, auth::persist};
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// An account's tokens as a store holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTokens {
    /// The refresh token (rotated by some refreshes).
    pub refresh: Secret,
    /// The last access token, if any.
    pub access: Option<Secret>,
    /// Its expiry.
    pub expires_at: Option<SystemTime>,
    /// The `profileArn` Kiro gave, if it gave one.
    pub profile_arn: Option<String>,
}

/// The right to rotate an account's refresh token; released when dropped.
pub type RotationGuard = Box<dyn Send + Sync>;

/// Where an account's tokens live between refreshes (see the module docs).
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// What the store holds now (another holder may have rotated since it was last read);
    /// `None` when it is empty or unreadable.
    fn load(&self) -> Option<StoredTokens>;
    /// Keeps `tokens`, durably before it completes: a crash afterwards loses nothing.
    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), String>>;
    /// Waits at most `wait` for the right to rotate: while it is held, no other holder of
    /// this store refreshes. `Ok(None)` when it cannot be had in time: the caller rotates
    /// anyway (a stale lock must not stop an account), as before locks existed. `Err` says
    /// why the rotation must not happen now (shared state unreachable and the replicas set
    /// to refuse rather than decide alone).
    fn lock_rotation(&self, wait: Duration)
        -> BoxFuture<'_, Result<Option<RotationGuard>, String>>;
}

/// Which login a token store serves, as replicas on other hosts name it too: the pool
/// entry's name (the same pool file on every replica) and a fingerprint of the login's
/// fixed parts (its format and OAuth client), so two different logins that happen to share
/// a name in different pool files are not mixed up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginKey {
    /// The account's name.
    pub name: String,
    /// 16 hex digits of the login's fixed parts.
    pub fingerprint: String,
}

/// Makes the shared store of a login from the account's own store.
pub type WrapStore = dyn Fn(LoginKey, Arc<dyn TokenStore>) -> Arc<dyn TokenStore> + Send + Sync;

/// Wraps an account's own token store into one shared with other replicas.
#[derive(Clone)]
pub struct SharedTokens(pub Arc<WrapStore>);

impl std::fmt::Debug for SharedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTokens")
    }
}

/// How a [`FileStore`] spells its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileShape {
    /// A credential file in the Kiro IDE's camelCase (`accessToken`, `expiresAt`, ...).
    Camel,
    /// A credential file in the seed guide's snake_case (`access_token`, `expires_at`, ...).
    Snake,
    /// aiproxy's own state file of a base64 source (camelCase, only the token fields).
    State,
}

/// A token file: the credential file, or a base64 source's state file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    shape: FileShape,
}

impl FileStore {
    /// The store in `path`, spelt as `shape`.
    pub fn new(path: PathBuf, shape: FileShape) -> Self {
        Self { path, shape }
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> Option<StoredTokens> {
        match self.shape {
            FileShape::State => read_state_file(&self.path),
            FileShape::Camel | FileShape::Snake => {
                let c = credentials::from_file(&self.path).ok()?;
                Some(StoredTokens {
                    refresh: c.refresh_token,
                    access: c.access_token,
                    expires_at: c.expires_at,
                    profile_arn: c.profile_arn,
                })
            }
        }
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(std::future::ready(self.write(tokens)))
    }

    fn lock_rotation(
        &self,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Option<RotationGuard>, String>> {
        Box::pin(async move {
            Ok(file_lock::acquire(&self.path, wait)
                .await
                .map(|lock| Box::new(lock) as RotationGuard))
        })
    }
}

impl FileStore {
    /// Merges `tokens` into the file, atomically.
    fn write(&self, tokens: &StoredTokens) -> Result<(), String> {
        let snake = self.shape == FileShape::Snake;
        let key = |camel: &'static str, snake_key: &'static str| {
            if snake {
                snake_key
            } else {
                camel
            }
        };
        let mut updates = Map::new();
        if let Some(access) = &tokens.access {
            updates.insert(
                key("accessToken", "access_token").into(),
                json!(access.expose()),
            );
        }
        if let Some(at) = tokens.expires_at {
            updates.insert(
                key("expiresAt", "expires_at").into(),
                json!(format_time(at)),
            );
        }
        // An API key login has no refresh token: nothing to write for it.
        if !tokens.refresh.expose().is_empty() {
            updates.insert(
                key("refreshToken", "refresh_token").into(),
                json!(tokens.refresh.expose()),
            );
        }
        if let Some(arn) = &tokens.profile_arn {
            updates.insert(key("profileArn", "profile_arn").into(), json!(arn));
        }
        persist::merge_into_file(&self.path, &updates).map_err(|e| e.to_string())
    }
}

/// Reads a state file; `None` when it is missing, unreadable or holds no refresh token.
fn read_state_file(path: &Path) -> Option<StoredTokens> {
    credentials::recover(path, &credentials::Source::File(path.to_path_buf()));
    let bytes = std::fs::read(path).ok()?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
        tracing::warn!(path = %path.display(), "ignoring an unreadable token state file");
        return None;
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(StoredTokens {
        refresh: Secret::new(text("refreshToken").filter(|r| !r.is_empty())?),
        access: text("accessToken").map(Secret::new),
        expires_at: text("expiresAt").and_then(|t| credentials::parse_time(&t)),
        profile_arn: text("profileArn"),
    })
}

/// Tokens kept in this process only. Clones share the tokens and the rotation lock.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    tokens: Arc<Mutex<Option<StoredTokens>>>,
    rotation: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Option<StoredTokens> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), String>> {
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokens.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn lock_rotation(
        &self,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Option<RotationGuard>, String>> {
        Box::pin(async move {
            let held = tokio::time::timeout(wait, Arc::clone(&self.rotation).lock_owned()).await;
            Ok(held.ok().map(|guard| Box::new(guard) as RotationGuard))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(refresh: &str) -> StoredTokens {
        StoredTokens {
            refresh: Secret::new(refresh.to_owned()),
            access: Some(Secret::new(format!("at-{refresh}"))),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            profile_arn: Some("arn:aws:codewhisperer:us-east-1:1:profile/P".into()),
        }
    }

    #[test]
    fn a_file_store_keeps_other_keys_and_spells_its_own() {
        let dir = std::env::temp_dir().join(format!("aiproxy-ts-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        std::fs::write(
            &path,
            r#"{"refresh_token": "rt-0", "client_id": "c", "client_secret": "s", "token_url": "http://127.0.0.1:1/oauth/token"}"#,
        )
        .unwrap();
        let store = FileStore::new(path.clone(), FileShape::Snake);
        store.write(&tokens("rt-1")).unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["refresh_token"], "rt-1");
        assert_eq!(written["access_token"], "at-rt-1");
        assert_eq!(written["client_id"], "c", "other keys stay");
        assert!(written.get("refreshToken").is_none());
        assert_eq!(store.load().unwrap(), tokens("rt-1"));

        let state = FileStore::new(dir.join("state.json"), FileShape::State);
        assert_eq!(state.load(), None, "nothing there yet");
        state.write(&tokens("rt-2")).unwrap();
        assert_eq!(state.load().unwrap(), tokens("rt-2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn one_rotation_at_a_time_on_a_memory_store() {
        let store = MemoryStore::new();
        let other = store.clone();
        let held = store.lock_rotation(Duration::from_secs(1)).await.unwrap();
        assert!(held.is_some());
        assert!(
            other
                .lock_rotation(Duration::from_millis(50))
                .await
                .unwrap()
                .is_none(),
            "the clone waits for the holder"
        );
        drop(held);
        assert!(other
            .lock_rotation(Duration::from_millis(50))
            .await
            .unwrap()
            .is_some());
        other.save(&tokens("rt-9")).await.unwrap();
        assert_eq!(
            store.load().unwrap().refresh,
            Secret::new("rt-9".to_owned())
        );
    }
}

//! Account tokens shared by the replicas: one refresh per login across all of them, and
//! the rotated refresh token never lost.
//!
//! Each account keeps its own store (the credential file, or a base64 source's state file):
//! that is where its tokens live durably. [`RedisTokens`] wraps it and adds
//! - a lock in Redis per login (`SET NX PX` with a random owner, released only by its owner
//!   and kept alive while the refresh runs): taken after the file's own lock, so replicas on
//!   one host and on several all take turns; a replica killed while it holds the lock frees
//!   it after [`LOCK_TTL`];
//! - the login's tokens in Redis: read under the lock (another host's rotation is found
//!   there, adopted instead of spending a refresh and copied into this replica's file),
//!   written by the holder after its own file and before the lock is released. A Redis
//!   restart loses nothing: every file has the newest tokens its replica saw, and the newer
//!   of the file's and Redis's wins.
//!
//! `load` is synchronous (the account's checks run under its state lock): it answers the
//! newer of its file's tokens and what Redis held at this replica's last lock. Newer means a
//! later expiry: every refresh moves it forward.
//!
//! Redis also keeps the login's lineage: short hashes of the refresh tokens it replaced
//! (the last [`LINEAGE`]). A file whose refresh token is neither Redis's nor in that lineage
//! holds another login (the operator signed in again under the same name): the file wins,
//! and its next refresh replaces what Redis had.

use super::Redis;
use crate::kiro::auth::credentials::{format_time, parse_time};
use crate::kiro::auth::token_store::{
    LoginKey, RotationGuard, SharedTokens, StoredTokens, TokenStore,
};
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long a lock outlives a replica that died holding it. The holder renews it every
/// third of that while it refreshes, so a slow refresh keeps it.
pub const LOCK_TTL: Duration = Duration::from_secs(10);

/// How often a replica waiting for another's refresh looks whether the lock is free.
const POLL: Duration = Duration::from_millis(50);

/// How many replaced refresh tokens a login's lineage remembers (as short hashes).
const LINEAGE: usize = 16;

/// Deletes the lock if this owner still holds it (an expired lock may be someone else's).
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

/// Extends the lock if this owner still holds it.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// The hook the accounts take (`TokenSettings::shared`): every account's store, shared
/// through `redis`.
pub fn shared(redis: Redis) -> SharedTokens {
    SharedTokens(Arc::new(move |login, own| {
        Arc::new(RedisTokens::new(redis.clone(), &login, own)) as Arc<dyn TokenStore>
    }))
}

/// An account's token store shared with the other replicas (see the module docs).
pub struct RedisTokens {
    redis: Redis,
    own: Arc<dyn TokenStore>,
    key: String,
    lock_key: String,
    /// What Redis held when this replica last took the lock or saved, and its lineage.
    seen: Mutex<Option<StoredTokens>>,
    lineage: Mutex<Vec<String>>,
}

impl std::fmt::Debug for RedisTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokens")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

/// The tokens as Redis keeps them.
#[derive(Serialize, Deserialize)]
struct Wire {
    refresh: String,
    access: Option<String>,
    expires_at: Option<String>,
    profile_arn: Option<String>,
    /// Short hashes of the refresh tokens this one replaced, oldest first.
    #[serde(default)]
    lineage: Vec<String>,
}

/// A refresh token's short hash, as the lineage keeps it.
fn token_hash(refresh: &Secret) -> String {
    blake3::hash(refresh.expose().as_bytes()).to_hex()[..16].to_owned()
}

impl Wire {
    fn from_tokens(tokens: &StoredTokens, lineage: Vec<String>) -> Self {
        Self {
            refresh: tokens.refresh.expose().to_owned(),
            access: tokens.access.as_ref().map(|a| a.expose().to_owned()),
            expires_at: tokens.expires_at.map(format_time),
            profile_arn: tokens.profile_arn.clone(),
            lineage,
        }
    }

    /// Whether `refresh` is this login's: the current token or one it replaced.
    fn knows(&self, refresh: &Secret) -> bool {
        self.refresh == refresh.expose() || self.lineage.contains(&token_hash(refresh))
    }

    fn into_tokens(self) -> StoredTokens {
        StoredTokens {
            refresh: Secret::new(self.refresh),
            access: self.access.map(Secret::new),
            expires_at: self.expires_at.as_deref().and_then(parse_time),
            profile_arn: self.profile_arn,
        }
    }
}

impl RedisTokens {
    /// `own` (the account's file), shared under `login`'s keys.
    pub fn new(redis: Redis, login: &LoginKey, own: Arc<dyn TokenStore>) -> Self {
        let key = redis.key(&["tok", &login.name, &login.fingerprint]);
        Self {
            lock_key: format!("{key}:lock"),
            key,
            redis,
            own,
            seen: Mutex::new(None),
            lineage: Mutex::default(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<StoredTokens>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lineage(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lineage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lineage after `tokens` replace what this replica knew: the tokens replaced (the
    /// file's and Redis's last, when they differ from the new one) added, the oldest
    /// dropped.
    fn next_lineage(&self, replaced: &[Option<Secret>], tokens: &StoredTokens) -> Vec<String> {
        let mut lineage = self.lineage().clone();
        for old in replaced
            .iter()
            .flatten()
            .filter(|old| **old != tokens.refresh)
        {
            let hash = token_hash(old);
            if !lineage.contains(&hash) {
                lineage.push(hash);
            }
        }
        let excess = lineage.len().saturating_sub(LINEAGE);
        lineage.drain(..excess);
        lineage
    }

    /// Reads what Redis holds for the login into `seen` (left as it was if Redis fails:
    /// the caller has already applied the failure mode, or refreshes on its file's tokens).
    async fn read_shared(&self) {
        let key = self.key.clone();
        let held = self
            .redis
            .call(|mut connection| async move { connection.get::<_, Option<Vec<u8>>>(key).await })
            .await;
        if let Ok(Some(bytes)) = held {
            match serde_json::from_slice::<Wire>(&bytes) {
                Ok(wire) => {
                    let own = self.own.load();
                    if let Some(own) = own.as_ref().filter(|own| !wire.knows(&own.refresh)) {
                        tracing::warn!(
                            key = %self.key,
                            "the credential file holds a login the other replicas do not know (signed in again?): \
                             using the file's, and its next refresh replaces the tokens in Redis"
                        );
                        *self.seen() = None;
                        *self.lineage() = vec![token_hash(&own.refresh)];
                        return;
                    }
                    *self.lineage() = wire.lineage.clone();
                    let shared = wire.into_tokens();
                    // Another replica's rotation goes into this one's file too: if Redis
                    // loses it, this replica still starts with a refresh token that works.
                    let own_expiry = own.and_then(|t| t.expires_at);
                    if shared.expires_at > own_expiry {
                        if let Err(error) = self.own.save(&shared).await {
                            tracing::warn!(%error, "could not copy another replica's refreshed tokens into this one's credential file");
                        }
                    }
                    *self.seen() = Some(shared);
                }
                Err(_) => tracing::warn!(
                    key = %self.key,
                    "ignoring unreadable tokens in Redis; the next refresh replaces them"
                ),
            }
        }
    }

    /// One attempt at the lock: `Ok(true)` when this owner has it.
    async fn try_lock(&self, owner: &str) -> Result<bool, super::RedisDown> {
        let (key, owner) = (self.lock_key.clone(), owner.to_owned());
        let ttl_ms = super::millis(LOCK_TTL);
        self.redis
            .call(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await
            .map(|answer| answer.is_some())
    }
}

/// The later of two token sets by expiry (the file's when they tie).
fn newer(own: Option<StoredTokens>, shared: Option<StoredTokens>) -> Option<StoredTokens> {
    match (own, shared) {
        (Some(own), Some(shared)) if shared.expires_at > own.expires_at => Some(shared),
        (Some(own), _) => Some(own),
        (None, shared) => shared,
    }
}

impl TokenStore for RedisTokens {
    fn load(&self) -> Option<StoredTokens> {
        newer(self.own.load(), self.seen().clone())
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let replaced = [
                self.own.load().map(|t| t.refresh),
                self.seen().as_ref().map(|t| t.refresh.clone()),
            ];
            // The file first: it is what survives a Redis restart.
            self.own.save(tokens).await?;
            *self.seen() = Some(tokens.clone());
            let lineage = self.next_lineage(&replaced, tokens);
            *self.lineage() = lineage.clone();
            let Ok(json) = serde_json::to_vec(&Wire::from_tokens(tokens, lineage)) else {
                return Ok(());
            };
            let key = self.key.clone();
            let written = self
                .redis
                .call(|mut connection| async move { connection.set::<_, _, ()>(key, json).await })
                .await;
            if let Err(down) = written {
                // The tokens are safe in the file; replicas on this host find them there.
                let _ = self.redis.fall_back(&down, || ());
                tracing::warn!(
                    key = %self.key, cause = %down.0,
                    "the refreshed tokens are in the credential file but could not be written to \
                     Redis: replicas on other hosts refresh this account from their own files"
                );
            }
            Ok(())
        })
    }

    fn lock_rotation(
        &self,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Option<RotationGuard>, String>> {
        Box::pin(async move {
            let started = Instant::now();
            let own = self.own.lock_rotation(wait).await?;
            let owner = uuid::Uuid::new_v4().simple().to_string();
            loop {
                match self.try_lock(&owner).await {
                    Ok(true) => {
                        self.read_shared().await;
                        let held = Held::new(self.redis.clone(), self.lock_key.clone(), owner, own);
                        return Ok(Some(Box::new(held) as RotationGuard));
                    }
                    Ok(false) if started.elapsed() < wait => tokio::time::sleep(POLL).await,
                    Ok(false) => {
                        tracing::warn!(
                            key = %self.lock_key,
                            "another replica's refresh of this account did not end within {} s; \
                             refreshing without waiting longer",
                            wait.as_secs()
                        );
                        self.read_shared().await;
                        return Ok(own);
                    }
                    Err(down) => {
                        self.redis.fall_back(&down, || ())?;
                        return Ok(own);
                    }
                }
            }
        })
    }
}

/// The lock in Redis (and the file's, under it) while this replica refreshes; renewed
/// until dropped, then released by its owner.
struct Held {
    _own: Option<RotationGuard>,
    redis: Redis,
    key: String,
    owner: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Held {
    fn new(redis: Redis, key: String, owner: String, own: Option<RotationGuard>) -> Self {
        let renewer = {
            let (redis, key, owner) = (redis.clone(), key.clone(), owner.clone());
            let ttl_ms = super::millis(LOCK_TTL);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 3).await;
                    let (key, owner) = (key.clone(), owner.clone());
                    let _ = redis
                        .call_in_background(|mut connection| async move {
                            RENEW
                                .key(key)
                                .arg(owner)
                                .arg(ttl_ms)
                                .invoke_async::<i64>(&mut connection)
                                .await
                        })
                        .await;
                }
            })
        };
        Self {
            _own: own,
            redis,
            key,
            owner,
            renewer,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
        let (key, owner) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
        );
        // Released in the background: the tokens were written before this guard dropped,
        // and a release that fails leaves a lock that expires by itself.
        self.redis.spawn_call(|mut connection| async move {
            RELEASE
                .key(key)
                .arg(owner)
                .invoke_async::<i64>(&mut connection)
                .await
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn tokens(refresh: &str, expires_in: u64) -> StoredTokens {
        StoredTokens {
            refresh: Secret::new(refresh.to_owned()),
            access: Some(Secret::new(format!("at-{refresh}"))),
            expires_at: Some(SystemTime::now() + Duration::from_secs(expires_in)),
            profile_arn: None,
        }
    }

    #[test]
    fn the_later_expiry_wins_and_the_file_wins_ties() {
        let (old, new) = (tokens("rt-old", 60), tokens("rt-new", 3600));
        assert_eq!(
            newer(Some(old.clone()), Some(new.clone())).unwrap().refresh,
            new.refresh
        );
        assert_eq!(
            newer(Some(new.clone()), Some(old.clone())).unwrap().refresh,
            new.refresh
        );
        assert_eq!(
            newer(Some(old.clone()), Some(old.clone())).unwrap(),
            old,
            "a tie keeps the file's"
        );
        assert_eq!(newer(None, Some(old.clone())).unwrap(), old);
        assert_eq!(newer(None, None), None);
    }

    #[test]
    fn the_wire_form_keeps_every_field() {
        let stored = StoredTokens {
            profile_arn: Some("arn:aws:codewhisperer:us-east-1:1:profile/P".into()),
            ..tokens("rt-1", 3600)
        };
        let json = serde_json::to_vec(&Wire::from_tokens(&stored, vec!["abc".into()])).unwrap();
        let wire = serde_json::from_slice::<Wire>(&json).unwrap();
        assert_eq!(wire.lineage, ["abc"]);
        let back = wire.into_tokens();
        assert_eq!(back.refresh, stored.refresh);
        assert_eq!(back.access, stored.access);
        assert_eq!(back.profile_arn, stored.profile_arn);
        let (a, b) = (back.expires_at.unwrap(), stored.expires_at.unwrap());
        let gap = a.duration_since(b).unwrap_or_else(|e| e.duration());
        assert!(gap < Duration::from_secs(1), "to the second");
    }

    #[test]
    fn a_login_knows_its_current_and_replaced_tokens_only() {
        let (first, second, third) = (
            Secret::new("rt-1".to_owned()),
            Secret::new("rt-2".to_owned()),
            Secret::new("rt-3".to_owned()),
        );
        let wire = Wire::from_tokens(
            &StoredTokens {
                refresh: third.clone(),
                ..tokens("rt-3", 3600)
            },
            vec![token_hash(&first), token_hash(&second)],
        );
        assert!(wire.knows(&third), "the current one");
        assert!(wire.knows(&first), "a stale copy of this login");
        assert!(
            !wire.knows(&Secret::new("rt-new-login".to_owned())),
            "another sign-in"
        );
    }
}

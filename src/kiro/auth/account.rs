//! One Kiro account and its token manager.
//!
//! - The access token is refreshed before use when it is missing or within the refresh
//!   margin of expiry, and once after Kiro rejects it (bearer-invalid 403).
//! - One refresh at a time per account: concurrent callers wait on the same refresh and
//!   reuse its result (double-checked under an async mutex).
//! - A rotated refresh token is written back at once through the account's token store
//!   ([`crate::kiro::auth::token_store`]): by default the credential file (read-merge-write, atomic),
//!   or for base64 sources a state file under `--state-dir`, which is preferred over the
//!   original at the next start.
//! - `invalid_grant` makes the account unusable with a clear reason, after re-reading the
//!   credential file once in case another process rotated the token.

use crate::chat::ChatError;
use crate::kiro::auth::credentials::{format_time, Credentials, Format, Source};
use crate::kiro::auth::profiles::{self, ListError};
use crate::kiro::auth::token_store::{
    FileShape, FileStore, LoginKey, SharedTokens, StoredTokens, TokenStore,
};
use crate::secret::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Kiro IDE version mimicked in headers (A2 pins 0.11.63; see docs/kiro-protocol.md §4.1).
pub const KIRO_VERSION: &str = "0.11.63";

/// The placeholder profile ARN Builder ID logins carried before Kiro required a real one
/// (docs/kiro-protocol.md §14.2): treated as none.
pub const PLACEHOLDER_PROFILE_ARN: &str =
    "arn:aws:codewhisperer:us-east-1:638616132270:profile/AAAACCCCXXXX";
/// The operation that lists an account's profiles (AWS JSON 1.0).
pub const LIST_PROFILES_TARGET: &str = "AmazonCodeWhispererService.ListAvailableProfiles";
/// Access tokens without `expiresIn` last this long (Kiro: about an hour).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Where an account talks to.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The API's region: the account's profile is the first one listed there.
    pub region: String,
    /// `https://q.{region}.amazonaws.com` or `--kiro-base-url`.
    pub api_base: String,
    /// `https://management.{region}.kiro.dev` (ListAvailableModels), or `--kiro-base-url`.
    pub management_base: String,
    /// Social refresh URL (full).
    pub social_refresh: String,
    /// IdC refresh URL (full).
    pub idc_refresh: String,
}

/// How replicas name `credentials`' login in their shared state (see [`LoginKey`]): the
/// name, and a hash of what does not change when tokens rotate.
fn login_key(name: &str, credentials: &Credentials) -> LoginKey {
    let client = match &credentials.format {
        Format::Seed { client_id, .. }
        | Format::Idc { client_id, .. }
        | Format::ExternalIdp { client_id, .. } => client_id.as_str(),
        Format::Social | Format::ApiKey => "",
    };
    let fixed = format!("{}/{client}", credentials.format.name());
    LoginKey {
        name: name.to_owned(),
        fingerprint: blake3::hash(fixed.as_bytes()).to_hex()[..16].to_owned(),
    }
}

/// Settings shared by all accounts.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// Refresh when the token expires within this margin.
    pub refresh_margin: Duration,
    /// Where rotated tokens of base64 sources are kept.
    pub state_dir: PathBuf,
    /// Bound on one refresh call.
    pub timeout: Duration,
    /// Replicas sharing state: wraps each account's own token store into one whose lock
    /// and tokens other replicas see too.
    pub shared: Option<SharedTokens>,
}

/// An access token ready for a request.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// Bearer token.
    pub token: Secret,
    /// `profileArn` to send, if known.
    pub profile_arn: Option<String>,
    /// The `tokentype` header the bearer goes with (`API_KEY`), when it needs one.
    pub token_type: Option<&'static str>,
}

#[derive(Debug)]
struct TokenState {
    access: Option<Secret>,
    expires_at: Option<SystemTime>,
    refresh: Secret,
    profile_arn: Option<String>,
    /// Why the account is disabled: (short code for `/health`, full reason for errors).
    unusable: Option<(&'static str, String)>,
    refreshes: u64,
    refresh_failures: RefreshFailures,
}

/// Refreshes that failed since start, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshFailures {
    /// The token endpoint refused the refresh token (`invalid_grant`).
    pub invalid_grant: u64,
    /// The refresh failed otherwise (network, 5xx, a malformed answer).
    pub failed: u64,
}

/// What an account looks like from outside (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountStatus {
    /// Display name.
    pub name: String,
    /// Credential format.
    pub format: &'static str,
    /// Expiry of the current access token.
    pub token_expires_at: Option<SystemTime>,
    /// Why the account cannot be used, as a short code (`suspended`, `invalid_grant`, ...),
    /// if it cannot. The full reason goes to the log, never to `/health`.
    pub disabled: Option<&'static str>,
    /// Successful refreshes since start.
    pub refreshes: u64,
    /// Failed refreshes since start.
    pub refresh_failures: RefreshFailures,
}

/// One Kiro account.
pub struct Account {
    name: String,
    source: Source,
    format: Format,
    machine_id: String,
    endpoints: Endpoints,
    settings: TokenSettings,
    /// Where rotated tokens go and where other holders' rotations are found.
    store: Arc<dyn TokenStore>,
    http: reqwest::Client,
    state: Mutex<TokenState>,
    refresh_gate: tokio::sync::Mutex<()>,
    usage: Mutex<Option<crate::kiro::accounts::usage::UsageLimits>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("format", &self.format.name())
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Sets up an account from parsed credentials, its tokens kept in its credential file
    /// (or, for base64 sources, in a state file under `--state-dir`, which an earlier run
    /// may have left with a rotated refresh token: that one takes precedence).
    pub fn new(
        name: String,
        credentials: Credentials,
        endpoints: Endpoints,
        settings: TokenSettings,
        http: reqwest::Client,
    ) -> Arc<Self> {
        // A credential file was just read to make `credentials`: only a state file can hold
        // something newer.
        let read_back = matches!(credentials.source, Source::Base64 { .. });
        let store: Arc<dyn TokenStore> = match &credentials.source {
            Source::Base64 { .. } => {
                let key = blake3::hash(credentials.login_secret().expose().as_bytes()).to_hex();
                Arc::new(FileStore::new(
                    settings.state_dir.join(format!("kiro-{}.json", &key[..16])),
                    FileShape::State,
                ))
            }
            Source::File(path) => Arc::new(FileStore::new(
                path.clone(),
                match credentials.format {
                    Format::Seed { .. } => FileShape::Snake,
                    Format::Social
                    | Format::Idc { .. }
                    | Format::ExternalIdp { .. }
                    | Format::ApiKey => FileShape::Camel,
                },
            )),
        };
        let store = match &settings.shared {
            Some(shared) => (shared.0)(login_key(&name, &credentials), store),
            None => store,
        };
        let stored = if read_back { store.load() } else { None };
        Self::build(name, credentials, endpoints, settings, http, store, stored)
    }

    /// [`Account::new`] with its tokens in `store` instead of the credential's own file.
    /// Tokens the store already holds for another refresh token (a rotation since the
    /// credential was written) take precedence over the credential's.
    pub fn with_store(
        name: String,
        credentials: Credentials,
        endpoints: Endpoints,
        settings: TokenSettings,
        http: reqwest::Client,
        store: Arc<dyn TokenStore>,
    ) -> Arc<Self> {
        let stored = store.load();
        Self::build(name, credentials, endpoints, settings, http, store, stored)
    }

    /// The account, with `stored` (what its store held) preferred over the credential's
    /// tokens when it is another refresh token.
    fn build(
        name: String,
        credentials: Credentials,
        endpoints: Endpoints,
        settings: TokenSettings,
        http: reqwest::Client,
        store: Arc<dyn TokenStore>,
        stored: Option<StoredTokens>,
    ) -> Arc<Self> {
        let identity = credentials
            .profile_arn
            .clone()
            .or_else(|| match &credentials.format {
                Format::Seed { client_id, .. }
                | Format::Idc { client_id, .. }
                | Format::ExternalIdp { client_id, .. } => Some(client_id.clone()),
                Format::Social | Format::ApiKey => None,
            })
            .unwrap_or_else(|| match &credentials.source {
                Source::File(path) => path.display().to_string(),
                // Base64 sources only have a flag or field name to tell them apart: two
                // such logins must not look like one machine. The base64's own refresh
                // token is fixed in the configuration, so this stays across restarts.
                Source::Base64 { .. } => format!(
                    "base64/{}",
                    blake3::hash(credentials.login_secret().expose().as_bytes()).to_hex()
                ),
            });
        let machine_id = blake3::hash(format!("aiproxy/machine-id/{identity}").as_bytes())
            .to_hex()
            .to_string();
        let mut state = TokenState {
            access: credentials.access_token,
            expires_at: credentials.expires_at,
            refresh: credentials.refresh_token,
            profile_arn: credentials.profile_arn,
            unusable: None,
            refreshes: 0,
            refresh_failures: RefreshFailures::default(),
        };
        // A profile found earlier (resolved, or given by a refresh) stays this login's.
        if state.profile_arn.is_none() {
            state.profile_arn = stored.as_ref().and_then(|s| s.profile_arn.clone());
        }
        if let Some(stored) = stored.filter(|s| s.refresh != state.refresh) {
            state.refresh = stored.refresh;
            state.access = stored.access;
            state.expires_at = stored.expires_at;
            if stored.profile_arn.is_some() {
                state.profile_arn = stored.profile_arn;
            }
        }
        Arc::new(Self {
            name,
            source: credentials.source,
            format: credentials.format,
            machine_id,
            endpoints,
            settings,
            store,
            http,
            state: Mutex::new(state),
            refresh_gate: tokio::sync::Mutex::new(()),
            usage: Mutex::new(None),
        })
    }

    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stable 64-hex machine id sent in the IDE user agent.
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// Whether `other` is the same Kiro login as this account: the same refresh token now.
    /// A rebuilt account that reads back the tokens this one rotated is the same login; a
    /// new sign-in is not. (Not the machine id: it follows the profileArn, which a social
    /// login's file may only gain at its first refresh.)
    pub fn same_login(&self, other: &Account) -> bool {
        if std::ptr::eq(self, other) {
            return true;
        }
        let ours = self.lock().refresh.clone();
        ours == other.lock().refresh
    }

    /// Where requests go.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn lock(&self) -> MutexGuard<'_, TokenState> {
        // A poisoned lock only means another thread panicked mid-update of plain fields.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The HTTP client for this account's token and REST calls.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The last usage Kiro reported (see [`crate::kiro::accounts::usage`]).
    pub fn usage(&self) -> Option<crate::kiro::accounts::usage::UsageLimits> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_usage(&self, usage: crate::kiro::accounts::usage::UsageLimits) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
    }

    /// Non-secret status.
    pub fn status(&self) -> AccountStatus {
        let state = self.lock();
        AccountStatus {
            name: self.name.clone(),
            format: self.format.name(),
            token_expires_at: state.expires_at,
            disabled: state.unusable.as_ref().map(|(code, _)| *code),
            refreshes: state.refreshes,
            refresh_failures: state.refresh_failures,
        }
    }

    /// Which of the credential's secrets are set (the console shows set / not set, never
    /// a value): the refresh token, the OIDC client secret, the API key.
    pub fn secrets_set(&self) -> [(&'static str, bool); 3] {
        let refresh = !self.lock().refresh.expose().is_empty();
        let client_secret = match &self.format {
            Format::Seed { client_secret, .. } | Format::Idc { client_secret, .. } => {
                !client_secret.expose().is_empty()
            }
            _ => false,
        };
        [
            ("refresh_token", refresh),
            ("client_secret", client_secret),
            ("api_key", self.format == Format::ApiKey),
        ]
    }

    /// Refreshes the access token now, whatever its expiry (the console's "refresh"): one
    /// refresh, under the account's gate like any other.
    pub async fn refresh_now(&self) -> Result<(), ChatError> {
        let _gate = self.refresh_gate.lock().await;
        self.refresh().await.map(drop)
    }

    /// Marks the account unusable (e.g. suspended): `code` is the short reason `/health`
    /// shows, `reason` the full one for the log and the clients' errors.
    pub fn mark_unusable(&self, code: &'static str, reason: String) {
        tracing::warn!(account = %self.name, code, %reason, "account disabled");
        self.lock().unusable = Some((code, reason));
    }

    fn current(&self) -> Result<Option<AccessToken>, ChatError> {
        let state = self.lock();
        if let Some((_, reason)) = &state.unusable {
            return Err(ChatError::AccountUnavailable {
                message: reason.clone(),
            });
        }
        // An API key has no expiry: it is good until Kiro refuses it.
        let fresh = self.format == Format::ApiKey
            || state
                .expires_at
                .is_some_and(|at| at > SystemTime::now() + self.settings.refresh_margin);
        Ok(match (&state.access, fresh) {
            (Some(token), true) => Some(AccessToken {
                token: token.clone(),
                profile_arn: state.profile_arn.clone(),
                token_type: self.format.token_type(),
            }),
            _ => None,
        })
    }

    /// A usable access token, refreshing first if it is missing or about to expire, with
    /// the account's profile ARN (resolved once when the credential has none).
    pub async fn token(&self) -> Result<AccessToken, ChatError> {
        let token = match self.current()? {
            Some(token) => token,
            None => {
                let _gate = self.refresh_gate.lock().await;
                match self.current()? {
                    Some(token) => token,
                    None => self.refresh().await?,
                }
            }
        };
        self.with_profile(token).await
    }

    /// `token` with the account's profile ARN. Kiro requires one on every chat since 2026-06
    /// (docs/kiro-protocol.md §14.2); a login without one (or with the old Builder ID
    /// placeholder) resolves it once with `ListAvailableProfiles` and writes it back beside
    /// its tokens. An account with no profile at all is out, with a message that says so.
    async fn with_profile(&self, token: AccessToken) -> Result<AccessToken, ChatError> {
        let real = |arn: &Option<String>| {
            arn.as_deref()
                .is_some_and(|arn| arn != PLACEHOLDER_PROFILE_ARN)
        };
        if real(&token.profile_arn) {
            return Ok(token);
        }
        let _gate = self.refresh_gate.lock().await;
        let known = self.lock().profile_arn.clone();
        if real(&known) {
            return Ok(AccessToken {
                profile_arn: known,
                ..token
            });
        }
        let list = |token: AccessToken| async move {
            let found =
                profiles::first(&self.http, &self.endpoints, &token, self.settings.timeout).await;
            (token, found)
        };
        let (mut token, mut found) = list(token).await;
        if matches!(found, Err(ListError::Rejected)) && self.format != Format::ApiKey {
            // A stale access token: refreshed (a social refresh may bring the ARN itself).
            token = self.refresh().await?;
            if real(&token.profile_arn) {
                return Ok(token);
            }
            (token, found) = list(token).await;
        }
        match found {
            Ok(Some(arn)) => {
                tracing::info!(account = %self.name, "resolved the account's Kiro profile with ListAvailableProfiles");
                self.lock().profile_arn = Some(arn.clone());
                self.save_profile().await;
                Ok(AccessToken {
                    profile_arn: Some(arn),
                    ..token
                })
            }
            Ok(None) => {
                let reason = format!(
                    "Kiro account `{}` has no Kiro profile (ListAvailableProfiles lists none), and Kiro \
                     requires one for every request. Sign in with an account that has a Kiro plan, or \
                     give its profile as `profileArn` in its credentials.",
                    self.name
                );
                self.mark_unusable("no_profile", reason.clone());
                Err(ChatError::AccountUnavailable { message: reason })
            }
            Err(error) => {
                // Tried again on the next request; the call goes without a profile meanwhile.
                tracing::warn!(account = %self.name, %error, "could not list the account's Kiro profiles");
                Ok(token)
            }
        }
    }

    /// Writes a resolved profile ARN back beside the tokens.
    async fn save_profile(&self) {
        if let Err(error) = self.store.save(&self.stored()).await {
            tracing::warn!(account = %self.name, %error, "could not save the account's profile ARN; it is resolved again after a restart");
        }
    }

    /// The account's tokens as its store keeps them (an API key is the credential itself,
    /// not a token to write back).
    fn stored(&self) -> StoredTokens {
        let state = self.lock();
        StoredTokens {
            refresh: state.refresh.clone(),
            access: state
                .access
                .clone()
                .filter(|_| self.format != Format::ApiKey),
            expires_at: state.expires_at,
            profile_arn: state.profile_arn.clone(),
        }
    }

    /// Kiro rejected `rejected`: refresh once (unless another caller already did).
    pub async fn token_after_rejection(&self, rejected: &Secret) -> Result<AccessToken, ChatError> {
        let _gate = self.refresh_gate.lock().await;
        {
            let state = self.lock();
            if let Some((_, reason)) = &state.unusable {
                return Err(ChatError::AccountUnavailable {
                    message: reason.clone(),
                });
            }
            if let Some(access) = state.access.as_ref().filter(|a| *a != rejected) {
                return Ok(AccessToken {
                    token: access.clone(),
                    profile_arn: state.profile_arn.clone(),
                    token_type: self.format.token_type(),
                });
            }
        }
        let token = self.refresh().await?;
        drop(_gate);
        self.with_profile(token).await
    }

    /// Exchanges the refresh token. Caller holds the refresh gate. The rotation holds the
    /// store's lock (for a file, [`crate::kiro::auth::file_lock`]) and first looks whether another
    /// holder already rotated while this one waited: then its fresh token is adopted and
    /// no refresh is spent (the refresh token in hand may already be consumed).
    async fn refresh(&self) -> Result<AccessToken, ChatError> {
        if self.format == Format::ApiKey {
            // Nothing to refresh: Kiro refused the key itself.
            let reason = format!(
                "Kiro account `{}`: Kiro refused its API key: it was revoked or mistyped. Create a \
                 new key in Kiro and update this account's credentials.",
                self.name
            );
            self.mark_unusable("api_key_rejected", reason.clone());
            return Err(ChatError::AccountUnavailable { message: reason });
        }
        let _rotation = self
            .store
            .lock_rotation(self.settings.timeout)
            .await
            .map_err(|message| ChatError::SharedStateUnavailable { message })?;
        if let Some(adopted) = self.adopt_from_store() {
            return Ok(adopted);
        }
        let refresh_token = self.lock().refresh.clone();
        match self.exchange(&refresh_token).await {
            Ok(answer) => Ok(self.adopt(answer).await),
            Err(RefreshError::InvalidGrant) => {
                if let Some(newer) = self.reread_refresh_token(&refresh_token) {
                    tracing::info!(account = %self.name, "the token store has a newer refresh token; retrying with it");
                    self.lock().refresh = newer.clone();
                    if let Ok(answer) = self.exchange(&newer).await {
                        return Ok(self.adopt(answer).await);
                    }
                }
                // Clients and status views get the account's label; where its credentials
                // live (a path on the server) goes to the log only.
                tracing::warn!(
                    account = %self.name, credentials = %self.source.describe(),
                    "refresh token rejected (invalid_grant): sign in to Kiro again and update these credentials"
                );
                let reason = format!(
                    "Kiro account `{}`: the refresh token was rejected (invalid_grant). It was revoked or \
                     already used elsewhere; sign in to Kiro again and update this account's credentials \
                     (the server's log says where they are).",
                    self.name
                );
                self.lock().refresh_failures.invalid_grant += 1;
                self.mark_unusable("invalid_grant", reason.clone());
                Err(ChatError::AccountUnavailable { message: reason })
            }
            Err(RefreshError::Failed(message)) => {
                self.lock().refresh_failures.failed += 1;
                Err(ChatError::Upstream {
                    message: format!(
                        "refreshing the token of Kiro account `{}` failed: {message}",
                        self.name
                    ),
                })
            }
        }
    }

    /// Stores a refresh answer and writes it back before anything else uses it.
    async fn adopt(&self, answer: RefreshAnswer) -> AccessToken {
        let expires_at = SystemTime::now() + answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let (token, rotated, profile_arn) = {
            let mut state = self.lock();
            let rotated = answer
                .refresh_token
                .filter(|r| !r.is_empty() && *r != state.refresh);
            if let Some(rotated) = &rotated {
                state.refresh = rotated.clone();
            }
            state.access = Some(answer.access_token.clone());
            state.expires_at = Some(expires_at);
            if answer.profile_arn.is_some() {
                state.profile_arn = answer.profile_arn;
            }
            state.refreshes += 1;
            (
                answer.access_token,
                rotated.is_some(),
                state.profile_arn.clone(),
            )
        };
        // Written back (disk, and the shared store of the replicas) before anything uses
        // it: until then, a crash loses the rotated token.
        self.persist(rotated).await;
        tracing::info!(account = %self.name, rotated, expires_at = %format_time(expires_at), "token refreshed");
        AccessToken {
            token,
            profile_arn,
            token_type: self.format.token_type(),
        }
    }

    /// Writes a refresh's tokens back (the caller holds the refresh gate, so the state is
    /// the refresh's).
    async fn persist(&self, rotated: bool) {
        if let Err(error) = self.store.save(&self.stored()).await {
            tracing::error!(
                account = %self.name, %error, rotated,
                "could not save the refreshed tokens; they are kept in memory, but after a restart \
                 this account may need a new login. Fix the file's permissions."
            );
        }
    }

    /// Tokens another holder stored since this one last looked: a newer refresh token is
    /// taken over (ours may be consumed), and a fresh access token along with it is
    /// returned.
    fn adopt_from_store(&self) -> Option<AccessToken> {
        let stored = self.store.load()?;
        let mut state = self.lock();
        let fresh = stored
            .expires_at
            .is_some_and(|at| at > SystemTime::now() + self.settings.refresh_margin);
        let newer_access = stored
            .access
            .as_ref()
            .filter(|a| fresh && state.access.as_ref() != Some(*a));
        if stored.refresh == state.refresh && newer_access.is_none() {
            return None;
        }
        tracing::info!(account = %self.name, "another process rotated this account's tokens; taking them over");
        state.refresh = stored.refresh.clone();
        let access = newer_access?.clone();
        state.access = Some(access.clone());
        state.expires_at = stored.expires_at;
        if stored.profile_arn.is_some() {
            state.profile_arn = stored.profile_arn;
        }
        Some(AccessToken {
            token: access,
            profile_arn: state.profile_arn.clone(),
            token_type: self.format.token_type(),
        })
    }

    /// The refresh token the store holds now, if it differs from `ours`.
    fn reread_refresh_token(&self, ours: &Secret) -> Option<Secret> {
        let fresh = self.store.load()?.refresh;
        (fresh != *ours).then_some(fresh)
    }

    async fn exchange(&self, refresh_token: &Secret) -> Result<RefreshAnswer, RefreshError> {
        let user_agent = format!("KiroIDE-{KIRO_VERSION}-{}", self.machine_id);
        let request = match &self.format {
            Format::Seed {
                client_id,
                client_secret,
                token_url,
                scope,
            } => self.http.post(token_url).form(&refresh_form(
                client_id,
                Some(client_secret),
                refresh_token,
                scope.as_deref(),
            )),
            Format::Social => self
                .http
                .post(&self.endpoints.social_refresh)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json!({ "refreshToken": refresh_token.expose() }).to_string()),
            Format::Idc {
                client_id,
                client_secret,
            } => self
                .http
                .post(&self.endpoints.idc_refresh)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("x-amz-user-agent", "aws-sdk-js/3.980.0 KiroIDE")
                .header("amz-sdk-invocation-id", uuid::Uuid::new_v4().to_string())
                .header("amz-sdk-request", "attempt=1; max=4")
                .body(
                    json!({
                        "clientId": client_id,
                        "clientSecret": client_secret.expose(),
                        "refreshToken": refresh_token.expose(),
                        "grantType": "refresh_token",
                    })
                    .to_string(),
                ),
            // A public client: no secret.
            Format::ExternalIdp {
                client_id,
                token_endpoint,
                scope,
            } => self.http.post(token_endpoint).form(&refresh_form(
                client_id,
                None,
                refresh_token,
                scope.as_deref(),
            )),
            Format::ApiKey => {
                return Err(RefreshError::Failed(
                    "an API key has no refresh token".into(),
                ))
            }
        };
        let response = request
            .header(reqwest::header::USER_AGENT, user_agent)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.settings.timeout)
            .send()
            .await
            .map_err(|e| RefreshError::Failed(describe_reqwest(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| RefreshError::Failed(describe_reqwest(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            if text.contains("invalid_grant") || text.contains("Invalid refresh token") {
                return Err(RefreshError::InvalidGrant);
            }
            // The body stays in the log (with this account's secrets cut out): a token
            // endpoint that reflects its input must not hand a client the refresh token.
            let summary = self.scrub(&error_summary(&body), refresh_token);
            tracing::warn!(account = %self.name, %status, answer = %summary, "token refresh refused");
            return Err(RefreshError::Failed(format!(
                "the token endpoint answered {status} (its answer is in aiproxy's log)"
            )));
        }
        let raw: RawRefresh = serde_json::from_slice(&body).map_err(|e| {
            RefreshError::Failed(format!(
                "the token endpoint answered with unexpected JSON ({e})"
            ))
        })?;
        let access_token = raw.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            RefreshError::Failed("the token endpoint's answer has no access token".into())
        })?;
        Ok(RefreshAnswer {
            access_token: Secret::new(access_token),
            refresh_token: raw.refresh_token.map(Secret::new),
            expires_in: raw.expires_in.map(Duration::from_secs),
            profile_arn: raw.profile_arn,
        })
    }
}

/// The form of an OAuth2 `refresh_token` grant (the guide's generic OAuth2, and an external
/// identity provider's public client, which has no secret).
fn refresh_form<'a>(
    client_id: &'a str,
    client_secret: Option<&'a Secret>,
    refresh_token: &'a Secret,
    scope: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
        ("client_id", client_id),
    ];
    if let Some(secret) = client_secret {
        form.push(("client_secret", secret.expose()));
    }
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    form
}

impl Account {
    /// `text` with every secret of this account (refresh token, access token, client
    /// secret, and `extra`) replaced by `[redacted]`.
    fn scrub(&self, text: &str, extra: &Secret) -> String {
        let state = self.lock();
        let mut secrets: Vec<&str> = vec![state.refresh.expose(), extra.expose()];
        if let Some(access) = &state.access {
            secrets.push(access.expose());
        }
        if let Format::Seed { client_secret, .. } | Format::Idc { client_secret, .. } = &self.format
        {
            secrets.push(client_secret.expose());
        }
        scrub(text, &secrets)
    }
}

/// `text` with each of `secrets` (those of 8 characters or more) replaced by `[redacted]`.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 8)
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret, "[redacted]")
        })
}

/// A non-secret one-line summary of an error body.
fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Option<Value>,
        error_description: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => [
            b.error.map(|e| e.to_string()),
            b.error_description,
            b.message,
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": "),
        Err(_) => format!("{} bytes of non-JSON", body.len()),
    }
}

/// reqwest errors without the URL's query (which never holds secrets here, but keep it short).
pub fn describe_reqwest(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let host = error
        .url()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_default();
    describe_failure(
        kind,
        &host,
        std::error::Error::source(error).map(root_cause),
    )
}

/// `{kind} ({host})`, then `: {cause}` when there is one: the wording of every upstream
/// failure (refreshes here, chat calls in `http.rs`).
pub(crate) fn describe_failure(kind: &str, host: &str, cause: Option<String>) -> String {
    match cause.filter(|c| !c.is_empty()) {
        Some(cause) => format!("{kind} ({host}): {cause}"),
        None => format!("{kind} ({host})"),
    }
}

/// The root cause's message (outer layers of client errors only say "client error"); a
/// certificate the client does not trust also says what to do about it.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(inner) = current.source() {
        current = inner;
    }
    let cause = current.to_string();
    // rustls's wording for every certificate rejection (unknown issuer, expired, wrong name).
    if cause.starts_with("invalid peer certificate") {
        format!(
            "{cause} (a proxy on the way that inspects TLS? Trust its certificate authority \
             with --kiro-ca-file)"
        )
    } else {
        cause
    }
}

enum RefreshError {
    InvalidGrant,
    Failed(String),
}

struct RefreshAnswer {
    access_token: Secret,
    refresh_token: Option<Secret>,
    expires_in: Option<Duration>,
    profile_arn: Option<String>,
}

/// Accepts camelCase (Kiro, OIDC) and snake_case (OAuth2) answers alike.
#[derive(Deserialize)]
struct RawRefresh {
    #[serde(alias = "accessToken")]
    access_token: Option<String>,
    #[serde(alias = "refreshToken")]
    refresh_token: Option<String>,
    #[serde(alias = "expiresIn")]
    expires_in: Option<u64>,
    #[serde(alias = "profileArn")]
    profile_arn: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::auth::token_store::MemoryStore;

    fn account(json: &str) -> Arc<Account> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        let credentials =
            crate::kiro::auth::credentials::from_base64(&encoded, "credsBase64").unwrap();
        let endpoints = Endpoints {
            region: "us-east-1".into(),
            api_base: "http://127.0.0.1:9".into(),
            management_base: "http://127.0.0.1:9".into(),
            social_refresh: "http://127.0.0.1:9/refreshToken".into(),
            idc_refresh: "http://127.0.0.1:9/token".into(),
        };
        let settings = TokenSettings {
            refresh_margin: Duration::from_secs(60),
            state_dir: std::env::temp_dir(),
            timeout: Duration::from_secs(1),
            shared: None,
        };
        Account::with_store(
            "a".into(),
            credentials,
            endpoints,
            settings,
            reqwest::Client::new(),
            Arc::new(MemoryStore::new()),
        )
    }

    #[test]
    fn base64_logins_without_a_profile_are_told_apart_and_stay_themselves() {
        let one = r#"{"refreshToken": "rt-one", "authMethod": "social"}"#;
        let two = r#"{"refreshToken": "rt-two", "authMethod": "social"}"#;
        assert_ne!(account(one).machine_id(), account(two).machine_id());
        assert_eq!(
            account(one).machine_id(),
            account(one).machine_id(),
            "the same configuration is the same machine after a restart"
        );
        let arn = r#"{"refreshToken": "rt-three", "authMethod": "social", "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/P"}"#;
        let other_token = r#"{"refreshToken": "rt-four", "authMethod": "social", "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/P"}"#;
        assert_eq!(
            account(arn).machine_id(),
            account(other_token).machine_id(),
            "a profile is one identity whatever its refresh token"
        );
    }
}

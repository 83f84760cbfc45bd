//! The accounts behind the pool, and the pool itself: built from the configuration (a mock
//! account on the in-process fake in mock mode; else the pool file's instances; else the
//! single account of the credential flags, a pool of one), and rebuilt from the pool file
//! on [`Accounts::reload`] (SIGHUP or a change of the file) without dropping a request.

pub mod model_list;
pub mod pool_edit;
pub mod pool_file;
pub mod usage;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::kiro::auth::account::{Account, Endpoints, TokenSettings};
use crate::kiro::auth::credentials::{self, Credentials};
use crate::kiro::auth::token_source::FixedToken;
use crate::kiro::fake::FakeKiro;
use crate::kiro::transport::http::HttpUpstream;
use crate::kiro::transport::trust::KiroTrust;
use crate::kiro::KiroService;
use aiproxy_layers::model::pool::{MemberSpec, Pool};
use futures_util::StreamExt;
use pool_file::Instance;
use std::sync::{Arc, Mutex, RwLock};

/// Why the accounts could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The credentials are unusable.
    #[error(transparent)]
    Credentials(#[from] crate::kiro::auth::credentials::CredentialError),
    /// The pool file is unusable.
    #[error(transparent)]
    PoolFile(#[from] crate::kiro::accounts::pool_file::PoolFileError),
    /// The pool as configured breaks a rule (e.g. too many accounts behind one egress).
    #[error("pool: {0}")]
    Pool(String),
    /// No way to reach Kiro.
    #[error(
        "no Kiro credentials found. Pass --kiro-oauth-creds-file FILE, --kiro-oauth-creds-base64 B64 or \
         --kiro-api-key KEY (or set KIRO_OAUTH_CREDS_FILE / KIRO_OAUTH_CREDS_BASE64 / KIRO_API_KEY), sign in without the IDE with \
         `aiproxy login --builder-id --out creds.json` (or --social), sign in with the Kiro IDE so that \
         ~/.aws/sso/cache/kiro-auth-token.json exists, or start with KIRO_MOCK_MODE=true to use the built-in fake Kiro"
    )]
    NoCredentials,
    /// The HTTP client or the upstream URL could not be set up.
    #[error("cannot set up the Kiro client: {0}")]
    Client(String),
    /// The extra certificate authorities are unusable.
    #[error("--kiro-ca-file: {0}")]
    CaFile(String),
}

/// The live accounts, for the status views (empty in mock mode).
pub type LiveAccounts = Arc<RwLock<Vec<Arc<Account>>>>;

/// Why an account was taken out by the pool file itself.
const DISABLED_IN_FILE: &str = "disabled_in_pool_file";

/// One pool member: its spec, its leaf service, its live account (for views), whether the
/// operator switched it off, the hash of its pool-file entry, and the model of its chat
/// probe (`checkModel`).
#[derive(Clone)]
struct Member {
    spec: MemberSpec,
    service: KiroService,
    account: Option<Arc<Account>>,
    enabled: bool,
    fingerprint: Option<String>,
    check_model: Option<String>,
    /// The egress proxy's label (`scheme://host:port`) and whether it has a password.
    egress: Option<(String, bool)>,
}

/// How an account reaches Kiro, for the console (never a secret: a proxy password is only
/// said to be set).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The account's name.
    pub name: String,
    /// The first characters of the machine id its requests carry.
    pub machine_id_prefix: String,
    /// The egress proxy, `scheme://host:port`, when it has one.
    pub egress: Option<String>,
    /// Whether that proxy has a password.
    pub egress_password_set: bool,
    /// Which of the credential's secrets are set.
    pub secrets_set: [(&'static str, bool); 3],
    /// Switched on in the pool file.
    pub enabled: bool,
    /// The credential's format (`mock` for the built-in fake's account).
    pub format: &'static str,
}

/// Why an operator action on an account did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No account of that name.
    #[error("no account named `{0}` in the pool")]
    NoSuchAccount(String),
    /// The account has no credentials of its own (mock mode).
    #[error("`{0}` is the built-in fake Kiro's account; it has no tokens to refresh or probe")]
    Mock(String),
    /// The action failed.
    #[error("{0}")]
    Failed(String),
}

/// The pool and what is needed to rebuild its members.
pub struct Accounts {
    config: Config,
    catalog: Catalog,
    pool: Pool<KiroService>,
    members: Mutex<Vec<Member>>,
    live: LiveAccounts,
    /// The certificate authorities the accounts' clients trust; `None` in mock mode.
    trust: Option<KiroTrust>,
    /// The Kiro model ids each account listed at the last catalog refresh.
    served: Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// What the accounts share with other replicas.
    sharing: Sharing,
}

/// What the accounts share with other replicas (all `None`: one process on its own).
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    /// Each login's tokens and refresh lock.
    pub tokens: Option<crate::kiro::auth::token_store::SharedTokens>,
    /// The accounts' health (the pool's store; else in memory).
    pub pool: Option<Arc<dyn aiproxy_layers::model::store::PoolStore>>,
    /// Each account's concurrency slots.
    pub leases: Option<Arc<dyn crate::kiro::service::LeaseGate>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// The accounts of `config` in a pool; `catalog` is what their model lists refresh;
    /// `sharing` is what they share with other replicas.
    pub fn build(
        config: &Config,
        catalog: Catalog,
        sharing: Sharing,
    ) -> Result<Self, AccountsError> {
        // Checked in mock mode too: a file that would stop a live start stops this one.
        let trust =
            KiroTrust::load(config.kiro_ca_file.as_deref()).map_err(AccountsError::CaFile)?;
        let trust = (!config.kiro_mock_mode).then_some(trust);
        let accounts = Self {
            config: config.clone(),
            catalog,
            pool: match sharing.pool.clone() {
                Some(store) => Pool::with_store(config.pool.pool.clone(), store, Vec::new()),
                None => Pool::new(config.pool.pool.clone(), Vec::new()),
            },
            members: Mutex::new(Vec::new()),
            live: LiveAccounts::default(),
            trust,
            served: Mutex::default(),
            sharing,
        };
        let members = accounts.members(&[])?;
        accounts.install(members, false);
        Ok(accounts)
    }

    /// The certificate authorities the Kiro clients trust besides the built-in ones (none in
    /// mock mode).
    pub fn trust(&self) -> KiroTrust {
        self.trust.clone().unwrap_or_default()
    }

    /// The pool (clones share the members).
    pub fn pool(&self) -> Pool<KiroService> {
        self.pool.clone()
    }

    /// The leaf service of the one account, when there is exactly one (what serves with the
    /// pool switched off).
    pub fn only_leaf(&self) -> Option<KiroService> {
        match self.lock().as_slice() {
            [only] => Some(only.service.clone()),
            _ => None,
        }
    }

    /// The live accounts, for the status views.
    pub fn live(&self) -> LiveAccounts {
        Arc::clone(&self.live)
    }

    /// The pool file the accounts come from, if any (none in mock mode, which does not
    /// read it).
    pub fn pool_file(&self) -> Option<&std::path::Path> {
        self.trust.as_ref().and(self.config.pool.file.as_deref())
    }

    /// How each account reaches Kiro, in pool order.
    pub fn identities(&self) -> Vec<Identity> {
        self.lock()
            .iter()
            .map(|m| Identity {
                name: m.spec.name.to_string(),
                machine_id_prefix: m
                    .account
                    .as_ref()
                    .map(|a| a.machine_id().chars().take(8).collect())
                    .unwrap_or_default(),
                egress: m.egress.as_ref().map(|(label, _)| label.clone()),
                egress_password_set: m.egress.as_ref().is_some_and(|(_, password)| *password),
                secrets_set: m.account.as_ref().map_or(
                    [
                        ("refresh_token", false),
                        ("client_secret", false),
                        ("api_key", false),
                    ],
                    |a| a.secrets_set(),
                ),
                enabled: m.enabled,
                format: m.account.as_ref().map_or("mock", |a| a.status().format),
            })
            .collect()
    }

    /// The Kiro model ids `name` listed at the last catalog refresh (empty: not listed yet,
    /// or the live catalog is off).
    pub fn models_served(&self, name: &str) -> Vec<String> {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The member called `name` and its live account.
    fn live_member(&self, name: &str) -> Result<(Member, Arc<Account>), ActionError> {
        let member = self
            .lock()
            .iter()
            .find(|m| &*m.spec.name == name)
            .cloned()
            .ok_or_else(|| ActionError::NoSuchAccount(name.to_owned()))?;
        let account = member
            .account
            .clone()
            .ok_or_else(|| ActionError::Mock(name.to_owned()))?;
        Ok((member, account))
    }

    /// Refreshes `name`'s access token now.
    pub async fn refresh_now(&self, name: &str) -> Result<(), ActionError> {
        let (_, account) = self.live_member(name)?;
        account
            .refresh_now()
            .await
            .map_err(|e| ActionError::Failed(e.to_string()))
    }

    /// Runs the health probe on `name` now (as the periodic probe would).
    pub async fn probe_now(&self, name: &str) -> Result<(), ActionError> {
        let (member, _) = self.live_member(name)?;
        probe_one(self, &member).await;
        Ok(())
    }

    /// Resets `name`'s breaker (cooldown, open breaker, pool disable).
    pub fn reset_breaker(&self, name: &str) -> Result<(), ActionError> {
        if self.pool.reset_breaker(name) {
            Ok(())
        } else {
            Err(ActionError::NoSuchAccount(name.to_owned()))
        }
    }

    /// `mock` or `live`.
    pub fn mode(&self) -> &'static str {
        if self.trust.is_some() {
            "live"
        } else {
            "mock"
        }
    }

    /// Re-reads the pool file: an account whose entry did not change keeps its state (unless
    /// it was disabled: the operator may have fixed its credentials, so it is rebuilt);
    /// changed ones are rebuilt and keep their health unless their credentials changed
    /// (then they start afresh, like added ones, in slow start); removed ones take no new
    /// requests and finish the ones they have. On an error nothing changes. Returns the
    /// number of accounts.
    pub fn reload(&self) -> Result<usize, AccountsError> {
        if self.config.pool.file.is_none() || self.trust.is_none() {
            return Ok(self.lock().len());
        }
        let old = self.lock().clone();
        let members = self.members(&old)?;
        // New credentials under an old name are another Kiro account: what the pool knew
        // about the old one (a suspension, a cooldown, its counters) is not this one's.
        for member in &members {
            let before = old
                .iter()
                .find(|m| m.spec.name == member.spec.name)
                .and_then(|m| m.account.as_deref());
            if let (Some(before), Some(now)) = (before, member.account.as_deref()) {
                if !before.same_login(now) {
                    tracing::info!(account = %member.spec.name, "new credentials: the account's health and counters start afresh");
                    self.pool.forget(&member.spec.name);
                }
            }
        }
        let count = members.len();
        self.install(members, true);
        Ok(count)
    }

    /// Reads the model list of every account in service (a few at a time, each bounded by
    /// `--request-timeout`) and rebuilds the catalog from the answers. Returns the number
    /// of accounts that answered. Does nothing when the live catalog is off
    /// (`--models-refresh-interval 0`).
    pub async fn refresh_models(&self) -> usize {
        if self.config.models_refresh_interval.is_none() {
            return 0;
        }
        let members: Vec<(String, KiroService)> = self
            .lock()
            .iter()
            .filter(|m| m.enabled)
            .filter(|m| {
                m.account
                    .as_ref()
                    .is_none_or(|a| a.status().disabled.is_none())
            })
            .map(|m| (m.spec.name.to_string(), m.service.clone()))
            .collect();
        let timeout = self.config.request_timeout;
        let answers: Vec<(String, Result<_, String>)> = futures_util::stream::iter(members)
            .map(|(name, service)| async move {
                let answer = tokio::time::timeout(timeout, service.list_models())
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "ListAvailableModels did not answer within {}s (--request-timeout)",
                            timeout.as_secs()
                        ))
                    });
                (name, answer)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        self.catalog.apply(&answers);
        {
            let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
            for (name, answer) in &answers {
                if let Ok(listing) = answer {
                    served.insert(
                        name.clone(),
                        listing.models.iter().map(|m| m.id.clone()).collect(),
                    );
                }
            }
        }
        let snapshot = self.catalog.snapshot();
        for problem in &snapshot.problems {
            tracing::warn!(%problem, "an account could not list its models");
        }
        let answered = answers.iter().filter(|(_, a)| a.is_ok()).count();
        tracing::info!(
            answered,
            accounts = answers.len(),
            models = snapshot.entries().len(),
            source = ?snapshot.source,
            "model catalog refreshed"
        );
        answered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn install(&self, members: Vec<Member>, operator_acted: bool) {
        self.pool.replace(
            members
                .iter()
                .map(|m| (m.spec.clone(), m.service.clone()))
                .collect(),
            operator_acted,
        );
        for member in members.iter().filter(|m| !m.enabled) {
            self.pool.disable(&member.spec.name, DISABLED_IN_FILE, None);
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) =
            members.iter().filter_map(|m| m.account.clone()).collect();
        *self.lock() = members;
    }

    fn members(&self, old: &[Member]) -> Result<Vec<Member>, AccountsError> {
        let config = &self.config;
        let Some(trust) = &self.trust else {
            if let Some(file) = &config.pool.file {
                tracing::info!(file = %file.display(), "mock mode: the pool file is not used");
            }
            let fake = FakeKiro::new().with_event_delay(config.kiro_mock_event_delay);
            let account = Arc::new(FixedToken::new("mock"));
            return Ok(vec![Member {
                spec: spec("mock", 1, config.max_connections, None),
                service: KiroService::mock(fake, account, config.max_connections),
                account: None,
                enabled: true,
                fingerprint: None,
                check_model: None,
                egress: None,
            }]);
        };
        let live = |name: String,
                    credentials: Credentials,
                    overrides: &Overrides,
                    (weight, cap, guard)| {
            let endpoints = endpoints(config, &credentials, overrides);
            let egress = overrides.egress.as_ref();
            tracing::info!(
                account = %name, format = credentials.format.name(), api = %endpoints.api_base,
                egress = %egress.map_or_else(|| "direct".to_owned(), ToString::to_string),
                "Kiro account loaded"
            );
            // Every account reaches Kiro over its own connections, its chats and its REST
            // calls alike: a connection carrying several accounts' tokens would tell Kiro they
            // belong together (the IDE has one user per connection), and Kiro's HTTP/2 stream
            // limit is then per account.
            let failed = |e: String| match egress {
                Some(proxy) => {
                    AccountsError::Client(format!("account `{name}`, egress {proxy}: {e}"))
                }
                None => AccountsError::Client(format!("account `{name}`: {e}")),
            };
            let chat =
                HttpUpstream::new(cap, config.request_timeout, egress, trust).map_err(failed)?;
            let client = HttpUpstream::client(
                config.max_connections,
                config.request_timeout,
                egress,
                trust,
            )
            .map_err(failed)?;
            let settings = TokenSettings {
                refresh_margin: config.token_refresh_margin,
                state_dir: config.state_dir.clone(),
                timeout: config.request_timeout,
                shared: self.sharing.tokens.clone(),
            };
            let account = Account::new(name.clone(), credentials, endpoints, settings, client);
            let mut service = KiroService::live(chat, Arc::clone(&account), cap)
                .map_err(AccountsError::Client)?;
            if let (Some(gate), Some(_)) = (&self.sharing.leases, overrides.max_concurrency) {
                service = service.with_leases(Arc::clone(gate), cap);
            }
            Ok::<_, AccountsError>((spec(&name, weight, cap, guard), service, account))
        };
        let Some(file) = &config.pool.file else {
            let (name, credentials) = load_credentials(config)?;
            let cap = config.max_connections;
            let (spec, service, account) =
                live(name, credentials, &Overrides::default(), (1, cap, None))?;
            return Ok(vec![Member {
                spec,
                service,
                account: Some(account),
                enabled: true,
                fingerprint: None,
                check_model: None,
                egress: None,
            }]);
        };
        tracing::info!(file = %file.display(), "reading the pool file");
        let instances = pool_file::load(file)?;
        check_egress_cap(&instances, config.pool.max_accounts_per_egress)?;
        instances
            .into_iter()
            .map(|instance: Instance| {
                if let Some(kept) = old.iter().find(|m| {
                    *m.spec.name == *instance.name
                        && m.fingerprint.as_deref() == Some(instance.fingerprint.as_str())
                        && m.account
                            .as_ref()
                            .is_some_and(|a| a.status().disabled.is_none())
                }) {
                    return Ok(Member {
                        enabled: instance.enabled,
                        check_model: instance.check_model,
                        ..kept.clone()
                    });
                }
                let egress = instance
                    .egress
                    .as_ref()
                    .map(|proxy| (proxy.to_string(), proxy.has_credentials()));
                let overrides = Overrides {
                    region: instance.region,
                    base_url: instance.base_url,
                    refresh_url: instance.refresh_url,
                    idc_refresh_url: instance.idc_refresh_url,
                    egress: instance.egress,
                    max_concurrency: instance.max_concurrency,
                };
                let cap = instance.max_concurrency.unwrap_or(config.max_connections);
                let (spec, service, account) = live(
                    instance.name,
                    instance.credentials,
                    &overrides,
                    (instance.weight, cap, instance.requests_per_minute),
                )?;
                Ok(Member {
                    spec,
                    service,
                    account: Some(account),
                    enabled: instance.enabled,
                    fingerprint: Some(instance.fingerprint),
                    check_model: instance.check_model,
                    egress,
                })
            })
            .collect()
    }
}

fn spec(
    name: &str,
    weight: u32,
    max_concurrency: usize,
    requests_per_minute: Option<aiproxy_layers::rate_limit::RequestQuota>,
) -> MemberSpec {
    MemberSpec {
        name: Arc::from(name),
        weight,
        max_concurrency,
        requests_per_minute,
    }
}

/// Per-account settings of the pool file that beat the global flags.
#[derive(Default)]
struct Overrides {
    region: Option<String>,
    base_url: Option<String>,
    refresh_url: Option<String>,
    idc_refresh_url: Option<String>,
    egress: Option<crate::kiro::transport::egress::EgressProxy>,
    /// The entry's own `maxConcurrency`: the one limit replicas share (a lease per call);
    /// the default connection cap stays each replica's own.
    max_concurrency: Option<usize>,
}

/// Refuses a pool file that puts more than `cap` accounts behind one egress proxy (many
/// accounts behind one address is one of the signals Kiro bans on: docs/kiro-protocol.md §13.4).
fn check_egress_cap(instances: &[Instance], cap: Option<usize>) -> Result<(), AccountsError> {
    let Some(cap) = cap else {
        return Ok(());
    };
    let mut by_egress: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for instance in instances.iter().filter(|i| i.enabled) {
        let egress = instance
            .egress
            .as_ref()
            .map_or_else(|| "direct".to_owned(), ToString::to_string);
        by_egress.entry(egress).or_default().push(&instance.name);
    }
    match by_egress.iter().find(|(_, names)| names.len() > cap) {
        Some((egress, names)) => Err(AccountsError::Pool(format!(
            "{} accounts go out through {egress} ({}), more than --max-accounts-per-egress {cap}; \
             give some of them their own egressProxy",
            names.len(),
            names.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Credential sources in order: file flag/env, base64 flag/env, API key flag/env, the Kiro
/// IDE's own file.
fn load_credentials(config: &Config) -> Result<(String, Credentials), AccountsError> {
    if let Some(path) = &config.kiro_oauth_creds_file {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok((name, credentials::from_file(path)?));
    }
    if let Some(base64) = &config.kiro_oauth_creds_base64 {
        let origin = "--kiro-oauth-creds-base64 / KIRO_OAUTH_CREDS_BASE64";
        return Ok((
            "base64".into(),
            credentials::from_base64(base64.expose(), origin)?,
        ));
    }
    if let Some(key) = &config.kiro_api_key {
        let origin = "--kiro-api-key / KIRO_API_KEY";
        return Ok((
            "api-key".into(),
            credentials::from_api_key(key.expose(), origin)?,
        ));
    }
    if let Some(path) = credentials::kiro_ide_token_file() {
        return Ok(("kiro-ide".into(), credentials::from_file(&path)?));
    }
    Err(AccountsError::NoCredentials)
}

/// API region: the instance's, else explicit `--kiro-region`, else the profileArn's region,
/// else us-east-1. Refresh region: the credential's `region`, else the same. URLs: the
/// instance's, else the flags', else derived from the regions.
fn endpoints(config: &Config, credentials: &Credentials, overrides: &Overrides) -> Endpoints {
    let region = overrides
        .region
        .as_deref()
        .or(config.kiro_region.as_deref());
    let arn_region = credentials
        .profile_arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(3))
        .filter(|r| !r.is_empty());
    let api_region = region.or(arn_region).unwrap_or("us-east-1");
    let auth_region = credentials
        .region
        .as_deref()
        .or(region)
        .unwrap_or("us-east-1");
    let pick = |own: &Option<String>, flag: &Option<String>, derived: String| {
        own.clone().or_else(|| flag.clone()).unwrap_or(derived)
    };
    // A base URL of its own (a fake, a gateway) serves the management calls too.
    let management_base = overrides
        .base_url
        .clone()
        .or_else(|| config.kiro_base_url.clone())
        .unwrap_or_else(|| format!("https://management.{api_region}.kiro.dev"));
    Endpoints {
        region: api_region.to_owned(),
        api_base: pick(
            &overrides.base_url,
            &config.kiro_base_url,
            format!("https://q.{api_region}.amazonaws.com"),
        ),
        management_base,
        social_refresh: pick(
            &overrides.refresh_url,
            &config.kiro_refresh_url,
            format!("https://prod.{auth_region}.auth.desktop.kiro.dev/refreshToken"),
        ),
        idc_refresh: pick(
            &overrides.idc_refresh_url,
            &config.kiro_idc_refresh_url,
            format!("https://oidc.{auth_region}.amazonaws.com/token"),
        ),
    }
}

/// Reloads `accounts` on SIGHUP and when the pool file's modification time changes (checked
/// every 2 s). A reload that fails keeps the accounts as they are and logs why. The SIGHUP
/// handler is installed when this is called (inside the runtime, before the server announces
/// itself), so a SIGHUP right after start-up cannot hit the default action and end the process.
pub fn watch(accounts: Arc<Accounts>) -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; the pool file is still watched"))
        .ok();
    async move {
        let Some(file) = accounts.config.pool.file.clone() else {
            return;
        };
        let modified =
            |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut seen = modified(&file);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            #[cfg(unix)]
            let cause = tokio::select! {
                _ = tick.tick() => "file",
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => "sighup",
            };
            #[cfg(not(unix))]
            let cause = {
                tick.tick().await;
                "file"
            };
            let now = modified(&file);
            if cause == "file" && now == seen {
                continue;
            }
            seen = now;
            match accounts.reload() {
                Ok(count) => {
                    tracing::info!(file = %file.display(), cause, accounts = count, "pool file reloaded");
                    // New accounts may serve other models; the catalog follows at once.
                    accounts.refresh_models().await;
                }
                Err(error) => tracing::warn!(
                    file = %file.display(), cause, %error,
                    "pool file not reloaded; the accounts stay as they were"
                ),
            }
        }
    }
}

/// Refreshes the model catalog every `--models-refresh-interval` (the start-up read is the
/// caller's, so that it can wait for it before announcing the server).
pub async fn refresh_models_every(accounts: Arc<Accounts>) {
    let Some(period) = accounts.config.models_refresh_interval else {
        return;
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        accounts.refresh_models().await;
    }
}

/// The active health probe: every `--health-check-interval`, each live account's token is
/// checked (refreshed when due) and its usage read from `getUsageLimits`, so accounts
/// recover without user traffic. Used-up credits disable the account until Kiro's reset
/// date; credits left lift such a disable and close a breaker past its backoff; a
/// suspension or a revoked token disables it like a request would. A probe that cannot
/// reach Kiro changes nothing (user traffic judges the account).
pub async fn probe(accounts: Arc<Accounts>) {
    let Some(period) = accounts.config.pool.health_check_interval else {
        return;
    };
    // The first probe after one period: start-up itself spends no refresh.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let members: Vec<Member> = accounts
            .lock()
            .iter()
            .filter(|m| m.enabled && m.account.is_some())
            .cloned()
            .collect();
        for member in members {
            probe_one(&accounts, &member).await;
        }
    }
}

async fn probe_one(accounts: &Accounts, member: &Member) {
    use aiproxy_layers::model::{Failure, Penalty};
    let (pool, timeout) = (&accounts.pool, accounts.config.request_timeout);
    let Some(account) = member.account.as_deref() else {
        return;
    };
    let name = account.name();
    if account.status().disabled.is_some() {
        return;
    }
    let usage =
        match tokio::time::timeout(timeout, crate::kiro::accounts::usage::fetch(account)).await {
            Ok(usage) => usage,
            Err(_) => {
                tracing::debug!(account = name, "health probe timed out");
                return;
            }
        };
    match usage {
        Ok(usage) if usage.exhausted() => {
            tracing::warn!(
                account = name,
                used = usage.used,
                limit = usage.limit,
                "account's credits are used up; out until Kiro's reset"
            );
            pool.disable(
                name,
                aiproxy_layers::model::health::QUOTA_EXHAUSTED,
                usage.next_reset,
            );
        }
        Ok(_) => match &member.check_model {
            None => pool.probe_passed(name),
            Some(model) => match check_chat(accounts, member, model).await {
                Ok(()) => pool.probe_passed(name),
                // A chat that failed is the account's answer like a user's would be: a 429
                // rests it, a 5xx counts towards its breaker.
                Err(error) => {
                    tracing::info!(account = name, model = %model, kind = error.kind(), "health probe chat failed");
                    pool.penalise(name, &error.penalty(), error.kind());
                }
            },
        },
        Err(error) => match error.penalty() {
            Penalty::Disable { reason, until } => pool.disable(name, reason, until),
            _ => tracing::debug!(account = name, kind = error.kind(), "health probe failed"),
        },
    }
}

/// The probe's chat (`checkModel`): one short question with `max_tokens` 1, sent to the
/// account's own leaf (not through the pool: it is not user traffic and must reach this
/// account); it passes when the first event arrives, and the stream is dropped there.
async fn check_chat(
    accounts: &Accounts,
    member: &Member,
    model: &str,
) -> Result<(), crate::chat::ChatError> {
    use crate::chat::{ChatError, ChatRequest, Message, Role};
    use tower::{Layer, ServiceExt};
    let chat = ChatRequest {
        model: model.to_owned(),
        messages: vec![Message::text(Role::User, "Reply with the single word OK.")],
        sampling: crate::chat::Sampling {
            max_tokens: Some(1),
            ..Default::default()
        },
        ..ChatRequest::default()
    };
    let leaf = crate::model::resolve::ResolveLayer::new(accounts.catalog.clone())
        .layer(member.service.clone());
    let timeout = accounts.config.request_timeout;
    match tokio::time::timeout(timeout, leaf.oneshot(crate::model::ModelRequest::new(chat))).await {
        Ok(answer) => answer.map(drop),
        Err(_) => Err(ChatError::Timeout {
            message: format!(
                "the health probe's chat on `{model}` had no first event within {}s",
                timeout.as_secs()
            ),
        }),
    }
}

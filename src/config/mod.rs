//! One [`Config`], resolved with the precedence built-in defaults < `--config FILE` (TOML) <
//! environment < command-line flags.
//!
//! clap reads flags and their environment fallbacks (a flag beats its variable); every clap
//! field is optional, so a value that came from neither leaves room for the file, and then
//! for the default. Bad values stop start-up with a message naming the flag or key and the
//! allowed values (exit code 2).

use aiproxy_layers::ClientKey;
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod cache;
pub mod kiro;
pub mod pool;
pub mod rate_limit;
pub mod redis;
pub mod server;

pub use cache::{CacheArgs, CacheSettings};
pub use kiro::KiroArgs;
pub use pool::{PoolArgs, PoolSettings};
pub use rate_limit::{RateLimitArgs, RateLimitSettings};
pub use redis::{FailureMode, RedisArgs, RedisSettings};
pub use server::ServerArgs;

/// Providers this build can serve.
pub const PROVIDERS: &[&str] = &["kiro-api"];

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The layers of the pipeline that `--disable-layers` can switch off (see
/// `src/pipeline.rs` and `src/model/mod.rs`). A switched-off layer is skipped entirely and
/// costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineLayer {
    /// `x-request-id` set on the request and copied onto the response.
    RequestId,
    /// The request span and the per-response log line.
    Trace,
    /// Turning a handler panic into a 500 answer.
    CatchPanic,
    /// The API key check (refused while API keys are configured).
    Auth,
    /// Provider selection; off, every request goes to `--model-provider`.
    Route,
    /// The model tier's retry of failures before the first byte.
    Retry,
    /// The account pool with its breakers, cooldowns and guards; off, the one account serves
    /// every request directly (not with a pool file).
    Pool,
    /// The metrics layers (HTTP requests and model operations); `/metrics` then shows only
    /// the accounts' state.
    Metrics,
}

/// Command line of the `aiproxy` binary.
#[derive(Debug, Parser)]
#[command(
    name = "aiproxy",
    version,
    about = "OpenAI- and Anthropic-compatible proxy for Claude models through Kiro accounts"
)]
pub struct Cli {
    /// Without a sub-command the proxy server runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file (keys: see config/aiproxy.example.toml).
    #[arg(long, env = "AIPROXY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Default provider for requests that do not name one [default: kiro-api].
    #[arg(long, env = "AIPROXY_MODEL_PROVIDER", value_parser = clap::builder::PossibleValuesParser::new(PROVIDERS))]
    pub model_provider: Option<String>,

    /// API key clients must send (repeatable; the variable takes a comma-separated list).
    /// Without any key the server is open to every client [default: none].
    #[arg(
        long = "api-key",
        env = "AIPROXY_API_KEY",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_keys: Vec<String>,

    /// Browser origin allowed to call the API (CORS; repeatable, `*` for any; the variable
    /// takes a comma-separated list). Without one, no CORS headers are sent [default: none].
    #[arg(
        long = "cors-allow-origin",
        env = "AIPROXY_CORS_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_allow_origins: Vec<String>,

    /// Pipeline layers to switch off, for benchmarking middleware: request-id, trace,
    /// catch-panic, metrics, auth, route, retry, pool (repeatable; the variable takes a
    /// comma-separated list, and an empty one means none) [default: none].
    #[arg(
        long = "disable-layers",
        env = "AIPROXY_DISABLE_LAYERS",
        value_delimiter = ',',
        value_name = "LAYER"
    )]
    pub disable_layers: Vec<String>,

    /// Listener, client limits, logs, admin endpoints.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Credentials, endpoints, upstream limits, the model catalog, mock mode.
    #[command(flatten)]
    pub kiro: KiroArgs,

    /// Pool, retry and breaker settings.
    #[command(flatten)]
    pub pool: PoolArgs,

    /// Answer cache settings.
    #[command(flatten)]
    pub cache: CacheArgs,

    /// Client rate limits.
    #[command(flatten)]
    pub rate_limit: RateLimitArgs,

    /// Shared state between replicas (Redis).
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// Sub-commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the fake Kiro on a socket (tests, demos, benchmarks); see the README for scripting.
    FakeKiro(FakeKiroArgs),
    /// Load the configuration (file, environment, flags) and the pool file as the server
    /// would, print what they resolve to and every problem, and exit 0 (none) or 1; listens
    /// on nothing and calls no Kiro. The server's flags go before or after it.
    CheckConfig(CheckConfigArgs),
    /// Sign in to Kiro without the IDE (Builder ID or IAM Identity Center by device code,
    /// Google/GitHub in the browser) and write the credential file or add it to the pool
    /// file. Tokens are never printed.
    Login(LoginArgs),
    /// List the pool's accounts with their state, credits and why one is out: from a running
    /// aiproxy's /loadbalancer/instances, or from the pool file when none answers.
    Accounts(AccountsArgs),
    /// Print a completion script for a shell (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `aiproxy man > /usr/local/share/man/man1/aiproxy.1`.
    Man,
}

/// `aiproxy check-config` options: the server's own flags, also accepted after the word.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The server's flags (as `aiproxy --help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS"
    )]
    pub flags: Vec<String>,
}

/// `aiproxy login` options.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("method").required(true).args(["builder_id", "idc", "social"])))]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["out", "pool"])))]
pub struct LoginArgs {
    /// Sign in with an AWS Builder ID (free tier): a code to approve in any browser.
    #[arg(long)]
    pub builder_id: bool,
    /// Sign in with your organisation's IAM Identity Center: a code to approve in any
    /// browser; needs --start-url (and --region when it is not us-east-1).
    #[arg(long, requires = "start_url")]
    pub idc: bool,
    /// Sign in with Google or GitHub in a browser (on a machine without one, open the printed
    /// link elsewhere and paste the address it ends on back here).
    #[arg(long)]
    pub social: bool,
    /// The organisation's start URL (IAM Identity Center), e.g. https://my-org.awsapps.com/start.
    #[arg(long, value_name = "URL")]
    pub start_url: Option<String>,
    /// The Identity Center's region (refreshes go there too).
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    pub region: String,
    /// Write the credential to this new file (mode 0600); it is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Add the account to this pool file (created when missing) under --name; a running
    /// aiproxy picks it up by its reload.
    #[arg(long, value_name = "FILE", requires = "name")]
    pub pool: Option<PathBuf>,
    /// The account's name in the pool file (letters, digits, `-`, `_`, `.`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// SSO-OIDC base URL [default: https://oidc.REGION.amazonaws.com].
    #[arg(long, value_name = "URL")]
    pub oidc_url: Option<String>,
    /// Kiro's auth service, where the social code is exchanged [default: https://prod.us-east-1.auth.desktop.kiro.dev].
    #[arg(long, value_name = "URL")]
    pub auth_url: Option<String>,
    /// Kiro's sign-in page [default: https://app.kiro.dev/signin].
    #[arg(long, value_name = "URL")]
    pub signin_url: Option<String>,
    /// Where the new login's profile is looked up (ListAvailableProfiles) [default: https://q.REGION.amazonaws.com].
    #[arg(long, value_name = "URL")]
    pub kiro_base_url: Option<String>,
    /// PEM file of certificate authorities to trust besides the built-in public ones (a
    /// TLS-inspecting company proxy's).
    #[arg(long, env = "KIRO_CA_FILE", value_name = "FILE")]
    pub kiro_ca_file: Option<PathBuf>,
    /// The social sign-in's local callback port [default: the Kiro IDE's: 3128, then the next free of its list].
    #[arg(long, value_name = "PORT")]
    pub callback_port: Option<u16>,
    /// Do not open a browser; print the link (and for --social wait for the pasted address).
    #[arg(long)]
    pub no_browser: bool,
}

/// `aiproxy accounts` options.
#[derive(Debug, clap::Args)]
pub struct AccountsArgs {
    /// The running aiproxy to ask.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Its API key, when it puts /loadbalancer/instances behind the key (--admin-require-key).
    #[arg(
        long,
        env = "AIPROXY_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The pool file to read when no aiproxy answers [default: provider_pools.json].
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// HTTP/2 streams a client may have open at once on one connection to aiproxy (or to the
/// fake Kiro, unless its --max-concurrent-streams says otherwise).
pub const H2_MAX_STREAMS: u32 = 128;

/// `aiproxy fake-kiro` options.
#[derive(Debug, clap::Args)]
pub struct FakeKiroArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port; the first stdout line tells which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Lifetime of the access tokens it issues, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Delay before each write of a chat stream, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub event_delay_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM), HTTP/2 or HTTP/1.1 by ALPN as Kiro
    /// does; aiproxy then needs the authority that signed it (--kiro-ca-file).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// HTTP/2 streams a client may have open at once on one connection (what the fake
    /// announces in its SETTINGS; beyond it a client waits for one to end).
    #[arg(long, value_name = "N", default_value_t = H2_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
}

/// The `--config` file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    model_provider: Option<String>,
    api_keys: Option<Vec<rate_limit::ApiKeyEntry>>,
    cors_allow_origin: Option<Vec<String>>,
    disable_layers: Option<Vec<PipelineLayer>>,
    #[serde(default)]
    server: ServerArgs,
    #[serde(default)]
    kiro: KiroArgs,
    #[serde(default)]
    pool: PoolArgs,
    #[serde(default)]
    cache: CacheArgs,
    #[serde(default)]
    rate_limit: RateLimitArgs,
    #[serde(default)]
    redis: RedisArgs,
}

/// Resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Default provider.
    pub model_provider: String,
    /// Accepted client keys (empty = open server). `Secret`, so `{config:?}` never shows them.
    pub api_keys: Vec<crate::secret::Secret>,
    /// Origins allowed by CORS (`*`: any); empty: no CORS.
    pub cors_allow_origins: Vec<String>,
    /// Listen address.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// The metrics-only port, if any.
    pub metrics_port: Option<u16>,
    /// `/loadbalancer/instances` and `/metrics` need the API key.
    pub admin_require_key: bool,
    /// The console's operator key (`None`: no console).
    pub admin_key: Option<crate::secret::Secret>,
    /// The console's request log keeps prompt text.
    pub console_log_bodies: bool,
    /// Use the built-in fake Kiro.
    pub kiro_mock_mode: bool,
    /// Pacing of the built-in fake Kiro's events.
    pub kiro_mock_event_delay: Duration,
    /// Credential file.
    pub kiro_oauth_creds_file: Option<PathBuf>,
    /// Base64 credentials.
    pub kiro_oauth_creds_base64: Option<crate::secret::Secret>,
    /// A Kiro API key.
    pub kiro_api_key: Option<crate::secret::Secret>,
    /// Explicit region.
    pub kiro_region: Option<String>,
    /// API base URL override.
    pub kiro_base_url: Option<String>,
    /// Social refresh URL override.
    pub kiro_refresh_url: Option<String>,
    /// IdC refresh URL override.
    pub kiro_idc_refresh_url: Option<String>,
    /// Certificate authorities trusted besides the built-in ones.
    pub kiro_ca_file: Option<PathBuf>,
    /// Upstream connection / concurrency bound.
    pub max_connections: usize,
    /// Connect + first bytes, and idle-gap timeout.
    pub request_timeout: Duration,
    /// State directory for rotated tokens of base64 credentials.
    pub state_dir: PathBuf,
    /// Refresh margin before expiry.
    pub token_refresh_margin: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Custom model catalog.
    pub models_file: Option<PathBuf>,
    /// Period of the catalog refresh from ListAvailableModels (`None`: no live catalog).
    pub models_refresh_interval: Option<Duration>,
    /// How long stored Responses API responses are kept.
    pub responses_store_ttl: Duration,
    /// Memory bound of the stored responses, in bytes.
    pub responses_store_max_bytes: u64,
    /// Grace period at shutdown.
    pub shutdown_timeout: Duration,
    /// A new connection's first request headers must arrive within this.
    pub header_read_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_read_timeout: Duration,
    /// Longest idle time of a keep-alive connection.
    pub idle_timeout: Duration,
    /// Cap on client connections (`None`: from the descriptor limit at start-up).
    pub max_client_connections: Option<usize>,
    /// Pipeline layers switched off (sorted, no duplicates).
    pub disabled_layers: Vec<PipelineLayer>,
    /// Pool, retry and breakers.
    pub pool: PoolSettings,
    /// The answer cache.
    pub cache: CacheSettings,
    /// Redis for state shared between replicas; `None`: each replica keeps its own.
    pub redis: Option<RedisSettings>,
    /// Client rate limits.
    pub rate_limit: RateLimitSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model_provider: "kiro-api".into(),
            api_keys: Vec::new(),
            cors_allow_origins: Vec::new(),
            host: "127.0.0.1".into(),
            port: 3000,
            metrics_port: None,
            admin_require_key: false,
            admin_key: None,
            console_log_bodies: false,
            kiro_mock_mode: false,
            kiro_mock_event_delay: Duration::ZERO,
            kiro_oauth_creds_file: None,
            kiro_oauth_creds_base64: None,
            kiro_api_key: None,
            kiro_region: None,
            kiro_base_url: None,
            kiro_refresh_url: None,
            kiro_idc_refresh_url: None,
            kiro_ca_file: None,
            max_connections: 64,
            request_timeout: Duration::from_secs(30),
            state_dir: default_state_dir(),
            token_refresh_margin: Duration::from_secs(300),
            log_format: LogFormat::Text,
            max_body_bytes: 8 * 1024 * 1024,
            models_file: None,
            models_refresh_interval: Some(Duration::from_secs(3600)),
            responses_store_ttl: Duration::from_secs(3600),
            responses_store_max_bytes: 256 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_client_connections: None,
            disabled_layers: Vec::new(),
            pool: PoolSettings::default(),
            cache: CacheSettings::default(),
            redis: None,
            rate_limit: RateLimitSettings::default(),
        }
    }
}

/// A timeout in whole seconds, at least 1.
fn seconds(
    key: &'static str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::Invalid {
            key,
            message: "must be at least 1 second".into(),
        }),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Ok(default),
    }
}

/// `value` into `slot` when it is set; the slot keeps what it holds (the default) otherwise.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `value`, refused when it is 0.
fn at_least_one(key: &'static str, value: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::Invalid {
            key,
            message: "must be at least 1".into(),
        }),
        other => Ok(other),
    }
}

/// A count from the configuration as a `usize` (capped, never wrapped).
fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Trims the configured CORS origins and refuses what is not `*` or `scheme://host[:port]`.
fn check_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let origins: Vec<String> = origins
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    for origin in &origins {
        let uri = origin.parse::<http::Uri>().ok();
        let valid = origin == "*"
            || uri.is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some()
                    && u.path_and_query().is_none_or(|p| p.as_str() == "/")
            });
        if !valid {
            return Err(ConfigError::Invalid {
                key: "cors_allow_origin",
                message: format!(
                    "`{origin}` is not an origin; give `*` or scheme://host[:port], e.g. https://app.example.com"
                ),
            });
        }
    }
    Ok(origins)
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad key/value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message (names the key and the line).
        message: String,
    },
    /// A value is not allowed (from a flag, the environment or the file).
    #[error("invalid {} (config key `{key}`): {message}", flag_of(key))]
    Invalid {
        /// The config key.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Resolves the configuration from parsed command-line arguments (which include the
    /// environment fallbacks) and the optional config file.
    pub fn resolve(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Self::default();
        let limits = cli.rate_limit.clone().or(file.rate_limit);
        let entries: Vec<rate_limit::ApiKeyEntry> =
            if cli.api_keys.iter().any(|k| !k.trim().is_empty()) {
                cli.api_keys
                    .iter()
                    .map(|k| rate_limit::ApiKeyEntry::Key(k.clone()))
                    .collect()
            } else {
                file.api_keys.unwrap_or_default()
            };
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|entry| !entry.key().trim().is_empty())
            .collect();
        let mut key_limits = Vec::new();
        for (position, entry) in entries.iter().enumerate() {
            if let Some(own) = entry.limits(&limits)? {
                key_limits.push((ClientKey::numbered(position).label().to_owned(), own));
            }
        }
        let rate_limit = RateLimitSettings {
            default: limits.resolve()?,
            keys: key_limits,
        };
        let cors_allow_origins = check_origins(
            if cli.cors_allow_origins.iter().any(|o| !o.trim().is_empty()) {
                cli.cors_allow_origins.clone()
            } else {
                file.cors_allow_origin.unwrap_or_default()
            },
        )?;
        let mut disabled_layers = if cli.disable_layers.iter().any(|l| !l.trim().is_empty()) {
            parse_layers(&cli.disable_layers)?
        } else {
            file.disable_layers.unwrap_or_default()
        };
        disabled_layers.sort_unstable();
        disabled_layers.dedup();
        let mut config = Self {
            model_provider: pick(
                cli.model_provider.clone(),
                file.model_provider,
                defaults.model_provider,
            ),
            cors_allow_origins,
            api_keys: entries
                .iter()
                .map(|entry| crate::secret::Secret::new(entry.key().trim().to_owned()))
                .collect(),
            disabled_layers,
            pool: cli.pool.clone().or(file.pool).resolve()?,
            cache: cli.cache.clone().or(file.cache).resolve()?,
            redis: cli.redis.clone().or(file.redis).resolve()?,
            rate_limit,
            ..defaults
        };
        cli.server.clone().or(file.server).apply(&mut config)?;
        cli.kiro.clone().or(file.kiro).apply(&mut config)?;
        if !PROVIDERS.contains(&config.model_provider.as_str()) {
            return Err(ConfigError::Invalid {
                key: "model_provider",
                message: format!(
                    "unknown provider `{}`; allowed values: {}",
                    config.model_provider,
                    PROVIDERS.join(", ")
                ),
            });
        }
        config.check_layers()?;
        Ok(config)
    }

    /// Refuses to switch `auth` off while API keys are configured (they would go unchecked).
    /// Also run by `pipeline::build`, for configurations built in code.
    pub fn check_layers(&self) -> Result<(), ConfigError> {
        if let Some(admin) = &self.admin_key {
            if self.api_keys.iter().any(|k| k.expose() == admin.expose()) {
                return Err(ConfigError::Invalid {
                    key: "admin_key",
                    message: "the admin key is also a client API key: a client could steer the                               pool. Give the console a key of its own"
                        .into(),
                });
            }
            if admin.expose().chars().count() < 16 {
                return Err(ConfigError::Invalid {
                    key: "admin_key",
                    message: "the admin key is shorter than 16 characters; use a long random                               one (e.g. `openssl rand -hex 24`)"
                        .into(),
                });
            }
        }
        if !self.layer_enabled(PipelineLayer::Pool) {
            if let Some(file) = &self.pool.file {
                return Err(ConfigError::Invalid {
                    key: "disable_layers",
                    message: format!(
                        "`pool` cannot be switched off with a pool file ({}): its accounts need \
                         the pool to share the traffic. Keep the pool layer, or run one account \
                         from --kiro-oauth-creds-file without the pool file",
                        file.display()
                    ),
                });
            }
        }
        if self.layer_enabled(PipelineLayer::Auth) || self.api_keys.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "disable_layers",
            message: "`auth` cannot be switched off while API keys are configured: the keys \
                      would not be checked. Drop the --api-key values for an open server, or \
                      keep the auth layer"
                .into(),
        })
    }

    /// Whether `layer` is part of the pipeline (not switched off).
    pub fn layer_enabled(&self, layer: PipelineLayer) -> bool {
        !self.disabled_layers.contains(&layer)
    }

    /// A configuration for tests and embedding: mock mode, no keys, defaults otherwise.
    pub fn mock() -> Self {
        Self {
            kiro_mock_mode: true,
            ..Self::default()
        }
    }
}

/// `--disable-layers` / `AIPROXY_DISABLE_LAYERS` values; empty items are skipped (an empty
/// variable means no layer), unknown ones name the allowed values.
fn parse_layers(names: &[String]) -> Result<Vec<PipelineLayer>, ConfigError> {
    names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(|name| {
            PipelineLayer::from_str(name, true).map_err(|_| {
                let allowed: Vec<String> = PipelineLayer::value_variants()
                    .iter()
                    .filter_map(|l| l.to_possible_value().map(|v| v.get_name().to_owned()))
                    .collect();
                ConfigError::Invalid {
                    key: "disable_layers",
                    message: format!(
                        "unknown layer `{name}`; allowed values: {}",
                        allowed.join(", ")
                    ),
                }
            })
        })
        .collect()
}

/// `max_body_bytes` -> `--max-body-bytes`.
fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// `$XDG_STATE_HOME/aiproxy`, else `~/.local/state/aiproxy`, else `./.aiproxy-state`.
fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("aiproxy");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/aiproxy"),
        None => PathBuf::from(".aiproxy-state"),
    }
}

fn pick<T>(cli: Option<T>, file: Option<T>, default: T) -> T {
    cli.or(file).unwrap_or(default)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: moved_key(&text).unwrap_or_else(|| e.to_string().trim_end().to_owned()),
    })
}

/// A top-level key of the file that belongs in a section (`host` in `[server]`, ...): the
/// section's own struct is asked whether it takes the key, so no list of keys is kept.
fn moved_key(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table.iter().find_map(|(key, value)| {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        let section = if alone.clone().try_into::<ServerArgs>().is_ok() {
            "server"
        } else if alone.try_into::<KiroArgs>().is_ok() {
            "kiro"
        } else {
            return None;
        };
        Some(format!(
            "`{key}` belongs in the [{section}] section: write it under a `[{section}]` line \
             (see config/aiproxy.example.toml)"
        ))
    })
}

/// Declares a configuration section: one struct whose every field is a key declared once,
/// with its flag and environment variable (clap), its file key (serde, in the section's
/// table), its help line and, in that line, its `[default: ...]` (checked against
/// [`Config::default`] and the README by `tests/config_reference.rs`). Also gives the
/// section its `or`, which takes each field from the flags and variables when set, else
/// from the file (no field list to keep in step). A new key is then one field here, one
/// line in the section's `apply`, and its setting and default in [`Config`].
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// Each field from `self` (flags, variables) when set, else from `file`.
            pub fn or(self, file: Self) -> Self {
                Self { $($field: self.$field.or(file.$field)),* }
            }
        }
    };
}
pub(crate) use section;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aiproxy").chain(args.iter().copied()))
    }

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::write(text)
    }

    /// Minimal temp-file helper (no extra dependency).
    mod tempfile_path {
        use super::*;
        pub struct TempPath(pub PathBuf);
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> TempPath {
            let path =
                std::env::temp_dir().join(format!("aiproxy-config-{}.toml", uuid::Uuid::new_v4()));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            TempPath(path)
        }
    }

    #[test]
    fn the_example_file_loads_and_pool_flags_beat_its_section() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/aiproxy.example.toml");
        let config = Config::resolve(&parse(&["--config", example]).unwrap()).unwrap();
        // Every value the example writes is the built-in default, but for the two it sets
        // on purpose (a key to change, mock mode to try it out).
        assert_eq!(config.api_keys, vec!["change-me".into()]);
        assert!(config.kiro_mock_mode);
        let as_shown = Config {
            api_keys: Vec::new(),
            kiro_mock_mode: false,
            ..config
        };
        assert_eq!(
            as_shown,
            Config::default(),
            "the example shows the defaults"
        );
        let f = file(
            "[pool]\nmax_retries = 1\nsuspicious_cooldown = 7200\nhealth_check_interval = 0\n",
        );
        let path = f.0.to_str().unwrap();
        let config =
            Config::resolve(&parse(&["--config", path, "--max-retries", "5"]).unwrap()).unwrap();
        assert_eq!(config.pool.retry.max_retries, 5);
        assert_eq!(
            config.pool.pool.health.suspicious_cooldown,
            Duration::from_secs(7200)
        );
        assert_eq!(config.pool.health_check_interval, None, "0 = off");
        let typo = file("[pool]\nmax_retrys = 1\n");
        let error = Config::resolve(&parse(&["--config", typo.0.to_str().unwrap()]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_retrys"), "{error}");
        let error = Config::resolve(
            &parse(&[
                "--retry-base-delay-ms",
                "5000",
                "--retry-max-delay-ms",
                "100",
            ])
            .unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("retry-base-delay-ms") || error.contains("retry_base_delay_ms"),
            "{error}"
        );
    }

    #[test]
    fn defaults() {
        let config = Config::resolve(&parse(&[]).unwrap()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.port, 3000);
        assert_eq!(config.host, "127.0.0.1");
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let f = file(
            "api_keys = [\"from-file\"]\n[server]\nport = 4000\nhost = \"0.0.0.0\"\nlog_format = \"json\"\n",
        );
        let path = f.0.to_str().unwrap();
        let config =
            Config::resolve(&parse(&["--config", path, "--port", "5000"]).unwrap()).unwrap();
        assert_eq!(config.port, 5000);
        assert_eq!(config.host, "0.0.0.0");
        assert_eq!(config.api_keys, vec!["from-file".into()]);
        assert!(
            !format!("{config:?}").contains("from-file"),
            "keys never in Debug output"
        );
        assert_eq!(config.log_format, LogFormat::Json);
        let config = Config::resolve(
            &parse(&["--config", path, "--api-key", "a", "--api-key", "b"]).unwrap(),
        )
        .unwrap();
        assert_eq!(config.api_keys, vec!["a".into(), "b".into()]);
    }

    #[test]
    fn bad_values_name_the_key_and_allowed_values() {
        let err = parse(&["--log-format", "xml"]).unwrap_err().to_string();
        assert!(
            err.contains("--log-format") && err.contains("text") && err.contains("json"),
            "{err}"
        );
        let err = parse(&["--model-provider", "openai"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kiro-api"), "{err}");
        let f = file("[server]\nlog_format = \"xml\"\n");
        let err = Config::resolve(&parse(&["--config", f.0.to_str().unwrap()]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_format") && err.contains("text"), "{err}");
        let f = file("colour = 1\n");
        let err = Config::resolve(&parse(&["--config", f.0.to_str().unwrap()]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let f = file("model_provider = \"nope\"\n");
        let err = Config::resolve(&parse(&["--config", f.0.to_str().unwrap()]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`model_provider`") && err.contains("kiro-api"),
            "{err}"
        );
    }

    #[test]
    fn disabled_layers_from_flags_or_file_and_auth_guarded() {
        let config = Config::resolve(
            &parse(&[
                "--disable-layers",
                "trace,route",
                "--disable-layers",
                "trace",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.disabled_layers,
            vec![PipelineLayer::Trace, PipelineLayer::Route]
        );
        assert!(!config.layer_enabled(PipelineLayer::Trace));
        assert!(config.layer_enabled(PipelineLayer::Auth));
        let f = file("disable_layers = [\"catch-panic\", \"request-id\"]\n");
        let config =
            Config::resolve(&parse(&["--config", f.0.to_str().unwrap()]).unwrap()).unwrap();
        assert_eq!(
            config.disabled_layers,
            vec![PipelineLayer::RequestId, PipelineLayer::CatchPanic]
        );
        let err = Config::resolve(&parse(&["--disable-layers", "cache"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--disable-layers") && err.contains("request-id") && err.contains("route"),
            "{err}"
        );
        // An empty list (e.g. `AIPROXY_DISABLE_LAYERS=`) switches nothing off.
        let config = Config::resolve(&parse(&["--disable-layers", ""]).unwrap()).unwrap();
        assert!(config.disabled_layers.is_empty());
        // An open server may drop auth; a server with keys may not (they would go unchecked).
        assert!(Config::resolve(&parse(&["--disable-layers", "auth"]).unwrap()).is_ok());
        let err = Config::resolve(&parse(&["--disable-layers", "auth", "--api-key", "k"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--disable-layers") && err.contains("--api-key"),
            "{err}"
        );
    }

    #[test]
    fn a_key_outside_its_section_names_the_section() {
        for (text, section) in [
            ("port = 4000\n", "[server]"),
            ("kiro_base_url = \"http://127.0.0.1:9\"\n", "[kiro]"),
            ("[pool]\nmax_retries = 1\n[x]\n", ""),
        ] {
            let f = file(text);
            let err = Config::resolve(&parse(&["--config", f.0.to_str().unwrap()]).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(section), "{text}: {err}");
            if !section.is_empty() {
                assert!(err.contains("belongs in the"), "{err}");
            }
        }
        let f = file("[server]\nport = 4000\n[kiro]\nmax_connections = 3\nkiro_mock_mode = true\n");
        let config = Config::resolve(
            &parse(&["--config", f.0.to_str().unwrap(), "--max-connections", "5"]).unwrap(),
        )
        .unwrap();
        assert_eq!((config.port, config.max_connections), (4000, 5));
        assert!(config.kiro_mock_mode);
    }

    #[test]
    fn mock_mode_flag_forms() {
        assert_eq!(
            parse(&["--kiro-mock-mode"]).unwrap().kiro.kiro_mock_mode,
            Some(true)
        );
        assert_eq!(
            parse(&["--kiro-mock-mode=false"])
                .unwrap()
                .kiro
                .kiro_mock_mode,
            Some(false)
        );
        assert!(parse(&["--kiro-mock-mode=maybe"]).is_err());
    }
}

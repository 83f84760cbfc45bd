//! The Kiro side's settings (credentials, endpoints, upstream limits, the model catalog,
//! mock mode): one struct that is both the flags (flattened into [`super::Cli`]) and the
//! config file's `[kiro]` section, merged field by field (a flag or variable beats the
//! file) and resolved once.

use super::{at_least_one, saturating_usize, set, Config, ConfigError};
use clap::builder::BoolishValueParser;
use std::path::PathBuf;
use std::time::Duration;

super::section! {
    /// Kiro flags, and the `[kiro]` section of the config file.
    pub struct KiroArgs {
        /// Serve from the built-in fake Kiro instead of real accounts (no credentials needed) [default: false].
        #[arg(long, env = "KIRO_MOCK_MODE", num_args = 0..=1, require_equals = true,
              default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
        pub kiro_mock_mode: Option<bool>,

        /// Delay before each event of the built-in fake Kiro, in milliseconds (mock mode only;
        /// for streaming demos and benchmarks) [default: 0].
        #[arg(long, env = "KIRO_MOCK_EVENT_DELAY_MS", value_name = "MS")]
        pub kiro_mock_event_delay_ms: Option<u64>,

        /// Kiro credential file (generic OAuth2, Kiro social or Kiro IdC JSON).
        #[arg(long, env = "KIRO_OAUTH_CREDS_FILE", value_name = "FILE")]
        pub kiro_oauth_creds_file: Option<PathBuf>,

        /// Kiro credentials as base64 of the JSON file (rotated tokens go to --state-dir).
        #[arg(
            long,
            env = "KIRO_OAUTH_CREDS_BASE64",
            value_name = "BASE64",
            hide_env_values = true
        )]
        pub kiro_oauth_creds_base64: Option<String>,

        /// A Kiro API key (`ksk_...`), the account's whole credential (sent with `tokentype: API_KEY`, never refreshed).
        #[arg(long, env = "KIRO_API_KEY", value_name = "KEY", hide_env_values = true)]
        pub kiro_api_key: Option<String>,

        /// AWS region of the Kiro API and of refreshes [default: us-east-1, or the profile ARN's region].
        #[arg(long, env = "KIRO_REGION")]
        pub kiro_region: Option<String>,

        /// Kiro API base URL; chat goes to {base}/generateAssistantResponse [default: https://q.{region}.amazonaws.com].
        #[arg(long, env = "KIRO_BASE_URL", value_name = "URL")]
        pub kiro_base_url: Option<String>,

        /// Full URL of the Kiro social token refresh [default: https://prod.{region}.auth.desktop.kiro.dev/refreshToken].
        #[arg(long, env = "KIRO_REFRESH_URL", value_name = "URL")]
        pub kiro_refresh_url: Option<String>,

        /// Full URL of the Kiro IdC / Builder ID token refresh [default: https://oidc.{region}.amazonaws.com/token].
        #[arg(long, env = "KIRO_IDC_REFRESH_URL", value_name = "URL")]
        pub kiro_idc_refresh_url: Option<String>,

        /// PEM file of certificate authorities to trust besides the built-in public ones, for
        /// the calls to Kiro, its token refreshes and its sign-in services (a TLS-inspecting
        /// company proxy's authority, or a test Kiro's).
        #[arg(long, env = "KIRO_CA_FILE", value_name = "FILE")]
        pub kiro_ca_file: Option<PathBuf>,

        /// Upper bound of upstream connections and of concurrent upstream requests [default: 64].
        #[arg(long, env = "AIPROXY_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        pub max_connections: Option<u32>,

        /// Seconds allowed for connect + first upstream bytes, and for each gap between events (never the whole stream) [default: 30].
        #[arg(long, env = "AIPROXY_REQUEST_TIMEOUT", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub request_timeout: Option<u64>,

        /// Directory for rotated tokens of base64 credentials [default: $XDG_STATE_HOME/aiproxy or ~/.local/state/aiproxy].
        #[arg(long, env = "AIPROXY_STATE_DIR", value_name = "DIR")]
        pub state_dir: Option<PathBuf>,

        /// Refresh access tokens this many seconds before they expire [default: 300].
        #[arg(long, env = "AIPROXY_TOKEN_REFRESH_MARGIN", value_name = "SECS")]
        pub token_refresh_margin: Option<u64>,

        /// Model catalog replacing the built-in one (format of config/models.toml) [default: built-in].
        #[arg(long, env = "AIPROXY_MODELS_FILE", value_name = "FILE")]
        pub models_file: Option<PathBuf>,

        /// Seconds between reads of each account's ListAvailableModels (the first at start-up),
        /// which the served model catalog follows; 0 turns the live catalog off, leaving the
        /// catalog file alone [default: 3600].
        #[arg(long, env = "AIPROXY_MODELS_REFRESH_INTERVAL", value_name = "SECS")]
        pub models_refresh_interval: Option<u64>,
    }
}

impl KiroArgs {
    /// Writes the settings that are set into `config` (which holds the defaults).
    pub fn apply(self, config: &mut Config) -> Result<(), ConfigError> {
        for (key, url) in [
            ("kiro_base_url", &self.kiro_base_url),
            ("kiro_refresh_url", &self.kiro_refresh_url),
            ("kiro_idc_refresh_url", &self.kiro_idc_refresh_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!("`{url}` is not an http:// or https:// URL"),
                    });
                }
            }
        }
        set(&mut config.kiro_mock_mode, self.kiro_mock_mode);
        set(
            &mut config.kiro_mock_event_delay,
            self.kiro_mock_event_delay_ms.map(Duration::from_millis),
        );
        config.kiro_oauth_creds_file = self
            .kiro_oauth_creds_file
            .or(config.kiro_oauth_creds_file.take());
        config.kiro_oauth_creds_base64 = self
            .kiro_oauth_creds_base64
            .filter(|b| !b.trim().is_empty())
            .map(crate::secret::Secret::new)
            .or(config.kiro_oauth_creds_base64.take());
        config.kiro_api_key = self
            .kiro_api_key
            .filter(|k| !k.trim().is_empty())
            .map(crate::secret::Secret::new)
            .or(config.kiro_api_key.take());
        config.kiro_region = self.kiro_region.or(config.kiro_region.take());
        config.kiro_base_url = self.kiro_base_url.or(config.kiro_base_url.take());
        config.kiro_refresh_url = self.kiro_refresh_url.or(config.kiro_refresh_url.take());
        config.kiro_idc_refresh_url = self
            .kiro_idc_refresh_url
            .or(config.kiro_idc_refresh_url.take());
        let max_connections = self.max_connections.map(u64::from);
        set(
            &mut config.max_connections,
            at_least_one("max_connections", max_connections)?.map(saturating_usize),
        );
        set(
            &mut config.request_timeout,
            at_least_one("request_timeout", self.request_timeout)?.map(Duration::from_secs),
        );
        set(&mut config.state_dir, self.state_dir);
        set(
            &mut config.token_refresh_margin,
            self.token_refresh_margin.map(Duration::from_secs),
        );
        config.kiro_ca_file = self.kiro_ca_file.or(config.kiro_ca_file.take());
        config.models_file = self.models_file.or(config.models_file.take());
        match self.models_refresh_interval {
            Some(0) => config.models_refresh_interval = None,
            Some(secs) => config.models_refresh_interval = Some(Duration::from_secs(secs)),
            None => {}
        }
        Ok(())
    }
}

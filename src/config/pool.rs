//! The model tier's settings (pool, retry, breakers): one struct that is both the flags
//! (flattened into [`super::Cli`]) and the config file's `[pool]` section, merged field by
//! field (a flag or variable beats the file) and resolved once.

use super::ConfigError;
use aiproxy_layers::model::health::HealthConfig;
use aiproxy_layers::model::pool::{Balance, PoolConfig};
use aiproxy_layers::model::retry::RetryConfig;
use clap::ValueEnum;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The default pool file name, looked for in the working directory.
pub const DEFAULT_POOL_FILE: &str = "provider_pools.json";

/// How the pool weighs load (`--pool-balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceName {
    /// Requests in flight.
    InFlight,
    /// Peak-EWMA of time to first event, times requests in flight.
    PeakEwma,
}

super::section! {
    /// Pool, retry and breaker flags, and the `[pool]` section of the config file.
    pub struct PoolArgs {
        /// Pool file of Kiro accounts (ours or AIClient-2-API's shape) [default: provider_pools.json in the working directory, when present].
        #[arg(long, env = "AIPROXY_PROVIDER_POOLS_FILE", value_name = "FILE")]
        pub provider_pools_file: Option<PathBuf>,
        /// Retries of a request that failed before any byte reached the client [default: 3].
        #[arg(long, env = "AIPROXY_MAX_RETRIES", value_name = "N")]
        pub max_retries: Option<u32>,
        /// Backoff base of retries, in milliseconds [default: 100].
        #[arg(long, env = "AIPROXY_RETRY_BASE_DELAY_MS", value_name = "MS")]
        pub retry_base_delay_ms: Option<u64>,
        /// Backoff cap of retries, and the longest Retry-After waited out, in milliseconds [default: 2000].
        #[arg(long, env = "AIPROXY_RETRY_MAX_DELAY_MS", value_name = "MS")]
        pub retry_max_delay_ms: Option<u64>,
        /// Load measure of the pool [default: in-flight].
        #[arg(long, env = "AIPROXY_POOL_BALANCE", value_enum)]
        pub pool_balance: Option<BalanceName>,
        /// Seconds a new or recovered account ramps up its share of traffic; 0 = no ramp [default: 60].
        #[arg(long, env = "AIPROXY_POOL_SLOW_START", value_name = "SECS")]
        pub pool_slow_start: Option<u64>,
        /// Percent of accounts that must be able to serve; below it, accounts whose breaker is open (Kiro's own faults) serve anyway (panic mode); 0 = off [default: 50].
        #[arg(long, env = "AIPROXY_POOL_PANIC_THRESHOLD", value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
        pub pool_panic_threshold: Option<u8>,
        /// Consecutive failures that open an account's breaker [default: 5].
        #[arg(long, env = "AIPROXY_BREAKER_FAILURES", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        pub breaker_failures: Option<u32>,
        /// Seconds an opened breaker waits before its trial request (doubles per failed trial) [default: 10].
        #[arg(long, env = "AIPROXY_BREAKER_OPEN", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub breaker_open: Option<u64>,
        /// Cap of that doubling, in seconds [default: 600].
        #[arg(long, env = "AIPROXY_BREAKER_OPEN_MAX", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub breaker_open_max: Option<u64>,
        /// Cooldown after Kiro's "suspicious activity" 429, in seconds [default: 3600].
        #[arg(long, env = "AIPROXY_SUSPICIOUS_COOLDOWN", value_name = "SECS")]
        pub suspicious_cooldown: Option<u64>,
        /// Cooldown after a short-window limit ("5-minute credit limit"), in seconds [default: 300].
        #[arg(long, env = "AIPROXY_SHORT_WINDOW_COOLDOWN", value_name = "SECS")]
        pub short_window_cooldown: Option<u64>,
        /// Rest after a 403 suspension or an unexplained 403 before the account is tried again, in seconds [default: 3600].
        #[arg(long, env = "AIPROXY_SUSPENDED_COOLDOWN", value_name = "SECS")]
        pub suspended_cooldown: Option<u64>,
        /// Cooldown after any other 429 without Retry-After, in seconds (+ up to 25 % jitter) [default: 30].
        #[arg(long, env = "AIPROXY_RATE_LIMIT_COOLDOWN", value_name = "SECS")]
        pub rate_limit_cooldown: Option<u64>,
        /// Accounts that may share one egress proxy (0 = no cap) [default: 0 (no cap)].
        #[arg(long, env = "AIPROXY_MAX_ACCOUNTS_PER_EGRESS", value_name = "N")]
        pub max_accounts_per_egress: Option<usize>,
        /// Seconds between active health probes of every account (token and getUsageLimits); 0 = off [default: 60].
        #[arg(long, env = "AIPROXY_HEALTH_CHECK_INTERVAL", value_name = "SECS")]
        pub health_check_interval: Option<u64>,
    }
}

/// The resolved model-tier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSettings {
    /// The pool file, when one is configured or `provider_pools.json` exists.
    pub file: Option<PathBuf>,
    /// Retry.
    pub retry: RetryConfig,
    /// Pool and breakers.
    pub pool: PoolConfig,
    /// Active health probe period (`None`: off).
    pub health_check_interval: Option<Duration>,
    /// Accounts that may share one egress proxy (`None`: no cap).
    pub max_accounts_per_egress: Option<usize>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            file: None,
            retry: RetryConfig::default(),
            pool: PoolConfig::default(),
            health_check_interval: Some(Duration::from_secs(60)),
            max_accounts_per_egress: None,
        }
    }
}

impl PoolArgs {
    /// The settings, with defaults for what is unset.
    pub fn resolve(self) -> Result<PoolSettings, ConfigError> {
        let d = PoolSettings::default();
        let health = &d.pool.health;
        let secs =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        let retry = RetryConfig {
            max_retries: self.max_retries.unwrap_or(d.retry.max_retries),
            base_delay: ms(self.retry_base_delay_ms, d.retry.base_delay),
            max_delay: ms(self.retry_max_delay_ms, d.retry.max_delay),
        };
        if retry.base_delay > retry.max_delay {
            return Err(ConfigError::Invalid {
                key: "retry_base_delay_ms",
                message: format!(
                    "{} ms is more than retry_max_delay_ms ({} ms)",
                    retry.base_delay.as_millis(),
                    retry.max_delay.as_millis()
                ),
            });
        }
        let health = HealthConfig {
            failure_threshold: self
                .breaker_failures
                .unwrap_or(health.failure_threshold)
                .max(1),
            open_base: secs(self.breaker_open, health.open_base),
            open_max: secs(self.breaker_open_max, health.open_max),
            suspicious_cooldown: secs(self.suspicious_cooldown, health.suspicious_cooldown),
            short_window_cooldown: secs(self.short_window_cooldown, health.short_window_cooldown),
            default_cooldown: secs(self.rate_limit_cooldown, health.default_cooldown),
            suspended_cooldown: secs(self.suspended_cooldown, health.suspended_cooldown),
        };
        if health.open_base > health.open_max {
            return Err(ConfigError::Invalid {
                key: "breaker_open",
                message: "is more than breaker_open_max".into(),
            });
        }
        let file = self.provider_pools_file.or_else(|| {
            let default = PathBuf::from(crate::config::pool::DEFAULT_POOL_FILE);
            default.exists().then_some(default)
        });
        Ok(PoolSettings {
            file,
            retry,
            pool: PoolConfig {
                health: Arc::new(health),
                slow_start: secs(self.pool_slow_start, d.pool.slow_start),
                balance: match self.pool_balance {
                    Some(BalanceName::PeakEwma) => Balance::PeakEwma,
                    Some(BalanceName::InFlight) | None => Balance::InFlight,
                },
                panic_threshold: match self.pool_panic_threshold {
                    Some(percent) if percent <= 100 => f64::from(percent) / 100.0,
                    Some(percent) => {
                        return Err(ConfigError::Invalid {
                            key: "pool_panic_threshold",
                            message: format!("{percent} is not a percentage (0 to 100)"),
                        })
                    }
                    None => d.pool.panic_threshold,
                },
            },
            health_check_interval: match self.health_check_interval {
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
                None => d.health_check_interval,
            },
            max_accounts_per_egress: self.max_accounts_per_egress.filter(|n| *n > 0),
        })
    }
}

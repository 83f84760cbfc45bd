//! Shared state for several replicas: one struct that is both the flags (flattened into
//! [`super::Cli`]) and the config file's `[redis]` section, merged field by field (a flag or
//! variable beats the file) and resolved once.

use super::ConfigError;
use crate::secret::Secret;
use std::time::Duration;

super::section! {
    /// Redis flags, and the `[redis]` section of the config file.
    pub struct RedisArgs {
        /// Share state between replicas through this Redis (or Valkey): `redis://` or
        /// `rediss://` (TLS), with `user:password@` when it needs them; without it, every
        /// replica keeps its own state [default: none].
        #[arg(long, env = "AIPROXY_REDIS_URL", value_name = "URL")]
        #[serde(rename = "url")]
        pub redis_url: Option<String>,
        /// Prefix of every key aiproxy writes, so replicas of different deployments can share
        /// one Redis [default: aiproxy:].
        #[arg(long, env = "AIPROXY_REDIS_PREFIX", value_name = "PREFIX")]
        #[serde(rename = "prefix")]
        pub redis_prefix: Option<String>,
        /// When Redis is down or slow: `open` decides on this replica's own state (warns
        /// once, counts it in `redis.fallbacks`, reconnects in the background); `closed`
        /// answers 503 [default: open].
        #[arg(long, env = "AIPROXY_REDIS_FAILURE_MODE", value_enum, value_name = "MODE")]
        #[serde(rename = "failure_mode")]
        pub redis_failure_mode: Option<FailureMode>,
        /// How long a Redis call on the request path may take before the failure mode
        /// applies, in milliseconds [default: 250].
        #[arg(long, env = "AIPROXY_REDIS_TIMEOUT_MS", value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
        #[serde(rename = "timeout_ms")]
        pub redis_timeout_ms: Option<u64>,
    }
}

/// What a replica does when Redis cannot answer in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Decide on this replica's own state.
    Open,
    /// Refuse with a 503.
    Closed,
}

impl FailureMode {
    /// The word the flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// The resolved Redis settings (`None` in [`super::Config`]: no Redis).
#[derive(Clone, Debug, PartialEq)]
pub struct RedisSettings {
    /// The URL, credentials included (hence a `Secret`: never printed).
    pub url: Secret,
    /// Where the server is, without credentials: what logs and `/health` show.
    pub endpoint: String,
    /// Key prefix.
    pub prefix: String,
    /// What to do when Redis fails.
    pub failure_mode: FailureMode,
    /// Deadline of a call on the request path.
    pub timeout: Duration,
}

impl RedisArgs {
    /// The settings, or `None` without a URL.
    pub fn resolve(self) -> Result<Option<RedisSettings>, ConfigError> {
        let Some(url) = self.redis_url.filter(|u| !u.trim().is_empty()) else {
            // Settings of a Redis that is not there would be ignored: refused instead.
            let stray = [
                ("redis_prefix", self.redis_prefix.is_some()),
                ("redis_failure_mode", self.redis_failure_mode.is_some()),
                ("redis_timeout_ms", self.redis_timeout_ms.is_some()),
            ];
            if let Some((key, _)) = stray.into_iter().find(|(_, set)| *set) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "is set but --redis-url is not; without Redis every replica keeps \
                              its own state: give --redis-url (AIPROXY_REDIS_URL) or drop it"
                        .into(),
                });
            }
            return Ok(None);
        };
        let endpoint = endpoint(&url)?;
        Ok(Some(RedisSettings {
            url: Secret::new(url),
            endpoint,
            prefix: self.redis_prefix.unwrap_or_else(|| "aiproxy:".into()),
            failure_mode: self.redis_failure_mode.unwrap_or(FailureMode::Open),
            timeout: Duration::from_millis(self.redis_timeout_ms.unwrap_or(250)),
        }))
    }
}

/// `scheme://host:port/db` of a Redis URL, its user and password left out; an error that
/// says what a URL must look like (without repeating it: it may hold a password).
fn endpoint(url: &str) -> Result<String, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid {
        key: "redis_url",
        message: format!(
            "{why}; give redis://[user:password@]host[:port][/db] or rediss:// for TLS"
        ),
    };
    let parsed: http::Uri = url.parse().map_err(|_| invalid("it is not a URL"))?;
    let scheme = parsed.scheme_str().unwrap_or_default();
    if scheme != "redis" && scheme != "rediss" {
        return Err(invalid("its scheme is not redis or rediss"));
    }
    let host = parsed.host().ok_or_else(|| invalid("it names no host"))?;
    let port = parsed.port_u16().unwrap_or(6379);
    Ok(format!(
        "{scheme}://{host}:{port}{}",
        parsed.path().trim_end_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(url: &str) -> Result<Option<RedisSettings>, ConfigError> {
        RedisArgs {
            redis_url: Some(url.into()),
            ..RedisArgs::default()
        }
        .resolve()
    }

    #[test]
    fn the_endpoint_shows_no_credentials() {
        let settings = resolve("redis://user:hunter2@cache.internal:6380/2")
            .unwrap()
            .unwrap();
        assert_eq!(settings.endpoint, "redis://cache.internal:6380/2");
        assert_eq!(settings.prefix, "aiproxy:");
        assert_eq!(settings.failure_mode, FailureMode::Open);
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        for url in [
            "http://user:hunter2@x",
            "redis://user:hunter2@",
            "not a url",
        ] {
            let error = resolve(url).unwrap_err().to_string();
            assert!(error.contains("redis://"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        assert_eq!(RedisArgs::default().resolve().unwrap(), None);
    }

    #[test]
    fn redis_settings_without_a_url_are_refused_not_ignored() {
        let stray = RedisArgs {
            redis_failure_mode: Some(FailureMode::Closed),
            ..RedisArgs::default()
        };
        let error = stray.resolve().unwrap_err().to_string();
        assert!(error.contains("redis_failure_mode"), "{error}");
        assert!(error.contains("--redis-url"), "{error}");
        let settings = RedisArgs {
            redis_url: Some("rediss://cache:6380".into()),
            redis_prefix: Some("team-a:".into()),
            redis_failure_mode: Some(FailureMode::Closed),
            redis_timeout_ms: Some(40),
        }
        .resolve()
        .unwrap()
        .unwrap();
        assert_eq!(settings.endpoint, "rediss://cache:6380");
        assert_eq!(settings.prefix, "team-a:");
        assert_eq!(settings.failure_mode, FailureMode::Closed);
        assert_eq!(settings.timeout, Duration::from_millis(40));
    }
}

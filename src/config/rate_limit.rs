//! Client rate limits: the flags (flattened into [`super::Cli`]) and the config file's
//! `[rate_limit]` section give the default for every API key; an `api_keys` entry written as
//! a table (`{ key = "...", rpm = 10 }`) overrides it for that key.

use super::ConfigError;
use aiproxy_layers::rate_limit::{Limits, RequestQuota};
use serde::Deserialize;
use std::num::NonZeroU32;

super::section! {
    /// Rate-limit flags, and the `[rate_limit]` section of the config file.
    pub struct RateLimitArgs {
        /// Requests per minute each API key may send (0: no limit) [default: no limit].
        #[arg(long, env = "AIPROXY_RATE_LIMIT_RPM", value_name = "N")]
        #[serde(rename = "rpm")]
        pub rate_limit_rpm: Option<u32>,
        /// Requests each API key may send at once, within its per-minute limit [default: the
        /// per-minute limit].
        #[arg(long, env = "AIPROXY_RATE_LIMIT_BURST", value_name = "N")]
        #[serde(rename = "burst")]
        pub rate_limit_burst: Option<u32>,
        /// Tokens (prompt and answer) per minute each API key may use; charged with the local
        /// estimate at admission and corrected with the real usage when the answer ends (0: no
        /// limit) [default: no limit].
        #[arg(long, env = "AIPROXY_RATE_LIMIT_TPM", value_name = "N")]
        #[serde(rename = "tpm")]
        pub rate_limit_tpm: Option<u32>,
    }
}

impl RateLimitArgs {
    /// The default limits of every key.
    pub fn resolve(&self) -> Result<Limits, ConfigError> {
        limits(
            "rate_limit_burst",
            self.rate_limit_rpm,
            self.rate_limit_burst,
            self.rate_limit_tpm,
        )
    }
}

/// The resolved client limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateLimitSettings {
    /// Every key's limits, unless overridden.
    pub default: Limits,
    /// Overrides by client label (`key-1`, `key-2`, ... in the order of `api_keys`).
    pub keys: Vec<(String, Limits)>,
}

impl RateLimitSettings {
    /// True when no key is limited (the layer stays out of the pipeline).
    pub fn is_unlimited(&self) -> bool {
        self.default.is_unlimited() && self.keys.iter().all(|(_, l)| l.is_unlimited())
    }
}

/// One `api_keys` entry of the config file: the key, or a table with its own limits.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "an API key string, or a table such as { key = \"sk-...\", rpm = 60, burst = 10, tpm = 100000 }"
)]
pub enum ApiKeyEntry {
    /// Just the key.
    Key(String),
    /// The key and its limits.
    WithLimits(KeyWithLimits),
}

/// An `api_keys` table entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWithLimits {
    /// The key.
    pub key: String,
    /// Requests per minute (0: none) [default: the `[rate_limit]` default].
    pub rpm: Option<u32>,
    /// Requests at once [default: its `rpm`, or the default burst when `rpm` is not set here].
    pub burst: Option<u32>,
    /// Tokens per minute (0: none) [default: the `[rate_limit]` default].
    pub tpm: Option<u32>,
}

impl ApiKeyEntry {
    /// The key.
    pub fn key(&self) -> &str {
        match self {
            Self::Key(key) | Self::WithLimits(KeyWithLimits { key, .. }) => key,
        }
    }

    /// This key's limits over `default`, when the entry sets any.
    pub fn limits(&self, default: &RateLimitArgs) -> Result<Option<Limits>, ConfigError> {
        let Self::WithLimits(entry) = self else {
            return Ok(None);
        };
        if entry.rpm.is_none() && entry.burst.is_none() && entry.tpm.is_none() {
            return Ok(None);
        }
        let burst = entry.burst.or(entry
            .rpm
            .is_none()
            .then_some(default.rate_limit_burst)
            .flatten());
        limits(
            "api_keys",
            entry.rpm.or(default.rate_limit_rpm),
            burst,
            entry.tpm.or(default.rate_limit_tpm),
        )
        .map(Some)
    }
}

fn limits(
    key: &'static str,
    rpm: Option<u32>,
    burst: Option<u32>,
    tpm: Option<u32>,
) -> Result<Limits, ConfigError> {
    let per_minute = rpm.and_then(NonZeroU32::new);
    let requests = match (per_minute, burst) {
        (None, Some(_)) => {
            return Err(ConfigError::Invalid {
                key,
                message: "a burst needs a requests-per-minute limit (--rate-limit-rpm, or `rpm` \
                          for the key)"
                    .into(),
            })
        }
        (None, None) => None,
        (Some(per_minute), burst) => Some(RequestQuota {
            per_minute,
            burst: match burst {
                None => per_minute,
                Some(burst) => NonZeroU32::new(burst).ok_or_else(|| ConfigError::Invalid {
                    key,
                    message: "the burst must be at least 1 (leave it out for a minute's worth)"
                        .into(),
                })?,
            },
        }),
    };
    Ok(Limits {
        requests,
        tokens_per_minute: tpm.and_then(NonZeroU32::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rpm: Option<u32>, burst: Option<u32>, tpm: Option<u32>) -> RateLimitArgs {
        RateLimitArgs {
            rate_limit_rpm: rpm,
            rate_limit_burst: burst,
            rate_limit_tpm: tpm,
        }
    }

    fn quota(per_minute: u32, burst: u32) -> Option<RequestQuota> {
        Some(RequestQuota {
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn the_burst_defaults_to_a_minutes_worth_and_zero_means_no_limit() {
        let limits = args(Some(60), None, Some(0)).resolve().unwrap();
        assert_eq!(limits.requests, quota(60, 60));
        assert_eq!(limits.tokens_per_minute, None);
        assert!(args(None, None, None).resolve().unwrap().is_unlimited());
        assert!(args(None, Some(5), None).resolve().is_err());
        assert!(args(Some(5), Some(0), None).resolve().is_err());
    }

    #[test]
    fn a_key_table_overrides_field_by_field() {
        let default = args(Some(60), Some(10), Some(1000));
        let entry: ApiKeyEntry = toml::from_str::<toml::Table>("k = { key = \"sk-b\", rpm = 5 }")
            .unwrap()["k"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(entry.key(), "sk-b");
        let limits = entry.limits(&default).unwrap().unwrap();
        // Its own rpm brings its own burst; the token limit is inherited.
        assert_eq!(limits.requests, quota(5, 5));
        assert_eq!(limits.tokens_per_minute, NonZeroU32::new(1000));
        let open: ApiKeyEntry =
            toml::from_str::<toml::Table>("k = { key = \"x\", rpm = 0, tpm = 0 }").unwrap()["k"]
                .clone()
                .try_into()
                .unwrap();
        assert!(open.limits(&default).unwrap().unwrap().is_unlimited());
        assert_eq!(ApiKeyEntry::Key("x".into()).limits(&default).unwrap(), None);
    }
}

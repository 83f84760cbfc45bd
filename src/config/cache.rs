//! The answer cache's settings: one struct that is both the flags (flattened into
//! [`super::Cli`]) and the config file's `[cache]` section, merged field by field (a flag or
//! variable beats the file) and resolved once.

use super::ConfigError;
use clap::builder::BoolishValueParser;
use std::time::Duration;

super::section! {
    /// Cache flags, and the `[cache]` section of the config file.
    pub struct CacheArgs {
        /// Answer identical requests of one API key from memory (the product guide's "启用缓存") [default: false].
        #[arg(long, env = "AIPROXY_CACHE_ENABLED", num_args = 0..=1, require_equals = true,
              default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
        #[serde(rename = "enabled")]
        pub cache_enabled: Option<bool>,
        /// How long a cached answer is served, in seconds [default: 3600].
        #[arg(long, env = "AIPROXY_CACHE_TTL", value_name = "SECS")]
        #[serde(rename = "ttl")]
        pub cache_ttl: Option<u64>,
        /// Bytes of answers the cache may hold [default: 268435456 (256 MiB)].
        #[arg(long, env = "AIPROXY_CACHE_MAX_BYTES", value_name = "BYTES")]
        #[serde(rename = "max_bytes")]
        pub cache_max_bytes: Option<u64>,
    }
}

/// The resolved cache settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    /// Whether the cache layer is in the pipeline.
    pub enabled: bool,
    /// Time to live of an entry.
    pub ttl: Duration,
    /// Byte budget.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: Duration::from_secs(3600),
            max_bytes: 256 << 20,
        }
    }
}

impl CacheArgs {
    /// The settings, with defaults for what is unset.
    pub fn resolve(self) -> Result<CacheSettings, ConfigError> {
        let d = CacheSettings::default();
        let settings = CacheSettings {
            enabled: self.cache_enabled.unwrap_or(d.enabled),
            ttl: self.cache_ttl.map_or(d.ttl, Duration::from_secs),
            max_bytes: self.cache_max_bytes.unwrap_or(d.max_bytes),
        };
        if settings.ttl.is_zero() {
            return Err(ConfigError::Invalid {
                key: "cache_ttl",
                message: "must be at least 1 second (leave the cache off instead)".into(),
            });
        }
        if settings.max_bytes < 1 << 16 {
            return Err(ConfigError::Invalid {
                key: "cache_max_bytes",
                message: format!(
                    "{} bytes is too small to hold an answer; give at least 65536",
                    settings.max_bytes
                ),
            });
        }
        Ok(settings)
    }
}

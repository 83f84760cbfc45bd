//! The server's settings (listener, client limits, logs, the Responses store, admin
//! endpoints): one struct that is both the flags (flattened into [`super::Cli`]) and the
//! config file's `[server]` section, merged field by field (a flag or variable beats the
//! file) and resolved once.

use super::{at_least_one, saturating_usize, seconds, set, Config, ConfigError, LogFormat};
use clap::builder::BoolishValueParser;
use std::time::Duration;

super::section! {
    /// Server flags, and the `[server]` section of the config file.
    pub struct ServerArgs {
        /// Address to listen on [default: 127.0.0.1].
        #[arg(long, env = "AIPROXY_HOST")]
        pub host: Option<String>,

        /// Port to listen on; 0 picks a free one [default: 3000].
        #[arg(long, env = "AIPROXY_PORT")]
        pub port: Option<u16>,

        /// A second port (on the same address) that serves only `GET /metrics`, for a
        /// Prometheus server on an internal network; 0 picks a free one [default: none].
        #[arg(long, env = "AIPROXY_METRICS_PORT")]
        pub metrics_port: Option<u16>,

        /// Put /loadbalancer/instances and /metrics behind the API key (for operators who expose the port) [default: false].
        #[arg(long, env = "AIPROXY_ADMIN_REQUIRE_KEY", num_args = 0..=1, require_equals = true,
              default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
        pub admin_require_key: Option<bool>,

        /// The operator key of the console at /console (on the API port, and on the metrics
        /// port when that is set); not a client API key, so a client cannot steer the pool;
        /// without it the console is off [default: none].
        #[arg(long, env = "AIPROXY_ADMIN_KEY", value_name = "KEY")]
        pub admin_key: Option<String>,

        /// Let the console's request log keep each request's prompt text (off: it shows
        /// model, account, status, tokens and credits only) [default: false].
        #[arg(long, env = "AIPROXY_CONSOLE_LOG_BODIES", num_args = 0..=1, require_equals = true,
              default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
        pub console_log_bodies: Option<bool>,

        /// Log format, text or json; levels come from RUST_LOG (info unless it says otherwise) [default: text].
        #[arg(long, env = "AIPROXY_LOG_FORMAT", value_enum)]
        pub log_format: Option<LogFormat>,

        /// Largest request body accepted, in bytes [default: 8388608].
        #[arg(long, env = "AIPROXY_MAX_BODY_BYTES", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        pub max_body_bytes: Option<u64>,

        /// How long stored Responses API responses are kept, in seconds [default: 3600].
        #[arg(long, env = "AIPROXY_RESPONSES_STORE_TTL", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub responses_store_ttl: Option<u64>,

        /// Memory bound of the stored Responses API responses, in bytes [default: 268435456].
        #[arg(long, env = "AIPROXY_RESPONSES_STORE_MAX_BYTES", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        pub responses_store_max_bytes: Option<u64>,

        /// Seconds in-flight requests and streams get to finish after SIGINT/SIGTERM [default: 30].
        #[arg(long, env = "AIPROXY_SHUTDOWN_TIMEOUT", value_name = "SECS")]
        pub shutdown_timeout: Option<u64>,

        /// Seconds a new client connection may take to send its first request's headers [default: 10].
        #[arg(long, env = "AIPROXY_HEADER_READ_TIMEOUT", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub header_read_timeout: Option<u64>,

        /// Seconds a request body may pause between chunks [default: 30].
        #[arg(long, env = "AIPROXY_BODY_READ_TIMEOUT", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub body_read_timeout: Option<u64>,

        /// Seconds a keep-alive client connection may sit idle between requests [default: 60].
        #[arg(long, env = "AIPROXY_IDLE_TIMEOUT", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        pub idle_timeout: Option<u64>,

        /// Open client connections at most; at the cap, silent and idle connections are closed
        /// to make room [default: the descriptor limit less 128 and --max-connections, at least 16].
        #[arg(long, env = "AIPROXY_MAX_CLIENT_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        pub max_client_connections: Option<u64>,
    }
}

impl ServerArgs {
    /// Writes the settings that are set into `config` (which holds the defaults).
    pub fn apply(self, config: &mut Config) -> Result<(), ConfigError> {
        set(&mut config.host, self.host);
        set(&mut config.port, self.port);
        config.metrics_port = self.metrics_port.or(config.metrics_port);
        set(&mut config.admin_require_key, self.admin_require_key);
        config.admin_key = self
            .admin_key
            .filter(|k| !k.trim().is_empty())
            .map(crate::secret::Secret::new)
            .or(config.admin_key.take());
        set(&mut config.console_log_bodies, self.console_log_bodies);
        set(&mut config.log_format, self.log_format);
        set(
            &mut config.max_body_bytes,
            at_least_one("max_body_bytes", self.max_body_bytes)?.map(saturating_usize),
        );
        set(
            &mut config.responses_store_ttl,
            self.responses_store_ttl.map(Duration::from_secs),
        );
        set(
            &mut config.responses_store_max_bytes,
            self.responses_store_max_bytes,
        );
        set(
            &mut config.shutdown_timeout,
            self.shutdown_timeout.map(Duration::from_secs),
        );
        config.header_read_timeout = seconds(
            "header_read_timeout",
            self.header_read_timeout,
            config.header_read_timeout,
        )?;
        config.body_read_timeout = seconds(
            "body_read_timeout",
            self.body_read_timeout,
            config.body_read_timeout,
        )?;
        config.idle_timeout = seconds("idle_timeout", self.idle_timeout, config.idle_timeout)?;
        config.max_client_connections =
            at_least_one("max_client_connections", self.max_client_connections)?
                .map(saturating_usize)
                .or(config.max_client_connections);
        Ok(())
    }
}

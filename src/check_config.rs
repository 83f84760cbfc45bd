//! `aiproxy check-config`: resolves the configuration (defaults, file, environment, flags)
//! and builds the accounts of the pool file exactly as `serve` does, without listening and
//! without calling Kiro, then reports what it resolved (secrets only as set / not set) and
//! every problem it met, each naming its file and field. Operators run it before a reload;
//! CI runs it on a deployment's files.

use crate::config::{Cli, Config};
use crate::pipeline;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What a check found: the report to print, and whether there were problems.
#[derive(Debug)]
pub struct Report {
    /// Human-readable lines, ending with the problems (or `no problems`).
    pub text: String,
    /// Whether every step went through.
    pub ok: bool,
}

/// Checks what `cli` (already parsed, with its environment) resolves to.
pub fn check(cli: &Cli) -> Report {
    let mut text = String::new();
    let mut problems = Vec::new();
    let source = cli
        .config
        .as_deref()
        .map_or("none".into(), |path| path.display().to_string());
    let _ = writeln!(text, "configuration file: {source}");
    match Config::resolve(cli) {
        Err(error) => problems.push(error.to_string()),
        Ok(config) => {
            describe(&config, &mut text);
            accounts(&config, &mut text, &mut problems);
        }
    }
    if problems.is_empty() {
        text.push_str("no problems\n");
    }
    for problem in &problems {
        let _ = writeln!(text, "problem: {problem}");
    }
    Report {
        text,
        ok: problems.is_empty(),
    }
}

/// Builds the accounts as `serve` does and lists them; every broken entry of the pool file
/// is a problem of its own (a build stops at the first). Mock mode, like `serve`, does not
/// read the pool file.
fn accounts(config: &Config, text: &mut String, problems: &mut Vec<String>) {
    if let Some(file) = config.pool.file.as_ref().filter(|_| !config.kiro_mock_mode) {
        let broken = crate::kiro::accounts::pool_file::problems(file);
        if !broken.is_empty() {
            problems.extend(broken.iter().map(ToString::to_string));
            return;
        }
    }
    let accounts = match pipeline::build_with_accounts(config) {
        Ok(built) => built.accounts,
        Err(error) => return problems.push(error.to_string()),
    };
    let _ = writeln!(text, "accounts ({}):", accounts.mode());
    let live = accounts.live();
    let live = live.read().unwrap_or_else(|e| e.into_inner());
    for view in accounts.pool().views() {
        let account = live.iter().find(|a| a.name() == &*view.spec.name);
        let _ = writeln!(
            text,
            "  {}: {}, weight {}, at most {} at once{}",
            view.spec.name,
            view.health.state.as_str(),
            view.spec.weight,
            view.spec.max_concurrency,
            account.map_or(String::new(), |a| token_line(&a.status())),
        );
    }
}

/// `, credentials F, token valid for N s` (or expired, or the reason it is out).
fn token_line(status: &crate::kiro::auth::account::AccountStatus) -> String {
    let token = match status.token_expires_at {
        None => "no access token yet (refreshed at first use)".into(),
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(left) => format!("access token valid for {}", seconds(left)),
            Err(_) => "access token expired (refreshed at first use)".into(),
        },
    };
    match status.disabled {
        Some(reason) => format!(", credentials {}, out: {reason}", status.format),
        None => format!(", credentials {}, {token}", status.format),
    }
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

fn set(secret: bool) -> &'static str {
    if secret {
        "set"
    } else {
        "not set"
    }
}

fn path(path: Option<&Path>) -> String {
    path.map_or("none".into(), |p| p.display().to_string())
}

/// The resolved settings, one per line, secrets as set / not set.
fn describe(config: &Config, text: &mut String) {
    let lines = [
        ("model_provider", config.model_provider.clone()),
        (
            "api_keys",
            format!(
                "{} ({})",
                set(!config.api_keys.is_empty()),
                config.api_keys.len()
            ),
        ),
        (
            "cors_allow_origin",
            if config.cors_allow_origins.is_empty() {
                "none".into()
            } else {
                config.cors_allow_origins.join(", ")
            },
        ),
        ("disable_layers", format!("{:?}", config.disabled_layers)),
        ("listen", format!("{}:{}", config.host, config.port)),
        (
            "metrics_port",
            config.metrics_port.map_or("none".into(), |p| p.to_string()),
        ),
        ("admin_require_key", config.admin_require_key.to_string()),
        (
            "log_format",
            format!("{:?}", config.log_format).to_lowercase(),
        ),
        ("max_body_bytes", config.max_body_bytes.to_string()),
        ("kiro_mock_mode", config.kiro_mock_mode.to_string()),
        (
            "kiro_oauth_creds_file",
            path(config.kiro_oauth_creds_file.as_deref()),
        ),
        (
            "kiro_oauth_creds_base64",
            set(config.kiro_oauth_creds_base64.is_some()).into(),
        ),
        ("kiro_api_key", set(config.kiro_api_key.is_some()).into()),
        (
            "kiro_region",
            config
                .kiro_region
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        (
            "kiro_base_url",
            config
                .kiro_base_url
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        ("kiro_ca_file", path(config.kiro_ca_file.as_deref())),
        ("max_connections", config.max_connections.to_string()),
        ("request_timeout", seconds(config.request_timeout)),
        ("state_dir", config.state_dir.display().to_string()),
        ("models_file", path(config.models_file.as_deref())),
        (
            "models_refresh_interval",
            config.models_refresh_interval.map_or("off".into(), seconds),
        ),
        ("provider_pools_file", path(config.pool.file.as_deref())),
        ("max_retries", config.pool.retry.max_retries.to_string()),
        (
            "pool_panic_threshold",
            format!("{} %", (config.pool.pool.panic_threshold * 100.0).round()),
        ),
        (
            "health_check_interval",
            config
                .pool
                .health_check_interval
                .map_or("off".into(), seconds),
        ),
        ("cache", config.cache.enabled.to_string()),
        (
            "rate_limit",
            if config.rate_limit.is_unlimited() {
                "none".into()
            } else {
                "set".into()
            },
        ),
        (
            // The endpoint only: the URL's password is never printed.
            "redis",
            config
                .redis
                .as_ref()
                .map_or("none (state kept per replica)".into(), |r| {
                    format!(
                        "{} (prefix {}, failure mode {}, timeout {} ms)",
                        r.endpoint,
                        r.prefix,
                        r.failure_mode.as_str(),
                        r.timeout.as_millis()
                    )
                }),
        ),
    ];
    for (key, value) in lines {
        let _ = writeln!(text, "  {key} = {value}");
    }
}

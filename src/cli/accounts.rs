//! `aiproxy accounts`: the pool's accounts as an operator wants to see them (state, why one is
//! out, credits), read from a running aiproxy's `/loadbalancer/instances`; when none answers,
//! from the pool file (what is configured, with each credential's kind and token expiry).

use crate::config::AccountsArgs;
use crate::kiro::accounts::pool_file;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Why the accounts could not be listed (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AccountsError(String);

/// Runs `aiproxy accounts`, printing to `out`.
pub async fn run(args: &AccountsArgs, out: &mut impl Write) -> Result<(), AccountsError> {
    let (source, rows, columns) = match from_running(args).await {
        Ok(rows) => (format!("aiproxy at {}", args.url), rows, RUNNING_COLUMNS),
        Err(Unreachable::Refused(reason)) => return Err(AccountsError(reason)),
        Err(Unreachable::Down(why)) => {
            let file = args
                .pool
                .clone()
                .unwrap_or_else(|| PathBuf::from(pool_file::DEFAULT_FILE));
            let rows = from_file(&file).map_err(|e| {
                AccountsError(format!(
                    "no aiproxy answers at {} ({why}), and the pool file cannot be read: {e}",
                    args.url
                ))
            })?;
            (
                format!(
                    "pool file {} (no aiproxy answers at {})",
                    file.display(),
                    args.url
                ),
                rows,
                FILE_COLUMNS,
            )
        }
    };
    if args.json {
        let _ = writeln!(out, "{}", json!({"source": source, "accounts": rows}));
        return Ok(());
    }
    let _ = writeln!(out, "Accounts of the {source}:");
    print_table(out, &rows, columns);
    Ok(())
}

/// The table's columns for a running aiproxy, in order.
const RUNNING_COLUMNS: &[&str] = &[
    "name",
    "state",
    "reason",
    "until",
    "in_flight",
    "requests",
    "errors",
    "credits_spent",
    "credits_used",
    "credits_limit",
    "credits_reset",
];
/// The table's columns for the pool file, in order.
const FILE_COLUMNS: &[&str] = &["name", "state", "reason", "format", "token_expires_at"];

enum Unreachable {
    /// Nothing listens (or it does not speak HTTP): read the files instead.
    Down(String),
    /// It answered, but refused (a key is needed): say so rather than show stale files.
    Refused(String),
}

async fn from_running(args: &AccountsArgs) -> Result<Vec<Value>, Unreachable> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Unreachable::Down(e.to_string()))?;
    let mut request = client.get(format!(
        "{}/loadbalancer/instances",
        args.url.trim_end_matches('/')
    ));
    // The server's AIPROXY_API_KEY may list several keys (comma-separated): any one opens it.
    if let Some(key) = args.api_key.as_deref().and_then(|k| k.split(',').next()) {
        request = request.bearer_auth(key.trim());
    }
    let response = request
        .send()
        .await
        .map_err(|e| Unreachable::Down(crate::kiro::auth::account::describe_reqwest(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Unreachable::Refused(format!(
            "aiproxy at {} refused the listing ({status}): it puts /loadbalancer/instances behind \
             the API key; pass it with --api-key or AIPROXY_API_KEY",
            args.url
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Unreachable::Down(e.to_string()))?;
    let list: Vec<Value> = serde_json::from_slice(&bytes)
        .map_err(|_| Unreachable::Down(format!("{status}, not aiproxy's instance list")))?;
    Ok(list
        .iter()
        .map(|instance| {
            let usage = &instance["usage"];
            json!({
                "name": instance["name"],
                "state": instance["state"],
                "reason": instance["reason"],
                "until": instance["cooldown_until"],
                "in_flight": instance["in_flight"],
                "requests": instance["requests"],
                "errors": instance["errors"],
                "credits_spent": instance["credits_spent"],
                "credits_used": usage["used"],
                "credits_limit": usage["limit"],
                "credits_reset": usage["resets_at"],
            })
        })
        .collect())
}

fn from_file(file: &std::path::Path) -> Result<Vec<Value>, pool_file::PoolFileError> {
    Ok(pool_file::load(file)?
        .into_iter()
        .map(|instance| {
            json!({
                "name": instance.name,
                "state": if instance.enabled { "configured" } else { "disabled" },
                "reason": (!instance.enabled).then_some("disabled_in_pool_file"),
                "format": instance.credentials.format.name(),
                "token_expires_at": instance.credentials.expires_at.map(crate::kiro::auth::credentials::format_time),
            })
        })
        .collect())
}

fn print_table(out: &mut impl Write, rows: &[Value], columns: &[&str]) {
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| text(&row[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(
        out,
        "{}",
        line(columns.iter().map(|c| c.to_ascii_uppercase()).collect())
    );
    for row in cells {
        let _ = writeln!(out, "{}", line(row));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no accounts)");
    }
}

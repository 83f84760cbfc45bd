//! The pool file (`--provider-pools-file`, default `provider_pools.json` in the working
//! directory when present): the Kiro accounts the pool serves from.
//!
//! Two shapes are read, in one file or side by side:
//! - ours, under the provider id `kiro-api`: `{name, credsFile | credsBase64 | credentials
//!   (the credential JSON inline), enabled, weight, maxConcurrency, requestsPerMinute,
//!   requestsBurst, region, baseUrl, refreshUrl, idcRefreshUrl, checkModel, egressProxy}`; unknown keys are errors (a typo must not
//!   silently drop a setting);
//! - AIClient-2-API's as is, under `claude-kiro-oauth`: `customName`,
//!   `KIRO_OAUTH_CREDS_FILE_PATH` / `KIRO_OAUTH_CREDS_BASE64`, `KIRO_BASE_URL`,
//!   `KIRO_REFRESH_URL`, `KIRO_REFRESH_IDC_URL`, `checkModelName`, `isDisabled`, `uuid`; its
//!   runtime fields (`isHealthy`, `usageCount`, `lastUsed`, ...) are ignored, since the pool
//!   keeps that state itself.
//!
//! Relative credential paths are looked up beside the pool file first, then in the working
//! directory (AIClient-2-API writes them relative to its own working directory). Errors
//! name the instance and the field.

use crate::kiro::auth::credentials::{self, CredentialError, Credentials, Source};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The default pool file name, looked for in the working directory.
pub use crate::config::pool::DEFAULT_POOL_FILE as DEFAULT_FILE;

/// One account of the pool file, resolved.
#[derive(Debug)]
pub struct Instance {
    /// Display name (unique).
    pub name: String,
    /// Hash of the instance's entry as written: a reload keeps an account whose entry did
    /// not change (its token state, its in-flight requests) and rebuilds one whose did.
    pub fingerprint: String,
    /// The credentials.
    pub credentials: Credentials,
    /// Switched off by the operator.
    pub enabled: bool,
    /// Relative share of traffic.
    pub weight: u32,
    /// Concurrency cap (`None`: the global `--max-connections`).
    pub max_concurrency: Option<usize>,
    /// The account's own request-rate guard (`requestsPerMinute`, `requestsBurst`).
    pub requests_per_minute: Option<aiproxy_layers::rate_limit::RequestQuota>,
    /// Region override.
    pub region: Option<String>,
    /// API base URL override.
    pub base_url: Option<String>,
    /// Social refresh URL override.
    pub refresh_url: Option<String>,
    /// IdC refresh URL override.
    pub idc_refresh_url: Option<String>,
    /// Model of the optional 1-token health probe.
    pub check_model: Option<String>,
    /// The proxy this account's traffic goes through.
    pub egress: Option<crate::kiro::transport::egress::EgressProxy>,
}

/// Why the pool file cannot be used: the file, the instance (`kiro-api[0] (name)`) when
/// one is at fault, and what is wrong, naming the field. Never a secret value.
#[derive(Debug, thiserror::Error)]
#[error("pool file {path}: {}{message}", at.as_deref().map(|a| format!("{a}: ")).unwrap_or_default())]
pub struct PoolFileError {
    /// The file.
    pub path: String,
    /// The instance at fault, if one is.
    pub at: Option<String>,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Ours {
    name: Option<String>,
    creds_file: Option<PathBuf>,
    creds_base64: Option<String>,
    credentials: Option<Map<String, Value>>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "one")]
    weight: u32,
    max_concurrency: Option<usize>,
    requests_per_minute: Option<u32>,
    requests_burst: Option<u32>,
    region: Option<String>,
    base_url: Option<String>,
    refresh_url: Option<String>,
    idc_refresh_url: Option<String>,
    check_model: Option<String>,
    egress_proxy: Option<String>,
}

#[derive(Deserialize)]
struct Theirs {
    #[serde(rename = "customName")]
    custom_name: Option<String>,
    uuid: Option<String>,
    #[serde(rename = "KIRO_OAUTH_CREDS_FILE_PATH")]
    creds_file: Option<PathBuf>,
    #[serde(rename = "KIRO_OAUTH_CREDS_BASE64")]
    creds_base64: Option<String>,
    #[serde(rename = "KIRO_BASE_URL")]
    base_url: Option<String>,
    #[serde(rename = "KIRO_REFRESH_URL")]
    refresh_url: Option<String>,
    #[serde(rename = "KIRO_REFRESH_IDC_URL")]
    idc_refresh_url: Option<String>,
    #[serde(rename = "checkModelName")]
    check_model: Option<String>,
    #[serde(rename = "isDisabled", default)]
    disabled: bool,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// The provider key of our own instances.
pub(crate) const OURS: &str = "kiro-api";
/// The provider key of AIClient-2-API's instances.
pub(crate) const THEIRS: &str = "claude-kiro-oauth";

/// The name an entry goes by: ours' `name`, AIClient-2-API's `customName` or `uuid`, else
/// `PROVIDER-N` by its position.
pub(crate) fn instance_name(provider: &str, index: usize, entry: &Value) -> String {
    let keys: &[&str] = if provider == OURS {
        &["name"]
    } else {
        &["customName", "uuid"]
    };
    keys.iter()
        .find_map(|key| entry.get(*key).and_then(Value::as_str))
        .map_or_else(|| format!("{provider}-{}", index + 1), str::to_owned)
}

/// Reads `path`; the first problem stops it.
pub fn load(path: &Path) -> Result<Vec<Instance>, PoolFileError> {
    let (instances, problems) = read(path);
    match problems.into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(instances),
    }
}

/// Every problem of `path`, each instance checked whatever the others hold
/// (`aiproxy check-config`).
pub fn problems(path: &Path) -> Vec<PoolFileError> {
    read(path).1
}

/// The instances that parse and the problems of the rest.
fn read(path: &Path) -> (Vec<Instance>, Vec<PoolFileError>) {
    let mut problems = Vec::new();
    let instances = match read_each(path, &mut problems) {
        Ok(instances) => instances,
        Err(problem) => {
            problems.push(problem);
            Vec::new()
        }
    };
    (instances, problems)
}

/// Reads `path`, pushing each instance's problem to `problems`; a problem of the file as a
/// whole is the error.
fn read_each(
    path: &Path,
    problems: &mut Vec<PoolFileError>,
) -> Result<Vec<Instance>, PoolFileError> {
    let shown = path.display().to_string();
    let file_error = |message: String| PoolFileError {
        path: shown.clone(),
        at: None,
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read it: {e}")))?;
    let root: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(root)) => root,
        Ok(_) => {
            return Err(file_error(
                "expected a JSON object keyed by provider id (`kiro-api`)".into(),
            ))
        }
        Err(e) => return Err(file_error(format!("not valid JSON ({e})"))),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut instances = Vec::new();
    for (provider, parse) in [(OURS, ours as Parser), (THEIRS, theirs as Parser)] {
        let Some(list) = root.get(provider) else {
            continue;
        };
        let Value::Array(list) = list else {
            return Err(file_error(format!(
                "`{provider}` must be an array of instances"
            )));
        };
        for (index, value) in list.iter().enumerate() {
            let at = At {
                path: &shown,
                provider,
                index,
                base,
            };
            let mut instance = match parse(value, &at) {
                Ok(instance) => instance,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            instance.fingerprint = blake3::hash(value.to_string().as_bytes())
                .to_hex()
                .to_string();
            instances.push(instance);
        }
    }
    if instances.is_empty() && problems.is_empty() {
        return Err(file_error(format!(
            "no instances: add an array under `{OURS}` (or AIClient-2-API's `{THEIRS}`)"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for instance in &instances {
        if !seen.insert(instance.name.as_str()) {
            problems.push(file_error(format!(
                "two instances are named `{}`; names must be unique",
                instance.name
            )));
        }
    }
    Ok(instances)
}

type Parser = fn(&Value, &At<'_>) -> Result<Instance, PoolFileError>;

struct At<'a> {
    path: &'a str,
    provider: &'static str,
    index: usize,
    base: &'a Path,
}

impl At<'_> {
    fn error(&self, name: Option<&str>, message: impl Into<String>) -> PoolFileError {
        PoolFileError {
            path: self.path.to_owned(),
            at: Some(format!(
                "{}[{}] ({})",
                self.provider,
                self.index,
                name.unwrap_or("unnamed")
            )),
            message: message.into(),
        }
    }

    /// Reads the one credential source an instance names.
    fn credentials(
        &self,
        name: &str,
        file: Option<&Path>,
        base64: Option<&str>,
        inline: Option<&Map<String, Value>>,
        fields: &[&str],
    ) -> Result<Credentials, PoolFileError> {
        let wrap = |error: CredentialError| self.error(Some(name), error.to_string());
        match (file, base64.filter(|b| !b.trim().is_empty()), inline) {
            (Some(file), None, None) => credentials::from_file(&self.resolve(file)).map_err(wrap),
            (None, Some(b64), None) => {
                credentials::from_base64(b64, "a base64 credential in the pool file").map_err(wrap)
            }
            (None, None, Some(object)) => {
                let source = Source::Base64 {
                    origin: "inline credentials in the pool file",
                };
                credentials::parse(object, source, None).map_err(wrap)
            }
            (None, None, None) => Err(self.error(
                Some(name),
                format!("no credentials: set one of `{}`", fields.join("`, `")),
            )),
            _ => Err(self.error(
                Some(name),
                format!("set only one of `{}`", fields.join("`, `")),
            )),
        }
    }

    fn resolve(&self, file: &Path) -> PathBuf {
        if file.is_absolute() {
            return file.to_owned();
        }
        let beside = self.base.join(file);
        if beside.exists() {
            beside
        } else {
            file.to_owned()
        }
    }
}

fn check_url(
    at: &At<'_>,
    name: &str,
    field: &str,
    url: &Option<String>,
) -> Result<(), PoolFileError> {
    match url {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => Err(at.error(
            Some(name),
            format!("`{field}` = `{url}` is not an http:// or https:// URL"),
        )),
        _ => Ok(()),
    }
}

/// The account's request-rate guard: `requestsPerMinute`, sent evenly (`requestsBurst`
/// at once, 1 unless set), so Kiro never sees a burst from one account.
fn guard(raw: &Ours) -> Result<Option<aiproxy_layers::rate_limit::RequestQuota>, &'static str> {
    use std::num::NonZeroU32;
    let Some(per_minute) = raw.requests_per_minute else {
        return match raw.requests_burst {
            Some(_) => Err("`requestsBurst` needs `requestsPerMinute`"),
            None => Ok(None),
        };
    };
    let per_minute = NonZeroU32::new(per_minute)
        .ok_or("`requestsPerMinute` must be at least 1 (leave it out for no guard)")?;
    let burst = NonZeroU32::new(raw.requests_burst.unwrap_or(1))
        .ok_or("`requestsBurst` must be at least 1")?;
    if burst > per_minute {
        return Err("`requestsBurst` cannot be larger than `requestsPerMinute`");
    }
    Ok(Some(aiproxy_layers::rate_limit::RequestQuota {
        per_minute,
        burst,
    }))
}

fn ours(value: &Value, at: &At<'_>) -> Result<Instance, PoolFileError> {
    let hint = value.get("name").and_then(Value::as_str);
    let raw: Ours =
        serde_json::from_value(value.clone()).map_err(|e| at.error(hint, e.to_string()))?;
    // Typed by serde (a `name` that is not a string is an error), named as the editors name it.
    let name = raw
        .name
        .clone()
        .unwrap_or_else(|| instance_name(at.provider, at.index, value));
    if raw.weight == 0 {
        return Err(at.error(Some(&name), "`weight` must be at least 1"));
    }
    if raw.max_concurrency == Some(0) {
        return Err(at.error(Some(&name), "`maxConcurrency` must be at least 1"));
    }
    let requests_per_minute = guard(&raw).map_err(|message| at.error(Some(&name), message))?;
    for (field, url) in [
        ("baseUrl", &raw.base_url),
        ("refreshUrl", &raw.refresh_url),
        ("idcRefreshUrl", &raw.idc_refresh_url),
    ] {
        check_url(at, &name, field, url)?;
    }
    let egress = raw
        .egress_proxy
        .as_deref()
        .map(crate::kiro::transport::egress::EgressProxy::parse)
        .transpose()
        .map_err(|e| at.error(Some(&name), format!("`egressProxy` {e}")))?;
    let credentials = at.credentials(
        &name,
        raw.creds_file.as_deref(),
        raw.creds_base64.as_deref(),
        raw.credentials.as_ref(),
        &["credsFile", "credsBase64", "credentials"],
    )?;
    Ok(Instance {
        name,
        fingerprint: String::new(),
        credentials,
        enabled: raw.enabled,
        weight: raw.weight,
        max_concurrency: raw.max_concurrency,
        requests_per_minute,
        region: raw.region,
        base_url: raw.base_url,
        refresh_url: raw.refresh_url,
        idc_refresh_url: raw.idc_refresh_url,
        check_model: raw.check_model,
        egress,
    })
}

fn theirs(value: &Value, at: &At<'_>) -> Result<Instance, PoolFileError> {
    let hint = value.get("customName").and_then(Value::as_str);
    let raw: Theirs =
        serde_json::from_value(value.clone()).map_err(|e| at.error(hint, e.to_string()))?;
    let name = raw
        .custom_name
        .clone()
        .or(raw.uuid.clone())
        .unwrap_or_else(|| instance_name(at.provider, at.index, value));
    for (field, url) in [
        ("KIRO_BASE_URL", &raw.base_url),
        ("KIRO_REFRESH_URL", &raw.refresh_url),
        ("KIRO_REFRESH_IDC_URL", &raw.idc_refresh_url),
    ] {
        check_url(at, &name, field, url)?;
    }
    let credentials = at.credentials(
        &name,
        raw.creds_file.as_deref(),
        raw.creds_base64.as_deref(),
        None,
        &["KIRO_OAUTH_CREDS_FILE_PATH", "KIRO_OAUTH_CREDS_BASE64"],
    )?;
    Ok(Instance {
        name,
        fingerprint: String::new(),
        credentials,
        enabled: !raw.disabled,
        weight: 1,
        max_concurrency: None,
        requests_per_minute: None,
        region: None,
        base_url: raw.base_url,
        refresh_url: raw.refresh_url,
        idc_refresh_url: raw.idc_refresh_url,
        check_model: raw.check_model,
        egress: None,
    })
}

#[cfg(test)]
mod tests;

//! `ListAvailableProfiles` (docs/kiro-protocol.md §14.2): the Kiro profiles an account may use,
//! asked of the API host (AWS JSON 1.0). The first profile of the account's region is the one
//! it uses, else the first listed.

use crate::kiro::auth::account::{describe_reqwest, AccessToken, LIST_PROFILES_TARGET};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    profiles: Vec<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    arn: String,
}

/// Why the profiles could not be listed (no secret in it).
#[derive(Debug)]
pub enum ListError {
    /// Kiro refused the access token (401/403): a refreshed one may do.
    Rejected,
    /// Anything else: the network, a 5xx, an answer that does not parse.
    Failed(String),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected => f.write_str("Kiro refused the access token"),
            Self::Failed(message) => f.write_str(message),
        }
    }
}

/// The profile ARN the account should use: `Ok(None)` when it has none.
pub async fn first(
    http: &reqwest::Client,
    api_base: &str,
    token: &AccessToken,
    timeout: Duration,
) -> Result<Option<String>, ListError> {
    let url = format!("{}/", api_base.trim_end_matches('/'));
    let mut request = http
        .post(&url)
        .bearer_auth(token.token.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amz-target", LIST_PROFILES_TARGET)
        .body(r#"{"maxResults":10}"#)
        .timeout(timeout);
    if let Some(kind) = token.token_type {
        request = request.header("tokentype", kind);
    }
    let failed = |e: reqwest::Error| ListError::Failed(describe_reqwest(&e));
    let response = request.send().await.map_err(failed)?;
    let status = response.status();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(ListError::Rejected);
    }
    if !status.is_success() {
        return Err(ListError::Failed(format!(
            "ListAvailableProfiles answered {status}"
        )));
    }
    let body = response.bytes().await.map_err(failed)?;
    let page: Page = serde_json::from_slice(&body).map_err(|e| {
        ListError::Failed(format!(
            "ListAvailableProfiles answered unexpected JSON ({e})"
        ))
    })?;
    let region = region_of(api_base);
    let arns: Vec<String> = page
        .profiles
        .into_iter()
        .map(|p| p.arn)
        .filter(|arn| !arn.is_empty())
        .collect();
    let in_region = region.and_then(|region| {
        arns.iter()
            .find(|arn| arn.contains(&format!(":{region}:")))
            .cloned()
    });
    Ok(in_region.or_else(|| arns.into_iter().next()))
}

/// The region of a `https://q.{region}.amazonaws.com` API base.
fn region_of(api_base: &str) -> Option<&str> {
    let host = api_base.split("://").nth(1)?.split(['/', ':']).next()?;
    let rest = host.strip_prefix("q.")?;
    rest.split('.').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_api_host() {
        assert_eq!(
            region_of("https://q.eu-central-1.amazonaws.com"),
            Some("eu-central-1")
        );
        assert_eq!(region_of("http://127.0.0.1:9000"), None);
    }
}

//! `ListAvailableProfiles` (docs/kiro-protocol.md §14.2): the Kiro profiles an account may use,
//! asked of the API host (AWS JSON 1.0). The first profile of the account's API region is the
//! one it uses, else the first listed.

use crate::kiro::auth::account::{describe_reqwest, AccessToken, Endpoints, LIST_PROFILES_TARGET};
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
    endpoints: &Endpoints,
    token: &AccessToken,
    timeout: Duration,
) -> Result<Option<String>, ListError> {
    let url = format!("{}/", endpoints.api_base.trim_end_matches('/'));
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
    Ok(pick(
        page.profiles.into_iter().map(|p| p.arn),
        &endpoints.region,
    ))
}

/// The first profile in `region`, else the first listed.
fn pick(arns: impl IntoIterator<Item = String>, region: &str) -> Option<String> {
    let arns: Vec<String> = arns.into_iter().filter(|arn| !arn.is_empty()).collect();
    let in_region = format!(":{region}:");
    let position = arns.iter().position(|arn| arn.contains(&in_region));
    arns.into_iter().nth(position.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regions_profile_first_else_the_first_listed() {
        let arns = || {
            [
                "arn:aws:codewhisperer:us-east-1:1:profile/A",
                "arn:aws:codewhisperer:eu-central-1:1:profile/B",
            ]
            .map(String::from)
        };
        assert_eq!(
            pick(arns(), "eu-central-1").as_deref(),
            Some("arn:aws:codewhisperer:eu-central-1:1:profile/B")
        );
        assert_eq!(
            pick(arns(), "ap-south-1").as_deref(),
            Some("arn:aws:codewhisperer:us-east-1:1:profile/A")
        );
        assert_eq!(pick(Vec::new(), "us-east-1"), None);
    }
}

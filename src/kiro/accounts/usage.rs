//! `getUsageLimits` (docs/kiro-protocol.md §8.2): an account's credits used and limit and the
//! date they reset. The health probe reads it; the status views show it.

use crate::chat::ChatError;
use crate::kiro::auth::account::{AccessToken, Account, KIRO_VERSION};
use crate::kiro::protocol::errors;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An account's usage, as Kiro reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageLimits {
    /// Credits used this period.
    pub used: f64,
    /// Credits of the period (plan, plus active free trial and bonuses).
    pub limit: f64,
    /// When the period resets.
    pub next_reset: Option<SystemTime>,
    /// The plan (`KIRO FREE`, `KIRO PRO+`, ...).
    pub subscription: Option<String>,
}

impl UsageLimits {
    /// Whether the credits are used up.
    pub fn exhausted(&self) -> bool {
        self.limit > 0.0 && self.used >= self.limit
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    next_date_reset: Option<f64>,
    subscription_info: Option<Subscription>,
    #[serde(default)]
    usage_breakdown_list: Vec<Breakdown>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    subscription_title: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Breakdown {
    resource_type: Option<String>,
    current_usage: Option<f64>,
    current_usage_with_precision: Option<f64>,
    usage_limit: Option<f64>,
    usage_limit_with_precision: Option<f64>,
    next_date_reset: Option<f64>,
    free_trial_info: Option<Extra>,
    #[serde(default)]
    bonuses: Vec<Extra>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extra {
    current_usage: Option<f64>,
    usage_limit: Option<f64>,
    status: Option<String>,
    free_trial_status: Option<String>,
}

impl Extra {
    fn active(&self) -> bool {
        let status = self.free_trial_status.as_deref().or(self.status.as_deref());
        status.is_none_or(|s| s.eq_ignore_ascii_case("ACTIVE"))
    }
}

/// Parses a `getUsageLimits` answer: the `CREDIT` line (or the first), with active free
/// trial and bonus amounts added to used and limit.
pub fn parse(body: &[u8]) -> Result<UsageLimits, String> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("unexpected JSON ({e})"))?;
    let line = raw
        .usage_breakdown_list
        .iter()
        .find(|b| b.resource_type.as_deref() == Some("CREDIT"))
        .or(raw.usage_breakdown_list.first())
        .ok_or("no usageBreakdownList entry")?;
    let extras = line
        .free_trial_info
        .iter()
        .chain(&line.bonuses)
        .filter(|e| e.active());
    let (mut used, mut limit) = (
        line.current_usage_with_precision
            .or(line.current_usage)
            .unwrap_or(0.0),
        line.usage_limit_with_precision
            .or(line.usage_limit)
            .unwrap_or(0.0),
    );
    for extra in extras {
        used += extra.current_usage.unwrap_or(0.0);
        limit += extra.usage_limit.unwrap_or(0.0);
    }
    let next_reset = line
        .next_date_reset
        .or(raw.next_date_reset)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s));
    Ok(UsageLimits {
        used,
        limit,
        next_reset,
        subscription: raw.subscription_info.and_then(|s| s.subscription_title),
    })
}

/// Asks Kiro for `account`'s usage (refreshing its token first when needed, and once more
/// after a bearer-invalid 403), and remembers the answer on the account.
pub async fn fetch(account: &Account) -> Result<UsageLimits, ChatError> {
    let token = account.token().await?;
    let (status, body) = match get(account, &token).await? {
        (status, body) if errors::is_bearer_invalid(status, &body) => {
            let token = account.token_after_rejection(&token.token).await?;
            get(account, &token).await?
        }
        answer => answer,
    };
    if !status.is_success() {
        return Err(errors::classify(status, &http::HeaderMap::new(), &body));
    }
    let usage = parse(&body).map_err(|message| ChatError::Upstream {
        message: format!("getUsageLimits: {message}"),
    })?;
    account.set_usage(usage.clone());
    Ok(usage)
}

async fn get(
    account: &Account,
    token: &AccessToken,
) -> Result<(http::StatusCode, bytes::Bytes), ChatError> {
    let mut url = format!(
        "{}/getUsageLimits?origin=AI_EDITOR&resourceType=AGENTIC_REQUEST",
        account.endpoints().api_base.trim_end_matches('/')
    );
    if let Some(arn) = &token.profile_arn {
        url.push_str("&profileArn=");
        url.extend(form_urlencoded::byte_serialize(arn.as_bytes()));
    }
    let machine = account.machine_id();
    let failed = |e: reqwest::Error| ChatError::Upstream {
        message: format!(
            "getUsageLimits: {}",
            crate::kiro::auth::account::describe_reqwest(&e)
        ),
    };
    let response = account
        .http()
        .get(url)
        .bearer_auth(token.token.expose())
        .header("x-amz-user-agent", format!("aws-sdk-js/1.0.0 KiroIDE-{KIRO_VERSION}-{machine}"))
        .header(
            reqwest::header::USER_AGENT,
            format!("aws-sdk-js/1.0.0 ua/2.1 os/linux lang/js md/nodejs#20.16.0 api/codewhispererruntime#1.0.0 m/N,E KiroIDE-{KIRO_VERSION}-{machine}"),
        )
        .header("amz-sdk-invocation-id", uuid::Uuid::new_v4().to_string())
        .header("amz-sdk-request", "attempt=1; max=1")
        .send()
        .await
        .map_err(failed)?;
    let status = http::StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(http::StatusCode::BAD_GATEWAY);
    let body = response.bytes().await.map_err(failed)?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_add_active_trials_and_bonuses() {
        let body = br#"{"nextDateReset": 1798761600.0,
            "subscriptionInfo": {"subscriptionTitle": "KIRO FREE"},
            "usageBreakdownList": [{"resourceType": "CREDIT", "currentUsage": 40, "currentUsageWithPrecision": 40.5,
              "usageLimit": 50, "usageLimitWithPrecision": 50.0,
              "freeTrialInfo": {"currentUsage": 10, "usageLimit": 500, "freeTrialStatus": "ACTIVE"},
              "bonuses": [{"currentUsage": 1, "usageLimit": 20, "status": "EXPIRED"}]}]}"#;
        let usage = parse(body).unwrap();
        assert_eq!((usage.used, usage.limit), (50.5, 550.0));
        assert_eq!(usage.subscription.as_deref(), Some("KIRO FREE"));
        assert_eq!(
            usage.next_reset,
            Some(UNIX_EPOCH + Duration::from_secs(1_798_761_600))
        );
        assert!(!usage.exhausted());
        assert!(parse(b"{}").is_err());
    }
}

//! Signing in to Kiro without the IDE (docs/kiro-protocol.md §14.3): the SSO-OIDC device flow
//! of Builder ID and IAM Identity Center ([`device`]), the social PKCE sign-in with its
//! local callback or pasted-back URL ([`social`]), and what a finished sign-in becomes: a
//! credential file the pool reads ([`SignedIn::credential`]). Used by `aiproxy login` and by
//! the console's "add account".

pub mod device;
pub mod social;

use crate::secret::Secret;
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

/// Why a sign-in did not finish. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The user refused in the browser.
    #[error("the sign-in was denied in the browser (access_denied); run it again and approve it")]
    Denied,
    /// The code ran out before the user approved.
    #[error("the sign-in code expired before it was approved (expired_token); run it again and approve it within {0}")]
    Expired(String),
    /// The endpoint refused a step, with its own error code.
    #[error("{step}: {status} {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// Which step.
        step: &'static str,
        /// HTTP status.
        status: u16,
        /// The OAuth error code.
        error: String,
        /// Its description.
        description: Option<String>,
    },
    /// The endpoint could not be reached or answered something else.
    #[error("{step}: {message}")]
    Failed {
        /// Which step.
        step: &'static str,
        /// What happened.
        message: String,
    },
    /// The pasted callback URL is not the one this sign-in waits for.
    #[error("{0}")]
    Callback(String),
}

/// The tokens a sign-in ends with.
#[derive(Debug)]
pub struct Tokens {
    /// Access token.
    pub access: Secret,
    /// Refresh token.
    pub refresh: Secret,
    /// When the access token expires.
    pub expires_at: SystemTime,
    /// The profile, when the endpoint gave one (social) or it was resolved.
    pub profile_arn: Option<String>,
}

/// A finished sign-in: the tokens and how they are refreshed.
#[derive(Debug)]
pub struct SignedIn {
    /// The tokens.
    pub tokens: Tokens,
    /// How they are refreshed.
    pub kind: Kind,
}

/// How a signed-in account refreshes.
#[derive(Debug)]
pub enum Kind {
    /// Builder ID or IdC: the OIDC client this login registered (a re-login must keep its
    /// own registration with its refresh token, §14.3).
    Idc {
        /// `BuilderId` or `Enterprise`.
        provider: &'static str,
        /// Registered client id.
        client_id: String,
        /// Its secret.
        client_secret: Secret,
        /// The OIDC region.
        region: String,
        /// The start URL signed in at.
        start_url: String,
    },
    /// Google or GitHub through Kiro's own auth service.
    Social,
}

impl SignedIn {
    /// The credential file's JSON, in the Kiro IDE's own shape (so `credentials::parse`
    /// reads it, and so does any other Kiro tool).
    pub fn credential(&self) -> Map<String, Value> {
        let tokens = &self.tokens;
        let mut map = Map::new();
        map.insert("accessToken".into(), tokens.access.expose().into());
        map.insert("refreshToken".into(), tokens.refresh.expose().into());
        map.insert(
            "expiresAt".into(),
            crate::kiro::auth::credentials::format_time(tokens.expires_at).into(),
        );
        if let Some(arn) = &tokens.profile_arn {
            map.insert("profileArn".into(), arn.clone().into());
        }
        match &self.kind {
            Kind::Idc {
                provider,
                client_id,
                client_secret,
                region,
                start_url,
            } => {
                map.insert("authMethod".into(), "IdC".into());
                map.insert("provider".into(), (*provider).into());
                map.insert("clientId".into(), client_id.clone().into());
                map.insert("clientSecret".into(), client_secret.expose().into());
                map.insert("region".into(), region.clone().into());
                map.insert("startUrl".into(), start_url.clone().into());
            }
            Kind::Social => {
                map.insert("authMethod".into(), "social".into());
                map.insert("provider".into(), "Social".into());
            }
        }
        map
    }

    /// What the terminal and the console may say about it: the kind, never a token.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Idc {
                provider, region, ..
            } => format!("{provider} ({region})"),
            Kind::Social => "social (Google/GitHub)".into(),
        }
    }
}

/// Reads an OAuth error answer (`{"error", "error_description"}`) or says what came.
async fn refused(step: &'static str, response: reqwest::Response) -> SignInError {
    let status = response.status().as_u16();
    let body: Value = json_of(response).await.unwrap_or(Value::Null);
    match body.get("error").and_then(Value::as_str) {
        Some(error) => SignInError::Refused {
            step,
            status,
            error: error.to_owned(),
            description: body
                .get("error_description")
                .or_else(|| body.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        None => SignInError::Failed {
            step,
            message: format!(
                "HTTP {status}{}",
                body.get("message")
                    .and_then(Value::as_str)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        },
    }
}

/// The JSON of an answer (`Null` when it is not JSON).
async fn json_of(response: reqwest::Response) -> Result<Value, reqwest::Error> {
    let bytes = response.bytes().await?;
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn failed(step: &'static str) -> impl Fn(reqwest::Error) -> SignInError {
    move |error| SignInError::Failed {
        step,
        message: crate::kiro::auth::account::describe_reqwest(&error),
    }
}

/// Sends `request` with the JSON `body`: the answer's JSON, or why the step failed (an
/// OAuth error answer is [`SignInError::Refused`] with its code).
async fn post_json(
    step: &'static str,
    request: reqwest::RequestBuilder,
    body: &Value,
) -> Result<Value, SignInError> {
    let response = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(failed(step))?;
    if !response.status().is_success() {
        return Err(refused(step, response).await);
    }
    json_of(response).await.map_err(failed(step))
}

/// A non-empty text field of a step's answer.
fn field(step: &'static str, answer: &Value, key: &str) -> Result<String, SignInError> {
    answer
        .get(key)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| SignInError::Failed {
            step,
            message: format!("the answer has no `{key}`"),
        })
}

/// The tokens of a token endpoint's camelCase answer.
fn tokens_of(step: &'static str, answer: &Value) -> Result<Tokens, SignInError> {
    let text = |key: &str| field(step, answer, key);
    let expires_in = answer
        .get("expiresIn")
        .and_then(Value::as_u64)
        .unwrap_or(3600);
    Ok(Tokens {
        access: Secret::new(text("accessToken")?),
        refresh: Secret::new(text("refreshToken")?),
        expires_at: SystemTime::now() + Duration::from_secs(expires_in),
        profile_arn: answer
            .get("profileArn")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Resolves the profile of a fresh login that has none, with `ListAvailableProfiles` on
/// `api_base` (§14.2). `None` when it lists none or cannot be asked: the account resolves it
/// on first use then (and says so if it has none).
pub async fn resolve_profile(
    http: &reqwest::Client,
    api_base: &str,
    region: &str,
    tokens: &Tokens,
    timeout: Duration,
) -> Option<String> {
    let endpoints = crate::kiro::auth::account::Endpoints {
        region: region.to_owned(),
        api_base: api_base.to_owned(),
        management_base: api_base.to_owned(),
        social_refresh: String::new(),
        idc_refresh: String::new(),
    };
    let token = crate::kiro::auth::account::AccessToken {
        token: tokens.access.clone(),
        profile_arn: None,
        token_type: None,
    };
    match crate::kiro::auth::profiles::first(http, &endpoints, &token, timeout).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "could not list the new login's Kiro profiles; the account resolves its profile on first use");
            None
        }
    }
}

//! The SSO-OIDC device flow of Builder ID and IAM Identity Center (docs/kiro-protocol.md §14.3):
//! register a public client, start a device authorization, show the user its code and link,
//! poll the token endpoint at the interval it asks for until the user approves.

use super::{field, post_json, tokens_of, Kind, SignInError, SignedIn};
use crate::secret::Secret;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Builder ID's start URL.
pub const BUILDER_ID_START_URL: &str = "https://view.awsapps.com/start";

/// The grant of a device-code poll.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The scopes Kiro's client registers for.
const SCOPES: [&str; 5] = [
    "codewhisperer:completions",
    "codewhisperer:analysis",
    "codewhisperer:conversations",
    "codewhisperer:transformations",
    "codewhisperer:taskassist",
];

/// What the user is shown: the code, where to enter it, and for how long it lives.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// The code the user types (not a secret: it is useless without the user's approval).
    pub user_code: String,
    /// Where to enter it.
    pub verification_uri: String,
    /// The same page with the code filled in.
    pub verification_uri_complete: String,
    /// How long the code lives.
    pub expires_in: Duration,
}

/// Where to sign in.
#[derive(Clone, Debug)]
pub struct Target {
    /// The SSO-OIDC base URL (`https://oidc.{region}.amazonaws.com`, or a fake).
    pub oidc_url: String,
    /// The start URL (Builder ID's, or the organisation's).
    pub start_url: String,
    /// The OIDC region (where the refreshes go too).
    pub region: String,
}

impl Target {
    /// Builder ID in us-east-1 (or at `oidc_url`).
    pub fn builder_id(oidc_url: Option<String>) -> Self {
        Self::idc(oidc_url, BUILDER_ID_START_URL.into(), "us-east-1".into())
    }

    /// An organisation's IAM Identity Center.
    pub fn idc(oidc_url: Option<String>, start_url: String, region: String) -> Self {
        Self {
            oidc_url: oidc_url.unwrap_or_else(|| format!("https://oidc.{region}.amazonaws.com")),
            start_url,
            region,
        }
    }

    fn provider(&self) -> &'static str {
        if self.start_url == BUILDER_ID_START_URL {
            "BuilderId"
        } else {
            "Enterprise"
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.oidc_url.trim_end_matches('/'))
    }
}

/// A device authorization waiting for the user.
#[derive(Debug)]
pub struct DeviceFlow {
    http: reqwest::Client,
    target: Target,
    client_id: String,
    client_secret: Secret,
    device_code: Secret,
    interval: Duration,
    deadline: Instant,
    prompt: Prompt,
}

/// One poll's outcome.
#[derive(Debug)]
pub enum Polled {
    /// Not approved yet: poll again after [`DeviceFlow::interval`].
    Pending,
    /// Approved.
    Done(Box<SignedIn>),
}

impl DeviceFlow {
    /// Registers the client and starts the device authorization.
    pub async fn start(http: reqwest::Client, target: Target) -> Result<Self, SignInError> {
        let step = "registering the sign-in client (client/register)";
        let registration = json!({
            "clientName": "aiproxy",
            "clientType": "public",
            "scopes": SCOPES,
            "grantTypes": [DEVICE_GRANT, "refresh_token"],
            "issuerUrl": target.start_url,
        });
        let client = post_json(
            step,
            http.post(target.url("client/register")),
            &registration,
        )
        .await?;
        let client_id = field(step, &client, "clientId")?;
        let client_secret = Secret::new(field(step, &client, "clientSecret")?);
        let step = "starting the device authorization (device_authorization)";
        let authorization = json!({"clientId": client_id, "clientSecret": client_secret.expose(),
                                   "startUrl": target.start_url});
        let device = post_json(
            step,
            http.post(target.url("device_authorization")),
            &authorization,
        )
        .await?;
        let seconds = |key: &str, default: u64| {
            Duration::from_secs(device.get(key).and_then(Value::as_u64).unwrap_or(default))
        };
        let expires_in = seconds("expiresIn", 600);
        let verification_uri = field(step, &device, "verificationUri")?;
        let prompt = Prompt {
            user_code: field(step, &device, "userCode")?,
            verification_uri_complete: field(step, &device, "verificationUriComplete")
                .unwrap_or_else(|_| verification_uri.clone()),
            verification_uri,
            expires_in,
        };
        Ok(Self {
            device_code: Secret::new(field(step, &device, "deviceCode")?),
            interval: seconds("interval", 5),
            deadline: Instant::now() + expires_in,
            http,
            target,
            client_id,
            client_secret,
            prompt,
        })
    }

    /// What to show the user.
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// How long to wait before the next poll (grows on `slow_down`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Polls the token endpoint once: `authorization_pending` and `slow_down` (which adds
    /// 5 s to the interval) are [`Polled::Pending`]; `access_denied` and `expired_token` end
    /// the flow.
    pub async fn poll(&mut self) -> Result<Polled, SignInError> {
        let step = "waiting for the approval (token)";
        if Instant::now() >= self.deadline {
            return Err(self.expired());
        }
        let poll = json!({"clientId": self.client_id, "clientSecret": self.client_secret.expose(),
                          "grantType": DEVICE_GRANT, "deviceCode": self.device_code.expose()});
        match post_json(step, self.http.post(self.target.url("token")), &poll).await {
            Ok(answer) => Ok(Polled::Done(Box::new(SignedIn {
                tokens: tokens_of(step, &answer)?,
                kind: Kind::Idc {
                    provider: self.target.provider(),
                    client_id: self.client_id.clone(),
                    client_secret: self.client_secret.clone(),
                    region: self.target.region.clone(),
                    start_url: self.target.start_url.clone(),
                },
            }))),
            Err(refusal) => self.poll_refused(refusal),
        }
    }

    /// What a refused poll means: wait (`authorization_pending`, `slow_down` adding 5 s), or
    /// the end of the flow.
    fn poll_refused(&mut self, refusal: SignInError) -> Result<Polled, SignInError> {
        match refusal {
            SignInError::Refused { error, .. } if error == "authorization_pending" => {
                Ok(Polled::Pending)
            }
            SignInError::Refused { error, .. } if error == "slow_down" => {
                self.interval += Duration::from_secs(5);
                Ok(Polled::Pending)
            }
            SignInError::Refused { error, .. } if error == "access_denied" => {
                Err(SignInError::Denied)
            }
            SignInError::Refused { error, .. } if error == "expired_token" => Err(self.expired()),
            other => Err(other),
        }
    }

    /// Polls at the interval until the user approves, refuses, or the code expires.
    pub async fn wait(&mut self) -> Result<Box<SignedIn>, SignInError> {
        loop {
            tokio::time::sleep(self.interval).await;
            if let Polled::Done(signed_in) = self.poll().await? {
                return Ok(signed_in);
            }
        }
    }

    fn expired(&self) -> SignInError {
        SignInError::Expired(format!("{} s", self.prompt.expires_in.as_secs()))
    }
}

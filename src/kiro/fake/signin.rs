//! The fake's sign-in endpoints (docs/kiro-protocol.md §14.3), as strict as the real ones:
//!
//! - the SSO-OIDC device flow: `POST /client/register`, `POST /device_authorization`, and the
//!   device-code grant of `POST /token` (its refresh grant is the IdC refresh). A poll sooner
//!   than the interval is answered `slow_down` (and the interval grows by 5 s, as AWS does);
//!   `POST /__fake/device` scripts the next polls' answers (`pending`, `slow_down`, `denied`,
//!   `expired`); with nothing scripted the user has approved.
//! - the social PKCE sign-in: `GET /signin` (the page the browser opens) checks the PKCE
//!   parameters and redirects to the local callback with a one-time code; the JSON form of
//!   `POST /oauth/token` exchanges it for tokens when the verifier matches the challenge.

use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The scopes a Kiro client registers for (§14.3).
pub const SCOPES: [&str; 5] = [
    "codewhisperer:completions",
    "codewhisperer:analysis",
    "codewhisperer:conversations",
    "codewhisperer:transformations",
    "codewhisperer:taskassist",
];

/// The grant of a device-code poll.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How long a device code lives.
const DEVICE_CODE_TTL: Duration = Duration::from_secs(600);

/// A scripted answer to the next device-code poll.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAnswer {
    /// The user has not approved yet.
    Pending,
    /// Poll more slowly.
    SlowDown,
    /// The user refused.
    Denied,
    /// The code expired.
    Expired,
}

/// `POST /__fake/device`: what the next polls answer, and the interval new codes get.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceScript {
    #[serde(default)]
    answers: Vec<DeviceAnswer>,
    interval: Option<u64>,
}

#[derive(Debug)]
struct Client {
    secret: String,
    issuer: String,
}

#[derive(Debug)]
struct Device {
    client_id: String,
    expires: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
}

#[derive(Debug)]
struct SocialCode {
    challenge: String,
    redirect_uri: String,
}

/// The sign-in state of the fake.
#[derive(Debug)]
pub struct SignIn {
    clients: HashMap<String, Client>,
    devices: HashMap<String, Device>,
    codes: HashMap<String, SocialCode>,
    answers: VecDeque<DeviceAnswer>,
    interval: u64,
}

impl Default for SignIn {
    fn default() -> Self {
        Self {
            clients: HashMap::new(),
            devices: HashMap::new(),
            codes: HashMap::new(),
            answers: VecDeque::new(),
            interval: 1,
        }
    }
}

/// An answer: status and JSON body, or a redirect.
#[derive(Debug)]
pub enum Answer {
    /// A JSON answer.
    Json(u16, Value),
    /// A 302 to this location.
    Redirect(String),
    /// The user approved: the caller issues the tokens.
    Approved,
}

fn oidc_error(status: u16, error: &str, description: &str) -> Answer {
    Answer::Json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn random(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The JSON object of `body`, or the OIDC error that says it is not one.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Answer> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(oidc_error(
            400,
            "invalid_request",
            "The body must be a JSON object",
        )),
    }
}

fn text<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a str, Answer> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| oidc_error(400, "invalid_request", &format!("`{key}` is required")))
}

fn strings(map: &serde_json::Map<String, Value>, key: &str) -> Vec<String> {
    map.get(key)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl SignIn {
    /// `POST /__fake/device`.
    pub fn script(&mut self, script: DeviceScript) {
        self.answers.extend(script.answers);
        if let Some(interval) = script.interval {
            self.interval = interval;
        }
    }

    /// `POST /client/register`.
    pub fn register(&mut self, body: &[u8]) -> Answer {
        let map = match object(body) {
            Ok(map) => map,
            Err(answer) => return answer,
        };
        let checked = (|| {
            text(&map, "clientName")?;
            if text(&map, "clientType")? != "public" {
                return Err(oidc_error(
                    400,
                    "invalid_client_metadata",
                    "`clientType` must be `public`",
                ));
            }
            let scopes = strings(&map, "scopes");
            if let Some(missing) = SCOPES.iter().find(|s| !scopes.iter().any(|g| g == *s)) {
                return Err(oidc_error(
                    400,
                    "invalid_scope",
                    &format!("`scopes` lacks `{missing}`"),
                ));
            }
            let grants = strings(&map, "grantTypes");
            for grant in [DEVICE_GRANT, "refresh_token"] {
                if !grants.iter().any(|g| g == grant) {
                    return Err(oidc_error(
                        400,
                        "invalid_client_metadata",
                        &format!("`grantTypes` lacks `{grant}`"),
                    ));
                }
            }
            let issuer = text(&map, "issuerUrl")?;
            if !issuer.starts_with("https://") {
                return Err(oidc_error(
                    400,
                    "invalid_client_metadata",
                    "`issuerUrl` must be an https:// start URL",
                ));
            }
            Ok(issuer.to_owned())
        })();
        let issuer = match checked {
            Ok(issuer) => issuer,
            Err(answer) => return answer,
        };
        let (id, secret) = (random("fake-client-"), random("fake-client-secret-"));
        self.clients.insert(
            id.clone(),
            Client {
                secret: secret.clone(),
                issuer,
            },
        );
        let now = unix_now();
        Answer::Json(
            200,
            json!({"clientId": id, "clientSecret": secret, "clientIdIssuedAt": now,
                   "clientSecretExpiresAt": now + 90 * 86_400}),
        )
    }

    fn client(&self, map: &serde_json::Map<String, Value>) -> Result<&Client, Answer> {
        let id = text(map, "clientId")?;
        let secret = text(map, "clientSecret")?;
        match self.clients.get(id) {
            Some(client) if client.secret == secret => Ok(client),
            _ => Err(oidc_error(
                401,
                "invalid_client",
                "Unknown client or wrong client secret",
            )),
        }
    }

    /// `POST /device_authorization`; `base` is the fake's own URL (the verification page).
    pub fn authorize(&mut self, body: &[u8], base: &str) -> Answer {
        let map = match object(body) {
            Ok(map) => map,
            Err(answer) => return answer,
        };
        let client_id = match self.client(&map).and_then(|client| {
            let start = text(&map, "startUrl")?;
            if start != client.issuer {
                return Err(oidc_error(
                    400,
                    "invalid_request",
                    "`startUrl` is not the client's `issuerUrl`",
                ));
            }
            text(&map, "clientId").map(str::to_owned)
        }) {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let device_code = random("fake-device-");
        let letters: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .filter(char::is_ascii_alphabetic)
            .chain("KIROCODE".chars())
            .take(8)
            .collect::<String>()
            .to_ascii_uppercase();
        let user_code = format!("{}-{}", &letters[..4], &letters[4..]);
        self.devices.insert(
            device_code.clone(),
            Device {
                client_id,
                expires: Instant::now() + DEVICE_CODE_TTL,
                interval: Duration::from_secs(self.interval),
                last_poll: None,
            },
        );
        let page = format!("{}/device", base.trim_end_matches('/'));
        Answer::Json(
            200,
            json!({"deviceCode": device_code, "userCode": user_code,
                   "verificationUri": page,
                   "verificationUriComplete": format!("{page}?user_code={user_code}"),
                   "expiresIn": DEVICE_CODE_TTL.as_secs(), "interval": self.interval}),
        )
    }

    /// The device-code grant of `POST /token`: an OIDC error, or [`Answer::Approved`].
    pub fn poll(&mut self, body: &[u8]) -> Answer {
        let map = match object(body) {
            Ok(map) => map,
            Err(answer) => return answer,
        };
        let client_id = match self.client(&map) {
            Ok(_) => text(&map, "clientId").unwrap_or_default().to_owned(),
            Err(answer) => return answer,
        };
        let code = match text(&map, "deviceCode") {
            Ok(code) => code.to_owned(),
            Err(answer) => return answer,
        };
        let Some(device) = self
            .devices
            .get_mut(&code)
            .filter(|d| d.client_id == client_id)
        else {
            return oidc_error(400, "invalid_grant", "Unknown device code");
        };
        let now = Instant::now();
        if now >= device.expires {
            self.devices.remove(&code);
            return oidc_error(400, "expired_token", "The device code has expired");
        }
        let too_soon = device
            .last_poll
            .is_some_and(|last| now.duration_since(last) < device.interval);
        device.last_poll = Some(now);
        if too_soon {
            device.interval += Duration::from_secs(5);
            return oidc_error(400, "slow_down", "Polled sooner than the interval");
        }
        match self.answers.pop_front() {
            Some(DeviceAnswer::Pending) => oidc_error(
                400,
                "authorization_pending",
                "The user has not approved the request yet",
            ),
            Some(DeviceAnswer::SlowDown) => {
                device.interval += Duration::from_secs(5);
                oidc_error(400, "slow_down", "Poll more slowly")
            }
            Some(DeviceAnswer::Denied) => {
                self.devices.remove(&code);
                oidc_error(400, "access_denied", "The user denied the request")
            }
            Some(DeviceAnswer::Expired) => {
                self.devices.remove(&code);
                oidc_error(400, "expired_token", "The device code has expired")
            }
            None => {
                self.devices.remove(&code);
                Answer::Approved
            }
        }
    }

    /// `GET /signin?...`: checks the PKCE sign-in request and "signs the user in": a
    /// redirect to the local callback with a one-time code.
    pub fn signin(&mut self, query: &str) -> Answer {
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |key: &str| params.get(key).filter(|v| !v.is_empty());
        let problem = |message: String| Answer::Json(400, json!({"message": message}));
        for key in [
            "state",
            "code_challenge",
            "code_challenge_method",
            "redirect_uri",
        ] {
            if get(key).is_none() {
                return problem(format!("`{key}` is required"));
            }
        }
        if get("code_challenge_method").map(String::as_str) != Some("S256") {
            return problem("`code_challenge_method` must be S256".into());
        }
        let (Some(redirect), Some(state), Some(challenge)) = (
            get("redirect_uri"),
            get("state"),
            get("code_challenge").cloned(),
        ) else {
            return problem("incomplete sign-in request".into());
        };
        if !is_local(redirect) {
            return problem(
                "Invalid redirect_uri: Must be localhost or a subdomain of app.kiro.dev".into(),
            );
        }
        let code = random("fake-code-");
        self.codes.insert(
            code.clone(),
            SocialCode {
                challenge,
                redirect_uri: redirect.clone(),
            },
        );
        let encode = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let separator = if redirect.contains('?') { '&' } else { '?' };
        Answer::Redirect(format!(
            "{redirect}{separator}code={}&state={}",
            encode(&code),
            encode(state)
        ))
    }

    /// The JSON form of `POST /oauth/token`: the code, its verifier and the redirect URI
    /// it was issued for; [`Answer::Approved`] when they match.
    pub fn exchange(&mut self, body: &[u8], user_agent: Option<&str>) -> Answer {
        let map = match object(body) {
            Ok(map) => map,
            Err(answer) => return answer,
        };
        if !user_agent.is_some_and(|ua| ua.starts_with("KiroIDE")) {
            return oidc_error(
                400,
                "invalid_request",
                "the user agent must be KiroIDE-<version>",
            );
        }
        let fields = (|| {
            Ok::<_, Answer>((
                text(&map, "code")?.to_owned(),
                text(&map, "code_verifier")?.to_owned(),
                text(&map, "redirect_uri")?.to_owned(),
            ))
        })();
        let (code, verifier, redirect) = match fields {
            Ok(fields) => fields,
            Err(answer) => return answer,
        };
        let Some(issued) = self.codes.remove(&code) else {
            return oidc_error(400, "invalid_grant", "Unknown or used authorization code");
        };
        if issued.redirect_uri != redirect {
            return oidc_error(
                400,
                "invalid_grant",
                "`redirect_uri` is not the one the code was issued for",
            );
        }
        if crate::kiro::auth::signin::social::challenge(&verifier) != issued.challenge {
            return oidc_error(
                400,
                "invalid_grant",
                "`code_verifier` does not match the code challenge",
            );
        }
        Answer::Approved
    }
}

/// Whether a `POST /token` body is a device-code poll (else it is an IdC refresh).
pub fn is_device_poll(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("grantType").and_then(Value::as_str) == Some(DEVICE_GRANT))
}

/// Kiro's rule for redirect URIs: the loopback, or app.kiro.dev.
fn is_local(uri: &str) -> bool {
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
        || host == "app.kiro.dev"
        || host.ends_with(".app.kiro.dev")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(signin: &mut SignIn) -> (String, String) {
        let body = json!({"clientName": "aiproxy", "clientType": "public", "scopes": SCOPES,
                          "grantTypes": [DEVICE_GRANT, "refresh_token"],
                          "issuerUrl": "https://view.awsapps.com/start"});
        let Answer::Json(200, answer) = signin.register(body.to_string().as_bytes()) else {
            panic!("not registered")
        };
        (
            answer["clientId"].as_str().unwrap().to_owned(),
            answer["clientSecret"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn registration_needs_every_scope_and_grant() {
        let mut signin = SignIn::default();
        let body = json!({"clientName": "x", "clientType": "public", "scopes": ["codewhisperer:completions"],
                          "grantTypes": [DEVICE_GRANT, "refresh_token"], "issuerUrl": "https://a"});
        let Answer::Json(400, answer) = signin.register(body.to_string().as_bytes()) else {
            panic!()
        };
        assert_eq!(answer["error"], "invalid_scope");
    }

    #[test]
    fn a_device_code_polls_pending_then_too_fast_then_approved() {
        let mut signin = SignIn::default();
        signin.script(DeviceScript {
            answers: vec![DeviceAnswer::Pending],
            interval: Some(0),
        });
        let (id, secret) = registered(&mut signin);
        let body = json!({"clientId": id, "clientSecret": secret, "startUrl": "https://view.awsapps.com/start"});
        let Answer::Json(200, device) = signin.authorize(body.to_string().as_bytes(), "http://f")
        else {
            panic!()
        };
        let poll = json!({"clientId": id, "clientSecret": secret, "grantType": DEVICE_GRANT,
                          "deviceCode": device["deviceCode"]})
        .to_string();
        let Answer::Json(400, pending) = signin.poll(poll.as_bytes()) else {
            panic!()
        };
        assert_eq!(pending["error"], "authorization_pending");
        assert!(matches!(signin.poll(poll.as_bytes()), Answer::Approved));
        let Answer::Json(400, gone) = signin.poll(poll.as_bytes()) else {
            panic!()
        };
        assert_eq!(gone["error"], "invalid_grant", "a code is used once");
    }

    #[test]
    fn the_social_code_needs_its_verifier_and_redirect() {
        let mut signin = SignIn::default();
        let challenge = crate::kiro::auth::signin::social::challenge("verifier-1");
        let query = format!("state=s1&code_challenge={challenge}&code_challenge_method=S256&redirect_uri=http%3A%2F%2Flocalhost%3A3128%2Foauth%2Fcallback&redirect_from=KiroIDE");
        let Answer::Redirect(location) = signin.signin(&query) else {
            panic!()
        };
        assert!(location.starts_with("http://localhost:3128/oauth/callback?code="));
        assert!(location.ends_with("&state=s1"));
        let code = location
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let wrong = json!({"code": code, "code_verifier": "other", "redirect_uri": "http://localhost:3128/oauth/callback"});
        assert!(matches!(
            signin.exchange(wrong.to_string().as_bytes(), Some("KiroIDE-0.7.45")),
            Answer::Json(400, _)
        ));
        let remote = "state=s&code_challenge=c&code_challenge_method=S256&redirect_uri=https%3A%2F%2Fexample.com%2Fcb";
        assert!(matches!(signin.signin(remote), Answer::Json(400, _)));
    }
}

//! The social sign-in (Google, GitHub) with PKCE (docs/kiro-protocol.md §14.3): the browser opens
//! Kiro's sign-in page with a code challenge and a loopback redirect URI; Kiro sends the
//! browser back to that URI with a one-time code, which is exchanged for tokens with the
//! verifier. Kiro accepts only loopback redirect URIs, so a sign-in for a remote machine
//! ends with the user pasting the final URL (the one the browser could not open) back.

use super::{post_json, tokens_of, Kind, SignInError, SignedIn};
use crate::kiro::auth::account::KIRO_VERSION;
use crate::secret::{random_token, Secret};
use base64::Engine;
use serde_json::json;

/// Kiro's sign-in page.
pub const SIGNIN_URL: &str = "https://app.kiro.dev/signin";
/// Kiro's auth service (the code exchange is `{auth}/oauth/token`).
pub const AUTH_URL: &str = "https://prod.us-east-1.auth.desktop.kiro.dev";
/// The loopback ports the Kiro IDE listens on for the callback, in the order it tries them.
pub const CALLBACK_PORTS: [u16; 6] = [3128, 49153, 50153, 51153, 52153, 53153];
/// The callback's path.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// A social sign-in waiting for its callback.
#[derive(Debug)]
pub struct SocialFlow {
    http: reqwest::Client,
    auth_url: String,
    verifier: Secret,
    state: String,
    redirect_uri: String,
    signin_url: String,
}

/// The S256 challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

impl SocialFlow {
    /// A new sign-in whose callback goes to `redirect_uri` (a loopback URL ending in
    /// [`CALLBACK_PATH`]); `signin_url` and `auth_url` default to Kiro's own.
    pub fn new(
        http: reqwest::Client,
        signin_url: Option<&str>,
        auth_url: Option<&str>,
        redirect_uri: String,
    ) -> Self {
        let verifier = random_token();
        let state = random_token();
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("redirect_from", "KiroIDE")
            .finish();
        let signin_url = format!("{}?{query}", signin_url.unwrap_or(SIGNIN_URL));
        Self {
            http,
            auth_url: auth_url
                .unwrap_or(AUTH_URL)
                .trim_end_matches('/')
                .to_owned(),
            verifier: Secret::new(verifier),
            state,
            redirect_uri,
            signin_url,
        }
    }

    /// The page to open in a browser (it holds no secret: the verifier stays here).
    pub fn signin_url(&self) -> &str {
        &self.signin_url
    }

    /// The one-time code of the callback URL the browser was sent to (the whole URL as
    /// pasted, or its path and query): its `state` must be this sign-in's.
    pub fn code_from_callback(&self, callback: &str) -> Result<String, SignInError> {
        let callback = callback.trim();
        let query = callback.split_once('?').map_or("", |(_, q)| q);
        let query = query.split('#').next().unwrap_or_default();
        let params: std::collections::HashMap<String, String> =
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        if let Some(error) = params.get("error") {
            return Err(SignInError::Callback(format!(
                "the sign-in page answered `{error}`{}; start the sign-in again",
                params
                    .get("error_description")
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )));
        }
        let (Some(code), Some(state)) = (params.get("code"), params.get("state")) else {
            return Err(SignInError::Callback(format!(
                "that is not the sign-in's callback URL: paste the whole address the browser was sent to \
                 after signing in (it starts with {} and has `code=` and `state=` in it)",
                self.redirect_uri
            )));
        };
        if *state != self.state {
            return Err(SignInError::Callback(
                "the callback URL belongs to another sign-in (its `state` differs); paste the one from this sign-in"
                    .into(),
            ));
        }
        Ok(code.clone())
    }

    /// Exchanges the callback's code for tokens.
    pub async fn exchange(&self, code: &str) -> Result<SignedIn, SignInError> {
        let step = "exchanging the sign-in code (oauth/token)";
        let request = self
            .http
            .post(format!("{}/oauth/token", self.auth_url))
            .header(
                reqwest::header::USER_AGENT,
                format!("KiroIDE-{KIRO_VERSION}"),
            );
        let exchange = json!({"code": code, "code_verifier": self.verifier.expose(),
                              "redirect_uri": self.redirect_uri});
        let answer = post_json(step, request, &exchange).await?;
        Ok(SignedIn {
            tokens: tokens_of(step, &answer)?,
            kind: Kind::Social,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_the_base64url_sha256_of_the_verifier() {
        // Computed independently: base64.urlsafe_b64encode(hashlib.sha256(v).digest()) in
        // Python, padding stripped.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mJ0TmlGMWm0eIzS0MQD9NEIM2J9shQ"),
            "D5dcWPcyzhDkUgIEAFZ2zFo9FX_sscZ89o-SlJvuPio"
        );
    }

    #[test]
    fn a_callback_must_carry_this_sign_ins_state() {
        let flow = SocialFlow::new(
            reqwest::Client::new(),
            Some("http://fake/signin"),
            None,
            "http://localhost:3128/oauth/callback".into(),
        );
        assert!(flow.signin_url().starts_with("http://fake/signin?state="));
        let ok = format!(
            "http://localhost:3128/oauth/callback?code=abc&state={}",
            flow.state
        );
        assert_eq!(flow.code_from_callback(&ok).unwrap(), "abc");
        assert!(flow
            .code_from_callback("http://localhost:3128/oauth/callback?code=abc&state=other")
            .is_err());
        let message = flow.code_from_callback("hello").unwrap_err().to_string();
        assert!(message.contains("paste the whole address"), "{message}");
        assert!(flow
            .code_from_callback("/oauth/callback?error=access_denied")
            .is_err());
    }
}

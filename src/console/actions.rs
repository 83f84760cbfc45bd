//! What the console's buttons do (`POST /console/api/...`): an account's enable, disable,
//! reset, refresh, probe and remove, and adding one (the sign-in flows of `aiproxy login`
//! run on the server: the device code shown with its link, the social sign-in with the
//! pasted-back address; or a credential JSON or an AIClient-2-API pool file pasted or
//! uploaded). Every change of the pool goes through the pool file (`pool_edit`, under the
//! file's lock) and a reload, so it survives a restart.

use super::Console;
use crate::kiro::accounts::pool_edit;
use crate::kiro::auth::signin::device::{DeviceFlow, Polled, Target};
use crate::kiro::auth::signin::social::{self, SocialFlow};
use crate::kiro::auth::signin::{resolve_profile, SignedIn};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a sign-in started from the console waits.
const FLOW_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Sign-ins in progress at most.
const MAX_FLOWS: usize = 16;

/// An action's failure: the HTTP status and what to tell the operator.
#[derive(Debug)]
pub(super) struct Failed(pub http::StatusCode, pub String);

impl Failed {
    fn bad(message: impl Into<String>) -> Self {
        Self(http::StatusCode::BAD_REQUEST, message.into())
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self(http::StatusCode::CONFLICT, message.into())
    }
}

impl From<pool_edit::EditError> for Failed {
    fn from(error: pool_edit::EditError) -> Self {
        let status = match error {
            pool_edit::EditError::NoSuchAccount { .. } => http::StatusCode::NOT_FOUND,
            pool_edit::EditError::NameTaken { .. } | pool_edit::EditError::Busy(_) => {
                http::StatusCode::CONFLICT
            }
            pool_edit::EditError::BadName(_) => http::StatusCode::BAD_REQUEST,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

impl From<crate::kiro::accounts::ActionError> for Failed {
    fn from(error: crate::kiro::accounts::ActionError) -> Self {
        let status = match error {
            crate::kiro::accounts::ActionError::NoSuchAccount(_) => http::StatusCode::NOT_FOUND,
            crate::kiro::accounts::ActionError::Mock(_) => http::StatusCode::CONFLICT,
            crate::kiro::accounts::ActionError::Failed(_) => http::StatusCode::BAD_GATEWAY,
        };
        Self(status, error.to_string())
    }
}

/// A sign-in started from the console.
pub(super) enum Flow {
    /// Device code: polled by a task of its own.
    Device { name: String, state: FlowState },
    /// Social: waits for the pasted address.
    Social {
        name: String,
        flow: Arc<SocialFlow>,
        state: FlowState,
    },
}

/// Where a sign-in stands.
#[derive(Clone, Debug)]
pub(super) enum FlowState {
    Pending,
    Done(String),
    Failed(String),
}

pub(super) struct Flows {
    flows: std::collections::HashMap<String, (Instant, Flow)>,
}

impl Flows {
    pub(super) fn new() -> Self {
        Self {
            flows: std::collections::HashMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceForm {
    name: String,
    kind: String,
    start_url: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SocialForm {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallbackForm {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialForm {
    name: Option<String>,
    text: String,
}

impl Console {
    fn pool_file(&self) -> Result<std::path::PathBuf, Failed> {
        self.inner
            .accounts
            .pool_file()
            .map(std::path::Path::to_path_buf)
            .ok_or_else(|| {
                Failed::conflict(
                    "this aiproxy has no pool file: start it with --provider-pools-file FILE (a pool \
                     file with the account it serves now) to enable, disable, remove or add accounts here",
                )
            })
    }

    /// Reloads the accounts after a pool file change (the watch would within 2 s; the page
    /// should show the change at once).
    async fn reloaded(&self) -> Result<(), Failed> {
        self.inner.accounts.reload().map_err(|e| {
            Failed(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("the pool file changed, but the reload failed: {e}"),
            )
        })?;
        let accounts = Arc::clone(&self.inner.accounts);
        tokio::spawn(async move { accounts.refresh_models().await });
        Ok(())
    }

    /// `POST /console/api/accounts/{name}/{action}`.
    pub(super) async fn account_action(&self, name: &str, action: &str) -> Result<String, Failed> {
        let accounts = &self.inner.accounts;
        match action {
            "enable" | "disable" => {
                let pool = self.pool_file()?;
                pool_edit::set_enabled(&pool, name, action == "enable").await?;
                self.reloaded().await?;
                tracing::info!(account = name, action, "console: account switched");
                Ok(format!("{name} {action}d (written to {})", pool.display()))
            }
            "remove" => {
                let pool = self.pool_file()?;
                let kept = pool_edit::remove(&pool, name).await?;
                self.reloaded().await?;
                tracing::info!(account = name, "console: account removed");
                Ok(match kept {
                    Some(file) => format!("{name} removed from the pool; its credential file {file} is kept"),
                    None => format!("{name} removed from the pool"),
                })
            }
            "reset" => {
                accounts.reset_breaker(name)?;
                tracing::info!(account = name, "console: breaker reset");
                Ok(format!("{name}: breaker reset; it serves again"))
            }
            "refresh" => {
                accounts.refresh_now(name).await?;
                Ok(format!("{name}: token refreshed"))
            }
            "probe" => {
                accounts.probe_now(name).await?;
                Ok(format!("{name}: health probe ran; its state is shown above"))
            }
            other => Err(Failed(
                http::StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: use enable, disable, reset, refresh, probe or remove"),
            )),
        }
    }

    fn checked_name(&self, name: &str) -> Result<std::path::PathBuf, Failed> {
        if !pool_edit::valid_name(name) {
            return Err(pool_edit::EditError::BadName(name.to_owned()).into());
        }
        let pool = self.pool_file()?;
        if self
            .inner
            .accounts
            .identities()
            .iter()
            .any(|i| i.name == name)
        {
            return Err(Failed::conflict(format!(
                "an account named `{name}` exists; choose another name"
            )));
        }
        Ok(pool)
    }

    fn add_flow(&self, flow: Flow) -> Result<String, Failed> {
        let mut flows = self.flows();
        let now = Instant::now();
        flows
            .flows
            .retain(|_, (started, _)| now.duration_since(*started) < FLOW_LIFETIME);
        if flows.flows.len() >= MAX_FLOWS {
            return Err(Failed(
                http::StatusCode::TOO_MANY_REQUESTS,
                "too many sign-ins in progress; finish or wait for one".into(),
            ));
        }
        let id = crate::secret::random_token();
        flows.flows.insert(id.clone(), (now, flow));
        Ok(id)
    }

    fn set_flow_state(&self, id: &str, new: FlowState) {
        if let Some((_, flow)) = self.flows().flows.get_mut(id) {
            match flow {
                Flow::Device { state, .. } | Flow::Social { state, .. } => *state = new,
            }
        }
    }

    /// Saves a finished sign-in as a new account of the pool file and reloads.
    async fn keep(
        &self,
        name: &str,
        mut signed_in: SignedIn,
        region: &str,
    ) -> Result<String, Failed> {
        if signed_in.tokens.profile_arn.is_none() {
            let api_base = self
                .inner
                .endpoints
                .kiro_base_url
                .clone()
                .unwrap_or_else(|| format!("https://q.{region}.amazonaws.com"));
            signed_in.tokens.profile_arn = resolve_profile(
                &self.inner.http,
                &api_base,
                region,
                &signed_in.tokens,
                Duration::from_secs(30),
            )
            .await;
        }
        let pool = self.pool_file()?;
        let file = pool_edit::add(&pool, name, &signed_in.credential()).await?;
        self.reloaded().await?;
        tracing::info!(account = name, kind = %signed_in.describe(), "console: account added by sign-in");
        Ok(format!(
            "{name} signed in ({}) and added; its credential is {}",
            signed_in.describe(),
            file.display()
        ))
    }

    /// `POST /console/api/add/device`: starts a device-code sign-in; the code and link to
    /// show, and the id to follow it by.
    pub(super) async fn add_device(&self, form: DeviceForm) -> Result<Value, Failed> {
        self.checked_name(&form.name)?;
        let region = form
            .region
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        let oidc = self.inner.endpoints.oidc_url.clone();
        let target = match form.kind.as_str() {
            "builder-id" => Target::builder_id(oidc),
            "idc" => {
                let start = form.start_url.unwrap_or_default();
                if !start.starts_with("https://") {
                    return Err(Failed::bad(
                        "IAM Identity Center needs its start URL (https://…awsapps.com/start)",
                    ));
                }
                Target::idc(oidc, start, region.clone())
            }
            other => {
                return Err(Failed::bad(format!(
                    "unknown kind `{other}`: builder-id or idc"
                )))
            }
        };
        let mut flow = DeviceFlow::start(self.inner.http.clone(), target)
            .await
            .map_err(|e| Failed(http::StatusCode::BAD_GATEWAY, e.to_string()))?;
        let prompt = flow.prompt().clone();
        let id = self.add_flow(Flow::Device {
            name: form.name.clone(),
            state: FlowState::Pending,
        })?;
        let console = self.clone();
        let flow_id = id.clone();
        let name = form.name;
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(FLOW_LIFETIME, async {
                loop {
                    tokio::time::sleep(flow.interval()).await;
                    match flow.poll().await {
                        Ok(Polled::Pending) => continue,
                        Ok(Polled::Done(signed_in)) => {
                            break console
                                .keep(&name, *signed_in, &region)
                                .await
                                .map_err(|f| f.1)
                        }
                        Err(error) => break Err(error.to_string()),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| Err("the sign-in was not approved in time; start it again".into()));
            let state = match outcome {
                Ok(message) => FlowState::Done(message),
                Err(message) => FlowState::Failed(message),
            };
            console.set_flow_state(&flow_id, state);
        });
        Ok(json!({
            "id": id,
            "user_code": prompt.user_code,
            "verification_uri": prompt.verification_uri,
            "verification_uri_complete": prompt.verification_uri_complete,
            "expires_in": prompt.expires_in.as_secs(),
        }))
    }

    /// `POST /console/api/add/social`: starts a social sign-in; the link to open, and the id
    /// to finish it with the pasted address.
    pub(super) fn add_social(&self, form: SocialForm) -> Result<Value, Failed> {
        self.checked_name(&form.name)?;
        // The browser comes back to the IDE's first port on the operator's own machine; it
        // does not load there, and its address is pasted back.
        let redirect = format!(
            "http://localhost:{}{}",
            social::CALLBACK_PORTS[0],
            social::CALLBACK_PATH
        );
        let endpoints = &self.inner.endpoints;
        let flow = Arc::new(SocialFlow::new(
            self.inner.http.clone(),
            endpoints.signin_url.as_deref(),
            endpoints.auth_url.as_deref(),
            redirect,
        ));
        let signin_url = flow.signin_url().to_owned();
        let id = self.add_flow(Flow::Social {
            name: form.name,
            flow,
            state: FlowState::Pending,
        })?;
        Ok(json!({ "id": id, "signin_url": signin_url }))
    }

    /// `POST /console/api/signin/{id}/callback`: finishes a social sign-in.
    pub(super) async fn finish_social(
        &self,
        id: &str,
        form: CallbackForm,
    ) -> Result<String, Failed> {
        let (name, flow) = match self.flows().flows.get(id) {
            Some((
                _,
                Flow::Social {
                    name,
                    flow,
                    state: FlowState::Pending,
                },
            )) => (name.clone(), Arc::clone(flow)),
            Some(_) => return Err(Failed::conflict("that sign-in is finished; start another")),
            None => {
                return Err(Failed(
                    http::StatusCode::NOT_FOUND,
                    "no such sign-in (it may have expired); start another".into(),
                ))
            }
        };
        let code = flow
            .code_from_callback(&form.url)
            .map_err(|e| Failed::bad(e.to_string()))?;
        let outcome = match flow.exchange(&code).await {
            Ok(signed_in) => self.keep(&name, signed_in, "us-east-1").await,
            Err(error) => Err(Failed(http::StatusCode::BAD_GATEWAY, error.to_string())),
        };
        let state = match &outcome {
            Ok(message) => FlowState::Done(message.clone()),
            Err(failed) => FlowState::Failed(failed.1.clone()),
        };
        self.set_flow_state(id, state);
        outcome
    }

    /// `GET /console/api/signin/{id}`.
    pub(super) fn signin_state(&self, id: &str) -> Result<Value, Failed> {
        let flows = self.flows();
        let Some((_, flow)) = flows.flows.get(id) else {
            return Err(Failed(
                http::StatusCode::NOT_FOUND,
                "no such sign-in (it may have expired)".into(),
            ));
        };
        let (Flow::Device { state, name } | Flow::Social { state, name, .. }) = flow;
        Ok(match state {
            FlowState::Pending => {
                json!({"state": "pending", "name": name, "message": "waiting for the approval"})
            }
            FlowState::Done(message) => json!({"state": "done", "name": name, "message": message}),
            FlowState::Failed(message) => {
                json!({"state": "failed", "name": name, "message": message})
            }
        })
    }

    /// `POST /console/api/add/credential`: a credential JSON (added under `name`) or a pool
    /// file (its instances imported), checked before anything is written.
    pub(super) async fn add_credential(&self, form: CredentialForm) -> Result<String, Failed> {
        let pool = self.pool_file()?;
        let object: Map<String, Value> = match serde_json::from_str(form.text.trim()) {
            Ok(Value::Object(object)) => object,
            _ => {
                return Err(Failed::bad(
                    "that is not a JSON object: paste a credential file or a pool file",
                ))
            }
        };
        let is_pool = ["kiro-api", "claude-kiro-oauth"]
            .iter()
            .any(|k| object.contains_key(*k));
        if is_pool {
            // Checked as the pool would read it, from a temp file beside the pool file
            // (relative credential paths resolve as they will there).
            let check =
                pool.with_file_name(format!(".import-{}.json", uuid::Uuid::new_v4().simple()));
            crate::kiro::auth::persist::write_atomically(&check, form.text.as_bytes())
                .map_err(|e| Failed(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let problems = crate::kiro::accounts::pool_file::problems(&check);
            let _ = std::fs::remove_file(&check);
            if let Some(problem) = problems.first() {
                return Err(Failed::bad(
                    problem
                        .to_string()
                        .replace(&check.display().to_string(), "the pasted pool file"),
                ));
            }
            let added = pool_edit::import(&pool, &object).await?;
            self.reloaded().await?;
            tracing::info!(accounts = ?added, "console: pool file imported");
            return Ok(format!(
                "imported {} account(s): {}",
                added.len(),
                added.join(", ")
            ));
        }
        let name = form.name.unwrap_or_default();
        self.checked_name(&name)?;
        let source = crate::kiro::auth::credentials::Source::Base64 {
            origin: "the pasted credential",
        };
        crate::kiro::auth::credentials::parse(&object, source, None)
            .map_err(|e| Failed::bad(e.to_string()))?;
        let file = pool_edit::add(&pool, &name, &object).await?;
        self.reloaded().await?;
        tracing::info!(account = %name, "console: account added from a credential");
        Ok(format!(
            "{name} added; its credential is {}",
            file.display()
        ))
    }
}

//! The Kiro upstream `Service`: canonical request in, canonical event stream out.

use super::account::Account;
use super::errors;
use super::fake::FakeKiro;
use super::http::{HttpUpstream, IdeHeaders, UpstreamResponse};
use super::models::Catalog;
use super::overflow::Measure;
use super::request::{self, BuildOptions};
use super::stream::{chat_stream, ByteStream};
use super::translate::Translator;
use crate::chat::{ChatError, ChatEvent, ChatRequest, ChatStream, Thinking};
use crate::tokens;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// Error bodies larger than this are cut when read (they are only used for messages).
const MAX_ERROR_BODY: usize = 64 * 1024;
const CHAT_PATH: &str = "/generateAssistantResponse";

/// How requests reach Kiro.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The built-in fake, in-process (mock mode).
    Fake(FakeKiro),
    /// Real HTTPS to Kiro (or to `aiproxy fake-kiro` in tests), with the chat URL parsed once.
    /// (Boxed: the pooled client is large and the fake variant small.)
    Http(Box<HttpUpstream>, http::Uri),
}

impl Transport {
    async fn post(&self, headers: HeaderMap, body: Bytes) -> Result<UpstreamResponse, ChatError> {
        match self {
            Self::Fake(fake) => {
                let mut request =
                    Request::post(CHAT_PATH)
                        .body(body)
                        .map_err(|e| ChatError::Internal {
                            message: format!("building the fake Kiro request failed: {e}"),
                        })?;
                *request.headers_mut() = headers;
                let (parts, body) = fake.handle(request).into_parts();
                Ok(UpstreamResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: Box::pin(body),
                })
            }
            Self::Http(http, url) => http.post(url.clone(), headers, body).await,
        }
    }

    /// `mock` or `live`, for `/health`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Fake(_) => "mock",
            Self::Http(..) => "live",
        }
    }
}

struct Shared {
    transport: Transport,
    catalog: Catalog,
    account: Option<Arc<Account>>,
    /// The account's IDE headers, built once.
    headers: IdeHeaders,
}

/// One Kiro account's upstream. Cheap to clone.
#[derive(Clone)]
pub struct KiroService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KiroService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KiroService")
            .field("mode", &self.shared.transport.mode())
            .field(
                "account",
                &self.shared.account.as_ref().map(|a| a.name().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

impl KiroService {
    /// The in-process fake (mock mode): no account, no tokens.
    pub fn mock(fake: FakeKiro, catalog: Catalog) -> Self {
        Self::build(Transport::Fake(fake), catalog, None)
    }

    /// A real account over `http`. Fails when the account's API base is not a valid URL.
    pub fn live(
        http: HttpUpstream,
        catalog: Catalog,
        account: Arc<Account>,
    ) -> Result<Self, String> {
        let chat_url = format!(
            "{}{CHAT_PATH}",
            account.endpoints().api_base.trim_end_matches('/')
        );
        // Parsed once here, not by the client on every request.
        let chat_url = chat_url
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| uri.host().is_some())
            .ok_or_else(|| format!("`{chat_url}` is not a valid http(s) URL"))?;
        Ok(Self::build(
            Transport::Http(Box::new(http), chat_url),
            catalog,
            Some(account),
        ))
    }

    fn build(transport: Transport, catalog: Catalog, account: Option<Arc<Account>>) -> Self {
        let machine_id = account.as_ref().map_or(MOCK_MACHINE_ID, |a| a.machine_id());
        let headers = IdeHeaders::new(machine_id);
        Self {
            shared: Arc::new(Shared {
                transport,
                catalog,
                account,
                headers,
            }),
        }
    }

    /// `mock` or `live`.
    pub fn mode(&self) -> &'static str {
        self.shared.transport.mode()
    }

    /// The account behind this service, if live.
    pub fn account(&self) -> Option<&Arc<Account>> {
        self.shared.account.as_ref()
    }
}

impl Service<ChatRequest> for KiroService {
    type Response = ChatStream;
    type Error = ChatError;
    type Future = BoxFuture<'static, Result<ChatStream, ChatError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, chat: ChatRequest) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { call(&shared, chat).await })
    }
}

async fn call(shared: &Shared, chat: ChatRequest) -> Result<ChatStream, ChatError> {
    let (model, thinking_suffix) =
        shared
            .catalog
            .resolve(&chat.model)
            .ok_or_else(|| ChatError::ModelNotFound {
                model: chat.model.clone(),
            })?;
    let thinking = chat
        .thinking
        .or(thinking_suffix.then_some(Thinking::Enabled {
            budget_tokens: super::thinking::DEFAULT_BUDGET,
        }));
    let mut token = match &shared.account {
        Some(account) => Some(account.token().await?),
        None => None,
    };
    let conversation_id = chat
        .metadata
        .conversation_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let built = request::build(
        &chat,
        &BuildOptions {
            kiro_model_id: &model.kiro_model_id,
            profile_arn: token.as_ref().and_then(|t| t.profile_arn.as_deref()),
            conversation_id,
            thinking,
        },
    );
    let body = Bytes::from(
        serde_json::to_vec(&built.body).map_err(|e| ChatError::Internal {
            message: format!("serialising the Kiro request failed: {e}"),
        })?,
    );
    let input_estimate = tokens::estimate_request(&chat);
    let measure = Measure::new(input_estimate, model.context_window, &body);
    measure.check()?;
    let mut response = shared
        .transport
        .post(shared.headers.for_call(token.as_ref()), body.clone())
        .await?;
    if let (Some(account), Some(rejected)) = (&shared.account, &token) {
        if matches!(
            response.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let error_body = read_bounded(response.body).await;
            if !errors::is_bearer_invalid(response.status, &error_body) {
                return Err(failure(
                    account,
                    response.status,
                    &response.headers,
                    &error_body,
                ));
            }
            tracing::info!(
                account = account.name(),
                "Kiro rejected the access token; refreshing once"
            );
            token = Some(account.token_after_rejection(&rejected.token).await?);
            response = shared
                .transport
                .post(shared.headers.for_call(token.as_ref()), body)
                .await?;
        }
    }
    if !response.status.is_success() {
        let error_body = read_bounded(response.body).await;
        if errors::is_context_overflow(response.status, &error_body) {
            return Err(measure.upstream_error());
        }
        return Err(match &shared.account {
            Some(account) => failure(account, response.status, &response.headers, &error_body),
            None => errors::classify(response.status, &response.headers, &error_body),
        });
    }
    let translator = Translator::new(built.tool_names, input_estimate, model.context_window)
        .with_thinking(thinking.is_some());
    let start = ChatEvent::Start {
        id: Arc::from(format!("msg_{}", uuid::Uuid::new_v4().simple())),
        model: Arc::from(chat.model.as_str()),
        input_tokens: input_estimate,
    };
    Ok(chat_stream(response.body, translator, start))
}

/// Machine id of the in-process fake (it has no account).
const MOCK_MACHINE_ID: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Classifies an upstream failure and disables the account when it is suspended.
fn failure(account: &Account, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ChatError {
    let error = errors::classify(status, headers, body);
    if status == StatusCode::FORBIDDEN && !errors::is_bearer_invalid(status, body) {
        if let ChatError::AccountUnavailable { message } = &error {
            account.mark_unusable(format!("Kiro account `{}`: {message}", account.name()));
        }
    }
    error
}

async fn read_bounded(mut body: ByteStream) -> Bytes {
    let mut out = BytesMut::new();
    while let Some(Ok(chunk)) = body.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    out.freeze()
}

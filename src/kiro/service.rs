//! The Kiro upstream `Service`: canonical request in, canonical event stream out.

use super::errors;
use super::fake::FakeKiro;
use super::models::Catalog;
use super::request::{self, BuildOptions};
use super::stream::{chat_stream, ByteStream};
use super::translate::Translator;
use crate::chat::{ChatError, ChatEvent, ChatRequest, ChatStream};
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

/// How requests reach Kiro.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The built-in fake, in-process (mock mode).
    Fake(FakeKiro),
}

/// An upstream answer with its body still streaming.
struct UpstreamResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: ByteStream,
}

impl Transport {
    async fn send(&self, request: Request<Bytes>) -> Result<UpstreamResponse, ChatError> {
        match self {
            Self::Fake(fake) => {
                let (parts, body) = fake.handle(request).into_parts();
                Ok(UpstreamResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: Box::pin(body),
                })
            }
        }
    }

    /// Human-readable mode for `/health`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Fake(_) => "mock",
        }
    }
}

struct Shared {
    transport: Transport,
    catalog: Catalog,
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
            .finish_non_exhaustive()
    }
}

impl KiroService {
    /// A service sending through `transport`, resolving models with `catalog`.
    pub fn new(transport: Transport, catalog: Catalog) -> Self {
        Self {
            shared: Arc::new(Shared { transport, catalog }),
        }
    }

    /// `mock` or `live`.
    pub fn mode(&self) -> &'static str {
        self.shared.transport.mode()
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
    let model = shared
        .catalog
        .get(&chat.model)
        .ok_or_else(|| ChatError::ModelNotFound {
            model: chat.model.clone(),
        })?;
    let conversation_id = chat
        .metadata
        .conversation_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let built = request::build(
        &chat,
        &BuildOptions {
            kiro_model_id: &model.kiro_model_id,
            profile_arn: None,
            conversation_id,
        },
    );
    let body = serde_json::to_vec(&built.body).map_err(|e| ChatError::Internal {
        message: format!("serialising the Kiro request failed: {e}"),
    })?;
    let request = Request::post("/generateAssistantResponse")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(body))
        .map_err(|e| ChatError::Internal {
            message: format!("building the Kiro request failed: {e}"),
        })?;
    let response = shared.transport.send(request).await?;
    if !response.status.is_success() {
        let body = read_bounded(response.body).await;
        return Err(errors::classify(response.status, &response.headers, &body));
    }
    let input_estimate = tokens::estimate_request(&chat);
    let translator = Translator::new(built.tool_names, input_estimate, model.context_window);
    let start = ChatEvent::Start {
        id: Arc::from(format!("msg_{}", uuid::Uuid::new_v4().simple())),
        model: Arc::from(chat.model.as_str()),
        input_tokens: input_estimate,
    };
    Ok(chat_stream(response.body, translator, start))
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

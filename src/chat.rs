//! Canonical, provider-neutral chat types.
//!
//! The API adapters translate their wire formats into [`ChatRequest`] and encode
//! [`ChatEvent`] streams back; providers consume `ChatRequest` and produce `ChatEvent`s.
//! Nothing here knows about OpenAI, Anthropic or Kiro field names.

pub mod instructions;
pub mod web_search;

use aiproxy_layers::ClientKey;
use futures_util::Stream;
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One chat call, as every provider sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// The model id the client asked for (catalog id, e.g. `claude-sonnet-4-5`).
    pub model: String,
    /// System prompt parts, in order (OpenAI `system`/`developer` messages, Anthropic `system`).
    pub system: Vec<String>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model may use the tools.
    pub tool_choice: ToolChoice,
    /// At most one tool call per answer (OpenAI `parallel_tool_calls: false`, Anthropic
    /// `tool_choice.disable_parallel_tool_use: true`).
    pub single_tool_call: bool,
    /// Sampling parameters as given by the client.
    pub sampling: Sampling,
    /// The shape the answer must have (OpenAI `response_format`, Anthropic `output_format`).
    pub output: Option<OutputFormat>,
    /// Extended thinking, if requested (Anthropic `thinking` or a `-thinking` model id).
    pub thinking: Option<Thinking>,
    /// Whether the client wants a stream (the provider streams either way).
    pub stream: bool,
    /// Who is asking and how.
    pub metadata: Metadata,
    /// Where the client asked for prompt-cache checkpoints (Anthropic `cache_control`).
    pub cache_marks: CacheMarks,
    /// The web search the client offered the model, run by aiproxy
    /// ([`crate::model::search`]).
    pub web_search: Option<web_search::WebSearchTool>,
}

/// The prompt-cache checkpoints a client marked (Anthropic `cache_control` on tools,
/// system blocks and message blocks), in prompt order: tools first, then system and
/// messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheMarks {
    /// Indexes (into [`ChatRequest::tools`]) of the tools marked.
    pub tools: Vec<usize>,
    /// How many system or message blocks are marked.
    pub prompt: usize,
}

impl CacheMarks {
    /// True when nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.prompt == 0
    }
}

impl ChatRequest {
    /// A copy with `reminder` appended to the current (last, user) message, or added as a
    /// new user message when the conversation ends with the assistant: how aiproxy asks
    /// the model again after an answer that missed what the request needs.
    pub fn with_reminder(&self, reminder: &str) -> Self {
        let mut chat = self.clone();
        match chat.messages.last_mut() {
            Some(last) if last.role == Role::User => last.parts.push(Part::Text(reminder.into())),
            _ => chat.messages.push(Message::text(Role::User, reminder)),
        }
        chat
    }
}

/// Author of a message. System prompts are not messages (see [`ChatRequest::system`]).
/// Serialisable (as are [`Message`] and [`Part`]) for stores shared between replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// The human / calling application; also carries tool results.
    User,
    /// The model.
    Assistant,
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Content, in order.
    pub parts: Vec<Part>,
}

impl Message {
    /// A message holding one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::Text(text.into())],
        }
    }
}

/// A piece of message content.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An inline image.
    Image {
        /// MIME type, e.g. `image/png`.
        media_type: String,
        /// Base64 bytes without a `data:` prefix.
        data: String,
    },
    /// A tool call made by the assistant.
    ToolUse {
        /// Call id, echoed by the matching result.
        id: String,
        /// Tool name as the client defined it.
        name: String,
        /// Arguments (a JSON object).
        input: Value,
    },
    /// The result of a tool call, sent by the user side.
    ToolResult {
        /// Id of the call this answers.
        tool_use_id: String,
        /// Result flattened to text.
        content: String,
        /// Whether the tool failed.
        is_error: bool,
    },
    /// Reasoning text from an earlier assistant turn.
    Thinking(String),
    /// Reasoning from an earlier assistant turn with the upstream's signature, so it can be
    /// replayed natively (docs/kiro-protocol.md §13.1).
    SignedThinking {
        /// The reasoning text.
        text: String,
        /// The signature the upstream gave it.
        signature: String,
    },
    /// Reasoning from an earlier assistant turn that the upstream gave encrypted (Anthropic
    /// `redacted_thinking`): opaque, replayed as it came.
    RedactedThinking(String),
}

/// A tool definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Name as the client defined it.
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// Tool use policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call some tool.
    Any,
    /// The model must call this tool.
    Tool(String),
}

/// A required shape of the answer.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object (OpenAI `json_object`).
    JsonObject,
    /// JSON that validates against `schema`.
    JsonSchema {
        /// The schema's name (OpenAI requires one; Anthropic's default is `output`).
        name: String,
        /// What the answer is, if the client said.
        description: Option<String>,
        /// The JSON Schema.
        schema: Value,
    },
}

/// Extended thinking settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thinking {
    /// Think up to about this many tokens.
    Enabled {
        /// Budget in tokens.
        budget_tokens: u32,
    },
    /// The model decides how much to think.
    Adaptive {
        /// `low`, `medium` or `high`.
        effort: Effort,
    },
}

/// Effort of adaptive thinking (ordered weakest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effort {
    /// Little thinking.
    Low,
    /// Some thinking.
    Medium,
    /// Much thinking.
    High,
    /// More than high (the newest models).
    Xhigh,
    /// As much as the model can.
    Max,
}

impl Effort {
    /// Every level, weakest first.
    pub const ALL: [Effort; 5] = [
        Effort::Low,
        Effort::Medium,
        Effort::High,
        Effort::Xhigh,
        Effort::Max,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Xhigh => "xhigh",
            Self::Max => "max",
        }
    }

    /// The level of a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// Sampling parameters. Kiro does not honour temperature or top_p (docs/kiro-protocol.md §4.4),
/// but they are kept so other providers and the cache key see what the client asked for;
/// `max_tokens` and `stop` are applied by aiproxy ([`crate::model::emulate`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    /// Upper bound of output tokens.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Sampling hints the client sent that Kiro does not apply (see
    /// [`crate::api::unsupported`]); answered in the `x-aiproxy-not-honoured` header.
    pub not_honoured: Vec<&'static str>,
}

/// Request metadata that is not part of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// Who is calling (non-secret label from the auth layer).
    pub client: ClientKey,
    /// A client-supplied conversation/session id, if any.
    pub conversation_id: Option<String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Self {
            client: ClientKey::anonymous(),
            conversation_id: None,
        }
    }
}

/// Token usage of one call: the model tier's one usage type (the generic layers count the
/// same figures for rate limits, load and metrics).
pub use aiproxy_layers::model::TokenUsage as Usage;

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopReason {
    /// Natural end of the turn.
    EndTurn,
    /// Output token limit reached.
    MaxTokens,
    /// A stop sequence was produced.
    StopSequence,
    /// The model called tools and waits for their results.
    ToolUse,
    /// The context window is full.
    ContextWindowExceeded,
}

/// One item of a response stream. A stream ends with [`ChatEvent::Stop`] or with an error
/// item; a stream that ends without either is a truncation and must be reported as one.
/// Serde: cached answers shared by replicas travel through Redis in this form.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ChatEvent {
    /// The response begins.
    Start {
        /// Message id for the client (made by aiproxy; Kiro sends none).
        id: Arc<str>,
        /// Model id to report to the client.
        model: Arc<str>,
        /// Estimated prompt tokens, known before any output.
        input_tokens: u64,
    },
    /// Visible text.
    TextDelta(String),
    /// Reasoning text.
    ThinkingDelta(String),
    /// The signature of the reasoning so far (native reasoning): it closes the thinking
    /// block, and a client sends it back with the block to replay it.
    ThinkingSignature(String),
    /// Reasoning the model keeps encrypted (a block of its own, opaque to everyone but the
    /// upstream; a client sends it back with the turn).
    RedactedThinking(String),
    /// A tool call begins (`index` counts tool calls from 0).
    ToolCallStart {
        /// 0-based index among this response's tool calls.
        index: u32,
        /// Call id.
        id: String,
        /// Tool name as the client defined it.
        name: String,
    },
    /// A fragment of a tool call's JSON arguments.
    ToolCallDelta {
        /// Index of the call.
        index: u32,
        /// Fragment of the arguments' JSON text.
        json: String,
    },
    /// A tool call's arguments are complete (and parse as a JSON object).
    ToolCallEnd {
        /// Index of the call.
        index: u32,
    },
    /// Token usage (may come more than once; the last one wins).
    Usage(Usage),
    /// The stop sequence that ended the answer; comes right before
    /// `Stop(StopReason::StopSequence)` when aiproxy matched it.
    StopSequence(String),
    /// A web search aiproxy ran for the model (a server tool call: the client does not
    /// answer it); its [`ChatEvent::WebSearchResult`] follows.
    WebSearchCall {
        /// The search's id (`srvtoolu_...`).
        id: String,
        /// What was searched for.
        query: String,
    },
    /// What a web search found, or why it found nothing.
    WebSearchResult {
        /// The id of its [`ChatEvent::WebSearchCall`].
        id: String,
        /// The results (shared: events are cloned into caches and replays).
        outcome: Arc<web_search::SearchOutcome>,
    },
    /// The response is complete.
    Stop(StopReason),
}

/// Boxed stream of chat events: the response type of every model-tier service.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, ChatError>> + Send>>;

/// Whose fault a [`ChatError`] is (the model-tier layers' vocabulary).
pub use aiproxy_layers::model::Fault;

/// Closed vocabulary of failures, shared by the adapters, retry, pool and metrics.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// The request is invalid; fixing it is up to the client.
    #[error("{message}")]
    InvalidRequest {
        /// What was wrong and what to do.
        message: String,
        /// The field at fault, if known.
        param: Option<String>,
    },
    /// The conversation does not fit the model's context (Kiro's overflow answer, or the
    /// local guard's prediction). Worded exactly as Anthropic words it, because Claude Code
    /// and other agents compact their conversation when they read this message.
    #[error("prompt is too long: {tokens} tokens > {limit} maximum")]
    ContextOverflow {
        /// The conversation's size in tokens (an estimate; see [`crate::kiro::protocol::overflow`]).
        tokens: u64,
        /// The model's context window in tokens.
        limit: u64,
    },
    /// The requested model is not in the catalog, or its Kiro model is not served now.
    #[error("{}", model_not_found(model, unserved.as_deref()))]
    ModelNotFound {
        /// The id the client sent.
        model: String,
        /// The Kiro model the catalog file maps it to, when no account serves that now.
        unserved: Option<String>,
    },
    /// This account does not serve the requested model (others do): the pool tries
    /// another, and the account is not blamed.
    #[error("{message}")]
    NotServedHere {
        /// Which account and model.
        message: String,
    },
    /// The upstream rejected the request as malformed (its 400).
    #[error("The upstream rejected the request as malformed: {message}")]
    UpstreamRejected {
        /// Upstream message plus what we know about the cause.
        message: String,
    },
    /// The upstream rate-limited this call.
    #[error("The upstream is rate limiting this account: {message}")]
    RateLimited {
        /// Upstream message.
        message: String,
        /// How long the upstream asked to wait.
        retry_after: Option<Duration>,
    },
    /// The client's own rate limit (requests or tokens per minute of its API key) refused
    /// the request; nothing was sent upstream.
    #[error("{message}")]
    Throttled {
        /// Which limit, and what to do.
        message: String,
        /// When the request would pass; `None` when it never can (larger than a minute's
        /// token budget).
        retry_after: Option<Duration>,
    },
    /// The account's quota is exhausted: its monthly credits, or the overage it may spend
    /// beyond them (docs/kiro-protocol.md §14.4).
    #[error("The account's {} is exhausted: {message}", if *overage { "overage limit" } else { "monthly request quota" })]
    QuotaExhausted {
        /// Upstream message.
        message: String,
        /// Kiro's `OVERAGE_REQUEST_LIMIT_EXCEEDED` (not `MONTHLY_REQUEST_COUNT`).
        overage: bool,
    },
    /// The credentials are not usable (refresh failed, token revoked, account suspended).
    #[error("{message}")]
    AccountUnavailable {
        /// What happened to the account and what to do.
        message: String,
    },
    /// The upstream failed (5xx) or could not be reached.
    #[error("The upstream failed: {message}")]
    Upstream {
        /// What happened.
        message: String,
    },
    /// The upstream answered an empty turn (docs/kiro-protocol.md §13.2). The first time, the
    /// request is sent again at once with a reminder (a resend the retry layer makes); after
    /// the reminder it is the upstream's fault, retried and counted like a 5xx.
    #[error("The upstream failed: {message}")]
    EmptyTurn {
        /// What happened and what to do.
        message: String,
        /// The request that got it already carried the reminder.
        nudged: bool,
    },
    /// The upstream rejected the account's access token, which has been refreshed since: the
    /// request is sent again at once on the same account (a resend the retry layer makes).
    #[error("{message}")]
    TokenRejected {
        /// Which account, and what to do when no resend follows.
        message: String,
    },
    /// The upstream refused the signature of reasoning replayed from an earlier turn
    /// (`THINKING_SIGNATURE_INVALID`, docs/kiro-protocol.md §13.1): the request is sent again at
    /// once with that reasoning inline (a resend the retry layer makes).
    #[error("{message}")]
    SignatureRefused {
        /// What happened and what to do when no resend follows.
        message: String,
    },
    /// The model answered twice without what the request requires (a forced tool call):
    /// nothing reached the client. Another attempt is unlikely to do better and no account
    /// is to blame.
    #[error("The model did not do what the request requires: {message}")]
    Unfulfilled {
        /// What was missing and what to do.
        message: String,
    },
    /// The upstream did not answer in time.
    #[error("The upstream timed out: {message}")]
    Timeout {
        /// Which wait ran out.
        message: String,
    },
    /// The upstream stream broke: bad framing, or it ended without a stop reason.
    #[error("The upstream response was cut off or corrupt: {message}")]
    Truncated {
        /// What was missing or broken.
        message: String,
    },
    /// No local capacity: every upstream slot of the account stayed busy for the wait
    /// allowed. Not an upstream failure (nothing was sent), and not the account's fault.
    #[error("aiproxy is at capacity: {message}")]
    Busy {
        /// Which limit was full and what to do.
        message: String,
        /// When a slot is likely free again.
        retry_after: Option<Duration>,
    },
    /// No account of the pool can take the request now (all cooling down, open, disabled
    /// or removed). Nothing was sent upstream.
    #[error("No Kiro account can serve this request now: {message}")]
    NoAccount {
        /// Every account's state and when the first is expected back.
        message: String,
        /// When the first account is expected back.
        retry_after: Option<Duration>,
    },
    /// The state shared between replicas (Redis) could not be reached and
    /// `--redis-failure-mode` is `closed`: this replica does not decide alone. Nothing was
    /// sent upstream.
    #[error("Shared state unavailable: {message}")]
    SharedStateUnavailable {
        /// What failed and what to do.
        message: String,
    },
    /// A bug or an unexpected state inside aiproxy.
    #[error("Internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
}

impl ChatError {
    /// Shorthand for an [`ChatError::InvalidRequest`] about one field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The stream ended without its stop event: a truncation, whichever encoder saw it.
    pub fn ended_without_stop() -> Self {
        Self::Truncated {
            message: "the response ended without a stop reason; retry the request".into(),
        }
    }

    /// [`ChatError::kind`] of an empty turn, which the next attempt answers with a reminder.
    pub const EMPTY_TURN: &'static str = "empty_turn";
    /// [`ChatError::kind`] of a refused reasoning signature, which the next attempt answers
    /// by sending the reasoning inline.
    pub const SIGNATURE_REFUSED: &'static str = "signature_refused";

    /// Whose fault the failure is: what retry and breakers classify by, with one call.
    pub fn fault(&self) -> Fault {
        match self {
            Self::InvalidRequest { .. }
            | Self::ContextOverflow { .. }
            | Self::ModelNotFound { .. }
            | Self::UpstreamRejected { .. }
            | Self::EmptyTurn { nudged: false, .. }
            | Self::SignatureRefused { .. }
            | Self::Unfulfilled { .. }
            | Self::Throttled { .. } => Fault::Request,
            Self::RateLimited { .. }
            | Self::QuotaExhausted { .. }
            | Self::AccountUnavailable { .. }
            | Self::TokenRejected { .. }
            | Self::NotServedHere { .. } => Fault::Account,
            Self::Upstream { .. }
            | Self::EmptyTurn { nudged: true, .. }
            | Self::Timeout { .. }
            | Self::Truncated { .. } => Fault::Upstream,
            Self::Busy { .. }
            | Self::NoAccount { .. }
            | Self::SharedStateUnavailable { .. }
            | Self::Internal { .. } => Fault::Local,
        }
    }

    /// When to come back, when the failure says so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::Throttled { retry_after, .. }
            | Self::Busy { retry_after, .. }
            | Self::NoAccount { retry_after, .. } => *retry_after,
            // Redis is usually back within a second or two (a restart, a failover).
            Self::SharedStateUnavailable { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Stable label for metrics and logs (a closed list).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ContextOverflow { .. } => "context_overflow",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::NotServedHere { .. } => "model_not_served_here",
            Self::UpstreamRejected { .. } => "upstream_rejected",
            Self::RateLimited { .. } => "rate_limited",
            Self::Throttled { .. } => "client_rate_limited",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::AccountUnavailable { .. } => "account_unavailable",
            Self::Upstream { .. } => "upstream_error",
            Self::EmptyTurn { .. } => Self::EMPTY_TURN,
            Self::TokenRejected { .. } => "token_rejected",
            Self::SignatureRefused { .. } => Self::SIGNATURE_REFUSED,
            Self::Unfulfilled { .. } => "unfulfilled",
            Self::Timeout { .. } => "timeout",
            Self::Truncated { .. } => "truncated",
            Self::Busy { .. } => "busy",
            Self::NoAccount { .. } => "no_account",
            Self::SharedStateUnavailable { .. } => "shared_state_unavailable",
            Self::Internal { .. } => "internal",
        }
    }
}

/// `<prefix><32 lowercase hex>` from a random UUID: the ids of messages, completions, tool
/// calls and items. Written straight into the string (through `format!` the formatting cost
/// more than making the UUID).
pub fn random_id(prefix: &str) -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    let hex = uuid::Uuid::new_v4().simple().encode_lower(&mut buffer);
    let mut id = String::with_capacity(prefix.len() + hex.len());
    id.push_str(prefix);
    id.push_str(hex);
    id
}

/// A random UUID in its hyphenated form (as `Uuid::to_string` writes it, without going
/// through `format!`): Kiro's conversation and continuation ids.
pub fn random_uuid() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

fn model_not_found(model: &str, unserved: Option<&str>) -> String {
    match unserved {
        Some(kiro) => format!(
            "The model `{model}` maps to Kiro's `{kiro}`, which none of the accounts serves now. \
             GET /v1/models lists the models they serve."
        ),
        None => format!(
            "The model `{model}` does not exist. GET /v1/models lists the available model ids."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::random_id;

    #[test]
    fn random_ids_are_the_prefix_and_32_lowercase_hex_digits() {
        let id = random_id("chatcmpl-");
        let hex = id.strip_prefix("chatcmpl-").unwrap();
        assert_eq!(hex.len(), 32, "{id}");
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{id}"
        );
        assert_ne!(random_id("msg_"), random_id("msg_"));
    }

    #[test]
    fn random_uuids_read_back_as_the_uuid_they_print() {
        let text = super::random_uuid();
        let parsed = uuid::Uuid::parse_str(&text).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.get_version_num(), 4);
    }
}

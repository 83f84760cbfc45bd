//! The JSON body of `generateAssistantResponse` (docs/kiro-protocol.md §4.2). Serialised by the
//! request builder, parsed by the fake Kiro, so both sides agree on one definition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Kiro refuses a body whose weighted size is over this (docs/kiro-protocol.md §13.1: about
/// 1.3 M weighted units pass and 1.36 M fail; we take the lower, proven figure).
pub const MAX_WEIGHTED_PAYLOAD: usize = 1_300_000;

/// The size Kiro's payload limit counts (§13.1): an ASCII character weighs 1, any other 8.
pub fn weighted_payload_size(body: &[u8]) -> usize {
    // Most bodies are ASCII, which std checks a word at a time.
    if body.is_ascii() {
        return body.len();
    }
    // Each non-ASCII character is one leading byte (0xC0..) plus continuation bytes
    // (0x80..0xBF): ASCII bytes weigh 1, leading bytes 8, continuation bytes 0.
    let leading = body.iter().filter(|&&b| b >= 0xc0).count();
    let continuation = body.iter().filter(|&&b| (0x80..0xc0).contains(&b)).count();
    body.len() - leading - continuation + 8 * leading
}

/// Top-level request body. Unknown fields are refused when parsing (the fake), as Kiro
/// refuses e.g. a top-level `systemPrompt` or `agentMode` (§13.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KiroRequest {
    /// The conversation.
    pub conversation_state: ConversationState,
    /// The account's profile ARN, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_arn: Option<String>,
    /// Native reasoning (§13.1): `{thinking: {type}, output_config: {effort}}`, or
    /// `{reasoning: {effort}}` on GPT models; only for models whose capabilities offer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_model_request_fields: Option<Value>,
}

/// `conversationState`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversationState {
    /// Random per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_continuation_id: Option<String>,
    /// Always `vibe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_task_type: Option<String>,
    /// `MANUAL`.
    pub chat_trigger_type: String,
    /// Client session id or random.
    pub conversation_id: String,
    /// The user turn being answered.
    pub current_message: CurrentMessage,
    /// Earlier turns, alternating user/assistant, starting with user, ending with assistant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// `currentMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentMessage {
    /// Always a user message.
    pub user_input_message: UserInputMessage,
}

/// One history entry: a user or an assistant turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HistoryEntry {
    /// A user turn.
    UserInputMessage(UserInputMessage),
    /// An assistant turn.
    AssistantResponseMessage(AssistantResponseMessage),
}

/// `userInputMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInputMessage {
    /// Non-empty text.
    pub content: String,
    /// Kiro model id.
    pub model_id: String,
    /// `AI_EDITOR`.
    pub origin: String,
    /// Inline images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<KiroImage>,
    /// Tools and tool results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input_message_context: Option<UserInputMessageContext>,
}

impl UserInputMessage {
    /// The tools entries of this message (tool definitions and checkpoints).
    pub fn tools(&self) -> &[KiroTool] {
        self.user_input_message_context
            .as_ref()
            .map_or(&[], |c| c.tools.as_slice())
    }

    /// How many `cachePoint` entries its tools carry.
    pub fn cache_points(&self) -> usize {
        self.tools().iter().filter(|t| t.spec().is_none()).count()
    }
}

impl KiroRequest {
    /// The first user turn's text (where the system prompt and the thinking tags go).
    pub fn first_user_content(&self) -> &str {
        let state = &self.conversation_state;
        match state.history.first() {
            Some(HistoryEntry::UserInputMessage(user)) => &user.content,
            _ => &state.current_message.user_input_message.content,
        }
    }
}

/// An image (`format` is the MIME subtype).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KiroImage {
    /// `png`, `jpeg`, `gif`, `webp`.
    pub format: String,
    /// The bytes.
    pub source: ImageSource,
}

/// `images[].source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    /// Base64 without a `data:` prefix.
    pub bytes: String,
}

/// `userInputMessageContext`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInputMessageContext {
    /// Tool definitions (current message only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<KiroTool>,
    /// Results of the previous assistant turn's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_results: Vec<KiroToolResult>,
}

/// One `tools[]` entry: a tool, or a prompt-cache checkpoint between tools (§13.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum KiroTool {
    /// `{"toolSpecification": ...}`.
    ToolSpecification(ToolSpecification),
    /// `{"cachePoint": {"type": "default"}}`: what comes before it may be cached.
    CachePoint(CachePoint),
}

impl KiroTool {
    /// The tool, when this entry is one.
    pub fn spec(&self) -> Option<&ToolSpecification> {
        match self {
            Self::ToolSpecification(spec) => Some(spec),
            Self::CachePoint(_) => None,
        }
    }

    /// A default checkpoint.
    pub fn cache_point() -> Self {
        Self::CachePoint(CachePoint {
            kind: "default".into(),
        })
    }
}

/// `cachePoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePoint {
    /// `default`, the only kind.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `toolSpecification`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpecification {
    /// Name, at most 64 characters.
    pub name: String,
    /// Description.
    pub description: String,
    /// `{"json": <JSON Schema>}`.
    pub input_schema: InputSchema,
}

/// `inputSchema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSchema {
    /// The JSON Schema.
    pub json: Value,
}

/// `toolResults[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KiroToolResult {
    /// The call answered.
    pub tool_use_id: String,
    /// `[{"text": ...}]`.
    pub content: Vec<TextBlock>,
    /// `success` or `error`.
    pub status: String,
}

/// `{"text": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextBlock {
    /// The text.
    pub text: String,
}

/// `assistantResponseMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantResponseMessage {
    /// Non-empty text.
    pub content: String,
    /// Tool calls made in this turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_uses: Vec<KiroToolUse>,
    /// The turn's native reasoning, replayed with its signature (§13.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<ReasoningContent>,
}

/// `reasoningContent`: one of the two shapes (a flat string is refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ReasoningContent {
    /// `{reasoningText: {text, signature}}`.
    ReasoningText(ReasoningText),
    /// `{redactedContent: "..."}`.
    RedactedContent(String),
}

/// `reasoningText`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningText {
    /// The reasoning as the model wrote it.
    pub text: String,
    /// The signature Kiro gave it.
    pub signature: String,
}

/// `toolUses[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KiroToolUse {
    /// Call id.
    pub tool_use_id: String,
    /// Tool name (shortened if over 64 characters).
    pub name: String,
    /// Arguments object.
    pub input: Value,
}

//! Builds the Kiro request body from a [`ChatRequest`] (docs/kiro-protocol.md §4.2-4.5).
//!
//! Kiro answers `400 Improperly formed request.` to a long list of shapes that clients send
//! every day (§4.3), so the builder first normalises the conversation:
//!
//! 1. the current message is a user message (a trailing assistant prefill goes to history,
//!    answered by `Continue`);
//! 2. history alternates user/assistant, starts with user and ends with assistant
//!    (adjacent same-role turns are merged; a leading assistant gets an `(empty)` user
//!    turn in front);
//! 3. every `content` is non-empty (`Tool results provided.` for result-only user turns,
//!    `" "` for tool-use-only assistant turns, `(empty)` otherwise);
//! 4. tool pairing: every tool use in history is answered by a result in the next user
//!    turn and vice versa; unanswered uses are dropped, results without a call become text;
//!    duplicates are removed;
//! 5. whenever tool traffic appears, every tool name used is defined (placeholders for
//!    names the client no longer sends);
//! 6. tool names over 64 characters are shortened (`prefix_<hash>`) and restored in
//!    responses through [`ToolNameMap`]; a description over [`MAX_TOOL_DESCRIPTION`]
//!    characters moves, whole, into the system prompt under a heading that names the tool,
//!    and the tool keeps its first paragraph plus a pointer to that heading (so nothing is
//!    cut); schemas are tidied;
//! 7. the system prompt (with the moved tool descriptions after it) is prefixed to the
//!    first user turn; prompt-cache marks become `cachePoint` entries among the tools,
//!    within the model's checkpoint limit;
//! 8. thinking: natively (`additionalModelRequestFields`, §13.1) when the model's
//!    capabilities offer it, with signed reasoning of earlier turns replayed as
//!    `reasoningContent`; otherwise with the thinking tags of §4.4 in front of the first
//!    user turn and earlier reasoning inline in `<thinking>` tags.

use crate::chat::{CacheMarks, ChatRequest, Message, Part, Role, Tool, ToolChoice};
use crate::kiro::protocol::wire::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Kiro rejects longer tool names (A2 and KGW use 64).
pub const MAX_TOOL_NAME: usize = 64;
/// Kiro rejects a longer tool description (§4.3 rule 8, §13.1: the cap is on the final
/// string, in characters).
pub const MAX_TOOL_DESCRIPTION: usize = 10_000;
/// How much of a moved description's first paragraph stays in the tool itself.
const MOVED_DESCRIPTION_SUMMARY: usize = 1_000;
const ORIGIN: &str = "AI_EDITOR";
const EMPTY: &str = "(empty)";
const TOOL_RESULTS_ONLY: &str = "Tool results provided.";
const TOOL_USES_ONLY: &str = " ";
/// The user turn after an assistant prefill: the answer continues the prefilled text.
const CONTINUE: &str = "Continue your previous reply exactly where it stopped, as if it had never been interrupted. Do not repeat any of it and do not mention this request.";

/// Per-request inputs that do not come from the chat request.
#[derive(Debug, Clone)]
pub struct BuildOptions<'a> {
    /// Kiro `modelId` of the requested model.
    pub kiro_model_id: &'a str,
    /// The account's profile ARN, if any.
    pub profile_arn: Option<&'a str>,
    /// Conversation id to send.
    pub conversation_id: String,
    /// Effective thinking setting (the request's, or implied by a `-thinking` model id).
    pub thinking: Option<crate::chat::Thinking>,
    /// The model's native reasoning, when its capabilities offer it.
    pub reasoning: Option<&'a crate::kiro::accounts::model_list::Reasoning>,
    /// Replay signed reasoning of earlier turns natively (off for the one retry after Kiro
    /// refused a signature: the reasoning then goes inline).
    pub replay_signatures: bool,
    /// `max_tokens` to send natively (the model's request-fields schema takes it).
    pub native_max_tokens: Option<u32>,
    /// The model's prompt-caching limits; `None`: it does not cache (no checkpoints sent).
    pub prompt_caching: Option<&'a crate::kiro::accounts::model_list::PromptCaching>,
}

/// Shortened tool name -> the client's original name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNameMap {
    originals: HashMap<String, String>,
}

impl ToolNameMap {
    /// The client's name for a name Kiro used.
    pub fn restore(&self, name: &str) -> String {
        self.originals
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    fn shorten(&mut self, name: &str) -> String {
        let short = shorten_tool_name(name);
        if short != name {
            self.originals.insert(short.clone(), name.to_owned());
        }
        short
    }
}

/// A Kiro body plus what is needed to read its answer.
#[derive(Debug, Clone)]
pub struct BuiltRequest {
    /// The body to send.
    pub body: KiroRequest,
    /// How to restore shortened tool names.
    pub tool_names: ToolNameMap,
    /// Thinking goes through Kiro's native reasoning (no `<thinking>` tags in the answer).
    pub native_reasoning: bool,
}

/// One conversation turn while normalising.
#[derive(Debug, Default)]
struct Turn {
    role: Option<Role>,
    text: String,
    images: Vec<KiroImage>,
    tool_uses: Vec<KiroToolUse>,
    tool_results: Vec<KiroToolResult>,
    /// Signed reasoning replayed natively (assistant turns).
    reasoning: Option<ReasoningContent>,
}

impl Turn {
    fn new(role: Role) -> Self {
        Self {
            role: Some(role),
            ..Self::default()
        }
    }

    fn is(&self, role: Role) -> bool {
        self.role == Some(role)
    }

    fn push_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(text);
    }

    fn absorb(&mut self, other: Turn) {
        if !other.text.is_empty() && !self.text.is_empty() {
            self.text.push_str("\n\n");
            self.text.push_str(&other.text);
        } else {
            self.text.push_str(&other.text);
        }
        self.images.extend(other.images);
        self.tool_uses.extend(other.tool_uses);
        self.tool_results.extend(other.tool_results);
        // One reasoningContent per turn: a second signed block goes inline.
        match (&self.reasoning, other.reasoning) {
            (None, reasoning) => self.reasoning = reasoning,
            (Some(_), Some(ReasoningContent::ReasoningText(extra))) => {
                self.text = format!("<thinking>{}</thinking>\n\n{}", extra.text, self.text);
            }
            (Some(_), _) => {}
        }
    }
}

/// Builds the Kiro body for `request`.
pub fn build(request: &ChatRequest, options: &BuildOptions<'_>) -> BuiltRequest {
    let mut names = ToolNameMap::default();
    let native = options
        .thinking
        .zip(options.reasoning)
        .and_then(|(thinking, reasoning)| {
            crate::kiro::protocol::thinking::native_fields(thinking, reasoning)
        });
    let signed = native.is_some() && options.replay_signatures;
    let native_reasoning = native.is_some();
    let mut turns = normalise(&request.messages, &mut names, signed);
    let mut moved = MovedDescriptions::default();
    let mut tools = if request.tool_choice == ToolChoice::None && !has_tool_traffic(&turns) {
        Vec::new()
    } else {
        request
            .tools
            .iter()
            .map(|tool| tool_definition(tool, &mut names, &mut moved))
            .collect()
    };
    add_placeholder_tools(&turns, &mut tools);
    if let Some(caching) = options.prompt_caching {
        add_cache_points(&request.cache_marks, caching, &mut tools);
    }
    prefix_system(&mut turns, &request.system, &moved.section);
    if let (Some(thinking), Some(first), None) = (options.thinking, turns.first_mut(), &native) {
        first.text = format!(
            "{}\n\n{}",
            crate::kiro::protocol::thinking::prompt_prefix(thinking),
            first.text
        );
    }

    let current = turns.pop().unwrap_or_else(|| {
        let mut turn = Turn::new(Role::User);
        turn.text = CONTINUE.to_owned();
        turn
    });
    let history = turns
        .into_iter()
        .map(|turn| history_entry(turn, options.kiro_model_id))
        .collect();
    let context = UserInputMessageContext {
        tools,
        tool_results: current.tool_results,
    };
    let context =
        (!context.tools.is_empty() || !context.tool_results.is_empty()).then_some(context);

    let body = KiroRequest {
        conversation_state: ConversationState {
            agent_continuation_id: Some(crate::chat::random_uuid()),
            agent_task_type: Some("vibe".to_owned()),
            chat_trigger_type: "MANUAL".to_owned(),
            conversation_id: options.conversation_id.clone(),
            current_message: CurrentMessage {
                user_input_message: UserInputMessage {
                    content: current.text,
                    model_id: options.kiro_model_id.to_owned(),
                    origin: ORIGIN.to_owned(),
                    images: current.images,
                    user_input_message_context: context,
                },
            },
            history,
        },
        profile_arn: options.profile_arn.map(str::to_owned),
        additional_model_request_fields: with_max_tokens(native, options.native_max_tokens),
    };
    BuiltRequest {
        native_reasoning,
        body,
        tool_names: names,
    }
}

/// The request fields with `max_tokens` added, when it goes natively.
fn with_max_tokens(fields: Option<Value>, max_tokens: Option<u32>) -> Option<Value> {
    let Some(max_tokens) = max_tokens else {
        return fields;
    };
    let mut fields = match fields {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    fields.insert("max_tokens".into(), Value::from(max_tokens));
    Some(Value::Object(fields))
}

/// Rules 1-4: returns alternating turns starting with user and ending with user, all
/// with non-empty content and paired tool traffic.
fn normalise(messages: &[Message], names: &mut ToolNameMap, signed: bool) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::with_capacity(messages.len() + 2);
    for message in messages {
        let turn = to_turn(message, names, signed);
        match turns.last_mut() {
            Some(last) if last.role == turn.role => last.absorb(turn),
            _ => turns.push(turn),
        }
    }
    if turns.first().is_some_and(|t| t.is(Role::Assistant)) {
        let mut filler = Turn::new(Role::User);
        filler.text = EMPTY.to_owned();
        turns.insert(0, filler);
    }
    if turns.last().is_none_or(|t| t.is(Role::Assistant)) {
        let mut next = Turn::new(Role::User);
        next.text = CONTINUE.to_owned();
        turns.push(next);
    }
    pair_tool_traffic(&mut turns);
    for turn in &mut turns {
        if turn.text.trim().is_empty() {
            turn.text = match turn.role {
                Some(Role::User) if !turn.tool_results.is_empty() => TOOL_RESULTS_ONLY,
                Some(Role::Assistant) if !turn.tool_uses.is_empty() => TOOL_USES_ONLY,
                _ => EMPTY,
            }
            .to_owned();
        }
    }
    turns
}

/// One message as a turn; `signed`: the first signed reasoning of an assistant message is
/// replayed natively, other reasoning goes inline.
fn to_turn(message: &Message, names: &mut ToolNameMap, signed: bool) -> Turn {
    let mut turn = Turn::new(message.role);
    let mut thinking = String::new();
    for part in &message.parts {
        match part {
            Part::Text(text) => turn.push_text(text),
            Part::Thinking(text) => thinking.push_str(text),
            Part::SignedThinking { text, signature }
                if signed && message.role == Role::Assistant && turn.reasoning.is_none() =>
            {
                turn.reasoning = Some(ReasoningContent::ReasoningText(ReasoningText {
                    text: text.clone(),
                    signature: signature.clone(),
                }));
            }
            Part::SignedThinking { text, .. } => thinking.push_str(text),
            Part::RedactedThinking(data)
                if signed && message.role == Role::Assistant && turn.reasoning.is_none() =>
            {
                turn.reasoning = Some(ReasoningContent::RedactedContent(data.clone()));
            }
            // Encrypted reasoning has no text to inline: without native replay it goes.
            Part::RedactedThinking(_) => {}
            Part::Image { media_type, data } => turn.images.push(KiroImage {
                format: image_format(media_type),
                source: ImageSource {
                    bytes: data.clone(),
                },
            }),
            Part::ToolUse { id, name, input } if message.role == Role::Assistant => {
                turn.tool_uses.push(KiroToolUse {
                    tool_use_id: id.clone(),
                    name: names.shorten(name),
                    input: clean_tool_input(input),
                })
            }
            Part::ToolResult {
                tool_use_id,
                content,
                is_error,
            } if message.role == Role::User => turn.tool_results.push(KiroToolResult {
                tool_use_id: tool_use_id.clone(),
                content: vec![TextBlock {
                    text: if content.is_empty() {
                        EMPTY.to_owned()
                    } else {
                        content.clone()
                    },
                }],
                status: if *is_error { "error" } else { "success" }.to_owned(),
            }),
            // Tool traffic on the wrong side cannot be sent as such; keep it as text.
            Part::ToolUse { name, input, .. } => {
                turn.push_text(&format!("[tool call {name}: {input}]"))
            }
            Part::ToolResult { content, .. } => {
                turn.push_text(&format!("[tool result: {content}]"))
            }
        }
    }
    if !thinking.is_empty() && message.role == Role::Assistant {
        turn.text = format!("<thinking>{thinking}</thinking>\n\n{}", turn.text);
    }
    turn
}

/// `image/png` -> `png`.
fn image_format(media_type: &str) -> String {
    media_type
        .rsplit('/')
        .next()
        .unwrap_or(media_type)
        .to_ascii_lowercase()
}

/// Tool inputs must be objects and Kiro rejects empty-string keys (A2).
fn clean_tool_input(input: &Value) -> Value {
    match input {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Value::Null => Value::Object(Default::default()),
        other => serde_json::json!({ "value": other }),
    }
}

/// Rule 4. `turns` alternate and end with a user turn.
fn pair_tool_traffic(turns: &mut [Turn]) {
    let mut previous_uses: HashSet<String> = HashSet::new();
    for index in 0..turns.len() {
        if turns[index].is(Role::Assistant) {
            let answered: HashSet<String> = turns
                .get(index + 1)
                .map(|next| {
                    next.tool_results
                        .iter()
                        .map(|r| r.tool_use_id.clone())
                        .collect()
                })
                .unwrap_or_default();
            let turn = &mut turns[index];
            let mut seen = HashSet::new();
            turn.tool_uses.retain(|u| {
                answered.contains(&u.tool_use_id) && seen.insert(u.tool_use_id.clone())
            });
            previous_uses = seen;
        } else {
            let turn = &mut turns[index];
            let mut seen = HashSet::new();
            let mut orphans = Vec::new();
            turn.tool_results.retain(|result| {
                if previous_uses.contains(&result.tool_use_id) {
                    // Answers a call: keep the first answer, drop duplicates.
                    return seen.insert(result.tool_use_id.clone());
                }
                orphans.push(result.clone());
                false
            });
            for orphan in orphans {
                let text: Vec<&str> = orphan.content.iter().map(|b| b.text.as_str()).collect();
                turn.push_text(&format!(
                    "[result of tool call {}]: {}",
                    orphan.tool_use_id,
                    text.join("\n")
                ));
            }
            previous_uses.clear();
        }
    }
}

fn has_tool_traffic(turns: &[Turn]) -> bool {
    turns
        .iter()
        .any(|t| !t.tool_uses.is_empty() || !t.tool_results.is_empty())
}

/// Rule 7 of the module docs: system prompt (and the moved tool descriptions) in front of
/// the first user turn.
fn prefix_system(turns: &mut [Turn], system: &[String], moved_descriptions: &str) {
    let system: Vec<&str> = system
        .iter()
        .map(|s| s.trim())
        .chain(std::iter::once(moved_descriptions))
        .filter(|s| !s.is_empty())
        .collect();
    if system.is_empty() {
        return;
    }
    if let Some(first) = turns.first_mut() {
        first.text = format!("{}\n\n{}", system.join("\n\n"), first.text);
    }
}

/// Full texts of the descriptions too long for Kiro's tool field, as one system-prompt
/// section (rule 6).
#[derive(Debug, Default)]
struct MovedDescriptions {
    section: String,
}

impl MovedDescriptions {
    /// Keeps `description` whole in the system prompt and returns what the tool itself says.
    fn take(&mut self, name: &str, description: &str) -> String {
        let heading = format!("Tool documentation: {name}");
        if self.section.is_empty() {
            self.section.push_str(
                "The full descriptions of these tools were too long for the tool list and are given here.",
            );
        }
        self.section
            .push_str(&format!("\n\n## {heading}\n\n{description}"));
        let first_paragraph = description.split("\n\n").next().unwrap_or_default();
        let mut summary: String = first_paragraph
            .chars()
            .take(MOVED_DESCRIPTION_SUMMARY)
            .collect();
        if summary.len() < first_paragraph.len() {
            summary.push('…');
        }
        format!("{summary}\n\n(The full description of this tool is in the system prompt under \"{heading}\".)")
    }
}

fn tool_definition(
    tool: &Tool,
    names: &mut ToolNameMap,
    moved: &mut MovedDescriptions,
) -> KiroTool {
    let name = names.shorten(&tool.name);
    let mut description = tool.description.trim().to_owned();
    if description.is_empty() {
        description = format!("Tool: {}", tool.name);
    }
    if description.chars().count() > MAX_TOOL_DESCRIPTION {
        description = moved.take(&name, &description);
    }
    KiroTool::ToolSpecification(ToolSpecification {
        name,
        description,
        input_schema: InputSchema {
            json: tidy_schema(&tool.input_schema),
        },
    })
}

/// Conservative schema hygiene (§4.3 rule 9): an object schema with `properties`, no
/// `$schema`, no empty `required`.
fn tidy_schema(schema: &Value) -> Value {
    let mut map = match schema {
        Value::Object(map) => map.clone(),
        _ => Default::default(),
    };
    map.remove("$schema");
    if map
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        map.remove("required");
    }
    map.entry("type").or_insert_with(|| Value::from("object"));
    if map.get("type").and_then(Value::as_str) == Some("object") {
        map.entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Value::Object(map)
}

/// Prompt-cache checkpoints (§13.1): Kiro takes them only as `cachePoint` entries among
/// the tools. A marked tool gets one right after it; marks on system or message blocks get
/// one after the last tool (the furthest point Kiro's request can mark). At most the
/// model's `maximumCacheCheckpointsPerRequest`: the earliest are dropped first, since the
/// later ones cover more of the prompt. Without tools there is nowhere to put them.
fn add_cache_points(
    marks: &CacheMarks,
    caching: &crate::kiro::accounts::model_list::PromptCaching,
    tools: &mut Vec<KiroTool>,
) {
    if marks.is_empty() || tools.is_empty() {
        return;
    }
    // Positions in `tools` after which a checkpoint goes (the client's tools come first,
    // in order, so tool `i` is entry `i`).
    let mut after: Vec<usize> = marks
        .tools
        .iter()
        .copied()
        .filter(|&i| i < tools.len())
        .collect();
    if marks.prompt > 0 {
        after.push(tools.len() - 1);
    }
    after.sort_unstable();
    after.dedup();
    let cap = caching
        .max_checkpoints
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let keep = after.len().saturating_sub(cap);
    for position in after.into_iter().skip(keep).rev() {
        tools.insert(position + 1, KiroTool::cache_point());
    }
}

/// Rule 5: Kiro needs a definition for every tool name used in history.
fn add_placeholder_tools(turns: &[Turn], tools: &mut Vec<KiroTool>) {
    if !has_tool_traffic(turns) {
        return;
    }
    let mut defined: HashSet<String> = tools
        .iter()
        .filter_map(KiroTool::spec)
        .map(|spec| spec.name.to_ascii_lowercase())
        .collect();
    for tool_use in turns.iter().flat_map(|t| &t.tool_uses) {
        if defined.insert(tool_use.name.to_ascii_lowercase()) {
            tools.push(KiroTool::ToolSpecification(ToolSpecification {
                name: tool_use.name.clone(),
                description: format!(
                    "Tool: {} (used earlier in this conversation)",
                    tool_use.name
                ),
                input_schema: InputSchema {
                    json: serde_json::json!({"type": "object", "properties": {}}),
                },
            }));
        }
    }
}

/// Names over [`MAX_TOOL_NAME`] become `first chars + '_' + 16 hex of a hash`.
pub fn shorten_tool_name(name: &str) -> String {
    if name.len() <= MAX_TOOL_NAME {
        return name.to_owned();
    }
    let hash = fnv1a64(name.as_bytes());
    let keep = MAX_TOOL_NAME - 17;
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash:016x}", &name[..cut])
}

/// FNV-1a: stable and tiny; only needs to make shortened names distinct.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn history_entry(turn: Turn, model_id: &str) -> HistoryEntry {
    if turn.is(Role::Assistant) {
        HistoryEntry::AssistantResponseMessage(AssistantResponseMessage {
            content: turn.text,
            tool_uses: turn.tool_uses,
            reasoning_content: turn.reasoning,
        })
    } else {
        let context = (!turn.tool_results.is_empty()).then(|| UserInputMessageContext {
            tools: Vec::new(),
            tool_results: turn.tool_results,
        });
        HistoryEntry::UserInputMessage(UserInputMessage {
            content: turn.text,
            model_id: model_id.to_owned(),
            origin: ORIGIN.to_owned(),
            images: turn.images,
            user_input_message_context: context,
        })
    }
}

#[cfg(test)]
mod tests;

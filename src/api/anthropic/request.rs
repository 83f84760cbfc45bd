//! Anthropic Messages request -> [`ChatRequest`] (docs/kiro-protocol.md §4.4).

use crate::api::json::{parse_object, wrong_type, Obj};
use crate::api::unsupported;
use crate::chat::web_search::{
    render, SearchErrorCode, SearchHit, SearchOutcome, WebSearchTool, TOOL_NAME,
};
use crate::chat::{
    CacheMarks, ChatError, ChatRequest, Effort, Message, Metadata, OutputFormat, Part, Role,
    Sampling, Thinking, Tool, ToolChoice,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

const HINT: &str = "Send a JSON object like {\"model\": \"claude-sonnet-4-5\", \"max_tokens\": 1024, \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}.";

/// Which endpoint is parsing: `count_tokens` does not need `max_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

/// Parses a Messages API body.
pub fn parse(
    body: &[u8],
    mut metadata: Metadata,
    endpoint: Endpoint,
) -> Result<ChatRequest, ChatError> {
    let map = parse_object(body, HINT)?;
    let root = Obj {
        map: &map,
        path: String::new(),
    };
    let model = root.required_str("model")?.to_owned();
    unsupported::refuse_anthropic(&root)?;
    let max_tokens = root.u32("max_tokens")?;
    if endpoint == Endpoint::Messages && max_tokens.is_none() {
        return Err(ChatError::invalid(
            "max_tokens",
            "`max_tokens` is required (the Messages API has no default).",
        ));
    }
    let items = root
        .array("messages")?
        .ok_or_else(|| ChatError::invalid("messages", format!("`messages` is required. {HINT}")))?;
    if items.is_empty() {
        return Err(ChatError::invalid(
            "messages",
            "`messages` must contain at least one message.",
        ));
    }
    let mut system = system_texts(root.get("system"), "system")?;
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let obj = Obj::new(item, format!("messages[{index}]"))?;
        let role = match obj.required_str("role")? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // Claude Code 2.1 sends its environment section as a system message inside
            // `messages`; like OpenAI's system/developer messages it joins the system prompt.
            "system" => {
                system.extend(system_texts(obj.get("content"), &obj.at("content"))?);
                continue;
            }
            other => {
                return Err(ChatError::invalid(
                    obj.at("role"),
                    format!(
                        "`{}` is `{other}`; allowed roles: user, assistant, system.",
                        obj.at("role")
                    ),
                ))
            }
        };
        messages.push(Message {
            role,
            parts: content(&obj, "content")?,
        });
    }
    if messages.is_empty() {
        return Err(ChatError::invalid(
            "messages",
            "`messages` must contain at least one user or assistant message.",
        ));
    }
    if let Some(value) = root.get("metadata") {
        let meta = Obj::new(value, "metadata".into())?;
        metadata.conversation_id = meta.str("user_id")?.and_then(session_id);
    }
    let (tools, tool_choice, web_search) = tools(&root)?;
    let single_tool_call = match root.get("tool_choice") {
        Some(value) => Obj::new(value, "tool_choice".into())?
            .bool("disable_parallel_tool_use")?
            .unwrap_or(false),
        None => false,
    };
    Ok(ChatRequest {
        model,
        system,
        messages,
        tools,
        tool_choice,
        single_tool_call,
        sampling: Sampling {
            max_tokens,
            temperature: root.number("temperature", 0.0, 1.0)?,
            top_p: root.number("top_p", 0.0, 1.0)?,
            stop: stop_sequences(&root)?,
            not_honoured: unsupported::sampling_hints(&root, &unsupported::ANTHROPIC_SAMPLING),
        },
        thinking: thinking(&root)?,
        output: output_format(&root)?,
        stream: root.bool("stream")?.unwrap_or(false),
        metadata,
        cache_marks: cache_marks(&root),
        web_search,
    })
}

/// Where `cache_control` marks prompt-cache checkpoints: on tools, on system blocks, on
/// message content blocks (their value is not checked: `ephemeral` is the only kind).
fn cache_marks(root: &Obj<'_>) -> CacheMarks {
    let marked = |value: &Value| value.get("cache_control").is_some_and(|c| !c.is_null());
    let blocks = |value: Option<&Value>| {
        value
            .and_then(Value::as_array)
            .map_or(0, |blocks| blocks.iter().filter(|b| marked(b)).count())
    };
    let tools = root
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            // Indexes among the client's own tools (the server's search tool is not one).
            tools
                .iter()
                .filter(|tool| !is_web_search(tool))
                .enumerate()
                .filter(|(_, tool)| marked(tool))
                .map(|(index, _)| index)
                .collect()
        })
        .unwrap_or_default();
    let messages: usize = root
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |messages| {
            messages.iter().map(|m| blocks(m.get("content"))).sum()
        });
    CacheMarks {
        tools,
        prompt: blocks(root.get("system")) + messages,
    }
}

/// Claude Code sends `user_<hash>_account_<uuid>_session_<uuid>` (or JSON with
/// `session_id`); the session id keeps one Kiro conversation id per session.
fn session_id(user_id: &str) -> Option<String> {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(user_id) {
        return map
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let (_, session) = user_id.rsplit_once("session_")?;
    (session.len() >= 32).then(|| session.to_owned())
}

/// Text of a `system` value: a string or text blocks (`at` names it in errors).
fn system_texts(value: Option<&Value>, at: &str) -> Result<Vec<String>, ChatError> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(i, block)| {
                let block = Obj::new(block, format!("{at}[{i}]"))?;
                match block.str("type")? {
                    Some("text") | None => Ok(block.str("text")?.unwrap_or_default().to_owned()),
                    Some(other) => Err(ChatError::invalid(
                        block.at("type"),
                        format!(
                            "`{}` is `{other}`; system blocks must be text.",
                            block.at("type")
                        ),
                    )),
                }
            })
            .collect(),
        Some(other) => Err(wrong_type(at, "a string or an array of text blocks", other)),
    }
}

fn content(obj: &Obj<'_>, key: &str) -> Result<Vec<Part>, ChatError> {
    match obj.required(key)? {
        Value::String(text) => Ok(vec![Part::Text(text.clone())]),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .filter_map(|(i, block)| block_part(block, format!("{}[{i}]", obj.at(key))).transpose())
            .collect(),
        other => Err(wrong_type(
            &obj.at(key),
            "a string or an array of content blocks",
            other,
        )),
    }
}

/// One content block; `None` for blocks that carry nothing for Kiro.
fn block_part(value: &Value, path: String) -> Result<Option<Part>, ChatError> {
    let block = Obj::new(value, path)?;
    Ok(Some(match block.required_str("type")? {
        "text" => Part::Text(block.str("text")?.unwrap_or_default().to_owned()),
        "image" => image(&block)?,
        "tool_use" => Part::ToolUse {
            id: block.required_str("id")?.to_owned(),
            name: block.required_str("name")?.to_owned(),
            input: match block.get("input") {
                None => Value::Object(Default::default()),
                Some(input @ Value::Object(_)) => input.clone(),
                Some(other) => return Err(wrong_type(&block.at("input"), "an object", other)),
            },
        },
        "tool_result" => Part::ToolResult {
            tool_use_id: block.required_str("tool_use_id")?.to_owned(),
            content: tool_result_text(&block)?,
            is_error: block.bool("is_error")?.unwrap_or(false),
        },
        "thinking" => {
            let text = block.str("thinking")?.unwrap_or_default().to_owned();
            match block.str("signature")? {
                Some(signature) if !signature.is_empty() => Part::SignedThinking {
                    text,
                    signature: signature.to_owned(),
                },
                _ => Part::Thinking(text),
            }
        }
        // Opaque ciphertext: replayed natively when it is the turn's reasoning (Kiro gave it
        // as `redactedContent`); one Kiro cannot read is refused there as a bad signature,
        // and the request goes again without native reasoning.
        "redacted_thinking" => match block.str("data")? {
            Some(data) if !data.is_empty() => Part::RedactedThinking(data.to_owned()),
            _ => return Ok(None),
        },
        "document" => document(&block)?,
        // A search of an earlier turn, replayed as text the model reads.
        "server_tool_use" => {
            let query = block
                .get("input")
                .and_then(|input| input.get("query"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            Part::Text(format!("(Searched the web for \"{query}\".)"))
        }
        "web_search_tool_result" => Part::Text(search_result_text(&block)?),
        other => {
            return Err(ChatError::invalid(
                block.at("type"),
                format!(
                    "Content block type `{other}` is not supported; use text, image, tool_use, tool_result, thinking, \
                     a text document, server_tool_use or web_search_tool_result."
                ),
            ))
        }
    }))
}

/// A `web_search_tool_result` block as the text the model got when the search ran (the
/// excerpts come back from the `encrypted_content` aiproxy gave them).
fn search_result_text(block: &Obj<'_>) -> Result<String, ChatError> {
    let outcome: SearchOutcome = match block.required("content")? {
        Value::Array(results) => Ok(results
            .iter()
            .map(|result| {
                let field = |key: &str| result.get(key).and_then(Value::as_str).unwrap_or_default();
                SearchHit {
                    title: field("title").to_owned(),
                    url: field("url").to_owned(),
                    snippet: BASE64
                        .decode(field("encrypted_content"))
                        .ok()
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                        .unwrap_or_default(),
                    page_age: result
                        .get("page_age")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }
            })
            .collect()),
        Value::Object(error) => {
            let code = error.get("error_code").and_then(Value::as_str);
            Err(code
                .and_then(SearchErrorCode::parse)
                .unwrap_or(SearchErrorCode::Unavailable))
        }
        other => {
            return Err(wrong_type(
                &block.at("content"),
                "an array of results or an error object",
                other,
            ))
        }
    };
    Ok(render("", &outcome))
}

fn image(block: &Obj<'_>) -> Result<Part, ChatError> {
    let source = block.required_obj("source")?;
    match source.required_str("type")? {
        "base64" => crate::api::image::inline(
            source.required_str("media_type")?,
            source.required_str("data")?,
            &source.at("data"),
        ),
        "url" => Err(crate::api::image::remote_refused(&source.at("url"))),
        other => Err(ChatError::invalid(
            source.at("type"),
            format!("Image source type `{other}` is not supported; send base64 data."),
        )),
    }
}

fn document(block: &Obj<'_>) -> Result<Part, ChatError> {
    let source = block.required_obj("source")?;
    match source.required_str("type")? {
        "text" => Ok(Part::Text(source.str("data")?.unwrap_or_default().to_owned())),
        other => Err(ChatError::invalid(
            source.at("type"),
            format!("Document source type `{other}` is not supported by Kiro; send the document as text."),
        )),
    }
}

/// `tool_result.content`: a string, or blocks flattened to text (images noted).
fn tool_result_text(block: &Obj<'_>) -> Result<String, ChatError> {
    match block.get("content") {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(items)) => {
            let mut text = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let part = Obj::new(item, format!("{}[{i}]", block.at("content")))?;
                match part.required_str("type")? {
                    "text" => text.push(part.str("text")?.unwrap_or_default().to_owned()),
                    "image" => text.push("[image]".to_owned()),
                    other => text.push(format!("[{other}]")),
                }
            }
            Ok(text.join("\n"))
        }
        Some(other) => Err(wrong_type(
            &block.at("content"),
            "a string or an array of blocks",
            other,
        )),
    }
}

fn stop_sequences(root: &Obj<'_>) -> Result<Vec<String>, ChatError> {
    root.strings("stop_sequences")
}

/// Structured outputs: `output_config.format` or the beta's `output_format`, both
/// `{"type": "json_schema", "schema": {...}}`.
fn output_format(root: &Obj<'_>) -> Result<Option<OutputFormat>, ChatError> {
    let (value, path) = match root.get("output_config") {
        Some(config) => match Obj::new(config, "output_config".into())?.get("format") {
            Some(format) => (format, "output_config.format"),
            None => return beta_output_format(root),
        },
        None => return beta_output_format(root),
    };
    json_schema_format(value, path)
}

fn beta_output_format(root: &Obj<'_>) -> Result<Option<OutputFormat>, ChatError> {
    match root.get("output_format") {
        Some(value) => json_schema_format(value, "output_format"),
        None => Ok(None),
    }
}

fn json_schema_format(value: &Value, path: &str) -> Result<Option<OutputFormat>, ChatError> {
    let format = Obj::new(value, path.into())?;
    match format.required_str("type")? {
        "json_schema" => Ok(Some(OutputFormat::JsonSchema {
            name: "output".into(),
            description: None,
            schema: format.required("schema")?.clone(),
        })),
        other => Err(ChatError::invalid(
            format.at("type"),
            format!(
                "`{}` is `{other}`; allowed: json_schema.",
                format.at("type")
            ),
        )),
    }
}

fn thinking(root: &Obj<'_>) -> Result<Option<Thinking>, ChatError> {
    let Some(value) = root.get("thinking") else {
        return Ok(None);
    };
    let obj = Obj::new(value, "thinking".into())?;
    match obj.required_str("type")? {
        "enabled" => {
            let budget_tokens = obj.u32("budget_tokens")?.ok_or_else(|| {
                ChatError::invalid(
                    "thinking.budget_tokens",
                    "`thinking.budget_tokens` is required when thinking is enabled.",
                )
            })?;
            Ok(Some(Thinking::Enabled { budget_tokens }))
        }
        "adaptive" => {
            let effort = match root.get("output_config") {
                Some(config) => Obj::new(config, "output_config".into())?.str("effort")?,
                None => None,
            };
            let name = effort.unwrap_or("high");
            let effort = Effort::parse(name).ok_or_else(|| {
                ChatError::invalid(
                    "output_config.effort",
                    format!(
                        "`output_config.effort` is `{name}`; allowed: low, medium, high, xhigh, max."
                    ),
                )
            })?;
            Ok(Some(Thinking::Adaptive { effort }))
        }
        "disabled" => Ok(None),
        other => Err(ChatError::invalid(
            "thinking.type",
            format!("`thinking.type` is `{other}`; allowed: enabled, adaptive, disabled."),
        )),
    }
}

/// Whether a tool definition is Anthropic's server web search (`web_search_<version>`).
fn is_web_search(tool: &Value) -> bool {
    tool.get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.starts_with("web_search_"))
}

/// The server web search tool: its limits and filters.
fn web_search_tool(tool: &Obj<'_>) -> Result<WebSearchTool, ChatError> {
    tool.only(
        &[
            "type",
            "name",
            "max_uses",
            "allowed_domains",
            "blocked_domains",
            "user_location",
            "cache_control",
        ],
        "the web search tool",
        "name, max_uses, allowed_domains, blocked_domains and user_location",
    )?;
    let name = tool.required_str("name")?;
    if name != TOOL_NAME {
        return Err(ChatError::invalid(
            tool.at("name"),
            format!("The web search tool's `name` is `{name}`; it must be `{TOOL_NAME}`."),
        ));
    }
    let search = WebSearchTool {
        max_uses: tool.u32("max_uses")?,
        allowed_domains: tool.strings("allowed_domains")?,
        blocked_domains: tool.strings("blocked_domains")?,
        user_location: crate::api::json::user_location(tool)?,
        max_results: None,
    };
    if search.max_uses == Some(0) {
        return Err(ChatError::invalid(
            tool.at("max_uses"),
            "`max_uses` is 0; it must be at least 1.",
        ));
    }
    if !search.allowed_domains.is_empty() && !search.blocked_domains.is_empty() {
        return Err(ChatError::invalid(
            tool.at("blocked_domains"),
            "The web search tool takes `allowed_domains` or `blocked_domains`, not both.",
        ));
    }
    Ok(search)
}

fn tools(root: &Obj<'_>) -> Result<(Vec<Tool>, ToolChoice, Option<WebSearchTool>), ChatError> {
    let mut tools = Vec::new();
    let mut web_search = None;
    for (index, item) in root.array("tools")?.into_iter().flatten().enumerate() {
        let tool = Obj::new(item, format!("tools[{index}]"))?;
        if is_web_search(item) {
            if web_search.is_some() {
                return Err(ChatError::invalid(
                    tool.at("type"),
                    "The web search tool is given twice; give it once.",
                ));
            }
            web_search = Some(web_search_tool(&tool)?);
            continue;
        }
        let name = tool.required_str("name")?;
        let schema = match tool.get("input_schema") {
            None | Some(Value::Null) => None,
            Some(schema @ Value::Object(_)) => Some(schema),
            Some(other) => {
                return Err(wrong_type(
                    &tool.at("input_schema"),
                    "a JSON Schema object",
                    other,
                ))
            }
        };
        let Some(schema) = schema else {
            let kind = tool.str("type")?.unwrap_or("custom");
            return Err(ChatError::invalid(
                tool.at("input_schema"),
                format!(
                    "Tool `{name}` (type `{kind}`) has no `input_schema`. Of Anthropic's server tools only web search \
                     (`web_search_20250305`) runs through Kiro; define a client tool instead."
                ),
            ));
        };
        tools.push(Tool {
            name: name.to_owned(),
            description: tool.str("description")?.unwrap_or_default().to_owned(),
            input_schema: schema.clone(),
        });
    }
    let choice = match root.get("tool_choice") {
        None => ToolChoice::Auto,
        Some(value) => {
            let obj = Obj::new(value, "tool_choice".into())?;
            match obj.required_str("type")? {
                "auto" => ToolChoice::Auto,
                "any" => ToolChoice::Any,
                "none" => ToolChoice::None,
                "tool" => ToolChoice::Tool(obj.required_str("name")?.to_owned()),
                other => {
                    return Err(ChatError::invalid(
                        "tool_choice.type",
                        format!("`tool_choice.type` is `{other}`; allowed: auto, any, tool, none."),
                    ))
                }
            }
        }
    };
    if web_search.is_some() && tools.iter().any(|t| t.name == TOOL_NAME) {
        return Err(ChatError::invalid(
            "tools",
            format!("A client tool is named `{TOOL_NAME}` beside the web search tool; rename it."),
        ));
    }
    Ok((tools, choice, web_search))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(value: Value) -> Result<ChatRequest, ChatError> {
        parse(
            value.to_string().as_bytes(),
            Metadata::default(),
            Endpoint::Messages,
        )
    }

    fn param(value: Value) -> Option<String> {
        match parse_json(value).unwrap_err() {
            ChatError::InvalidRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn system_messages_inside_messages_join_the_system_prompt() {
        // The shape Claude Code 2.1 sends: the environment as a system message after the
        // first user message.
        let req = parse_json(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100,
            "system": [{"type": "text", "text": "S1"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
                {"role": "system", "content": "S3"}
            ]
        }))
        .unwrap();
        assert_eq!(req.system, vec!["S1", "# Environment", "S3"]);
        assert_eq!(req.messages, vec![Message::text(Role::User, "hi")]);
    }

    #[test]
    fn every_block_type() {
        let req = parse_json(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100,
            "system": [{"type": "text", "text": "S1", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "S2"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": [{"type": "text", "text": "boom"}]}
                ]}
            ],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "metadata": {"user_id": "user_abc_account_x_session_0123456789abcdef0123456789abcdef"},
            "stream": true
        }))
        .unwrap();
        assert_eq!(req.system, vec!["S1", "S2"]);
        assert_eq!(
            req.messages[0].parts[1],
            Part::Image {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert_eq!(
            req.messages[1].parts[0],
            Part::SignedThinking {
                text: "hmm".into(),
                signature: "sig".into()
            }
        );
        assert_eq!(
            req.messages[1].parts[2],
            Part::ToolUse {
                id: "t1".into(),
                name: "f".into(),
                input: json!({"a": 1})
            }
        );
        assert_eq!(
            req.messages[2].parts[0],
            Part::ToolResult {
                tool_use_id: "t1".into(),
                content: "boom".into(),
                is_error: true
            }
        );
        assert_eq!(req.tool_choice, ToolChoice::Any);
        assert!(req.single_tool_call);
        assert_eq!(req.sampling.stop, vec!["END"]);
        assert_eq!(
            req.thinking,
            Some(Thinking::Enabled {
                budget_tokens: 4000
            })
        );
        assert_eq!(
            req.metadata.conversation_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(req.stream);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            param(json!({"max_tokens": 1, "messages": []})).as_deref(),
            Some("model")
        );
        assert_eq!(
            param(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]})).as_deref(), Some("messages[0].role"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]})).as_deref(), Some("messages"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": [{"type": "image"}]}]})).as_deref(), Some("messages[0].content[0].type"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "video"}]}]})).as_deref(), Some("messages[0].content[0].type"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]})).as_deref(), Some("messages[0].content[0].tool_use_id"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "code_execution_20250522", "name": "code_execution"}]})).as_deref(), Some("tools[0].input_schema"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "search"}]})).as_deref(), Some("tools[0].name"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20260101", "name": "web_search", "allowed_domains": ["a.com"], "blocked_domains": ["b.com"]}]})).as_deref(), Some("tools[0].blocked_domains"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search", "max_results": 3}]})).as_deref(), Some("tools[0].max_results"));
        assert_eq!(param(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}})).as_deref(), Some("thinking.budget_tokens"));
    }

    #[test]
    fn search_blocks_in_the_history_read_as_text_and_the_tool_as_settings() {
        let chat = parse_json(json!({
            "model": "m", "max_tokens": 10,
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2,
                       "blocked_domains": ["x.com"], "cache_control": {"type": "ephemeral"},
                       "user_location": {"type": "approximate", "city": "Lyon", "country": "FR"}},
                      {"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "news?"},
                {"role": "assistant", "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "lyon news"}},
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                        {"type": "web_search_result", "title": "Lyon", "url": "https://lyon.fr/a",
                         "encrypted_content": BASE64.encode("The excerpt."), "page_age": "May 1, 2026"}]},
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_2",
                     "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}}]},
                {"role": "user", "content": "more"}]
        }))
        .unwrap();
        let search = chat.web_search.unwrap();
        assert_eq!(search.max_uses, Some(2));
        assert_eq!(search.blocked_domains, ["x.com"]);
        assert_eq!(search.user_location.as_deref(), Some("Lyon, FR"));
        assert_eq!(chat.tools.len(), 1);
        assert_eq!(
            chat.cache_marks.tools,
            [0],
            "indexes among the client's own tools"
        );
        let texts: Vec<&str> = chat.messages[1]
            .parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts[0], "(Searched the web for \"lyon news\".)");
        assert!(
            texts[1].contains("https://lyon.fr/a") && texts[1].contains("The excerpt."),
            "{}",
            texts[1]
        );
        assert!(texts[2].contains("max_uses_exceeded"), "{}", texts[2]);
    }

    #[test]
    fn count_tokens_does_not_need_max_tokens() {
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string();
        assert!(parse(body.as_bytes(), Metadata::default(), Endpoint::CountTokens).is_ok());
    }
}

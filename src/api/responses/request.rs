//! A Responses API request (`POST /v1/responses`, `CreateResponse`) -> [`ChatRequest`].
//!
//! - `input`: a string, or items: `message` (roles `user`, `assistant`, `system`,
//!   `developer`; parts `input_text`, `input_image`, `output_text`, `refusal`),
//!   `function_call`, `custom_tool_call`, their `*_output`s, and `reasoning`.
//! - Tools: `function`, `custom` (freeform input, sent to Kiro as one string argument) and
//!   `namespace` groups (flattened to `namespace__name` for Kiro and restored on the way
//!   back). The hosted `web_search` (and its preview names) is run by aiproxy through Kiro's
//!   search ([`crate::model::search`]); hosted tools Kiro cannot run (`file_search`,
//!   `code_interpreter`, `computer_use`, `image_generation`, `mcp`, ...) are left out and
//!   reported.
//! - `instructions`, `tool_choice`, `parallel_tool_calls`, `max_output_tokens`,
//!   `temperature`, `top_p`, `reasoning`, `text.format` / `text.verbosity`,
//!   `prompt_cache_key` (the session for account affinity), `metadata`, `store`,
//!   `previous_response_id`, `include`.

use crate::api::json::{parse_object, wrong_type, Obj};
use crate::chat::web_search::{WebSearchTool, TOOL_NAME};
use crate::chat::{
    ChatError, ChatRequest, Message, Metadata, OutputFormat, Part, Role, Sampling, Thinking, Tool,
    ToolChoice,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

const HINT: &str =
    "Send a JSON object like {\"model\": \"claude-sonnet-4-5\", \"input\": \"Hello\"}.";

/// Joins a namespace and a tool name into the one name Kiro sees.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// The hosted web search's type names (aiproxy runs it through Kiro's search).
const WEB_SEARCH: [&str; 4] = [
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "web_search_2025_08_26",
];

/// Hosted tool types: OpenAI runs them on its servers; Kiro has none of them.
const HOSTED: [&str; 8] = [
    "file_search",
    "code_interpreter",
    "computer_use",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "tool_search",
];

/// How a tool name the model uses maps back to the client's tool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolOrigin {
    /// The name inside its namespace (or the whole name).
    pub name: String,
    /// The namespace, for `namespace` tools.
    pub namespace: Option<String>,
    /// A `custom` tool: its call carries `input` text, not JSON arguments.
    pub custom: bool,
}

/// What shapes the answer beside the chat request.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep the response for `previous_response_id` and `GET` (the API's default: true).
    pub store: bool,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// Flattened tool names that need mapping back (namespaced and custom tools).
    pub tools: HashMap<String, ToolOrigin>,
    /// Hosted tools left out of the upstream request.
    pub dropped_tools: Vec<String>,
    /// Reasoning summaries were asked for (`reasoning.summary`).
    pub summary: bool,
    /// `include: ["reasoning.encrypted_content"]`.
    pub encrypted_reasoning: bool,
    /// `include: ["web_search_call.action.sources"]`.
    pub search_sources: bool,
    /// Request fields echoed on the `Response` object.
    pub echo: Map<String, Value>,
    /// This request's input, as items with ids (for `GET .../input_items`).
    pub input_items: Vec<Value>,
    /// System text from this request's `system`/`developer` items (kept in the chain;
    /// `instructions` are not, as in the API).
    pub system_items: Vec<String>,
}

/// Parses a `CreateResponse` body (without resolving `previous_response_id`: the caller
/// prepends the stored conversation, and refuses a request that has none and no input).
pub fn parse(body: &[u8], metadata: Metadata) -> Result<(ChatRequest, Options), ChatError> {
    let map = parse_object(body, HINT)?;
    let root = Obj {
        map: &map,
        path: String::new(),
    };
    refuse_unsupported(&root)?;
    let model = root.required_str("model")?.to_owned();
    let mut options = Options {
        store: root.bool("store")?.unwrap_or(true),
        previous_response_id: root.str("previous_response_id")?.map(str::to_owned),
        ..Options::default()
    };
    (options.encrypted_reasoning, options.search_sources) = include(&root)?;
    let ParsedTools {
        tools,
        origins,
        dropped,
        web_search,
    } = tools(&root)?;
    options.tools = origins;
    options.dropped_tools = dropped;

    let mut system = Vec::new();
    if let Some(instructions) = root.str("instructions")? {
        system.push(instructions.to_owned());
    }
    let mut messages = Vec::new();
    match root.get("input") {
        None => {}
        Some(Value::String(text)) => {
            options.input_items.push(json!({
                "id": item_id("msg"), "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]
            }));
            messages.push(Message::text(Role::User, text.clone()));
        }
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                let obj = Obj::new(item, format!("input[{index}]"))?;
                input_item(&obj, &mut messages, &mut options.system_items)?;
                let mut stored = obj.map.clone();
                stored
                    .entry("id")
                    .or_insert_with(|| Value::String(item_id("item")));
                options.input_items.push(Value::Object(stored));
            }
        }
        Some(other) => return Err(wrong_type("input", "a string or an array of items", other)),
    }
    system.extend(options.system_items.iter().cloned());
    if let Some(verbosity) = root
        .get("text")
        .map(|t| Obj::new(t, "text".into()))
        .transpose()?
    {
        if let Some(note) = verbosity_note(&verbosity)? {
            system.push(note.to_owned());
        }
    }

    let (tool_choice, tool_choice_echo) = tool_choice(&root, &tools)?;
    let (thinking, summary, reasoning_echo) = reasoning(&root)?;
    options.summary = summary;
    let output = text_format(&root)?;
    let mut metadata = metadata;
    metadata.conversation_id = root.str("prompt_cache_key")?.map(str::to_owned);
    let sampling = Sampling {
        max_tokens: root.u32("max_output_tokens")?,
        temperature: root.number("temperature", 0.0, 2.0)?,
        top_p: root.number("top_p", 0.0, 1.0)?,
        stop: Vec::new(),
        not_honoured: crate::api::unsupported::sampling_hints(
            &root,
            &crate::api::unsupported::OPENAI_SAMPLING,
        ),
    };
    let parallel = root.bool("parallel_tool_calls")?.unwrap_or(true);
    let echo = &mut options.echo;
    echo.insert(
        "instructions".into(),
        root.get("instructions").cloned().unwrap_or(Value::Null),
    );
    echo.insert("tools".into(), echoed_tools(root.get("tools")));
    echo.insert("tool_choice".into(), tool_choice_echo);
    echo.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    echo.insert(
        "temperature".into(),
        json!(sampling.temperature.unwrap_or(1.0)),
    );
    echo.insert("top_p".into(), json!(sampling.top_p.unwrap_or(1.0)));
    echo.insert("max_output_tokens".into(), json!(sampling.max_tokens));
    echo.insert(
        "metadata".into(),
        root.get("metadata").cloned().unwrap_or(json!({})),
    );
    echo.insert("reasoning".into(), reasoning_echo);
    echo.insert(
        "text".into(),
        root.get("text")
            .cloned()
            .unwrap_or(json!({"format": {"type": "text"}})),
    );
    echo.insert("store".into(), Value::Bool(options.store));
    echo.insert(
        "previous_response_id".into(),
        json!(options.previous_response_id),
    );
    echo.insert("truncation".into(), json!("disabled"));
    if let Some(user) = root.get("user") {
        echo.insert("user".into(), user.clone());
    }
    if let Some(key) = root.get("prompt_cache_key") {
        echo.insert("prompt_cache_key".into(), key.clone());
    }

    let chat = ChatRequest {
        model,
        system,
        messages,
        tools,
        tool_choice,
        single_tool_call: !parallel,
        sampling,
        output,
        thinking,
        stream: root.bool("stream")?.unwrap_or(false),
        metadata,
        cache_marks: Default::default(),
        web_search,
    };
    Ok((chat, options))
}

/// The request's tools as the `Response` shows them: function tools always carry
/// `parameters` and `strict` (null when the client left them out).
fn echoed_tools(tools: Option<&Value>) -> Value {
    let Some(Value::Array(tools)) = tools else {
        return json!([]);
    };
    Value::Array(
        tools
            .iter()
            .map(|tool| {
                let mut tool = tool.clone();
                if let Some(map) = tool.as_object_mut() {
                    if map.get("type").and_then(Value::as_str) == Some("function") {
                        map.entry("parameters").or_insert(Value::Null);
                        map.entry("strict").or_insert(Value::Null);
                    }
                }
                tool
            })
            .collect(),
    )
}

/// `<prefix>_<32 hex>`.
pub fn item_id(prefix: &str) -> String {
    crate::chat::random_id(&format!("{prefix}_"))
}

/// Fields that would change the answer in ways aiproxy cannot honour: refused, not ignored.
fn refuse_unsupported(root: &Obj<'_>) -> Result<(), ChatError> {
    if root.bool("background")? == Some(true) {
        return Err(ChatError::invalid(
            "background",
            "`background: true` is not supported: aiproxy answers while the request is open. Stream instead.",
        ));
    }
    if root.get("conversation").is_some() {
        return Err(ChatError::invalid(
            "conversation",
            "`conversation` objects are not supported; chain responses with `previous_response_id`.",
        ));
    }
    if let Some(truncation) = root.str("truncation")? {
        if truncation != "disabled" {
            return Err(ChatError::invalid(
                "truncation",
                format!("`truncation: {truncation}` is not supported; aiproxy answers an over-long input with `context_length_exceeded` (use `disabled`)."),
            ));
        }
    }
    if root.get("prompt").is_some() {
        return Err(ChatError::invalid(
            "prompt",
            "stored prompt templates (`prompt`) live on OpenAI's servers and are not available here; send `instructions` and `input`.",
        ));
    }
    Ok(())
}

/// `include`: (reasoning `encrypted_content`, web search sources).
fn include(root: &Obj<'_>) -> Result<(bool, bool), ChatError> {
    let (mut encrypted, mut sources) = (false, false);
    for (i, value) in root.array("include")?.into_iter().flatten().enumerate() {
        match value.as_str() {
            Some("reasoning.encrypted_content") => encrypted = true,
            Some("web_search_call.action.sources") => sources = true,
            Some(other) => {
                return Err(ChatError::invalid(
                    format!("include[{i}]"),
                    format!("`include` value `{other}` is not available here; only `reasoning.encrypted_content` and `web_search_call.action.sources` are."),
                ))
            }
            None => return Err(wrong_type(&format!("include[{i}]"), "a string", value)),
        }
    }
    Ok((encrypted, sources))
}

struct ParsedTools {
    tools: Vec<Tool>,
    origins: HashMap<String, ToolOrigin>,
    dropped: Vec<String>,
    web_search: Option<WebSearchTool>,
}

/// A hosted `web_search` tool: its domain filter, location and context size.
fn web_search_tool(tool: &Obj<'_>) -> Result<WebSearchTool, ChatError> {
    tool.only(
        &[
            "type",
            "filters",
            "user_location",
            "search_context_size",
            "external_web_access",
        ],
        "the web_search tool",
        "filters.allowed_domains, user_location, search_context_size and external_web_access",
    )?;
    let mut search = WebSearchTool::default();
    if let Some(filters) = tool.get("filters").filter(|f| !f.is_null()) {
        search.allowed_domains =
            Obj::new(filters, tool.at("filters"))?.strings("allowed_domains")?;
    }
    search.user_location = crate::api::json::user_location(tool)?;
    search.max_results = match tool.str("search_context_size")? {
        None | Some("medium") => Some(5),
        Some("low") => Some(3),
        Some("high") => None,
        Some(other) => {
            return Err(ChatError::invalid(
                tool.at("search_context_size"),
                format!("`search_context_size` is `{other}`; allowed: low, medium, high."),
            ))
        }
    };
    // Kiro's search answers from its index and opens no page, so `external_web_access`
    // (which permits live access, it does not demand it) changes nothing.
    tool.bool("external_web_access")?;
    Ok(search)
}

fn tools(root: &Obj<'_>) -> Result<ParsedTools, ChatError> {
    let mut tools = Vec::new();
    let mut origins = HashMap::new();
    let mut dropped = Vec::new();
    let mut web_search = None;
    for (index, item) in root.array("tools")?.into_iter().flatten().enumerate() {
        let tool = Obj::new(item, format!("tools[{index}]"))?;
        let kind = tool.required_str("type")?;
        match kind {
            "function" | "custom" => {
                tools.push(one_tool(&tool, None, &mut origins)?);
            }
            "namespace" => {
                let namespace = tool.required_str("name")?;
                for (i, member) in tool.array("tools")?.into_iter().flatten().enumerate() {
                    let member = Obj::new(member, format!("{}[{i}]", tool.at("tools")))?;
                    tools.push(one_tool(&member, Some(namespace), &mut origins)?);
                }
            }
            search if WEB_SEARCH.contains(&search) => web_search = Some(web_search_tool(&tool)?),
            hosted if HOSTED.contains(&hosted) => dropped.push(hosted.to_owned()),
            other => {
                return Err(ChatError::invalid(
                    tool.at("type"),
                    format!("tool type `{other}` is not supported; use function, custom or namespace tools."),
                ))
            }
        }
    }
    if web_search.is_some() && tools.iter().any(|t| t.name == TOOL_NAME) {
        return Err(ChatError::invalid(
            "tools",
            format!(
                "a function tool is named `{TOOL_NAME}` beside the hosted web search; rename it."
            ),
        ));
    }
    Ok(ParsedTools {
        tools,
        origins,
        dropped,
        web_search,
    })
}

fn one_tool(
    tool: &Obj<'_>,
    namespace: Option<&str>,
    origins: &mut HashMap<String, ToolOrigin>,
) -> Result<Tool, ChatError> {
    let name = tool.required_str("name")?;
    let custom = match tool.str("type")?.unwrap_or("function") {
        "function" => false,
        "custom" => true,
        other => {
            return Err(ChatError::invalid(
                tool.at("type"),
                format!(
                "tool type `{other}` is not supported inside a namespace; use function or custom."
            ),
            ))
        }
    };
    let flat = match namespace {
        Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
        None => name.to_owned(),
    };
    if custom || namespace.is_some() {
        origins.insert(
            flat.clone(),
            ToolOrigin {
                name: name.to_owned(),
                namespace: namespace.map(str::to_owned),
                custom,
            },
        );
    }
    let description = tool.str("description")?.unwrap_or_default().to_owned();
    let input_schema = if custom {
        let format = tool
            .get("format")
            .map(|f| format!(" Its format: {f}."))
            .unwrap_or_default();
        json!({"type": "object", "properties": {"input": {"type": "string",
            "description": format!("The tool's whole input as free text (not JSON).{format}")}},
            "required": ["input"]})
    } else {
        match tool.get("parameters") {
            None => json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(other) => {
                return Err(wrong_type(
                    &tool.at("parameters"),
                    "a JSON Schema object",
                    other,
                ))
            }
        }
    };
    Ok(Tool {
        name: flat,
        description,
        input_schema,
    })
}

/// The flattened name of a call a client sends back (`name` plus its `namespace`).
fn call_name(obj: &Obj<'_>) -> Result<String, ChatError> {
    let name = obj.required_str("name")?;
    Ok(match obj.str("namespace")? {
        Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
        None => name.to_owned(),
    })
}

fn input_item(
    obj: &Obj<'_>,
    messages: &mut Vec<Message>,
    system: &mut Vec<String>,
) -> Result<(), ChatError> {
    let kind = obj.str("type")?.unwrap_or("message");
    match kind {
        "message" => {
            let role = obj.required_str("role")?;
            let parts = message_parts(obj)?;
            match role {
                "user" => messages.push(Message { role: Role::User, parts }),
                "assistant" => messages.push(Message { role: Role::Assistant, parts }),
                "system" | "developer" => system.extend(parts.into_iter().filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    _ => None,
                })),
                other => {
                    return Err(ChatError::invalid(
                        obj.at("role"),
                        format!("`{}` is `{other}`; allowed: user, assistant, system, developer.", obj.at("role")),
                    ))
                }
            }
        }
        "function_call" => {
            let text = obj.str("arguments")?.unwrap_or("{}");
            let input: Value = serde_json::from_str(text).map_err(|e| {
                ChatError::invalid(obj.at("arguments"), format!("`{}` is not valid JSON: {e}.", obj.at("arguments")))
            })?;
            messages.push(Message {
                role: Role::Assistant,
                parts: vec![Part::ToolUse {
                    id: obj.required_str("call_id")?.to_owned(),
                    name: call_name(obj)?,
                    input,
                }],
            });
        }
        "custom_tool_call" => {
            let name = call_name(obj)?;
            messages.push(Message {
                role: Role::Assistant,
                parts: vec![Part::ToolUse {
                    id: obj.required_str("call_id")?.to_owned(),
                    name,
                    input: json!({"input": obj.str("input")?.unwrap_or_default()}),
                }],
            });
        }
        "function_call_output" | "custom_tool_call_output" => messages.push(Message {
            role: Role::User,
            parts: vec![Part::ToolResult {
                tool_use_id: obj.required_str("call_id")?.to_owned(),
                content: output_text(obj)?,
                is_error: false,
            }],
        }),
        // A search of an earlier turn: the model reads what was searched (the results
        // themselves are not in the item).
        "web_search_call" => {
            let action = obj.get("action").map(|a| Obj::new(a, obj.at("action"))).transpose()?;
            let query = match &action {
                Some(action) => action.str("query")?.unwrap_or_default().to_owned(),
                None => String::new(),
            };
            let mut text = format!("(Searched the web for \"{query}\".)");
            let sources = action.as_ref().map(|a| a.array("sources")).transpose()?.flatten();
            let urls: Vec<&str> = sources
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("url").and_then(Value::as_str))
                .collect();
            if !urls.is_empty() {
                text = format!("{text} Sources: {}", urls.join(", "));
            }
            messages.push(Message::text(Role::Assistant, text));
        }
        "reasoning" => {
            let (text, signature) = reasoning_text(obj)?;
            let part = if signature.is_empty() {
                Part::Thinking(text)
            } else {
                Part::SignedThinking { text, signature }
            };
            if !matches!(&part, Part::Thinking(text) if text.is_empty()) {
                messages.push(Message {
                    role: Role::Assistant,
                    parts: vec![part],
                });
            }
        }
        other => {
            return Err(ChatError::invalid(
                obj.at("type"),
                format!(
                    "input item type `{other}` is not supported; send message, function_call, function_call_output, \
                     custom_tool_call, custom_tool_call_output, web_search_call or reasoning items."
                ),
            ))
        }
    }
    Ok(())
}

fn message_parts(obj: &Obj<'_>) -> Result<Vec<Part>, ChatError> {
    match obj.required("content")? {
        Value::String(text) => Ok(vec![Part::Text(text.clone())]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let part = Obj::new(part, format!("{}[{i}]", obj.at("content")))?;
                match part.required_str("type")? {
                    "input_text" | "output_text" => Ok(Part::Text(part.str("text")?.unwrap_or_default().to_owned())),
                    "refusal" => Ok(Part::Text(part.str("refusal")?.unwrap_or_default().to_owned())),
                    "input_image" => {
                        let url = part.str("image_url")?.ok_or_else(|| {
                            ChatError::invalid(
                                part.at("image_url"),
                                "`input_image` needs `image_url` (a data:image/...;base64, URL); uploaded `file_id`s live on OpenAI's servers.",
                            )
                        })?;
                        let path = part.at("image_url");
                        match url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
                            Some((meta, data)) => match meta.strip_suffix(";base64") {
                                Some(media_type) => crate::api::image::inline(media_type, data, &path),
                                None => Err(ChatError::invalid(path, "the image data URL must be base64 (data:image/png;base64,...).")),
                            },
                            None => Err(crate::api::image::remote_refused(&path)),
                        }
                    }
                    other => Err(ChatError::invalid(
                        part.at("type"),
                        format!("content part type `{other}` is not supported; use input_text, input_image or output_text."),
                    )),
                }
            })
            .collect(),
        other => Err(wrong_type(&obj.at("content"), "a string or an array of parts", other)),
    }
}

/// A tool output: a string, or parts flattened to text.
fn output_text(obj: &Obj<'_>) -> Result<String, ChatError> {
    match obj.get("output") {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("input_text") | Some("output_text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n")),
        Some(other) => Err(wrong_type(
            &obj.at("output"),
            "a string or an array of parts",
            other,
        )),
    }
}

/// The reasoning text and signature (empty when unsigned) of a `reasoning` item: what
/// aiproxy put in `encrypted_content` (the whole thinking), else the summaries.
fn reasoning_text(obj: &Obj<'_>) -> Result<(String, String), ChatError> {
    if let Some(sealed) = obj.str("encrypted_content")? {
        if let Some(opened) = super::sealed::open(sealed) {
            return Ok(opened);
        }
    }
    let summary = obj
        .array("summary")?
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    Ok((summary, String::new()))
}

fn tool_choice(root: &Obj<'_>, tools: &[Tool]) -> Result<(ToolChoice, Value), ChatError> {
    let Some(value) = root.get("tool_choice") else {
        return Ok((ToolChoice::Auto, json!("auto")));
    };
    let choice = match value {
        Value::String(mode) => match mode.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Any,
            other => {
                return Err(ChatError::invalid(
                    "tool_choice",
                    format!("`tool_choice` is `{other}`; allowed: auto, none, required, or {{\"type\": \"function\", \"name\": ...}}."),
                ))
            }
        },
        _ => {
            let obj = Obj::new(value, "tool_choice".into())?;
            match obj.required_str("type")? {
                "function" | "custom" => {
                    let name = call_name(&obj)?;
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(ChatError::invalid(
                            "tool_choice",
                            format!("`tool_choice` names `{name}`, which is not among the request's tools."),
                        ));
                    }
                    ToolChoice::Tool(name)
                }
                other => {
                    return Err(ChatError::invalid(
                        "tool_choice.type",
                        format!("`tool_choice.type` `{other}` is not supported here; use function or custom (hosted tools do not run through Kiro)."),
                    ))
                }
            }
        }
    };
    Ok((choice, value.clone()))
}

fn reasoning(root: &Obj<'_>) -> Result<(Option<Thinking>, bool, Value), ChatError> {
    let Some(value) = root.get("reasoning") else {
        return Ok((None, false, json!({"effort": null, "summary": null})));
    };
    let obj = Obj::new(value, "reasoning".into())?;
    let thinking = crate::api::openai::request::effort(obj.str("effort")?, "reasoning.effort")?;
    let summary = match obj.str("summary")?.or(obj.str("generate_summary")?) {
        None => false,
        Some("auto" | "concise" | "detailed") => true,
        Some(other) => {
            return Err(ChatError::invalid(
                "reasoning.summary",
                format!("`reasoning.summary` is `{other}`; allowed: auto, concise, detailed."),
            ))
        }
    };
    let echo = json!({"effort": obj.get("effort"), "summary": obj.get("summary")});
    Ok((thinking, summary, echo))
}

fn text_format(root: &Obj<'_>) -> Result<Option<OutputFormat>, ChatError> {
    let Some(text) = root.get("text") else {
        return Ok(None);
    };
    let text = Obj::new(text, "text".into())?;
    let Some(format) = text.get("format") else {
        return Ok(None);
    };
    let format = Obj::new(format, "text.format".into())?;
    match format.required_str("type")? {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        "json_schema" => Ok(Some(OutputFormat::JsonSchema {
            name: format.required_str("name")?.to_owned(),
            description: format.str("description")?.map(str::to_owned),
            schema: format.required("schema")?.clone(),
        })),
        other => Err(ChatError::invalid(
            "text.format.type",
            format!("`text.format.type` is `{other}`; allowed: text, json_object, json_schema."),
        )),
    }
}

/// `text.verbosity`, applied as an instruction (Kiro has no such switch).
fn verbosity_note(text: &Obj<'_>) -> Result<Option<&'static str>, ChatError> {
    match text.str("verbosity")? {
        None | Some("medium") => Ok(None),
        Some("low") => Ok(Some(crate::chat::instructions::VERBOSITY_LOW)),
        Some("high") => Ok(Some(crate::chat::instructions::VERBOSITY_HIGH)),
        Some(other) => Err(ChatError::invalid(
            "text.verbosity",
            format!("`text.verbosity` is `{other}`; allowed: low, medium, high."),
        )),
    }
}

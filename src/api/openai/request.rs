//! OpenAI Chat Completions request -> [`ChatRequest`] (docs/kiro-protocol.md §4.5).

use crate::api::json::{parse_object, wrong_type, Obj};
use crate::api::unsupported;
use crate::chat::{
    ChatError, ChatRequest, Effort, Message, Metadata, OutputFormat, Part, Role, Sampling,
    Thinking, Tool, ToolChoice,
};
use serde_json::{Map, Value};

const HINT: &str = "Send a JSON object like {\"model\": \"claude-sonnet-4-5\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}.";

/// Options of the OpenAI request that shape the response, not the model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The request used the legacy `functions` (not `tools`): answer with `function_call`.
    pub legacy_functions: bool,
}

/// Parses a `/v1/chat/completions` body.
pub fn parse(body: &[u8], metadata: Metadata) -> Result<(ChatRequest, ResponseOptions), ChatError> {
    let map = parse_object(body, HINT)?;
    let root = Obj {
        map: &map,
        path: String::new(),
    };
    let model = root.required_str("model")?.to_owned();
    unsupported::refuse_openai(&root)?;
    let messages = root
        .array("messages")?
        .ok_or_else(|| ChatError::invalid("messages", format!("`messages` is required. {HINT}")))?;
    if messages.is_empty() {
        return Err(ChatError::invalid(
            "messages",
            "`messages` must contain at least one message.",
        ));
    }
    unsupported::refuse_several(&root, "n")?;

    let mut system = Vec::new();
    let mut conversation = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let obj = Obj::new(message, format!("messages[{index}]"))?;
        parse_message(&obj, &mut system, &mut conversation)?;
    }
    if conversation.is_empty() {
        return Err(ChatError::invalid(
            "messages",
            "`messages` has only system/developer messages; add at least one user message.",
        ));
    }

    let include_usage = include_usage(&root)?;
    let (tools, tool_choice) = parse_tools(&root)?;
    let sampling = Sampling {
        max_tokens: root
            .u32("max_completion_tokens")?
            .or(root.u32("max_tokens")?),
        temperature: root.number("temperature", 0.0, 2.0)?,
        top_p: root.number("top_p", 0.0, 1.0)?,
        stop: parse_stop(&root)?,
        not_honoured: unsupported::sampling_hints(&root, &unsupported::OPENAI_SAMPLING),
    };
    let request = ChatRequest {
        model,
        system,
        messages: conversation,
        tools,
        tool_choice,
        single_tool_call: !root.bool("parallel_tool_calls")?.unwrap_or(true),
        sampling,
        output: response_format(&root)?,
        thinking: effort(root.str("reasoning_effort")?, "reasoning_effort")?,
        stream: root.bool("stream")?.unwrap_or(false),
        metadata,
        cache_marks: Default::default(),
        web_search: None,
    };
    let legacy_functions = root.get("functions").is_some() && root.get("tools").is_none();
    Ok((
        request,
        ResponseOptions {
            include_usage,
            legacy_functions,
        },
    ))
}

/// OpenAI's reasoning effort (Chat Completions' `reasoning_effort`, the Responses API's
/// `reasoning.effort`) as adaptive thinking: `none` and `minimal` think not at all, the
/// rest at that level (clamped later to what the model takes, from its catalog entry).
pub(crate) fn effort(value: Option<&str>, param: &str) -> Result<Option<Thinking>, ChatError> {
    let effort = match value {
        None | Some("none" | "minimal") => return Ok(None),
        Some("low") => Effort::Low,
        Some("medium") => Effort::Medium,
        Some("high") => Effort::High,
        Some("xhigh") => Effort::Xhigh,
        Some(other) => {
            return Err(ChatError::invalid(
                param,
                format!(
                    "`{param}` is `{other}`; allowed: none, minimal, low, medium, high, xhigh."
                ),
            ))
        }
    };
    Ok(Some(Thinking::Adaptive { effort }))
}

/// `response_format`: `text` (the default), `json_object`, or `json_schema`.
fn response_format(root: &Obj<'_>) -> Result<Option<OutputFormat>, ChatError> {
    let Some(value) = root.get("response_format") else {
        return Ok(None);
    };
    let format = Obj::new(value, "response_format".into())?;
    match format.required_str("type")? {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        "json_schema" => {
            let spec = format.required_obj("json_schema")?;
            let schema = spec
                .get("schema")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            Ok(Some(OutputFormat::JsonSchema {
                name: spec.required_str("name")?.to_owned(),
                description: spec.str("description")?.map(str::to_owned),
                schema,
            }))
        }
        other => Err(ChatError::invalid(
            "response_format.type",
            format!(
                "`response_format.type` is `{other}`; allowed: text, json_object, json_schema."
            ),
        )),
    }
}

fn parse_message(
    obj: &Obj<'_>,
    system: &mut Vec<String>,
    out: &mut Vec<Message>,
) -> Result<(), ChatError> {
    let role = obj.required_str("role")?;
    match role {
        "system" | "developer" => {
            let text = text_only(obj, "content")?;
            if !text.is_empty() {
                system.push(text);
            }
        }
        "user" => {
            let parts = content_parts(obj)?;
            out.push(Message { role: Role::User, parts });
        }
        "assistant" => {
            let mut parts = match obj.get("content") {
                Some(_) => content_parts(obj)?,
                None => Vec::new(),
            };
            if let Some(reasoning) = obj.str("reasoning_content")? {
                parts.insert(0, Part::Thinking(reasoning.to_owned()));
            }
            if let Some(calls) = obj.array("tool_calls")? {
                for (index, call) in calls.iter().enumerate() {
                    parts.push(tool_call(&Obj::new(call, format!("{}[{index}]", obj.at("tool_calls")))?)?);
                }
            }
            if let Some(call) = obj.get("function_call") {
                let call = Obj::new(call, obj.at("function_call"))?;
                let name = call.required_str("name")?;
                parts.push(Part::ToolUse {
                    id: legacy_call_id(name),
                    name: name.to_owned(),
                    input: parse_arguments(&call)?,
                });
            }
            out.push(Message { role: Role::Assistant, parts });
        }
        "tool" => {
            let id = obj.required_str("tool_call_id")?;
            out.push(Message {
                role: Role::User,
                parts: vec![Part::ToolResult {
                    tool_use_id: id.to_owned(),
                    content: text_only(obj, "content")?,
                    is_error: false,
                }],
            });
        }
        "function" => {
            let name = obj.required_str("name")?;
            out.push(Message {
                role: Role::User,
                parts: vec![Part::ToolResult {
                    tool_use_id: legacy_call_id(name),
                    content: text_only(obj, "content")?,
                    is_error: false,
                }],
            });
        }
        other => {
            return Err(ChatError::invalid(
                obj.at("role"),
                format!(
                    "`{}` is `{other}`; allowed roles: system, developer, user, assistant, tool, function.",
                    obj.at("role")
                ),
            ))
        }
    }
    Ok(())
}

/// Legacy `function_call`s carry no id; the name pairs a call with its result.
fn legacy_call_id(name: &str) -> String {
    format!("call_{name}")
}

fn tool_call(call: &Obj<'_>) -> Result<Part, ChatError> {
    let id = call.required_str("id")?;
    let function = call.required_obj("function")?;
    Ok(Part::ToolUse {
        id: id.to_owned(),
        name: function.required_str("name")?.to_owned(),
        input: parse_arguments(&function)?,
    })
}

/// `arguments` is a JSON text holding an object.
fn parse_arguments(function: &Obj<'_>) -> Result<Value, ChatError> {
    let text = function.str("arguments")?.unwrap_or("{}");
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(wrong_type(
            &function.at("arguments"),
            "a JSON text of an object",
            &other,
        )),
        Err(e) => Err(ChatError::invalid(
            function.at("arguments"),
            format!("`{}` is not valid JSON: {e}.", function.at("arguments")),
        )),
    }
}

/// Content that may only be text: a string or an array of text parts.
fn text_only(obj: &Obj<'_>, key: &str) -> Result<String, ChatError> {
    match obj.get(key) {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(items)) => {
            let mut text = String::new();
            for (index, item) in items.iter().enumerate() {
                let part = Obj::new(item, format!("{}[{index}]", obj.at(key)))?;
                match part.str("type")? {
                    Some("text") | None => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part.str("text")?.unwrap_or_default());
                    }
                    Some(other) => {
                        return Err(ChatError::invalid(
                            part.at("type"),
                            format!(
                                "`{}` is `{other}`, but only text parts are allowed here.",
                                part.at("type")
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(wrong_type(
            &obj.at(key),
            "a string or an array of text parts",
            other,
        )),
    }
}

fn content_parts(obj: &Obj<'_>) -> Result<Vec<Part>, ChatError> {
    match obj.get("content") {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![Part::Text(text.clone())]),
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let part = Obj::new(item, format!("{}[{index}]", obj.at("content")))?;
                parts.push(content_part(&part)?);
            }
            Ok(parts)
        }
        Some(other) => Err(wrong_type(
            &obj.at("content"),
            "a string or an array of content parts",
            other,
        )),
    }
}

fn content_part(part: &Obj<'_>) -> Result<Part, ChatError> {
    match part.required_str("type")? {
        "text" => Ok(Part::Text(part.str("text")?.unwrap_or_default().to_owned())),
        "image_url" => {
            let url = match part.required("image_url")? {
                Value::String(url) => url.as_str(),
                other => Obj::new(other, part.at("image_url"))?.required_str("url")?,
            };
            image_from_url(url, &part.at("image_url"))
        }
        other => Err(ChatError::invalid(
            part.at("type"),
            format!("Content part type `{other}` is not supported; use `text` or `image_url`."),
        )),
    }
}

/// `data:image/png;base64,...` -> image; remote URLs cannot be fetched by Kiro.
fn image_from_url(url: &str, path: &str) -> Result<Part, ChatError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(crate::api::image::remote_refused(path));
    };
    if let Some((meta, data)) = rest.split_once(',') {
        if let Some(media_type) = meta.strip_suffix(";base64") {
            return crate::api::image::inline(media_type, data, path);
        }
    }
    Err(ChatError::invalid(
        path,
        format!("`{path}` must be a base64 data URL (data:image/png;base64,...)."),
    ))
}

/// `stream_options.include_usage` (also read by legacy completions).
pub fn include_usage(root: &Obj<'_>) -> Result<bool, ChatError> {
    match root.get("stream_options") {
        Some(value) => Ok(Obj::new(value, "stream_options".into())?
            .bool("include_usage")?
            .unwrap_or(false)),
        None => Ok(false),
    }
}

/// `stop`: a string or a list of strings (also read by legacy completions).
pub fn parse_stop(root: &Obj<'_>) -> Result<Vec<String>, ChatError> {
    match root.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(&format!("stop[{i}]"), "a string", other)),
            })
            .collect(),
        Some(other) => Err(wrong_type("stop", "a string or an array of strings", other)),
    }
}

fn parse_tools(root: &Obj<'_>) -> Result<(Vec<Tool>, ToolChoice), ChatError> {
    let mut tools = Vec::new();
    if let Some(items) = root.array("tools")? {
        for (index, item) in items.iter().enumerate() {
            let tool = Obj::new(item, format!("tools[{index}]"))?;
            match tool.str("type")?.unwrap_or("function") {
                "function" => {}
                other => {
                    return Err(ChatError::invalid(
                        tool.at("type"),
                        format!("Tool type `{other}` is not supported; use `function`."),
                    ))
                }
            }
            tools.push(function_definition(&tool.required_obj("function")?)?);
        }
    }
    if let Some(items) = root.array("functions")? {
        for (index, item) in items.iter().enumerate() {
            tools.push(function_definition(&Obj::new(
                item,
                format!("functions[{index}]"),
            )?)?);
        }
    }
    let choice = match root.get("tool_choice").or_else(|| root.get("function_call")) {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Any,
            other => {
                return Err(ChatError::invalid(
                    "tool_choice",
                    format!("`tool_choice` is `{other}`; allowed: auto, none, required, or {{\"type\":\"function\",\"function\":{{\"name\":...}}}}."),
                ))
            }
        },
        Some(value) => {
            let obj = Obj::new(value, "tool_choice".into())?;
            let name = match obj.get("function") {
                Some(function) => Obj::new(function, obj.at("function"))?.required_str("name")?,
                None => obj.required_str("name")?,
            };
            ToolChoice::Tool(name.to_owned())
        }
    };
    Ok((tools, choice))
}

fn function_definition(function: &Obj<'_>) -> Result<Tool, ChatError> {
    Ok(Tool {
        name: function.required_str("name")?.to_owned(),
        description: function.str("description")?.unwrap_or_default().to_owned(),
        input_schema: match function.get("parameters") {
            None => serde_json::json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(other) => {
                return Err(wrong_type(
                    &function.at("parameters"),
                    "a JSON Schema object",
                    other,
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(value: Value) -> Result<(ChatRequest, ResponseOptions), ChatError> {
        parse(value.to_string().as_bytes(), Metadata::default())
    }

    fn param_of(value: Value) -> (Option<String>, String) {
        match parse_json(value).unwrap_err() {
            ChatError::InvalidRequest { param, message } => (param, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seed_request() {
        let (req, opts) = parse_json(json!({
            "model": "claude-3-sonnet-20240229",
            "messages": [{"role": "user", "content": "Hello, Claude!"}],
            "max_tokens": 100
        }))
        .unwrap();
        assert_eq!(req.model, "claude-3-sonnet-20240229");
        assert_eq!(
            req.messages,
            vec![Message::text(Role::User, "Hello, Claude!")]
        );
        assert_eq!(req.sampling.max_tokens, Some(100));
        assert!(!req.stream);
        assert!(!opts.include_usage);
    }

    #[test]
    fn system_developer_multi_turn_and_options() {
        let (req, opts) = parse_json(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "developer", "content": [{"type": "text", "text": "D"}]},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": [{"type": "text", "text": "q2"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 7, "max_tokens": 9,
            "stop": "END", "temperature": 0.5
        }))
        .unwrap();
        assert_eq!(req.system, vec!["S", "D"]);
        assert_eq!(req.messages.len(), 3);
        assert_eq!(
            req.messages[2].parts[1],
            Part::Image {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert!(req.stream && opts.include_usage);
        assert_eq!(
            req.sampling.max_tokens,
            Some(7),
            "max_completion_tokens wins"
        );
        assert_eq!(req.sampling.stop, vec!["END"]);
    }

    #[test]
    fn tool_calls_and_results() {
        let (req, _) = parse_json(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false
        }))
        .unwrap();
        assert_eq!(
            req.messages[1].parts[0],
            Part::Text("Checking.".into()),
            "text next to tool calls is kept"
        );
        assert_eq!(
            req.messages[1].parts[1],
            Part::ToolUse {
                id: "call_1".into(),
                name: "get_weather".into(),
                input: json!({"city": "Paris"})
            }
        );
        assert_eq!(
            req.messages[2].parts[0],
            Part::ToolResult {
                tool_use_id: "call_1".into(),
                content: "sunny".into(),
                is_error: false
            }
        );
        assert_eq!(req.tool_choice, ToolChoice::Tool("get_weather".into()));
        assert!(req.single_tool_call);
        assert_eq!(req.tools[0].name, "get_weather");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            param_of(json!({"messages": []})).0.as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(json!({"model": "m"})).0.as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": []})).0.as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(json!({"model": 5, "messages": []})).1,
            "`model` must be a string, got a number."
        );
        let (param, message) =
            param_of(json!({"model": "m", "messages": [{"role": "user", "content": 3}]}));
        assert_eq!(param.as_deref(), Some("messages[0].content"));
        assert!(message.contains("string or an array"), "{message}");
        let (param, _) =
            param_of(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}));
        assert_eq!(param.as_deref(), Some("messages[0].role"));
        let (param, _) = param_of(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
        );
        assert_eq!(param.as_deref(), Some("temperature"));
        let (param, _) = param_of(
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]}),
        );
        assert_eq!(
            param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        match parse(b"{not json", Metadata::default()).unwrap_err() {
            ChatError::InvalidRequest { message, .. } => {
                assert!(message.contains("not valid JSON"))
            }
            other => panic!("{other:?}"),
        }
    }
}

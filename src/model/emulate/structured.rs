//! Structured output (OpenAI `response_format` `json_object` / `json_schema`, Anthropic
//! `output_format` / `output_config.format`) through a forced internal tool: its input schema
//! is the requested schema, so the model produces JSON of that shape as tool input, which
//! comes back to the client as the message content, never as a tool call. The input is
//! validated against the schema (with `boon`) before any byte reaches the client; see
//! [`super::forced`] for the second ask and the final error.

use crate::chat::{ChatError, ChatEvent, ChatStream, OutputFormat, StopReason, Tool};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The internal tool that carries the answer, and its compiled schema.
pub struct OutputTool {
    /// Its name (the schema's name, made unique among the request's tools).
    pub name: String,
    description: String,
    schema: Value,
    compiled: boon::Schemas,
    index: boon::SchemaIndex,
}

impl std::fmt::Debug for OutputTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where the schema is in the request, for the 400 of a schema that does not compile.
const SCHEMA_PARAM: &str = "response_format.json_schema.schema";

impl OutputTool {
    /// The tool for `format`, named apart from the request's own `tools`.
    pub fn new(format: &OutputFormat, tools: &[Tool]) -> Result<Self, ChatError> {
        let (name, description, schema) = match format {
            OutputFormat::JsonObject => ("json_answer".to_owned(), None, json!({"type": "object"})),
            OutputFormat::JsonSchema {
                name,
                description,
                schema,
            } => (name.clone(), description.clone(), schema.clone()),
        };
        if schema.get("type").is_some_and(|t| t != "object") {
            return Err(ChatError::invalid(
                SCHEMA_PARAM,
                "the root of the output schema must be an object (`\"type\": \"object\"`); wrap other values in a property.",
            ));
        }
        let mut unique = name;
        while tools.iter().any(|t| t.name == unique) {
            unique.push('_');
        }
        let (compiled, index) = compile(&schema)?;
        let description = description.unwrap_or_else(|| {
            "Give your final answer by calling this tool: its input is the answer.".to_owned()
        });
        Ok(Self {
            name: unique,
            description,
            schema,
            compiled,
            index,
        })
    }

    /// The tool definition sent upstream.
    pub fn tool(&self) -> Tool {
        Tool {
            name: self.name.clone(),
            description: self.description.clone(),
            input_schema: self.schema.clone(),
        }
    }

    /// Whether `arguments` (the tool input's JSON text) is a valid answer; else why not.
    pub fn check(&self, arguments: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(arguments)
            .map_err(|e| format!("the answer is not valid JSON ({e})"))?;
        self.compiled
            .validate(&value, self.index)
            .map_err(|e| format!("the answer does not match the schema: {e}"))
    }
}

fn compile(schema: &Value) -> Result<(boon::Schemas, boon::SchemaIndex), ChatError> {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    // Resolve nothing outside the schema itself: a client's `$ref` must not read local
    // files (boon's default loader would) or reach the network.
    compiler.use_loader(Box::new(boon::SchemeUrlLoader::new()));
    let location = "urn:aiproxy:response-schema";
    let refused = |error: boon::CompileError| {
        ChatError::invalid(
            SCHEMA_PARAM,
            format!("the JSON schema of the requested output does not compile: {error}"),
        )
    };
    compiler
        .add_resource(location, schema.clone())
        .map_err(refused)?;
    let index = compiler.compile(location, &mut schemas).map_err(refused)?;
    Ok((schemas, index))
}

/// `events` as the client sees them: the output tool's input becomes the message content,
/// the text around it is dropped (the answer is the JSON), and the stop reason is the end
/// of a turn. Calls of the request's own tools pass as they are.
pub fn as_content(events: ChatStream, tool_name: String) -> ChatStream {
    let mut output_call: Option<u32> = None;
    let mut arguments = String::new();
    let mut client_calls = false;
    let mut answered = false;
    Box::pin(events.filter_map(move |item| {
        let event = match item {
            Ok(event) => event,
            Err(error) => return futures_util::future::ready(Some(Err(error))),
        };
        let out = match event {
            ChatEvent::ToolCallStart {
                index, ref name, ..
            } if *name == tool_name => {
                output_call = Some(index);
                None
            }
            ChatEvent::ToolCallDelta { index, json } if Some(index) == output_call => {
                arguments.push_str(&json);
                None
            }
            ChatEvent::ToolCallEnd { index } if Some(index) == output_call => {
                output_call = None;
                let first = !answered && !client_calls;
                answered = true;
                first.then(|| ChatEvent::TextDelta(std::mem::take(&mut arguments)))
            }
            ChatEvent::TextDelta(_) => None,
            ChatEvent::ToolCallStart { .. }
            | ChatEvent::ToolCallDelta { .. }
            | ChatEvent::ToolCallEnd { .. }
                if answered =>
            {
                None
            }
            ChatEvent::ToolCallStart { .. } => {
                client_calls = true;
                Some(event)
            }
            ChatEvent::Stop(StopReason::ToolUse) if !client_calls => {
                Some(ChatEvent::Stop(StopReason::EndTurn))
            }
            other => Some(other),
        };
        futures_util::future::ready(out.map(Ok))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> OutputFormat {
        OutputFormat::JsonSchema {
            name: "person".into(),
            description: None,
            schema: json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "additionalProperties": false
            }),
        }
    }

    #[test]
    fn answers_are_checked_against_the_schema() {
        let tool = OutputTool::new(&person(), &[]).unwrap();
        assert_eq!(tool.check(r#"{"name": "Ada", "age": 36}"#), Ok(()));
        let error = tool.check(r#"{"name": "Ada"}"#).unwrap_err();
        assert!(error.contains("age"), "{error}");
        assert!(tool
            .check("not json")
            .unwrap_err()
            .contains("not valid JSON"));
        let any = OutputTool::new(&OutputFormat::JsonObject, &[]).unwrap();
        assert!(any.check("[1]").is_err() && any.check("{}").is_ok());
    }

    #[test]
    fn a_bad_schema_or_an_outside_ref_is_a_400_and_the_name_stays_unique() {
        let bad = OutputFormat::JsonSchema {
            name: "x".into(),
            description: None,
            schema: json!({"type": 12}),
        };
        let error = OutputTool::new(&bad, &[]).unwrap_err();
        assert_eq!(error.kind(), "invalid_request");
        let outside = OutputFormat::JsonSchema {
            name: "x".into(),
            description: None,
            schema: json!({"$ref": "file:///etc/passwd"}),
        };
        assert!(OutputTool::new(&outside, &[]).is_err(), "no local files");
        let array = OutputFormat::JsonSchema {
            name: "x".into(),
            description: None,
            schema: json!({"type": "array"}),
        };
        assert!(
            OutputTool::new(&array, &[]).is_err(),
            "tool input is an object"
        );
        let taken = [Tool {
            name: "person".into(),
            description: String::new(),
            input_schema: json!({}),
        }];
        assert_eq!(OutputTool::new(&person(), &taken).unwrap().name, "person_");
    }

    #[tokio::test]
    async fn the_output_call_becomes_the_content() {
        let events = vec![
            ChatEvent::TextDelta("Here you go:".into()),
            ChatEvent::ToolCallStart {
                index: 0,
                id: "t".into(),
                name: "person".into(),
            },
            ChatEvent::ToolCallDelta {
                index: 0,
                json: "{\"name\":".into(),
            },
            ChatEvent::ToolCallDelta {
                index: 0,
                json: "\"Ada\",\"age\":36}".into(),
            },
            ChatEvent::ToolCallEnd { index: 0 },
            ChatEvent::Stop(StopReason::ToolUse),
        ];
        let out: Vec<ChatEvent> = as_content(
            Box::pin(futures_util::stream::iter(events.into_iter().map(Ok))),
            "person".into(),
        )
        .map(|e| e.unwrap())
        .collect()
        .await;
        assert_eq!(
            out,
            vec![
                ChatEvent::TextDelta("{\"name\":\"Ada\",\"age\":36}".into()),
                ChatEvent::Stop(StopReason::EndTurn),
            ]
        );
    }
}

//! The fake as a model that follows an instruction to call a tool. Kiro has no tool choice
//! and no output schema, so aiproxy asks for them in words (forced tool choice, structured
//! output: `src/model/emulate`), and a real model answers by calling the tool. Without this
//! the fake would answer with its echo and mock mode would end such requests in
//! `502 requirement_unmet`, a failure real Kiro does not give. The call's input is the
//! smallest value the tool's schema accepts.

use super::script::ToolCallScript;
use crate::kiro::protocol::wire::KiroTool;
use serde_json::{json, Map, Value};

/// The instruction's words for one named tool (`... calling the tool `NAME` ...`).
const NAMED: &str = "calling the tool `";
/// The instruction's words for any tool.
const ANY: &str = "calling one of the tools provided";

/// The call `content` asks for, if it asks for one of `tools`.
pub fn call(content: &str, tools: &[KiroTool]) -> Option<ToolCallScript> {
    let specs = || tools.iter().filter_map(KiroTool::spec);
    let spec = match content.split_once(NAMED) {
        Some((_, rest)) => {
            let name = rest.split('`').next()?;
            specs().find(|spec| spec.name == name)?
        }
        None if content.contains(ANY) => specs().next()?,
        None => return None,
    };
    Some(ToolCallScript {
        name: spec.name.clone(),
        input: minimal(&spec.input_schema.json),
        id: None,
    })
}

/// The smallest instance of a JSON Schema: the first of an enum or a union, required
/// properties only, the least a bound allows.
pub fn minimal(schema: &Value) -> Value {
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for union in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(union)
            .and_then(Value::as_array)
            .and_then(|u| u.first())
        {
            return minimal(first);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or("null"),
        // No type: an object (the shape tool inputs have), with whatever it requires.
        _ => "object",
    };
    let count = |key: &str| schema.get(key).and_then(Value::as_u64).unwrap_or(0);
    match kind {
        "string" => json!("x".repeat(usize::try_from(count("minLength")).unwrap_or(0))),
        "integer" | "number" => {
            let low = schema.get("minimum").and_then(Value::as_f64).or_else(|| {
                schema
                    .get("exclusiveMinimum")
                    .and_then(Value::as_f64)
                    .map(|m| m.floor() + 1.0)
            });
            match low {
                Some(low) if kind == "integer" => json!(low.ceil() as i64),
                Some(low) => json!(low),
                None => json!(0),
            }
        }
        "boolean" => json!(false),
        "null" => Value::Null,
        "array" => {
            let item = schema.get("items").map_or(Value::Null, minimal);
            Value::Array(vec![item; usize::try_from(count("minItems")).unwrap_or(0)])
        }
        _ => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            let object: Map<String, Value> = required
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|name| {
                    let property = properties.and_then(|p| p.get(name));
                    (name.to_owned(), property.map_or(json!(""), minimal))
                })
                .collect();
            Value::Object(object)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::protocol::wire::{InputSchema, ToolSpecification};

    #[test]
    fn the_smallest_instance_of_a_schema() {
        let schema = json!({"type": "object", "required": ["name", "age", "tags", "kind", "pet"],
            "properties": {
                "name": {"type": "string", "minLength": 2},
                "age": {"type": "integer", "minimum": 18},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "kind": {"enum": ["a", "b"]},
                "pet": {"anyOf": [{"type": "object", "required": ["legs"],
                                   "properties": {"legs": {"type": ["number", "null"]}}},
                                  {"type": "null"}]},
                "optional": {"type": "string"}}});
        assert_eq!(
            minimal(&schema),
            json!({"name": "xx", "age": 18, "tags": [""], "kind": "a", "pet": {"legs": 0}})
        );
    }

    #[test]
    fn the_named_tool_or_the_first_is_called() {
        let tool = |name: &str| {
            KiroTool::ToolSpecification(ToolSpecification {
                name: name.into(),
                description: "d".into(),
                input_schema: InputSchema {
                    json: json!({"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}}),
                },
            })
        };
        let tools = [tool("first"), KiroTool::cache_point(), tool("second")];
        let named = call(
            "Answer this turn by calling the tool `second`. Do not ...",
            &tools,
        );
        assert_eq!(
            named.map(|c| (c.name, c.input)),
            Some(("second".into(), json!({"q": ""})))
        );
        let any = call(
            "Answer this turn by calling one of the tools provided.",
            &tools,
        );
        assert_eq!(any.map(|c| c.name), Some("first".into()));
        assert!(call("just chat", &tools).is_none());
        assert!(call("calling the tool `missing`", &tools).is_none());
    }
}

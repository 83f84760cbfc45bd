//! One canonical conversion: the same conversation sent as OpenAI Chat Completions, as
//! Anthropic Messages and as an OpenAI Responses request produces the same Kiro request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aiproxy::api::{anthropic, openai, responses};
use aiproxy::chat::{ChatRequest, Metadata};
use aiproxy::kiro::protocol::request::{build, BuildOptions};
use serde_json::{json, Value};

fn kiro_body(request: &ChatRequest) -> Value {
    let options = BuildOptions {
        kiro_model_id: "claude-sonnet-4.5",
        profile_arn: None,
        conversation_id: "fixed".into(),
        thinking: request.thinking,
        reasoning: None,
        replay_signatures: true,
        native_max_tokens: None,
        prompt_caching: None,
    };
    let mut body = serde_json::to_value(build(request, &options).body).unwrap();
    // Random per request by design.
    body["conversationState"]["agentContinuationId"] = Value::Null;
    body
}

fn from_openai(value: Value) -> ChatRequest {
    openai::request::parse(value.to_string().as_bytes(), Metadata::default())
        .unwrap()
        .0
}

fn from_responses(value: Value) -> ChatRequest {
    responses::request::parse(value.to_string().as_bytes(), Metadata::default())
        .unwrap()
        .0
}

fn from_anthropic(value: Value) -> ChatRequest {
    anthropic::request::parse(
        value.to_string().as_bytes(),
        Metadata::default(),
        anthropic::request::Endpoint::Messages,
    )
    .unwrap()
}

#[test]
fn a_tool_round_trip_with_system_image_and_error_result() {
    let weather =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let long_name = "mcp__weather_service_with_a_rather_long_server_name__get_current_conditions";
    let openai = from_openai(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 500,
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome? See the map."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": long_name, "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": long_name, "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "service down"},
            {"role": "user", "content": "Thanks. Summarise."}
        ],
        "tools": [{"type": "function", "function": {"name": long_name, "description": "Current weather", "parameters": weather}}]
    }));
    let anthropic = from_anthropic(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 500,
        "system": "You are a weather bot.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome? See the map."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "call_1", "name": long_name, "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": long_name, "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "service down"},
                {"type": "text", "text": "Thanks. Summarise."}
            ]}
        ],
        "tools": [{"name": long_name, "description": "Current weather", "input_schema": weather}]
    }));
    let responses = from_responses(json!({
        "model": "claude-sonnet-4-5",
        "max_output_tokens": 500,
        "instructions": "You are a weather bot.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "Weather in Paris and Rome? See the map."},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
            ]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking both."}]},
            {"type": "function_call", "call_id": "call_1", "name": long_name, "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": long_name, "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": "service down"},
            {"role": "user", "content": "Thanks. Summarise."}
        ],
        "tools": [{"type": "function", "name": long_name, "description": "Current weather", "parameters": weather}]
    }));
    let (a, b) = (kiro_body(&openai), kiro_body(&anthropic));
    assert_eq!(a, b, "OpenAI:\n{a:#}\nAnthropic:\n{b:#}");
    let c = kiro_body(&responses);
    assert_eq!(a, c, "OpenAI:\n{a:#}\nResponses:\n{c:#}");

    // And the body is what Kiro expects.
    let state = &a["conversationState"];
    let current = &state["currentMessage"]["userInputMessage"];
    assert_eq!(current["content"], "Thanks. Summarise.");
    let results = &current["userInputMessageContext"]["toolResults"];
    assert_eq!(results.as_array().unwrap().len(), 2);
    let short = current["userInputMessageContext"]["tools"][0]["toolSpecification"]["name"]
        .as_str()
        .unwrap();
    assert!(short.len() <= 64 && short != long_name);
    assert_eq!(
        state["history"][1]["assistantResponseMessage"]["toolUses"][1]["name"],
        short
    );
    assert_eq!(
        state["history"][0]["userInputMessage"]["images"][0]["format"],
        "png"
    );
    assert_eq!(
        state["history"][0]["userInputMessage"]["content"],
        "You are a weather bot.\n\nWeather in Paris and Rome? See the map."
    );
    let kiro: aiproxy::kiro::protocol::wire::KiroRequest =
        serde_json::from_value(a.clone()).unwrap();
    aiproxy::kiro::fake::validate(&kiro).unwrap();
}

#[test]
fn is_error_tool_results_differ_only_where_openai_cannot_say_it() {
    // OpenAI has no error flag on tool messages; Anthropic's `is_error` becomes status "error".
    let anthropic = from_anthropic(json!({
        "model": "claude-sonnet-4-5", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": true, "content": "boom"}]}
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    }));
    let body = kiro_body(&anthropic);
    assert_eq!(
        body["conversationState"]["currentMessage"]["userInputMessage"]["userInputMessageContext"]
            ["toolResults"][0]["status"],
        "error"
    );
}

#[test]
fn plain_multi_turn_with_thinking_history() {
    let openai = from_openai(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "developer", "content": "Be kind."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "reasoning_content": "greet back"},
            {"role": "user", "content": "bye"}
        ]
    }));
    let anthropic = from_anthropic(json!({
        "model": "claude-sonnet-4-5", "max_tokens": 10,
        "system": [{"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet back", "signature": "x"}, {"type": "text", "text": "hello"}]},
            {"role": "user", "content": "bye"}
        ]
    }));
    assert_eq!(kiro_body(&openai), kiro_body(&anthropic));
}

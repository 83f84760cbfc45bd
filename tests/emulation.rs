//! What Kiro lacks, emulated by aiproxy and proven over a socket against `aiproxy fake-kiro`:
//! stop sequences (split across upstream events; the upstream closed at the match),
//! `max_tokens` (cut and reported; over the model's limit refused), forced tool choice (asked
//! again, then refused) and one tool call at most, through both APIs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::pipeline::Pipeline;
use common::fake::{post_json, Fake, Reply};
use common::sse_data;
use serde_json::{json, Value};
use std::time::Duration;

fn live(fake: &Fake) -> Pipeline {
    fake.pipeline(|_| {})
}

async fn openai(pipeline: &Pipeline, extra: Value) -> Reply {
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "go"}],
    });
    merge(&mut body, extra);
    post_json(pipeline, "/v1/chat/completions", body.to_string()).await
}

async fn anthropic(pipeline: &Pipeline, extra: Value) -> Reply {
    let mut body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "go"}],
    });
    merge(&mut body, extra);
    post_json(pipeline, "/v1/messages", body.to_string()).await
}

fn merge(body: &mut Value, extra: Value) {
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
}

/// The `data:` payloads of an SSE body, parsed (without OpenAI's `[DONE]`).
fn events(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    sse_data(&reply.body)
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect()
}

fn openai_stream_text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

const SENTENCE: &str = "alpha beta gamma delta epsilon zeta eta theta iota kappa";

#[tokio::test]
async fn a_stop_sequence_split_across_events_ends_the_answer_in_both_apis() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    // The fake sends one event per word, so "ta gam" spans two of them.
    fake.script(json!([{"text": SENTENCE}, {"text": SENTENCE}, {"text": SENTENCE}]))
        .await;
    let reply = openai(&pipeline, json!({"stop": ["ta gam", "never"]})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], "alpha be");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let reply = openai(&pipeline, json!({"stop": "ta gam", "stream": true})).await;
    let chunks = events(&reply);
    assert_eq!(openai_stream_text(&chunks), "alpha be");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));

    let reply = anthropic(
        &pipeline,
        json!({"stop_sequences": ["ta gam"], "stream": true}),
    )
    .await;
    let events = events(&reply);
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "alpha be");
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta["delta"]["stop_sequence"], "ta gam");
    assert_eq!(fake.stats().await["rejected_requests"], 0);
}

#[tokio::test]
async fn the_upstream_is_closed_when_a_stop_sequence_matches() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    let long = format!("{SENTENCE} STOP {}", "more words ".repeat(200));
    fake.script(json!([{"text": long, "event_delay_ms": 5}]))
        .await;
    let reply = anthropic(&pipeline, json!({"stop_sequences": ["STOP"]})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["content"][0]["text"], format!("{SENTENCE} "));
    assert_eq!(body["stop_reason"], "stop_sequence");
    assert_eq!(body["stop_sequence"], "STOP");
    // The fake notices the closed connection when its next write fails.
    let mut abandoned = Value::Null;
    for _ in 0..100 {
        abandoned = fake.stats().await["abandoned_streams"].clone();
        if abandoned == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        abandoned, 1,
        "the answer's remaining 400 events were never sent"
    );
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_and_reports_length() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    fake.script(json!([{"text": SENTENCE}, {"text": SENTENCE}, {"text": SENTENCE}]))
        .await;
    let reply = openai(&pipeline, json!({"max_tokens": 1})).await;
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], "alph");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 1);

    let reply = openai(
        &pipeline,
        json!({"max_completion_tokens": 3, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let chunks = events(&reply);
    assert_eq!(openai_stream_text(&chunks), "alpha beta g");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));

    let reply = anthropic(&pipeline, json!({"max_tokens": 2})).await;
    let body = reply.json();
    assert_eq!(body["content"][0]["text"], "alpha be");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn max_tokens_over_the_model_limit_is_a_400_naming_it() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    let reply = anthropic(&pipeline, json!({"max_tokens": 64_001})).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("64000"), "{message}");
    let reply = openai(&pipeline, json!({"max_tokens": 200_000})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["param"], "max_tokens");
    assert_eq!(
        fake.stats().await["generate_calls"],
        0,
        "nothing went upstream"
    );
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

#[tokio::test]
async fn a_required_tool_call_is_asked_for_again_and_then_refused() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    fake.script(json!([
        {"text": "It is sunny, I think."},
        {"text": "Let me check.", "tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}}]},
    ]))
    .await;
    let reply = openai(
        &pipeline,
        json!({"tools": weather_tools(), "tool_choice": "required", "stream": true}),
    )
    .await;
    let chunks = events(&reply);
    assert_eq!(
        openai_stream_text(&chunks),
        "Let me check.",
        "nothing of the first answer reached the client"
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"));
    assert_eq!(fake.stats().await["generate_calls"], 2);

    fake.script(json!([{"text": "no"}, {"text": "still no"}]))
        .await;
    let reply = anthropic(
        &pipeline,
        json!({
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
        }),
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("`get_weather`"), "{message}");

    let reply = openai(
        &pipeline,
        json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"]["param"], "tool_choice");
}

#[tokio::test]
async fn parallel_tool_calls_false_keeps_only_the_first_call() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    let two_calls = json!({"tool_calls": [
        {"name": "get_weather", "input": {"city": "Paris"}},
        {"name": "get_weather", "input": {"city": "Rome"}},
    ]});
    fake.script(json!([two_calls, two_calls])).await;
    let reply = openai(
        &pipeline,
        json!({"tools": weather_tools(), "parallel_tool_calls": false}),
    )
    .await;
    let body = reply.json();
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let reply = openai(&pipeline, json!({"tools": weather_tools()})).await;
    let body = reply.json();
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "parallel calls are the default"
    );
}

fn person_format() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": false
    }}})
}

#[tokio::test]
async fn structured_output_is_the_validated_content_and_a_bad_answer_is_asked_again() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    fake.script(json!([
        {"text": "Ada is 36."},
        {"text": "Sure.", "tool_calls": [{"name": "person", "input": {"name": "Ada", "age": 36}}]},
    ]))
    .await;
    let reply = openai(&pipeline, json!({"response_format": person_format()})).await;
    let body = reply.json();
    let message = &body["choices"][0]["message"];
    assert_eq!(
        serde_json::from_str::<Value>(message["content"].as_str().unwrap()).unwrap(),
        json!({"name": "Ada", "age": 36})
    );
    assert!(message.get("tool_calls").is_none(), "{message}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(fake.stats().await["generate_calls"], 2);

    // Streams carry the JSON as content deltas.
    fake.script(json!([{"tool_calls": [{"name": "person", "input": {"name": "Bo", "age": 7}}]}]))
        .await;
    let reply = openai(
        &pipeline,
        json!({"response_format": person_format(), "stream": true}),
    )
    .await;
    let text = openai_stream_text(&events(&reply));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"name": "Bo", "age": 7})
    );

    // An answer that breaks the schema twice is refused, naming what was wrong.
    let wrong = json!({"tool_calls": [{"name": "person", "input": {"name": "Ada"}}]});
    fake.script(json!([wrong, wrong])).await;
    let reply = openai(&pipeline, json!({"response_format": person_format()})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("schema") && message.contains("age"),
        "{message}"
    );
    assert_eq!(fake.stats().await["rejected_requests"], 0);
}

#[tokio::test]
async fn anthropic_output_format_and_json_object_work_and_a_bad_schema_is_a_400() {
    let fake = Fake::start();
    let pipeline = live(&fake);
    fake.script(json!([{"tool_calls": [{"name": "output", "input": {"ok": true}}]}]))
        .await;
    let reply = anthropic(
        &pipeline,
        json!({"output_format": {"type": "json_schema", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}),
    )
    .await;
    let body = reply.json();
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "{\"ok\":true}"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");

    fake.script(json!([{"tool_calls": [{"name": "json_answer", "input": {"a": 1}}]}]))
        .await;
    let reply = openai(
        &pipeline,
        json!({"response_format": {"type": "json_object"}}),
    )
    .await;
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "{\"a\":1}"
    );

    let reply = openai(
        &pipeline,
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}}),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.json()["error"]["param"],
        "response_format.json_schema.schema"
    );
    let reply = openai(&pipeline, json!({"response_format": {"type": "yaml"}})).await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn max_tokens_goes_natively_to_a_model_whose_schema_takes_it() {
    let fake = Fake::start();
    // A model whose request-fields schema has `max_tokens` (none of Kiro's documented ones
    // does yet): the limit is sent, and the model stops itself.
    let entry = json!({"modelId": "native-limit-model", "modelName": "Native limit",
        "supportedInputTypes": ["TEXT"], "tokenLimits": {"maxInputTokens": 200000, "maxOutputTokens": 64000},
        "additionalModelRequestFieldsSchema": {"type": "object", "properties": {
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 64000}}}});
    let added = common::send(
        http::Request::post(fake.url("/__fake/models"))
            .body(http_body_util::Full::from(
                json!({ "add": entry }).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.text());
    let proxy = fake.proxy("social", &[]);
    let ask = |model: &str| {
        json!({"model": model, "max_tokens": 3,
               "messages": [{"role": "user", "content": SENTENCE}]})
    };
    let answer = common::send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .body(http_body_util::Full::from(
                ask("native-limit-model").to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "alpha beta gamma "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let stats = fake.stats().await;
    assert_eq!(stats["last_additional_fields"], json!({"max_tokens": 3}));

    // A model whose schema lacks it gets no field (Kiro would refuse it): cut locally.
    let answer = common::send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .body(http_body_util::Full::from(
                ask("claude-sonnet-4-6").to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "alpha beta g"
    );
    let stats = fake.stats().await;
    assert_eq!(stats["last_additional_fields"], Value::Null);
    assert_eq!(stats["rejected_requests"], 0, "{}", stats["last_violation"]);
}

#[tokio::test]
async fn mock_mode_answers_a_required_tool_and_structured_output_like_a_model() {
    // The built-in fake, over a socket: told to call a tool, it calls it with the smallest
    // input the schema accepts (no scripted answer), so what aiproxy emulates works in mock
    // mode too instead of ending in 502 requirement_unmet.
    let proxy = common::Proxy::start(&["--kiro-mock-mode"], &[]);
    let chat = |extra: Value| {
        let mut body = json!({"model": "claude-sonnet-4-5",
                              "messages": [{"role": "user", "content": "who?"}]});
        merge(&mut body, extra);
        body
    };
    let reply = common::post_json(
        &proxy.base,
        "/v1/chat/completions",
        &chat(json!({"response_format": person_format()})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let content = reply.json()["choices"][0]["message"]["content"].clone();
    let person: Value = serde_json::from_str(content.as_str().unwrap()).unwrap();
    assert_eq!(
        person,
        json!({"name": "", "age": 0}),
        "valid against the schema"
    );

    let reply = common::post_json(
        &proxy.base,
        "/v1/chat/completions",
        &chat(json!({"response_format": {"type": "json_object"}})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let reply = common::post_json(
        &proxy.base,
        "/v1/chat/completions",
        &chat(json!({"tools": weather_tools(), "tool_choice": "required"})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let call = &reply.json()["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather", "{call}");

    let reply = common::post_json(
        &proxy.base,
        "/v1/messages",
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                "messages": [{"role": "user", "content": "weather?"}],
                "tools": [{"name": "get_weather", "input_schema": {"type": "object",
                    "required": ["city"], "properties": {"city": {"type": "string"}}}}],
                "tool_choice": {"type": "tool", "name": "get_weather"}}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let tool_use = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|block| block["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use in {body}"));
    assert_eq!(tool_use["name"], "get_weather");
    assert_eq!(tool_use["input"], json!({"city": ""}));
    assert_eq!(body["stop_reason"], "tool_use");
}

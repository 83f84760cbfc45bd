//! Every limit of docs/kiro-protocol.md §4.3 / §13.1 at its boundary: at the limit accepted, one
//! over rejected with Kiro's own answer.

use super::{TOOL_DESCRIPTION_LIMIT, TOOL_NAME_LIMIT};
use crate::kiro::fake::FakeKiro;
use crate::kiro::protocol::wire::{weighted_payload_size, MAX_WEIGHTED_PAYLOAD};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use serde_json::{json, Value};

fn with_tool(name: &str, description: &str) -> Value {
    json!({
        "conversationState": {
            "chatTriggerType": "MANUAL", "conversationId": "c",
            "currentMessage": {"userInputMessage": {"content": "hi", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR",
                "userInputMessageContext": {"tools": [{"toolSpecification": {
                    "name": name, "description": description, "inputSchema": {"json": {"type": "object"}}}}]}}}
        }
    })
}

fn with_content(content: &str) -> Value {
    json!({
        "conversationState": {
            "chatTriggerType": "MANUAL", "conversationId": "c",
            "currentMessage": {"userInputMessage": {"content": content, "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}}
        }
    })
}

/// Status, Kiro's `reason` and the fake's violation note.
fn send(body: &Value) -> (StatusCode, Value, String) {
    let request = Request::post("/generateAssistantResponse")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let response = FakeKiro::new().handle(request);
    let status = response.status();
    let violation = response
        .headers()
        .get("x-fake-kiro-violation")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let reason = if status.is_success() {
        Value::Null
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let chunks: Vec<_> = runtime.block_on(response.into_body().collect());
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
        serde_json::from_slice::<Value>(&bytes).unwrap()["reason"].clone()
    };
    (status, reason, violation)
}

#[test]
fn tool_description_limit_is_on_the_final_string_in_characters() {
    let at_cap = "é".repeat(TOOL_DESCRIPTION_LIMIT);
    assert_eq!(send(&with_tool("t", &at_cap)).0, StatusCode::OK);
    let over = "d".repeat(TOOL_DESCRIPTION_LIMIT + 1);
    let (status, reason, violation) = send(&with_tool("t", &over));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reason,
        Value::Null,
        "Kiro answers Improperly formed request."
    );
    assert!(violation.contains("10001 characters"), "{violation}");
    // What the old builder sent: cut at the cap, then `...` appended.
    let cut_then_dotted = format!("{}...", "d".repeat(TOOL_DESCRIPTION_LIMIT));
    assert_eq!(
        send(&with_tool("t", &cut_then_dotted)).0,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn tool_description_must_not_be_empty() {
    assert_eq!(send(&with_tool("t", "")).0, StatusCode::BAD_REQUEST);
    assert_eq!(send(&with_tool("t", "d")).0, StatusCode::OK);
}

#[test]
fn tool_name_limit() {
    assert_eq!(
        send(&with_tool(&"n".repeat(TOOL_NAME_LIMIT), "d")).0,
        StatusCode::OK
    );
    let (status, _, violation) = send(&with_tool(&"n".repeat(TOOL_NAME_LIMIT + 1), "d"));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(violation.contains("1..=64"), "{violation}");
    assert_eq!(send(&with_tool("", "d")).0, StatusCode::BAD_REQUEST);
}

/// A body whose weighted size is exactly `target`, padded with `pad` characters.
fn body_of_weighted_size(target: usize, pad: char) -> Value {
    let base = weighted_payload_size(with_content("").to_string().as_bytes());
    let weight = if pad.is_ascii() { 1 } else { 8 };
    let count = (target - base) / weight;
    let mut content: String = std::iter::repeat_n(pad, count).collect();
    // Make up the remainder with ASCII, which weighs 1.
    let filled = base + count * weight;
    content.extend(std::iter::repeat_n('a', target - filled));
    let body = with_content(&content);
    assert_eq!(weighted_payload_size(body.to_string().as_bytes()), target);
    body
}

#[test]
fn weighted_payload_limit_counts_non_ascii_as_eight() {
    assert_eq!(weighted_payload_size("aé€😀".as_bytes()), 1 + 8 + 8 + 8);
    for pad in ['a', '中'] {
        let at_cap = body_of_weighted_size(MAX_WEIGHTED_PAYLOAD, pad);
        assert_eq!(send(&at_cap).0, StatusCode::OK, "pad {pad}");
        let over = body_of_weighted_size(MAX_WEIGHTED_PAYLOAD + 1, pad);
        let (status, reason, _) = send(&over);
        assert_eq!(status, StatusCode::BAD_REQUEST, "pad {pad}");
        assert_eq!(reason, "CONTENT_LENGTH_EXCEEDS_THRESHOLD");
    }
    // 200 000 CJK characters are 600 KB of UTF-8 but 1.6 M weighted units.
    let cjk = with_content(&"中".repeat(200_000));
    assert_eq!(send(&cjk).1, "CONTENT_LENGTH_EXCEEDS_THRESHOLD");
}

#[test]
fn unknown_top_level_fields_are_request_body_invalid() {
    for (key, value) in [
        ("systemPrompt", json!("be brief")),
        ("agentMode", json!("vibe")),
    ] {
        let mut body = with_content("hi");
        body[key] = value;
        let (status, reason, violation) = send(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}");
        assert_eq!(reason, "REQUEST_BODY_INVALID", "{key}");
        assert!(violation.contains(key), "{violation}");
    }
    let mut body = with_content("hi");
    body["conversationState"]["systemPrompt"] = json!("x");
    assert_eq!(send(&body).1, "REQUEST_BODY_INVALID");
}

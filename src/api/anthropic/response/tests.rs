use super::*;
use futures_util::{stream, StreamExt};

fn start() -> ChatEvent {
    ChatEvent::Start {
        id: Arc::from("msg_1"),
        model: Arc::from("claude-x"),
        input_tokens: 12,
    }
}

/// (event name, data) pairs of an encoded stream.
async fn run(events: Vec<Result<ChatEvent, ChatError>>) -> Vec<(String, Value)> {
    let chunks: Vec<Bytes> = sse(Box::pin(stream::iter(events)), "claude-x")
        .collect()
        .await;
    chunks
        .iter()
        .map(|chunk| {
            let text = std::str::from_utf8(chunk).unwrap();
            let (head, data) = text.trim_end().split_once('\n').unwrap();
            let name = head.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "event name matches its data type");
            (name, data)
        })
        .collect()
}

/// Checks the ordering rules: one block open at a time, indexes strictly increasing.
fn assert_well_formed(events: &[(String, Value)]) {
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    for (name, data) in events {
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "two blocks open");
                assert_eq!(data["index"], next);
                open = Some(next);
            }
            "content_block_delta" => assert_eq!(Some(data["index"].as_u64().unwrap()), open),
            "content_block_stop" => {
                assert_eq!(Some(data["index"].as_u64().unwrap()), open);
                open = None;
                next += 1;
            }
            "message_delta" | "message_stop" => assert!(open.is_none()),
            _ => {}
        }
    }
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn text_stream_sequence() {
    let usage = Usage {
        input: 20,
        output: 3,
        cache_read: 5,
        cache_write: 0,
        estimated: false,
        ..Usage::default()
    };
    let events = run(vec![
        Ok(start()),
        Ok(ChatEvent::TextDelta("Hel".into())),
        Ok(ChatEvent::TextDelta("lo".into())),
        Ok(ChatEvent::Usage(usage)),
        Ok(ChatEvent::Stop(StopReason::EndTurn)),
    ])
    .await;
    assert_eq!(
        names(&events),
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 12);
    assert_eq!(
        events[3].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    let delta = &events[6].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 20, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5})
    );
}

#[tokio::test]
async fn thinking_then_text_then_two_interleaved_tools() {
    let events = run(vec![
        Ok(start()),
        Ok(ChatEvent::ThinkingDelta("hmm".into())),
        Ok(ChatEvent::TextDelta("Let me check.".into())),
        Ok(ChatEvent::ToolCallStart {
            index: 0,
            id: "a".into(),
            name: "read".into(),
        }),
        Ok(ChatEvent::ToolCallStart {
            index: 1,
            id: "b".into(),
            name: "list".into(),
        }),
        Ok(ChatEvent::ToolCallDelta {
            index: 1,
            json: "{\"dir\":".into(),
        }),
        Ok(ChatEvent::ToolCallDelta {
            index: 0,
            json: "{\"p\":1}".into(),
        }),
        Ok(ChatEvent::ToolCallDelta {
            index: 1,
            json: "\"/\"}".into(),
        }),
        Ok(ChatEvent::ToolCallEnd { index: 1 }),
        Ok(ChatEvent::ToolCallEnd { index: 0 }),
        Ok(ChatEvent::Stop(StopReason::ToolUse)),
    ])
    .await;
    assert_well_formed(&events);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(starts[0]["type"], "thinking");
    assert_eq!(starts[1]["type"], "text");
    assert_eq!(
        (starts[2]["id"].as_str(), starts[3]["id"].as_str()),
        (Some("a"), Some("b"))
    );
    // Each tool block carries exactly its own arguments.
    let mut args = std::collections::BTreeMap::<u64, String>::new();
    for (name, data) in &events {
        if name == "content_block_delta" && data["delta"]["type"] == "input_json_delta" {
            args.entry(data["index"].as_u64().unwrap())
                .or_default()
                .push_str(data["delta"]["partial_json"].as_str().unwrap());
        }
    }
    assert_eq!(args[&2], "{\"p\":1}");
    assert_eq!(args[&3], "{\"dir\":\"/\"}");
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn errors_mid_stream_are_error_events_not_a_finish() {
    let events = run(vec![
        Ok(start()),
        Ok(ChatEvent::TextDelta("par".into())),
        Err(ChatError::Truncated {
            message: "cut".into(),
        }),
    ])
    .await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!names(&events).contains(&"message_stop"));

    let events = run(vec![Ok(start()), Ok(ChatEvent::TextDelta("x".into()))]).await;
    assert_eq!(
        events.last().unwrap().0,
        "error",
        "a stream without a stop is an error"
    );
}

#[tokio::test(start_paused = true)]
async fn pings_fill_long_gaps() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatEvent, ChatError>>(4);
    let mut stream = sse_with_ping(
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        "m",
        Duration::from_secs(15),
    );
    tx.send(Ok(start())).await.unwrap();
    assert!(std::str::from_utf8(&stream.next().await.unwrap())
        .unwrap()
        .starts_with("event: message_start"));
    assert!(std::str::from_utf8(&stream.next().await.unwrap())
        .unwrap()
        .starts_with("event: ping"));
    // Nothing from upstream for 15 s: a ping keeps the connection alive.
    let ping = stream.next().await.unwrap();
    assert!(std::str::from_utf8(&ping)
        .unwrap()
        .starts_with("event: ping"));
}

#[tokio::test]
async fn non_stream_message() {
    let events = vec![
        Ok(start()),
        Ok(ChatEvent::ThinkingDelta("t".into())),
        Ok(ChatEvent::TextDelta("Hi".into())),
        Ok(ChatEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "f".into(),
        }),
        Ok(ChatEvent::ToolCallDelta {
            index: 0,
            json: "{\"a\":[1]}".into(),
        }),
        Ok(ChatEvent::ToolCallEnd { index: 0 }),
        Ok(ChatEvent::Stop(StopReason::ToolUse)),
    ];
    let done = complete(Box::pin(stream::iter(events)), "claude-x")
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&done.body).unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["id"], "msg_1");
    assert_eq!(
        body["content"][0],
        json!({"type": "thinking", "thinking": "t", "signature": ""})
    );
    assert_eq!(body["content"][1], json!({"type": "text", "text": "Hi"}));
    assert_eq!(
        body["content"][2],
        json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}})
    );
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["usage"]["input_tokens"], 12);
    assert!(done.usage.estimated);
}

//! Property tests of everything that reads untrusted bytes: the Kiro event-stream decoder
//! (random bytes, random splits, corrupted CRCs and lengths), the OpenAI and Anthropic
//! request parsers (random JSON shaped like requests), the credential parser, and the SSE
//! encoders' escaping. Each must never panic, and fail only with a clean error.
//!
//! `PROPTEST_CASES` sets the cases per property (256 by default, as CI runs it);
//! `scripts/fuzz.sh` runs them longer and reports cases per second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aiproxy::api::anthropic::request::Endpoint;
use aiproxy::chat::{ChatError, ChatEvent, ChatStream, Metadata, StopReason};
use aiproxy::kiro::auth::credentials::{self, Source};
use aiproxy::kiro::protocol::eventstream::{encode_frame, FrameDecoder, KiroEvent};
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Feeds `bytes` to a decoder in pieces cut at `cuts`, decoding every frame that completes;
/// stops at the first error, as the Kiro stream reader does.
fn decode(bytes: &[u8], cuts: &[usize]) -> Result<Vec<KiroEvent>, String> {
    let mut decoder = FrameDecoder::new();
    let mut events = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    for end in points {
        if end < start {
            continue;
        }
        decoder.push(&bytes[start..end]);
        start = end;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match KiroEvent::from_frame(&frame) {
                    Ok(event) => events.push(event),
                    Err(error) => return Err(error.to_string()),
                },
                Ok(None) => break,
                Err(error) => return Err(error.to_string()),
            }
        }
    }
    Ok(events)
}

fn text_frame(text: &str) -> Vec<u8> {
    encode_frame(
        "event",
        "assistantResponseEvent",
        json!({ "content": text }).to_string().as_bytes(),
    )
    .to_vec()
}

/// Any JSON value, a few levels deep, with the keys requests use so that parsers get past
/// their first checks.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("model".to_owned()),
        Just("messages".to_owned()),
        Just("role".to_owned()),
        Just("content".to_owned()),
        Just("type".to_owned()),
        Just("text".to_owned()),
        Just("tools".to_owned()),
        Just("tool_choice".to_owned()),
        Just("max_tokens".to_owned()),
        Just("stream".to_owned()),
        Just("system".to_owned()),
        Just("stop".to_owned()),
        Just("thinking".to_owned()),
        Just("input_schema".to_owned()),
        Just("parameters".to_owned()),
        Just("tool_use_id".to_owned()),
        Just("image_url".to_owned()),
        Just("source".to_owned()),
        Just("response_format".to_owned()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just("user".to_owned()),
            Just("assistant".to_owned()),
            Just("tool".to_owned()),
            Just("text".to_owned()),
            Just("image".to_owned()),
            Just("tool_use".to_owned()),
            Just("tool_result".to_owned()),
            Just("claude-sonnet-4-5".to_owned()),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request-shaped object: a model and messages whose parts are random.
fn request_like() -> impl Strategy<Value = Value> {
    (
        json_value(),
        prop::collection::vec(json_value(), 0..4),
        json_value(),
    )
        .prop_map(|(extra, messages, tools)| {
            let mut object = match extra {
                Value::Object(object) => object,
                _ => Map::new(),
            };
            object.insert("model".into(), json!("claude-sonnet-4-5"));
            object.insert("messages".into(), Value::Array(messages));
            if !tools.is_null() {
                object.insert("tools".into(), tools);
            }
            Value::Object(object)
        })
}

fn sse_text(events: Vec<ChatEvent>, anthropic: bool) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes: Vec<bytes::Bytes> = runtime.block_on(async move {
        let stream: ChatStream = Box::pin(futures_util::stream::iter(
            events.into_iter().map(Ok::<_, ChatError>),
        ));
        let chunks = if anthropic {
            aiproxy::api::anthropic::response::sse(stream, "m")
        } else {
            aiproxy::api::openai::response::sse(stream, "m", Default::default())
        };
        chunks.collect().await
    });
    String::from_utf8(bytes.concat()).unwrap()
}

proptest! {
    #[test]
    fn the_decoder_survives_any_bytes_in_any_pieces(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let _ = decode(&bytes, &cuts);
    }

    #[test]
    fn valid_frames_decode_the_same_however_they_are_split(
        texts in prop::collection::vec(any::<String>(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let bytes: Vec<u8> = texts.iter().flat_map(|t| text_frame(t)).collect();
        let events = decode(&bytes, &cuts).unwrap();
        prop_assert_eq!(events.len(), texts.len());
    }

    #[test]
    fn corrupted_frames_fail_cleanly(
        text in any::<String>(),
        at in any::<usize>(),
        flip in 1u8..=255,
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        // One byte changed anywhere (a length, a CRC, a header, the payload): the decoder
        // either still decodes (a payload byte that keeps the JSON valid cannot be told
        // apart without the message CRC, which catches it) or fails with an error.
        let mut bytes = text_frame(&text);
        let at = at % bytes.len();
        bytes[at] ^= flip;
        let result = decode(&bytes, &cuts);
        prop_assert!(result.map(|events| events.len() <= 1).unwrap_or(true));
    }

    #[test]
    fn the_openai_parser_never_panics(request in request_like()) {
        let body = serde_json::to_vec(&request).unwrap();
        let _ = aiproxy::api::openai::request::parse(&body, Metadata::default());
    }

    #[test]
    fn the_anthropic_parser_never_panics(request in request_like()) {
        let body = serde_json::to_vec(&request).unwrap();
        let _ = aiproxy::api::anthropic::request::parse(&body, Metadata::default(), Endpoint::Messages);
        let _ = aiproxy::api::anthropic::request::parse(&body, Metadata::default(), Endpoint::CountTokens);
    }

    #[test]
    fn the_parsers_refuse_random_bytes_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(aiproxy::api::openai::request::parse(&bytes, Metadata::default()).is_err()
            || serde_json::from_slice::<Value>(&bytes).is_ok());
        let _ = aiproxy::api::anthropic::request::parse(&bytes, Metadata::default(), Endpoint::Messages);
    }

    #[test]
    fn the_credential_parser_never_panics(object in json_value(), token in any::<String>()) {
        let mut object = match object {
            Value::Object(object) => object,
            _ => Map::new(),
        };
        object.insert("refreshToken".into(), json!(token));
        let _ = credentials::parse(&object, Source::Base64 { origin: "--kiro-oauth-creds-base64" }, None);
    }

    #[test]
    fn sse_encoders_escape_any_text(texts in prop::collection::vec(any::<String>(), 1..5)) {
        let mut events = vec![ChatEvent::Start { id: Arc::from("msg"), model: Arc::from("m"), input_tokens: 1 }];
        events.extend(texts.iter().map(|t| ChatEvent::TextDelta(t.clone())));
        events.push(ChatEvent::Stop(StopReason::EndTurn));
        for anthropic in [false, true] {
            let sse = sse_text(events.clone(), anthropic);
            let mut streamed = String::new();
            for event in sse.split("\n\n").filter(|e| !e.trim().is_empty()) {
                // Every event is `event:`/`data:` lines; a raw newline in the text would
                // have started a line of its own.
                for line in event.lines() {
                    prop_assert!(line.starts_with("data: ") || line.starts_with("event: ") || line.starts_with(':'), "{line:?}");
                }
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                if data == "[DONE]" { continue }
                let value: Value = serde_json::from_str(data).unwrap();
                let piece = if anthropic {
                    value["delta"]["text"].as_str()
                } else {
                    value["choices"][0]["delta"]["content"].as_str()
                };
                streamed.push_str(piece.unwrap_or_default());
            }
            prop_assert_eq!(&streamed, &texts.concat());
        }
    }
}

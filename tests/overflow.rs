//! A conversation too long for the model reaches clients in the wording that makes them
//! compact (docs/kiro-protocol.md §13.4): Anthropic's `prompt is too long: N tokens > M maximum`
//! as an `invalid_request_error`, OpenAI's `context_length_exceeded`. Whether Kiro says so
//! (its 400 `CONTENT_LENGTH_EXCEEDS_THRESHOLD`) or the local guard predicts it (no upstream
//! call). Against `aiproxy fake-kiro` on a socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{post_json, write_json, Fake, Reply};
use common::temp_dir;
use serde_json::{json, Value};

fn pipeline(fake: &Fake) -> aiproxy::pipeline::Pipeline {
    let dir = temp_dir("overflow");
    let path = write_json(
        &dir,
        "creds.json",
        &json!({"refreshToken": format!("rt-{}", uuid::Uuid::new_v4()), "authMethod": "social"}),
    );
    let config = aiproxy::config::Config {
        kiro_oauth_creds_file: Some(path),
        ..fake.config(&dir)
    };
    aiproxy::pipeline::build(&config).unwrap()
}

async fn openai(pipeline: &aiproxy::pipeline::Pipeline, content: &str) -> Reply {
    let body =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": content}]});
    post_json(pipeline, "/v1/chat/completions", body.to_string()).await
}

async fn anthropic(pipeline: &aiproxy::pipeline::Pipeline, content: &str, stream: bool) -> Reply {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                      "messages": [{"role": "user", "content": content}]});
    post_json(pipeline, "/v1/messages", body.to_string()).await
}

/// (N, M) out of `prompt is too long: N tokens > M maximum`.
fn figures(message: &str) -> (u64, u64) {
    let rest = message
        .strip_prefix("prompt is too long: ")
        .unwrap_or_else(|| panic!("{message}"));
    let (tokens, rest) = rest.split_once(" tokens > ").unwrap();
    let limit = rest.strip_suffix(" maximum").unwrap();
    (tokens.parse().unwrap(), limit.parse().unwrap())
}

fn assert_anthropic_overflow(reply: &Reply) -> (u64, u64) {
    assert_eq!(reply.status, 400, "{}", reply.body);
    let body: Value = reply.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (tokens, limit) = figures(body["error"]["message"].as_str().unwrap());
    assert!(tokens > limit, "{tokens} > {limit}");
    (tokens, limit)
}

fn assert_openai_overflow(reply: &Reply) -> (u64, u64) {
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "context_length_exceeded");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "messages");
    let (tokens, limit) = figures(error["message"].as_str().unwrap());
    assert!(tokens > limit, "{tokens} > {limit}");
    (tokens, limit)
}

#[tokio::test]
async fn kiros_overflow_answer_is_worded_for_both_apis() {
    let fake = Fake::start();
    let pipeline = pipeline(&fake);
    let overflow = json!({"status": 400, "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"});
    fake.script(overflow.clone()).await;
    let (_, limit) = assert_openai_overflow(&openai(&pipeline, "hello").await);
    assert_eq!(limit, 200_000, "the model's context window");
    fake.script(overflow.clone()).await;
    assert_anthropic_overflow(&anthropic(&pipeline, "hello", false).await);
    // A stream request is refused before its first byte, with the same error.
    fake.script(overflow).await;
    assert_anthropic_overflow(&anthropic(&pipeline, "hello", true).await);
    assert_eq!(fake.stats().await["generate_calls"], 3);
}

#[tokio::test]
async fn the_local_guard_predicts_overflow_without_an_upstream_call() {
    let fake = Fake::start();
    let pipeline = pipeline(&fake);
    // 210 000 estimated tokens (4 ASCII bytes each): over the 200 000-token window.
    let long = "abcd".repeat(210_000);
    let (tokens, limit) = assert_openai_overflow(&openai(&pipeline, &long).await);
    assert!(tokens >= 210_000 && limit == 200_000, "{tokens} {limit}");
    assert_anthropic_overflow(&anthropic(&pipeline, &long, false).await);
    // CJK weighs 8 in Kiro's payload limit: 180 000 characters are fewer tokens than the
    // window but 1.44 M weighted units, so N is scaled past the window.
    let cjk = "字".repeat(180_000);
    let (tokens, _) = assert_anthropic_overflow(&anthropic(&pipeline, &cjk, true).await);
    assert!(tokens > 200_000, "{tokens}");
    assert_eq!(
        fake.stats().await["generate_calls"],
        0,
        "the guard costs no upstream call"
    );
    // Just under both limits still goes through.
    let fits = "abcd".repeat(150_000);
    assert_eq!(openai(&pipeline, &fits).await.status, 200);
    assert_eq!(fake.stats().await["generate_calls"], 1);
}

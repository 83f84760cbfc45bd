//! Every Kiro failure class reaches the client as the right API error; stream faults are
//! explicit errors, never normal finishes; limits and IDE headers hold. Against
//! `aiproxy fake-kiro` on a socket, with scripted faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::Config;
use aiproxy::pipeline::Pipeline;
use common::fake::{chat, write_json, Fake};
use common::{send, sse_data, temp_dir, Proxy};
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;

fn live(fake: &Fake, tweak: impl FnOnce(&mut Config)) -> Pipeline {
    fake.pipeline(tweak)
}

fn error_of(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap()["error"].clone()
}

#[tokio::test]
async fn each_error_class_maps_to_its_api_error() {
    let fake = Fake::start();
    let cases: [(Value, u16, &str); 6] = [
        (
            json!({"status": 429, "retry_after": 7}),
            429,
            "rate_limit_exceeded",
        ),
        (
            json!({"status": 402, "reason": "MONTHLY_REQUEST_COUNT"}),
            429,
            "insufficient_quota",
        ),
        (json!({"status": 400}), 400, "upstream_rejected"),
        (
            json!({"status": 400, "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}),
            400,
            "context_length_exceeded",
        ),
        (json!({"status": 500}), 502, "upstream_error"),
        (json!({"status": 503}), 502, "upstream_error"),
    ];
    for (step, status, code) in cases {
        // One pipeline per case, without retry: each failure as the first attempt saw it
        // (a 429 also rests the account, which would answer the next case).
        let pipeline = live(&fake, |c| {
            c.disabled_layers = vec![aiproxy::config::PipelineLayer::Retry]
        });
        fake.script(step.clone()).await;
        let reply = chat(&pipeline, "x", false).await;
        assert_eq!(reply.status, status, "{step} -> {}", reply.body);
        let error = error_of(&reply.body);
        assert_eq!(
            error["code"].to_string().trim_matches('"'),
            code,
            "{step} -> {}",
            reply.body
        );
        if step["status"] == 429 {
            assert_eq!(reply.headers["retry-after"], "7");
        }
        if step["reason"] == "CONTENT_LENGTH_EXCEEDS_THRESHOLD" {
            assert_eq!(error["param"], "messages");
        }
    }
    // The request's own faults never count against the account: after several, it serves.
    let pipeline = live(&fake, |_| {});
    for _ in 0..6 {
        fake.script(json!({"status": 400})).await;
        assert_eq!(chat(&pipeline, "x", false).await.status, 400);
    }
    assert_eq!(
        chat(&pipeline, "still fine", false).await.status,
        200,
        "400s do not open the breaker"
    );
}

#[tokio::test]
async fn a_suspended_account_is_disabled_and_named() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});
    fake.script(json!({"status": 403, "reason": "suspended"}))
        .await;
    let reply = chat(&pipeline, "x", false).await;
    assert_eq!(reply.status, 503);
    let error = error_of(&reply.body);
    assert_eq!(error["code"], "account_unavailable");
    assert!(
        error["message"].as_str().unwrap().contains("suspended"),
        "{error}"
    );
    let calls = fake.stats().await["generate_calls"].clone();
    assert_eq!(chat(&pipeline, "x", false).await.status, 503);
    assert_eq!(
        fake.stats().await["generate_calls"],
        calls,
        "no more calls on a suspended account"
    );
    assert_eq!(
        fake.stats().await["refresh_calls"],
        1,
        "suspension is not refreshable"
    );
}

#[tokio::test]
async fn truncated_streams_are_explicit_errors() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});

    fake.script(json!({"truncate_after": 2})).await;
    let reply = chat(&pipeline, "one two three four", false).await;
    assert_eq!(reply.status, 502);
    assert_eq!(error_of(&reply.body)["code"], "upstream_truncated");

    fake.script(json!({"truncate_after": 2})).await;
    let reply = chat(&pipeline, "one two three four", true).await;
    assert_eq!(reply.status, 200);
    let data = sse_data(&reply.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_truncated");
    assert!(
        !reply.body.contains("\"finish_reason\":\"stop\""),
        "never a normal finish"
    );

    // Cut inside a tool call: no tool call with unparseable arguments reaches the client.
    // Frame 1 is the text, frame 2 the first half of the arguments; the rest never comes.
    fake.script(json!({"text": "Writing.", "tool_calls": [{"name": "write_file", "input": {"path": "a.txt", "content": "long text"}}], "truncate_after": 2})).await;
    let reply = chat(&pipeline, "write it", true).await;
    assert!(reply.body.contains("upstream_truncated"), "{}", reply.body);
    assert!(
        reply.body.contains("write_file"),
        "the error names the tool: {}",
        reply.body
    );
    assert!(!reply.body.contains("\"finish_reason\":\"tool_calls\""));
}

#[tokio::test]
async fn split_frames_decode_and_corrupt_crcs_are_errors() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});
    for size in [1, 7, 13, 4096] {
        fake.script(json!({"split_frames": size})).await;
        let reply = chat(&pipeline, "frames split across writes", false).await;
        assert_eq!(reply.status, 200, "split {size}: {}", reply.body);
        assert_eq!(
            serde_json::from_str::<Value>(&reply.body).unwrap()["choices"][0]["message"]["content"],
            "frames split across writes"
        );
    }
    fake.script(json!({"corrupt_frame": 1})).await;
    let reply = chat(&pipeline, "a b c", false).await;
    assert_eq!(reply.status, 502);
    let error = error_of(&reply.body);
    assert_eq!(error["code"], "upstream_truncated");
    assert!(
        error["message"].as_str().unwrap().contains("corrupt"),
        "{error}"
    );
}

#[tokio::test]
async fn exceptions_and_tool_calls_from_the_wire() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});
    fake.script(json!({"exception": "ContentLengthExceededException"}))
        .await;
    let reply = chat(&pipeline, "long", false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&reply.body).unwrap()["choices"][0]["finish_reason"],
        "length"
    );

    fake.script(json!({"exception": "ThrottlingException"}))
        .await;
    assert_eq!(chat(&pipeline, "x", false).await.status, 429);

    fake.script(
        json!({"text": "Checking both.", "interleave_tools": true, "tool_calls": [
            {"name": "get_weather", "input": {"city": "Paris"}, "id": "t1"},
            {"name": "get_time", "input": {"zone": "CET"}, "id": "t2"}
        ]}),
    )
    .await;
    let reply = chat(&pipeline, "weather and time?", false).await;
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], "Checking both.");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        message["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(message["tool_calls"][1]["id"], "t2");
}

#[tokio::test]
async fn ide_headers_machine_id_and_profile_arn_reach_kiro() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});
    assert_eq!(chat(&pipeline, "a", false).await.status, 200);
    let first = fake.stats().await;
    assert_eq!(chat(&pipeline, "b", false).await.status, 200);
    let second = fake.stats().await;
    let user_agent = first["last_user_agent"].as_str().unwrap();
    let machine_id = user_agent.rsplit('-').next().unwrap();
    assert_eq!(machine_id.len(), 64);
    assert!(machine_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        user_agent.contains("api/codewhispererstreaming")
            && user_agent.contains("KiroIDE-0.11.63-")
    );
    assert_eq!(
        first["last_x_amz_user_agent"],
        format!("aws-sdk-js/1.0.34 KiroIDE-0.11.63-{machine_id}")
    );
    assert_eq!(
        second["last_user_agent"], first["last_user_agent"],
        "stable machine id"
    );
    // The social refresh answered with a profileArn; it is sent with requests.
    assert_eq!(
        second["last_profile_arn"],
        aiproxy::kiro::fake::FAKE_PROFILE_ARN
    );
    assert_eq!(second["last_model_id"], "claude-sonnet-4.5");
}

#[tokio::test]
async fn max_connections_bounds_concurrent_upstream_streams() {
    let fake = Fake::start();
    let pipeline = live(&fake, |c| c.max_connections = 2);
    fake.script(json!([{"event_delay_ms": 30}, {"event_delay_ms": 30}, {"event_delay_ms": 30}, {"event_delay_ms": 30}, {"event_delay_ms": 30}, {"event_delay_ms": 30}])).await;
    let replies = futures_util::future::join_all((0..6).map(|i| {
        let pipeline = pipeline.clone();
        async move { chat(&pipeline, &format!("stream {i} of six"), i % 2 == 0).await }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(fake.stats().await["peak_concurrent_generates"], 2);
}

#[tokio::test]
async fn request_timeout_bounds_waiting_not_stream_length() {
    let fake = Fake::start();
    let pipeline = live(&fake, |c| c.request_timeout = Duration::from_secs(1));
    // 12 events 300 ms apart: a 3.6 s stream, but no gap reaches the 1 s timeout.
    fake.script(json!({"event_delay_ms": 300})).await;
    let reply = chat(&pipeline, "a b c d e f g h i", true).await;
    assert_eq!(reply.status, 200);
    assert_eq!(sse_data(&reply.body).last().unwrap(), "[DONE]");
    assert!(!reply.body.contains("error"), "{}", reply.body);
    // A 1.5 s gap before the first event is a timeout; nothing reached the client, so it is
    // retried (here once: the second attempt answers in time).
    fake.script(json!({"event_delay_ms": 1500})).await;
    let reply = chat(&pipeline, "slow", false).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["x-aiproxy-attempts"], "2");
    // Slow every time: after the first attempt and three retries, the timeout is the answer.
    fake.script(json!([{"event_delay_ms": 1500}, {"event_delay_ms": 1500}, {"event_delay_ms": 1500}, {"event_delay_ms": 1500}])).await;
    let reply = chat(&pipeline, "slow", false).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(error_of(&reply.body)["code"], "upstream_timeout");
}

/// The product guide's three start-up ways, as the binary, against the fake.
#[tokio::test]
async fn the_guides_three_start_up_ways() {
    use base64::Engine;
    let fake = Fake::start();
    let dir = temp_dir("seedways");
    let creds = |rt: &str| {
        json!({
            "client_id": "your-client-id",
            "client_secret": "your-secret",
            "token_url": fake.url("/oauth/token"),
            "refresh_token": rt
        })
    };
    let file = write_json(&dir, "kiro-creds.json", &creds("file-rt"));
    let file_arg = file.to_str().unwrap();
    let base64 = base64::engine::general_purpose::STANDARD.encode(creds("b64-rt").to_string());
    let base64_env =
        base64::engine::general_purpose::STANDARD.encode(creds("b64-env-rt").to_string());
    let env_file = write_json(&dir, "env-creds.json", &creds("env-file-rt"));
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let base_url = fake.process.base.clone();
    /// (arguments, environment, client key)
    type Way<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let ways: Vec<Way<'_>> = vec![
        (
            vec![
                "--model-provider",
                "kiro-api",
                "--kiro-oauth-creds-file",
                file_arg,
                "--api-key",
                "your-api-key",
            ],
            vec![],
            "your-api-key",
        ),
        (
            vec![
                "--model-provider",
                "kiro-api",
                "--kiro-oauth-creds-base64",
                &base64,
                "--api-key",
                "your-api-key",
            ],
            vec![],
            "your-api-key",
        ),
        (
            vec!["--model-provider", "kiro-api"],
            vec![("KIRO_OAUTH_CREDS_FILE", env_file.to_str().unwrap())],
            "",
        ),
        (
            vec!["--model-provider", "kiro-api"],
            vec![("KIRO_OAUTH_CREDS_BASE64", base64_env.as_str())],
            "",
        ),
    ];
    for (args, mut envs, key) in ways {
        envs.push(("KIRO_BASE_URL", base_url.as_str()));
        envs.push(("AIPROXY_STATE_DIR", state_arg));
        let proxy = Proxy::start(&args, &envs);
        let answer = send(
            http::Request::post(format!("{}/v1/chat/completions", proxy.base))
                .header("authorization", format!("Bearer {key}"))
                .header("x-model-provider", "kiro-api")
                .header("content-type", "application/json")
                .body(Full::from(common::chat_body("Hello, Claude!", false)))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{args:?} {envs:?}: {}", answer.text());
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            "Hello, Claude!"
        );
    }
    assert_eq!(fake.stats().await["refresh_calls"], 4);
    assert!(
        std::fs::read_to_string(&file).unwrap().contains("fake-rt-"),
        "file source written back"
    );
    assert!(std::fs::read_to_string(&env_file)
        .unwrap()
        .contains("fake-rt-"));
    let state_files = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .count();
    assert_eq!(
        state_files, 2,
        "one state file per base64 credential (and its rotation lock)"
    );
}

#[test]
fn bad_credentials_stop_start_up_naming_file_and_field() {
    let dir = temp_dir("badcreds");
    let file = write_json(
        &dir,
        "creds.json",
        &json!({"client_id": "c", "client_secret": "TOP-SECRET", "token_url": "http://x"}),
    );
    let (code, stderr) =
        common::run_to_exit(&["--kiro-oauth-creds-file", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("creds.json") && stderr.contains("`refresh_token` is missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("TOP-SECRET"));

    let (code, stderr) = common::run_to_exit(&["--kiro-oauth-creds-base64", "!!!"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not valid base64"), "{stderr}");

    let (code, stderr) = common::run_to_exit(&[], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--kiro-oauth-creds-file") && stderr.contains("KIRO_MOCK_MODE=true"),
        "{stderr}"
    );

    let (code, stderr) =
        common::run_to_exit(&["--kiro-mock-mode", "--kiro-base-url", "ftp://x"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--kiro-base-url"), "{stderr}");
}

#[tokio::test]
async fn the_kiro_ide_login_file_is_the_fallback_source() {
    let fake = Fake::start();
    let home = temp_dir("idehome");
    let cache = home.join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    write_json(
        &cache,
        "kiro-auth-token.json",
        &json!({"refreshToken": "ide-rt", "authMethod": "social"}),
    );
    let proxy = Proxy::start(
        &[
            "--kiro-base-url",
            &fake.process.base,
            "--kiro-refresh-url",
            &fake.url("/refreshToken"),
        ],
        &[("HOME", home.to_str().unwrap())],
    );
    let answer = send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .body(Full::from(common::chat_body("from the IDE login", false)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let saved = std::fs::read_to_string(cache.join("kiro-auth-token.json")).unwrap();
    assert!(saved.contains("fake-rt-"));
}

async fn health(pipeline: &Pipeline, method: http::Method) -> (u16, String) {
    use tower::ServiceExt;
    let request = http::Request::builder()
        .method(method)
        .uri("/health")
        .body(Full::<bytes::Bytes>::default())
        .unwrap();
    let response = pipeline.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn an_odd_403_or_a_suspension_rests_the_only_account_instead_of_disabling_it() {
    let fake = Fake::start();
    // Without retry, which would wait out a rest this short (1 s is within its cap).
    let pipeline = live(&fake, |c| {
        c.disabled_layers = vec![aiproxy::config::PipelineLayer::Retry];
        c.pool.pool.health = std::sync::Arc::new(aiproxy_layers::model::health::HealthConfig {
            suspended_cooldown: Duration::from_secs(1),
            ..Default::default()
        })
    });
    for reason in ["forbidden", "suspended"] {
        fake.script(json!({"status": 403, "reason": reason})).await;
        let reply = chat(&pipeline, "x", false).await;
        assert_eq!(reply.status, 503, "{reason}: {}", reply.body);
        assert_eq!(error_of(&reply.body)["code"], "account_unavailable");
        let resting = chat(&pipeline, "x", false).await;
        assert_eq!(
            error_of(&resting.body)["code"],
            "no_account_available",
            "{reason}: it rests"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            chat(&pipeline, "x", false).await.status,
            200,
            "{reason}: tried again, serves"
        );
    }
}

#[tokio::test]
async fn health_is_honest_and_says_nothing_an_outsider_should_not_see() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});
    let (status, body) = health(&pipeline, http::Method::GET).await;
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["status"], "ok");
    assert_eq!(value["providers"][0]["healthy"], 1);

    fake.script(json!({"status": 403, "reason": "suspended"}))
        .await;
    assert_eq!(chat(&pipeline, "x", false).await.status, 503);
    let (status, body) = health(&pipeline, http::Method::GET).await;
    assert_eq!(status, 503, "no account can serve: {body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["status"], "unavailable");
    let account = &value["providers"][0]["accounts"][0];
    assert_eq!(account["usable"], false);
    assert_eq!(
        account["reason"], "suspended",
        "a short code, not Kiro's text"
    );
    assert!(!body.contains("temporarily"), "raw upstream text: {body}");
    assert!(
        !body.contains(std::env::temp_dir().to_str().unwrap()),
        "a file path: {body}"
    );
    let (status, body) = health(&pipeline, http::Method::HEAD).await;
    assert_eq!((status, body.as_str()), (503, ""), "HEAD answers like GET");
}

#[tokio::test]
async fn an_empty_turn_is_asked_again_with_a_reminder_then_retried_then_refused() {
    let fake = Fake::start();
    let pipeline = live(&fake, |_| {});
    let calls = |stats: Value| stats["generate_calls"].as_u64().unwrap();
    let before = calls(fake.stats().await);
    // Metadata only (no text, no tool call), then a normal answer.
    fake.script(json!([{"text": ""}])).await;
    let reply = chat(&pipeline, "hello", false).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let content = common::fake::content_of(&reply);
    assert!(content.starts_with("hello"), "{content}");
    assert!(
        content.contains("Your previous reply was empty"),
        "the retry carried the reminder: {content}"
    );
    assert_eq!(calls(fake.stats().await), before + 2);
    // Empty even with the reminder: Kiro's fault, retried like a 5xx (still with the
    // reminder); empty on every call the retry settings allow (4): an explicit error, never
    // an empty end_turn, and nothing streamed.
    fake.script(Value::Array(vec![json!({"text": ""}); 4]))
        .await;
    let reply = chat(&pipeline, "hello", true).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.body.contains("empty turn"), "{}", reply.body);
    assert_eq!(calls(fake.stats().await), before + 6);
}

#[tokio::test]
async fn with_the_pool_switched_off_the_one_account_serves_whatever_it_answered() {
    use aiproxy::config::PipelineLayer::{Pool, Retry};
    let fake = Fake::start();
    // With the pool, a 429 rests the only account: the next request is refused locally.
    let pooled = live(&fake, |c| c.disabled_layers = vec![Retry]);
    fake.script(json!({"status": 429, "retry_after": 30})).await;
    assert_eq!(chat(&pooled, "x", false).await.status, 429);
    let next = chat(&pooled, "x", false).await;
    assert_eq!(next.status, 503, "{}", next.body);
    assert!(next.body.contains("no_account_available"), "{}", next.body);
    // Without it there is no breaker: the 429 reaches the client, the next request Kiro.
    let direct = live(&fake, |c| c.disabled_layers = vec![Retry, Pool]);
    fake.script(json!({"status": 429, "retry_after": 30})).await;
    let calls = fake.stats().await["generate_calls"].as_u64().unwrap();
    assert_eq!(chat(&direct, "x", false).await.status, 429);
    let next = chat(&direct, "x", false).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(next.headers.contains_key("x-aiproxy-account"));
    assert_eq!(
        fake.stats().await["generate_calls"].as_u64().unwrap(),
        calls + 2
    );
    // A pool file needs the pool.
    let dir = temp_dir("pool-off");
    let pools = write_json(&dir, "provider_pools.json", &json!({"kiro-api": []}));
    let error = aiproxy::pipeline::build(&Config {
        disabled_layers: vec![Pool],
        pool: aiproxy::config::pool::PoolSettings {
            file: Some(pools),
            ..Config::default().pool
        },
        ..Config::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains("`pool` cannot be switched off with a pool file"),
        "{error}"
    );
}

//! The live model catalog over real sockets: aiproxy (the binary) reads each account's
//! `ListAvailableModels` from `aiproxy fake-kiro` (paged, with its profileArn) at start-up and
//! every `--models-refresh-interval`, and serves what the accounts serve (docs/kiro-protocol.md
//! §13.3), merged with the catalog file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::Fake;
use common::{send, Answer, Proxy};
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn get(proxy: &Proxy, path: &str, anthropic: bool) -> Answer {
    let mut request = http::Request::get(format!("{}{path}", proxy.base));
    if anthropic {
        request = request.header("anthropic-version", "2023-06-01");
    }
    send(request.body(Full::default()).unwrap()).await
}

async fn ids(proxy: &Proxy) -> Vec<String> {
    let list = get(proxy, "/v1/models", false).await.json();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn chat(proxy: &Proxy, model: &str) -> Answer {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "which model?"}]});
    send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .body(Full::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn change_models(fake: &Fake, change: Value) {
    let answer = send(
        http::Request::post(fake.url("/__fake/models"))
            .body(Full::from(change.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Polls `/v1/models` until `done` holds for its ids (the refresh runs every second).
async fn until_ids(proxy: &Proxy, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let ids = ids(proxy).await;
        if done(&ids) {
            return ids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the catalog did not follow the accounts: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_catalog_is_what_the_account_serves_with_its_capabilities() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &[]);
    // Read before the server announced itself: every page of it.
    let stats = fake.stats().await;
    assert_eq!(stats["list_models_calls"], 4, "15 models in pages of 4");
    let ids = ids(&proxy).await;
    // The guide's ids first; then the file's ids of served models; then what only the
    // account knows, under Anthropic-style ids.
    assert_eq!(
        ids[..3],
        [
            "claude-3-opus-20240229",
            "claude-3-sonnet-20240229",
            "claude-3-haiku-20240307"
        ]
    );
    for id in [
        "claude-opus-4-8[1m]",
        "claude-opus-5",
        "claude-sonnet-5",
        "deepseek-3.2",
        "auto",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} in {ids:?}");
    }
    let health = get(&proxy, "/health", false).await.json();
    assert_eq!(health["models"]["source"], "accounts", "{health}");
    assert_eq!(health["models"]["default_model"], "auto");
    assert_eq!(health["models"]["problems"], json!([]));

    // Limits and capabilities, in both shapes, from the account's entry.
    let opus = get(&proxy, "/v1/models/claude-opus-4-8", false)
        .await
        .json();
    assert_eq!(opus["object"], "model");
    assert_eq!(opus["context_window"], 1_000_000);
    assert_eq!(opus["max_output_tokens"], 128_000);
    assert_eq!(opus["kiro_model_id"], "claude-opus-4.8");
    assert_eq!(
        opus["capabilities"]["reasoning"]["effort_levels"],
        json!(["low", "medium", "high", "xhigh", "max"])
    );
    assert_eq!(opus["capabilities"]["prompt_caching"]["max_checkpoints"], 4);
    assert_eq!(opus["capabilities"]["rate_multiplier"], 2.2);
    assert_eq!(opus["kiro"]["modelName"], "Claude Opus 4.8");
    let haiku = get(&proxy, "/v1/models/claude-haiku-4-5", true)
        .await
        .json();
    assert_eq!(haiku["type"], "model");
    assert_eq!(haiku["display_name"], "Claude Haiku 4.5");
    assert_eq!(haiku["max_input_tokens"], 200_000);
    assert_eq!(haiku["capabilities"]["reasoning"], Value::Null);
    let encoded = get(&proxy, "/v1/models/claude-opus-4-8%5B1m%5D", false).await;
    assert_eq!(encoded.status, 200, "{}", encoded.text());

    // A model only the account knows works, under its listed id and its Kiro id.
    for model in [
        "claude-opus-5",
        "claude-opus-5-thinking",
        "deepseek-3.2",
        "claude-sonnet-4.6",
    ] {
        let answer = chat(&proxy, model).await;
        assert_eq!(answer.status, 200, "{model}: {}", answer.text());
    }
    assert_eq!(fake.stats().await["rejected_requests"], 0);

    // A text-only model is told so before anything goes upstream.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
    let body = json!({"model": "deepseek-3.2", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]}]});
    let calls = fake.stats().await["generate_calls"].clone();
    let refused = send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .body(Full::from(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("does not take images (its input types: text)"),
        "{message}"
    );
    assert_eq!(fake.stats().await["generate_calls"], calls);
}

#[tokio::test]
async fn models_added_and_removed_at_run_time_follow_within_a_refresh() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &["--models-refresh-interval", "1"]);
    assert_eq!(chat(&proxy, "claude-opus-6").await.status, 404);

    change_models(
        &fake,
        json!({"add": {"modelId": "claude-opus-6", "modelName": "Claude Opus 6",
                       "tokenLimits": {"maxInputTokens": 2_000_000, "maxOutputTokens": 200_000}}}),
    )
    .await;
    change_models(&fake, json!({"remove": "claude-haiku-4.5"})).await;
    let ids = until_ids(&proxy, |ids| {
        ids.iter().any(|i| i == "claude-opus-6") && !ids.iter().any(|i| i == "claude-haiku-4-5")
    })
    .await;
    assert!(
        !ids.iter().any(|i| i.starts_with("claude-3-haiku")),
        "{ids:?}"
    );
    let answer = chat(&proxy, "claude-opus-6").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(fake.stats().await["last_model_id"], "claude-opus-6");
    let opus = get(&proxy, "/v1/models/claude-opus-6", false).await.json();
    assert_eq!(opus["context_window"], 2_000_000);

    // The file knows the removed model: the error says it is not served now, and nothing
    // went upstream for it.
    let calls = fake.stats().await["generate_calls"].as_u64().unwrap();
    let gone = chat(&proxy, "claude-haiku-4-5").await;
    assert_eq!(gone.status, 404);
    let error = gone.json();
    assert_eq!(error["error"]["code"], "model_not_found");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`claude-haiku-4.5`, which none of the accounts serves now"),
        "{message}"
    );
    assert_eq!(
        fake.stats().await["generate_calls"].as_u64().unwrap(),
        calls
    );
}

#[tokio::test]
async fn without_a_profile_the_file_is_the_catalog_and_health_says_why() {
    let fake = Fake::start();
    // An IdC login carries no profile ARN and ListAvailableProfiles lists none.
    fake.set_profiles(json!([])).await;
    let proxy = fake.proxy("idc", &[]);
    assert_eq!(fake.stats().await["list_models_calls"], 0);
    let health = get(&proxy, "/health", false).await.json();
    let models = &health["models"];
    assert_eq!(models["source"], "built-in", "{health}");
    let problem = models["problems"][0].as_str().unwrap();
    assert!(problem.contains("profile"), "{problem}");
    let ids = ids(&proxy).await;
    assert!(ids.iter().any(|i| i == "claude-sonnet-4-5"), "{ids:?}");
    assert!(!ids.iter().any(|i| i == "claude-opus-5"), "{ids:?}");
    // The account is out, saying why, rather than sending chats Kiro refuses.
    let answer = chat(&proxy, "claude-sonnet-4-5").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        answer.text().contains("has no Kiro profile"),
        "{}",
        answer.text()
    );
    assert_eq!(fake.stats().await["generate_calls"], 0);
    let listed = get(&proxy, "/v1/models/claude-sonnet-4-5", false)
        .await
        .json();
    assert_eq!(listed["source"], "file");
}

#[tokio::test]
async fn mock_mode_serves_the_built_in_fakes_models() {
    let proxy = Proxy::start(&[], &[("KIRO_MOCK_MODE", "true")]);
    let health = get(&proxy, "/health", false).await.json();
    assert_eq!(health["models"]["source"], "accounts", "{health}");
    let ids = ids(&proxy).await;
    assert!(ids.iter().any(|i| i == "claude-opus-5"), "{ids:?}");
    assert_eq!(chat(&proxy, "claude-opus-5").await.status, 200);

    let off = Proxy::start(
        &["--models-refresh-interval", "0"],
        &[("KIRO_MOCK_MODE", "true")],
    );
    let health = get(&off, "/health", false).await.json();
    assert_eq!(health["models"]["source"], "built-in", "{health}");
    assert_eq!(chat(&off, "claude-opus-5").await.status, 404);
}

//! `GET /metrics` over real sockets: the product guide's `curl http://localhost:3000/metrics
//! | grep kiro` against the binary, in live mode against `aiproxy fake-kiro` (token
//! refreshes, upstream errors by account and type, credits) and in mock mode (who may read
//! it, switching the layers off).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::Fake;
use common::{chat_body, send, Answer, Proxy};
use http_body_util::Full;
use serde_json::json;

async fn get(proxy: &Proxy, path: &str, key: Option<&str>) -> Answer {
    get_at(&proxy.base, path, key).await
}

async fn get_at(base: &str, path: &str, key: Option<&str>) -> Answer {
    let mut request = http::Request::get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    send(request.body(Full::default()).unwrap()).await
}

async fn post(proxy: &Proxy, path: &str, body: String) -> Answer {
    post_at(&proxy.base, path, body).await
}

async fn post_at(base: &str, path: &str, body: String) -> Answer {
    send(
        http::Request::post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(Full::from(body))
            .unwrap(),
    )
    .await
}

fn sonnet(content: &str, stream: bool) -> String {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
           "messages": [{"role": "user", "content": content}]})
    .to_string()
}

/// The value of the series `name{labels}` (labels in the exporter's sorted order).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn live_traffic_shows_up_in_the_metrics_by_account_model_and_error_type() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &["--models-refresh-interval", "0"]);
    for stream in [false, true] {
        let answer = post(&proxy, "/v1/chat/completions", sonnet("hello", stream)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let overhead = &answer.headers["x-aiproxy-overhead-ms"];
        assert!(overhead.to_str().unwrap().parse::<f64>().unwrap() >= 0.0);
    }
    // One upstream failure the account is blamed for, retried on the same (only) account.
    fake.script(json!([{"status": 500}, {"text": "fine"}]))
        .await;
    let answer = post(&proxy, "/v1/chat/completions", sonnet("again", false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let unknown = post(
        &proxy,
        "/v1/chat/completions",
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(unknown.status, 404);

    let metrics = get(&proxy, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    let kiro: Vec<&str> = text.lines().filter(|l| l.contains("kiro")).collect();
    assert!(kiro.len() > 20, "grep kiro finds the series: {kiro:?}");
    let route = r#"provider="kiro-api",route="/v1/chat/completions""#;
    assert_eq!(
        value(
            &text,
            &format!(
                r#"aiproxy_http_server_request_duration_seconds_count{{{route},status_class="2xx"}}"#
            )
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"aiproxy_http_server_request_duration_seconds_count{{{route},status_class="4xx"}}"#
            )
        ),
        Some(1.0)
    );
    let model = r#"gen_ai_provider_name="kiro-api",gen_ai_request_model="claude-sonnet-4-5""#;
    assert_eq!(
        value(
            &text,
            &format!("aiproxy_gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",{model}}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("aiproxy_retries_total{{{model}}}")),
        Some(1.0)
    );
    let output = value(
        &text,
        &format!(
            r#"aiproxy_gen_ai_client_token_usage_sum{{estimated="false",{model},gen_ai_token_type="output"}}"#
        ),
    );
    assert!(output.unwrap() > 0.0, "{text}");
    let account = r#"account="creds.json",provider="kiro-api""#;
    assert_eq!(
        value(
            &text,
            &format!("aiproxy_upstream_requests_total{{{account}}}")
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"aiproxy_upstream_errors_total{account="creds.json",error_type="upstream_error",provider="kiro-api"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"aiproxy_token_refreshes_total{{{account},result="ok"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"aiproxy_account_state{{{account},state="healthy"}}"#)
        ),
        Some(1.0)
    );
    assert!(value(
        &text,
        "aiproxy_overhead_seconds_count{route=\"/v1/chat/completions\"}"
    )
    .is_some());
    // No secret is a label or a value.
    for secret in ["rt-", "Bearer", "access"] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}

#[tokio::test]
async fn metrics_answer_without_a_key_unless_admin_require_key_is_set() {
    let envs = [("KIRO_MOCK_MODE", "true")];
    let open = Proxy::start(&["--api-key", "k1"], &envs);
    assert_eq!(get(&open, "/v1/models", None).await.status, 401);
    let answer = get(&open, "/metrics", None).await;
    assert_eq!(answer.status, 200);
    // The refused request is counted too, without a provider (auth answered first).
    assert!(
        answer
            .text()
            .contains(r#"aiproxy_http_server_request_duration_seconds_count{provider="none",route="/v1/models",status_class="4xx"} 1"#),
        "{}",
        answer.text()
    );

    let closed = Proxy::start(&["--api-key", "k1", "--admin-require-key"], &envs);
    assert_eq!(get(&closed, "/metrics", None).await.status, 401);
    assert_eq!(get(&closed, "/metrics", Some("k1")).await.status, 200);
}

#[tokio::test]
async fn with_the_metrics_layers_off_the_accounts_are_still_shown() {
    let proxy = Proxy::start(
        &["--disable-layers", "metrics"],
        &[("KIRO_MOCK_MODE", "true")],
    );
    let answer = post(&proxy, "/v1/chat/completions", chat_body("hello", false)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers.get("x-aiproxy-overhead-ms").is_none());
    let text = get(&proxy, "/metrics", None).await.text();
    assert!(
        text.contains(r#"aiproxy_upstream_requests_total{account="mock",provider="kiro-api"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("aiproxy_http_server_request_duration"),
        "{text}"
    );
}

#[tokio::test]
async fn kiro_credits_from_the_health_probe_are_shown_per_account() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &["--health-check-interval", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let account = r#"{account="creds.json",provider="kiro-api"}"#;
    loop {
        let text = get(&proxy, "/metrics", None).await.text();
        if let Some(limit) = value(&text, &format!("aiproxy_account_credits_limit{account}")) {
            assert!(limit > 0.0);
            let used = value(&text, &format!("aiproxy_account_credits_used{account}")).unwrap();
            assert!(used >= 0.0 && used <= limit, "{text}");
            let reset = value(
                &text,
                &format!("aiproxy_account_credits_reset_seconds{account}"),
            );
            assert!(reset.unwrap() > 0.0, "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no credits after the probe: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_metrics_port_serves_the_metrics_and_nothing_else() {
    let mut proxy = Proxy::start(&["--kiro-mock-mode", "--metrics-port", "0"], &[]);
    let metrics = proxy.announced("aiproxy metrics");
    assert_eq!(
        post(&proxy, "/v1/chat/completions", sonnet("hi", false))
            .await
            .status,
        200
    );
    let scraped = get_at(&metrics, "/metrics", None).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .text()
            .contains(r#"route="/v1/chat/completions",status_class="2xx""#),
        "{}",
        scraped.text()
    );
    for path in ["/v1/models", "/health", "/loadbalancer/instances"] {
        let refused = get_at(&metrics, path, None).await;
        assert_eq!(refused.status, 404, "{path}");
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("serves only GET /metrics"), "{message}");
    }
    assert_eq!(
        post_at(&metrics, "/v1/chat/completions", sonnet("hi", false))
            .await
            .status,
        404
    );
    // The API port still answers the product guide's `curl .../metrics`.
    assert_eq!(get(&proxy, "/metrics", None).await.status, 200);
}

//! Errors that leak nothing: an upstream and a token endpoint that echo what they were sent
//! (the bearer token, the refresh token, the client secret) into their error bodies never
//! get those secrets to a client. Against a stub server on a socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::{Config, PipelineLayer};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::fake::{chat, write_json};
use common::temp_dir;
use serde_json::json;

const ACCESS: &str = "at-SECRET-access-0123456789";
const REFRESH: &str = "rt-SECRET-refresh-0123456789";
const CLIENT_SECRET: &str = "cs-SECRET-client-0123456789";

/// A stub that answers every chat with a 500 and every refresh with a 400, each repeating
/// the request's headers and body in its `message`.
async fn echoing_stub() -> String {
    let echo = |status: StatusCode| {
        move |headers: HeaderMap, body: Bytes| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let seen = format!("you sent {auth} {}", String::from_utf8_lossy(&body));
            let answer = if status == StatusCode::BAD_REQUEST {
                json!({"message": seen, "error": seen, "error_description": seen})
            } else {
                json!({"message": seen})
            };
            (status, answer.to_string())
        }
    };
    let app = axum::Router::new()
        .route(
            "/generateAssistantResponse",
            post(echo(StatusCode::INTERNAL_SERVER_ERROR)),
        )
        .route("/refreshToken", post(echo(StatusCode::BAD_REQUEST)))
        .route("/token", post(echo(StatusCode::BAD_REQUEST)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn config(base: &str, creds: serde_json::Value) -> Config {
    let dir = temp_dir("leaks");
    Config {
        kiro_oauth_creds_file: Some(write_json(&dir, "creds.json", &creds)),
        kiro_base_url: Some(base.to_owned()),
        kiro_refresh_url: Some(format!("{base}/refreshToken")),
        kiro_idc_refresh_url: Some(format!("{base}/token")),
        state_dir: dir.join("state"),
        // One attempt: each error is the first one, as the client would see it.
        disabled_layers: vec![PipelineLayer::Retry],
        ..Config::default()
    }
}

fn assert_clean(body: &str) {
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        assert!(
            !body.contains(secret),
            "a secret reached the client: {body}"
        );
    }
}

#[tokio::test]
async fn an_upstream_that_echoes_the_bearer_token_does_not_leak_it() {
    let base = echoing_stub().await;
    let creds = json!({"accessToken": ACCESS, "refreshToken": REFRESH, "authMethod": "social",
                       "expiresAt": "2099-01-01T00:00:00Z"});
    let pipeline = aiproxy::pipeline::build(&config(&base, creds)).unwrap();
    let reply = chat(&pipeline, "x", false).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply.body.contains("[redacted]"),
        "the echo was scrubbed: {}",
        reply.body
    );
    assert_clean(&reply.body);
    assert!(
        reply.body.len() < 1_000,
        "Kiro's message is cut: {} bytes",
        reply.body.len()
    );
}

#[tokio::test]
async fn a_token_endpoint_that_echoes_its_input_never_reaches_the_client() {
    let base = echoing_stub().await;
    for creds in [
        json!({"refreshToken": REFRESH, "authMethod": "social"}),
        json!({"refreshToken": REFRESH, "authMethod": "idc", "clientId": "cid", "clientSecret": CLIENT_SECRET}),
    ] {
        let pipeline = aiproxy::pipeline::build(&config(&base, creds)).unwrap();
        let reply = chat(&pipeline, "x", false).await;
        assert_eq!(reply.status, 502, "{}", reply.body);
        assert!(
            reply.body.contains("the token endpoint answered 400"),
            "{}",
            reply.body
        );
        assert_clean(&reply.body);
    }
}

//! Real-account behaviour against `aiproxy fake-kiro` on a socket: credential formats and
//! sources, refresh and rotation, persistence, error classes, stream faults, limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::Config;
use bytes::Bytes;
use common::fake::{chat, content_of, read_json, write_json, Fake};
use common::{send, temp_dir};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tower::ServiceExt;

fn social_file(dir: &Path, access: Option<&str>, expires_at: &str) -> PathBuf {
    let mut value = json!({
        "refreshToken": format!("social-rt-{}", uuid::Uuid::new_v4().simple()),
        "expiresAt": expires_at,
        "authMethod": "social",
        "profileArn": aiproxy::kiro::fake::FAKE_PROFILE_ARN,
        "provider": "Google",
        "unknownField": {"kept": [1, 2, 3]}
    });
    if let Some(access) = access {
        value["accessToken"] = json!(access);
    }
    write_json(dir, "kiro-auth-token.json", &value)
}

#[tokio::test]
async fn each_credential_format_from_a_file_refreshes_and_persists() {
    let fake = Fake::start();
    let dir = temp_dir("formats");
    let idc_dir = dir.join("sso");
    std::fs::create_dir_all(&idc_dir).unwrap();
    write_json(
        &idc_dir,
        "0123abcd.json",
        &json!({"clientId": "cid", "clientSecret": "csecret", "expiresAt": "2099-01-01T00:00:00Z"}),
    );
    let files = [
        (
            "oauth2",
            write_json(
                &dir,
                "seed.json",
                &json!({
                    "client_id": "your-client-id", "client_secret": "your-secret",
                    "token_url": fake.url("/oauth/token"), "refresh_token": "seed-rt", "scope": "api.access",
                    "note": "kept"
                }),
            ),
            "refresh_token",
        ),
        (
            "social",
            social_file(&dir, None, "2020-01-01T00:00:00Z"),
            "refreshToken",
        ),
        (
            "idc",
            write_json(
                &dir,
                "idc.json",
                &json!({"refreshToken": "idc-rt", "clientId": "c", "clientSecret": "s", "authMethod": "IdC", "note": "kept"}),
            ),
            "refreshToken",
        ),
        (
            "idc by clientIdHash",
            write_json(
                &idc_dir,
                "kiro-auth-token.json",
                &json!({"refreshToken": "hash-rt", "authMethod": "IdC", "provider": "BuilderId", "clientIdHash": "0123abcd", "region": "us-east-1"}),
            ),
            "refreshToken",
        ),
    ];
    for (format, path, refresh_key) in files {
        let before = read_json(&path);
        let config = Config {
            kiro_oauth_creds_file: Some(path.clone()),
            ..fake.config(&dir)
        };
        let pipeline = aiproxy::pipeline::build(&config).unwrap();
        assert_eq!(
            content_of(&chat(&pipeline, &format!("hello {format}"), false).await),
            format!("hello {format}")
        );
        let after = read_json(&path);
        assert_ne!(
            after[refresh_key], before[refresh_key],
            "{format}: rotated token written back"
        );
        assert!(after[refresh_key].as_str().unwrap().starts_with("fake-rt-"));
        const WRITTEN: [&str; 8] = [
            "refreshToken",
            "refresh_token",
            "accessToken",
            "access_token",
            "expiresAt",
            "expires_at",
            "profileArn",
            "profile_arn",
        ];
        for (key, value) in before.as_object().unwrap() {
            if !WRITTEN.contains(&key.as_str()) {
                assert_eq!(&after[key.as_str()], value, "{format}: `{key}` kept");
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
    assert_eq!(fake.stats().await["refresh_calls"], 4);
}

#[tokio::test]
async fn fifty_concurrent_requests_across_expiry_share_one_refresh() {
    let fake = Fake::start();
    let dir = temp_dir("fifty");
    let path = social_file(&dir, Some("expired-token"), "2020-01-01T00:00:00Z");
    let config = Config {
        kiro_oauth_creds_file: Some(path.clone()),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    let replies = futures_util::future::join_all((0..50).map(|i| {
        let pipeline = pipeline.clone();
        async move { chat(&pipeline, &format!("request {i}"), i % 2 == 0).await }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    let stats = fake.stats().await;
    assert_eq!(stats["refresh_calls"], 1, "{stats}");
    assert_eq!(stats["generate_calls"], 50);
    assert_eq!(
        stats["rejected_tokens"], 0,
        "the expired token was never sent"
    );
    assert!(read_json(&path)["refreshToken"]
        .as_str()
        .unwrap()
        .starts_with("fake-rt-"));
}

#[tokio::test]
async fn a_token_inside_the_margin_is_refreshed_before_use() {
    let fake = Fake::start();
    let dir = temp_dir("margin");
    let soon = aiproxy::kiro::auth::credentials::format_time(
        std::time::SystemTime::now() + Duration::from_secs(60),
    );
    let path = social_file(&dir, Some("soon-expiring"), &soon);
    let config = Config {
        kiro_oauth_creds_file: Some(path),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    assert_eq!(chat(&pipeline, "x", false).await.status, 200);
    let stats = fake.stats().await;
    assert_eq!(
        (
            stats["refresh_calls"].as_u64(),
            stats["rejected_tokens"].as_u64()
        ),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn bearer_invalid_403_refreshes_once_and_retries() {
    let fake = Fake::start();
    let dir = temp_dir("bearer");
    // Valid-looking for a long time, but the fake never issued it.
    let path = social_file(&dir, Some("revoked-access-token"), "2099-01-01T00:00:00Z");
    let config = Config {
        kiro_oauth_creds_file: Some(path),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    assert_eq!(
        content_of(&chat(&pipeline, "after refresh", false).await),
        "after refresh"
    );
    let stats = fake.stats().await;
    assert_eq!(stats["rejected_tokens"], 1);
    assert_eq!(stats["refresh_calls"], 1);
    assert_eq!(stats["generate_calls"], 2);

    // Tokens expire server-side mid-life: one more refresh, still no error for the client.
    fake.script(json!({"expire_tokens": true})).await;
    assert_eq!(chat(&pipeline, "again", true).await.status, 200);
    assert_eq!(fake.stats().await["refresh_calls"], 2);
}

#[tokio::test]
async fn invalid_grant_disables_the_account_with_a_clear_reason() {
    let fake = Fake::start();
    let dir = temp_dir("grant");
    let path = social_file(&dir, None, "2020-01-01T00:00:00Z");
    let refresh_token = read_json(&path)["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.burn_refresh_token(&refresh_token).await;
    let config = Config {
        kiro_oauth_creds_file: Some(path.clone()),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    let reply = chat(&pipeline, "x", false).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("invalid_grant") && message.contains("sign in to Kiro again"),
        "{message}"
    );
    assert!(
        message.contains("`kiro-auth-token.json`"),
        "names the account: {message}"
    );
    assert!(
        !message.contains(&dir.display().to_string()),
        "the path on the server is for the log only: {message}"
    );
    assert!(!message.contains(&refresh_token), "no secret in errors");
    assert_eq!(
        read_json(&path)["refreshToken"],
        refresh_token,
        "the file is not touched"
    );

    let health = pipeline
        .clone()
        .oneshot(
            http::Request::get("/health")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "the only account cannot serve");
    let health: Value =
        serde_json::from_slice(&health.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(health["providers"][0]["accounts"][0]["usable"], false);
    assert_eq!(
        health["providers"][0]["accounts"][0]["reason"],
        "invalid_grant"
    );
    assert_eq!(health["providers"][0]["status"], "unavailable");
    assert!(!health.to_string().contains(&refresh_token));
    // Unusable now: no more refresh attempts.
    assert_eq!(chat(&pipeline, "x", false).await.status, 503);
    assert_eq!(fake.stats().await["invalid_grants"], 1);
}

#[tokio::test]
async fn invalid_grant_recovers_when_the_file_holds_a_newer_token() {
    let fake = Fake::start();
    let dir = temp_dir("reread");
    let path = social_file(&dir, None, "2020-01-01T00:00:00Z");
    let config = Config {
        kiro_oauth_creds_file: Some(path.clone()),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    // Another process (e.g. the Kiro IDE) refreshes first and writes a newer token.
    let old = read_json(&path)["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = send(
        http::Request::post(fake.url("/refreshToken"))
            .body(Full::from(json!({"refreshToken": old}).to_string()))
            .unwrap(),
    )
    .await;
    let mut file = read_json(&path);
    file["refreshToken"] = answer.json()["refreshToken"].clone();
    write_json(&dir, "kiro-auth-token.json", &file);
    assert_eq!(chat(&pipeline, "still works", false).await.status, 200);
}

#[tokio::test]
async fn base64_source_keeps_rotated_tokens_in_the_state_dir() {
    use base64::Engine;
    let fake = Fake::start();
    let dir = temp_dir("b64");
    let creds = json!({"refreshToken": "b64-original-rt", "authMethod": "social"}).to_string();
    let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
    let config = Config {
        kiro_oauth_creds_base64: Some(aiproxy::secret::Secret::new(encoded)),
        ..fake.config(&dir)
    };
    let first = aiproxy::pipeline::build(&config).unwrap();
    assert_eq!(chat(&first, "one", false).await.status, 200);
    let state_files: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(state_files.len(), 1);
    let state = read_json(&state_files[0]);
    assert!(state["refreshToken"]
        .as_str()
        .unwrap()
        .starts_with("fake-rt-"));

    // Restart with the same base64, whose refresh token the fake has retired. Expire the
    // access tokens too, so a refresh is needed: only the rotated token can succeed.
    fake.expire_tokens().await;
    let second = aiproxy::pipeline::build(&config).unwrap();
    let reply = chat(&second, "two", false).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let stats = fake.stats().await;
    assert_eq!(
        (
            stats["refresh_calls"].as_u64(),
            stats["invalid_grants"].as_u64()
        ),
        (Some(2), Some(0)),
        "{stats}"
    );
}

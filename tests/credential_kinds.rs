//! The credential kinds of 2026 (docs/kiro-protocol.md §14.2) over real sockets to
//! `aiproxy fake-kiro`: Kiro API keys from every source, a revoked key, and the profile ARN
//! resolved with `ListAvailableProfiles` and written back beside the tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::Config;
use common::fake::{chat, instances, post_json, read_json, write_json, Fake};
use common::{chat_body, temp_dir, Proxy};
use serde_json::{json, Value};

const KEY: &str = "ksk_test_0123456789abcdef";

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

#[tokio::test]
async fn an_api_key_file_is_sent_with_its_header_never_refreshed_and_gets_its_profile() {
    let fake = Fake::start();
    let dir = temp_dir("api-key");
    let path = write_json(
        &dir,
        "key.json",
        &json!({"kiroApiKey": KEY, "authMethod": "api_key", "note": "kept"}),
    );
    let config = Config {
        kiro_oauth_creds_file: Some(path.clone()),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    for _ in 0..2 {
        assert_eq!(chat(&pipeline, "hello", false).await.status, 200);
    }
    let stats = fake.stats().await;
    assert_eq!(stats["refresh_calls"], 0, "an API key is never refreshed");
    assert!(stats["api_key_calls"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["list_profiles_calls"], 1, "resolved once");
    assert_eq!(
        stats["last_profile_arn"],
        aiproxy::kiro::fake::FAKE_PROFILE_ARN
    );
    // Written back beside the key; nothing else added, the file's own keys kept.
    let file = read_json(&path);
    assert_eq!(file["profileArn"], aiproxy::kiro::fake::FAKE_PROFILE_ARN);
    assert_eq!(file["kiroApiKey"], KEY);
    assert_eq!(file["note"], "kept");
    assert!(
        file.get("refreshToken").is_none() && file.get("accessToken").is_none(),
        "{file}"
    );

    // Kiro refuses the key: the account is out, saying why, and no refresh is tried.
    fake.control("/__fake/revoke-api-key", json!({ "key": KEY }))
        .await;
    let refused = chat(&pipeline, "again", false).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("revoked or mistyped"),
        "{}",
        refused.body
    );
    assert!(
        !refused.body.contains(KEY),
        "the key never reaches a client"
    );
    let instances = instances(&pipeline).await;
    assert_eq!(instances[0]["state"], "disabled", "{instances}");
    assert_eq!(instances[0]["reason"], "api_key_rejected", "{instances}");
    assert!(!instances.to_string().contains(KEY));
    assert_eq!(fake.stats().await["refresh_calls"], 0);
}

#[tokio::test]
async fn an_api_key_comes_from_the_environment_base64_and_the_pool_file() {
    let fake = Fake::start();
    let dir = temp_dir("api-key-sources");
    let base = fake.process.base.clone();
    let state = dir.join("state");
    let state = state.to_str().unwrap();
    let common_args = ["--kiro-base-url", base.as_str(), "--state-dir", state];
    // KIRO_API_KEY.
    let proxy = Proxy::start(&common_args, &[("KIRO_API_KEY", KEY)]);
    let answer = common::post_json(
        &proxy.base,
        "/v1/chat/completions",
        &serde_json::from_str(&chat_body("from the env", false)).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // --kiro-oauth-creds-base64 of an API key credential.
    let encoded = b64(&json!({"kiroApiKey": "ksk_base64_key", "authMethod": "api_key"}));
    let mut args = common_args.to_vec();
    args.extend_from_slice(&["--kiro-oauth-creds-base64", &encoded]);
    let proxy = Proxy::start(&args, &[]);
    let answer = common::post_json(
        &proxy.base,
        "/v1/chat/completions",
        &serde_json::from_str(&chat_body("from base64", false)).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Both pool file shapes: ours inline, AIClient-2-API's as base64.
    let pools = write_json(
        &dir,
        "provider_pools.json",
        &json!({
            "kiro-api": [{"name": "ours", "credentials": {"kiroApiKey": "ksk_pool_one"}, "baseUrl": base}],
            "claude-kiro-oauth": [{"customName": "theirs", "KIRO_OAUTH_CREDS_BASE64":
                b64(&json!({"kiroApiKey": "ksk_pool_two", "authMethod": "api_key"})), "KIRO_BASE_URL": base}],
        }),
    );
    let proxy = Proxy::start(
        &[
            "--provider-pools-file",
            pools.to_str().unwrap(),
            "--state-dir",
            state,
        ],
        &[],
    );
    for _ in 0..4 {
        let answer = common::post_json(
            &proxy.base,
            "/v1/chat/completions",
            &serde_json::from_str(&chat_body("from the pool", false)).unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let stats = fake.stats().await;
    assert_eq!(stats["refresh_calls"], 0, "{stats}");
    assert_eq!(stats["rejected_requests"], 0, "{stats}");
    // A mistyped key stops the start-up with a message that names the field, not the value.
    let (code, out) = common::run_to_exit(&[], &[("KIRO_API_KEY", "sk-wrong-123")]);
    assert_ne!(code, 0);
    assert!(out.contains("kiroApiKey") && out.contains("ksk_"), "{out}");
    assert!(!out.contains("sk-wrong-123"), "{out}");
}

#[tokio::test]
async fn an_idc_login_without_a_profile_resolves_it_once_and_writes_it_back() {
    let fake = Fake::start();
    let dir = temp_dir("profile");
    let path = write_json(
        &dir,
        "idc.json",
        &json!({"refreshToken": "rt-idc-profile", "authMethod": "IdC", "clientId": "cid", "clientSecret": "cs",
                // The Builder ID placeholder counts as none.
                "profileArn": aiproxy::kiro::auth::account::PLACEHOLDER_PROFILE_ARN}),
    );
    let config = Config {
        kiro_oauth_creds_file: Some(path.clone()),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    for _ in 0..2 {
        let reply = post_json(&pipeline, "/v1/chat/completions", chat_body("hi", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let stats = fake.stats().await;
    assert_eq!(stats["list_profiles_calls"], 1, "{stats}");
    assert_eq!(stats["rejected_requests"], 0, "{stats}");
    assert_eq!(
        stats["last_profile_arn"],
        aiproxy::kiro::fake::FAKE_PROFILE_ARN
    );
    assert_eq!(
        read_json(&path)["profileArn"],
        aiproxy::kiro::fake::FAKE_PROFILE_ARN
    );
    // A restart reads it from the file: no second listing.
    let again = aiproxy::pipeline::build(&config).unwrap();
    assert_eq!(chat(&again, "hi", false).await.status, 200);
    assert_eq!(fake.stats().await["list_profiles_calls"], 1);
}

#[tokio::test]
async fn an_external_identity_provider_token_is_refreshed_at_its_tenant_and_sent_with_its_header() {
    let fake = Fake::start();
    let dir = temp_dir("external-idp");
    let path = write_json(
        &dir,
        "idp.json",
        &json!({"refreshToken": "rt-entra", "authMethod": "external_idp", "clientId": "public-client",
                "tokenEndpoint": fake.url("/idp/token"), "scope": "openid offline_access"}),
    );
    let config = Config {
        kiro_oauth_creds_file: Some(path.clone()),
        ..fake.config(&dir)
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    assert_eq!(chat(&pipeline, "hello", false).await.status, 200);
    let stats = fake.stats().await;
    assert_eq!(stats["refresh_calls"], 1, "{stats}");
    assert_eq!(
        stats["rejected_tokens"], 0,
        "the token went with TokenType: EXTERNAL_IDP"
    );
    let file = read_json(&path);
    assert_ne!(
        file["refreshToken"], "rt-entra",
        "the rotated token is written back"
    );
    assert_eq!(file["profileArn"], aiproxy::kiro::fake::FAKE_PROFILE_ARN);
    // The endpoint must be https (plain http only on the loopback) on the issuer's host.
    let bad = write_json(
        &dir,
        "bad.json",
        &json!({"refreshToken": "rt", "authMethod": "external_idp", "clientId": "c",
                "tokenEndpoint": "http://login.example.com/token"}),
    );
    let error = aiproxy::kiro::auth::credentials::from_file(&bad).unwrap_err();
    assert!(
        error.to_string().contains("tokenEndpoint") && error.to_string().contains("https"),
        "{error}"
    );
}

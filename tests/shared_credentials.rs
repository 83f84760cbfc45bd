//! Two aiproxy processes on one credential file: every rotation is done once, by whichever
//! process takes the file's rotation lock first; the other takes the new tokens over from
//! the file instead of spending its (now consumed) refresh token. Against `aiproxy
//! fake-kiro`, which retires a refresh token on use and answers `invalid_grant` after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{write_json, Fake};
use common::{chat_body, send, temp_dir, Proxy};
use http_body_util::Full;
use serde_json::json;

async fn chat(proxy: &Proxy, content: &str) -> u16 {
    send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .body(Full::from(chat_body(content, false)))
            .unwrap(),
    )
    .await
    .status
}

#[tokio::test]
async fn two_processes_on_one_file_rotate_once_each_time() {
    let fake = Fake::start();
    let dir = temp_dir("shared-creds");
    // An access token the fake never issued: the first request of each process refreshes.
    let creds = write_json(
        &dir,
        "kiro-creds.json",
        &json!({"refreshToken": "rt-shared", "accessToken": "stale", "authMethod": "social",
                "expiresAt": "2020-01-01T00:00:00Z"}),
    );
    let (refresh, state) = (fake.url("/refreshToken"), dir.join("state"));
    let args = [
        "--kiro-oauth-creds-file",
        creds.to_str().unwrap(),
        "--kiro-base-url",
        &fake.process.base,
        "--kiro-refresh-url",
        &refresh,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let (one, two) = (Proxy::start(&args, &[]), Proxy::start(&args, &[]));
    for round in 0..5 {
        if round > 0 {
            // Every access token dies: both processes hit a 403 and want to refresh.
            fake.expire_tokens().await;
        }
        let (a, b) = tokio::join!(chat(&one, "from one"), chat(&two, "from two"));
        assert_eq!((a, b), (200, 200), "round {round}");
        let stats = fake.stats().await;
        assert_eq!(stats["invalid_grants"], 0, "round {round}: {stats}");
        assert_eq!(
            stats["refresh_calls"],
            round + 1,
            "round {round}: one refresh per rotation: {stats}"
        );
    }
    let file = common::fake::read_json(&creds);
    assert_ne!(
        file["refreshToken"], "rt-shared",
        "the rotated token is on disk"
    );
}

/// The same rule through the token-store interface a shared store implements: two accounts
/// (as two proxies would hold them) on one in-memory store rotate once per expiry.
#[tokio::test]
async fn two_accounts_on_one_token_store_rotate_once_each_time() {
    use aiproxy::kiro::auth::account::{Account, Endpoints, TokenSettings};
    use aiproxy::kiro::auth::token_store::{MemoryStore, TokenStore};
    use std::sync::Arc;
    let fake = Fake::start();
    let dir = temp_dir("token-store");
    let creds = write_json(
        &dir,
        "creds.json",
        &json!({"refreshToken": "rt-store", "authMethod": "social"}),
    );
    let store = Arc::new(MemoryStore::new());
    let account = || {
        let endpoints = Endpoints {
            region: "us-east-1".into(),
            api_base: fake.process.base.clone(),
            management_base: fake.process.base.clone(),
            social_refresh: fake.url("/refreshToken"),
            idc_refresh: fake.url("/token"),
        };
        let settings = TokenSettings {
            refresh_margin: std::time::Duration::from_secs(60),
            state_dir: dir.join("state"),
            timeout: std::time::Duration::from_secs(5),
            shared: None,
        };
        Account::with_store(
            "shared".into(),
            aiproxy::kiro::auth::credentials::from_file(&creds).unwrap(),
            endpoints,
            settings,
            reqwest::Client::new(),
            store.clone() as Arc<dyn TokenStore>,
        )
    };
    let (one, two) = (account(), account());
    let (a, b) = tokio::join!(one.token(), two.token());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.token, b.token,
        "the second took the first's rotation over"
    );
    let mut rejected = a.token;
    for round in 1..=3u64 {
        let (a, b) = tokio::join!(
            one.token_after_rejection(&rejected),
            two.token_after_rejection(&rejected)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.token, b.token, "round {round}");
        let stats = fake.stats().await;
        assert_eq!(stats["invalid_grants"], 0, "round {round}: {stats}");
        assert_eq!(stats["refresh_calls"], round + 1, "round {round}: {stats}");
        rejected = a.token;
    }
    assert_ne!(
        store.load().unwrap().refresh,
        aiproxy::secret::Secret::new("rt-store".to_owned()),
        "the store holds the rotated refresh token"
    );
    assert!(
        !std::fs::read_to_string(&creds)
            .unwrap()
            .contains("accessToken"),
        "a store of its own: the credential file was not written"
    );
}

//! Kiro over TLS, as aiproxy reaches the real one: `aiproxy fake-kiro --tls-cert` with a
//! certificate from a test authority, aiproxy trusting that authority with `--kiro-ca-file`
//! (what a user behind a TLS-inspecting company proxy does). Chat goes over HTTP/2 by ALPN,
//! refreshes and sign-in over the same trust; without the authority every call fails with
//! what to do; an unusable file stops the start; a server's HTTP/2 stream limit makes calls
//! wait their turn, never fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{read_json, write_json, Fake};
use common::{hermetic_command, post_json, run_to_exit, send, sse_data, temp_dir, Proxy};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A test authority and a certificate it signed for localhost and 127.0.0.1, as PEM files.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new() -> Self {
        let dir = temp_dir("tls-certs");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "aiproxy test authority");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
        }
    }

    fn ca(&self) -> &str {
        self.ca.to_str().unwrap()
    }

    /// The fake Kiro over TLS with this certificate, and `args`.
    fn fake(&self, args: &[&str]) -> Fake {
        let mut all = vec![
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let fake = Fake::start_with(&all);
        assert!(
            fake.process.base.starts_with("https://"),
            "{}",
            fake.process.base
        );
        fake
    }

    /// The fake's counters, read over its TLS.
    async fn stats(&self, fake: &Fake) -> Value {
        let authority = reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(authority)
            .build()
            .unwrap();
        let answer = client.get(fake.url("/__fake/stats")).send().await.unwrap();
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
    }
}

fn chat(content: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
           "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn with_the_authority_chat_and_refresh_go_over_tls_and_http2() {
    let certs = Certs::new();
    let fake = certs.fake(&[]);
    let proxy = fake.proxy("social", &["--kiro-ca-file", certs.ca()]);

    let answer = post_json(
        &proxy.base,
        "/v1/chat/completions",
        &chat("over tls", false),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "over tls"
    );
    let answer = post_json(
        &proxy.base,
        "/v1/chat/completions",
        &chat("one two three", true),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let events = sse_data(&answer.text());
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );

    let stats = certs.stats(&fake).await;
    assert_eq!(
        stats["refresh_calls"], 1,
        "the token was refreshed over TLS"
    );
    assert_eq!(stats["generate_calls"], 2);
    assert_eq!(stats["last_http_version"], "HTTP/2.0", "ALPN chose HTTP/2");
    assert_eq!(stats["rejected_requests"], 0);
}

#[tokio::test]
async fn without_the_authority_calls_fail_and_say_what_to_do() {
    let certs = Certs::new();
    let fake = certs.fake(&[]);
    let proxy = fake.proxy("social", &[]);

    let answer = post_json(&proxy.base, "/v1/chat/completions", &chat("hello", false)).await;
    assert!(answer.status >= 500, "{} {}", answer.status, answer.text());
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("invalid peer certificate") && message.contains("--kiro-ca-file"),
        "{message}"
    );
    assert_eq!(certs.stats(&fake).await["refresh_calls"], 0);
}

#[tokio::test]
async fn an_unusable_ca_file_stops_the_start_with_what_was_wrong() {
    let dir = temp_dir("tls-bad-ca");
    let creds = dir.join("creds.json");
    std::fs::write(&creds, r#"{"refreshToken":"rt","authMethod":"social"}"#).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    for (file, expected) in [
        (&missing, "cannot read"),
        (&not_pem, "holds no certificate"),
    ] {
        for mode in [
            vec!["--kiro-oauth-creds-file", creds.to_str().unwrap()],
            vec!["--kiro-mock-mode"],
        ] {
            let mut args = vec![
                "--state-dir",
                dir.to_str().unwrap(),
                "--kiro-ca-file",
                file.to_str().unwrap(),
            ];
            args.extend(mode);
            let (code, output) = run_to_exit(&args, &[]);
            assert_ne!(code, 0, "{output}");
            assert!(
                output.contains("--kiro-ca-file:") && output.contains(expected),
                "{output}"
            );
        }
    }
}

#[tokio::test]
async fn the_fake_refuses_a_certificate_without_its_key() {
    let certs = Certs::new();
    let (code, output) = run_to_exit(
        &[
            "fake-kiro",
            "--tls-cert",
            certs.cert.to_str().unwrap(),
            "--tls-key",
            certs.cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("--tls-key") && output.contains("no usable private key"),
        "{output}"
    );
}

#[tokio::test]
async fn a_server_stream_limit_makes_calls_wait_their_turn() {
    // Kiro's front end announces how many streams one connection may carry; every account
    // going out directly shares one HTTP/2 connection per host, so calls beyond the limit
    // wait for a stream to end (hyper's client queues them) rather than fail.
    let certs = Certs::new();
    let fake = certs.fake(&["--max-concurrent-streams", "2", "--event-delay-ms", "50"]);
    let proxy = fake.proxy("social", &["--kiro-ca-file", certs.ca()]);
    let calls = (0..6).map(|i| {
        let base = proxy.base.clone();
        async move {
            post_json(
                &base,
                "/v1/chat/completions",
                &chat(&format!("w{i} x y"), true),
            )
            .await
        }
    });
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            sse_data(&answer.text()).last().map(String::as_str),
            Some("[DONE]")
        );
    }
    let stats = certs.stats(&fake).await;
    assert_eq!(stats["generate_calls"], 6);
    assert_eq!(stats["peak_concurrent_generates"], 2, "{stats}");
}

#[tokio::test]
async fn each_account_has_its_own_connection() {
    // One connection carrying several accounts' tokens would tell Kiro they belong together
    // (the IDE has one user per connection); each account gets its own clients, for chat
    // and model lists (hyper) and for refreshes and usage (reqwest).
    let certs = Certs::new();
    let fake = certs.fake(&[]);
    let dir = temp_dir("tls-accounts");
    let instances: Vec<Value> = ["acct-a", "acct-b"]
        .iter()
        .map(|name| fake.pool_instance(&dir, name))
        .collect();
    let pools = write_json(&dir, "pools.json", &json!({ "kiro-api": instances }));
    let state = dir.join("state");
    let proxy = Proxy::start(
        &[
            "--provider-pools-file",
            pools.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--pool-slow-start",
            "0",
            "--health-check-interval",
            "1",
            "--kiro-ca-file",
            certs.ca(),
        ],
        &[],
    );
    let calls = (0..12).map(|i| {
        let base = proxy.base.clone();
        async move {
            post_json(
                &base,
                "/v1/chat/completions",
                &chat(&format!("n{i}"), i % 2 == 0),
            )
            .await
        }
    });
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let instances = send(
        http::Request::get(format!("{}/loadbalancer/instances", proxy.base))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await
    .json();
    let used = instances
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["requests"].as_u64().unwrap_or(0) > 0)
        .count();
    assert_eq!(used, 2, "both accounts served: {instances}");
    // The probe's getUsageLimits (the refreshes' client) has run for both accounts too.
    let mut stats = certs.stats(&fake).await;
    for _ in 0..100 {
        if stats["usage_calls"].as_u64().unwrap() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        stats = certs.stats(&fake).await;
    }
    assert!(stats["usage_calls"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["generate_calls"], 12);
    assert_eq!(stats["most_accounts_on_one_connection"], 1, "{stats}");
}

#[tokio::test]
async fn login_trusts_the_authority_too() {
    let certs = Certs::new();
    let fake = certs.fake(&[]);
    let dir = temp_dir("tls-login");
    let creds = dir.join("creds.json");
    let output = hermetic_command()
        .args(["login", "--builder-id", "--no-browser"])
        .args([
            "--oidc-url",
            &fake.process.base,
            "--kiro-base-url",
            &fake.process.base,
        ])
        .args([
            "--out",
            creds.to_str().unwrap(),
            "--kiro-ca-file",
            certs.ca(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert_eq!(read_json(&creds)["authMethod"], "IdC");
    assert_eq!(certs.stats(&fake).await["signins"], 1);
}

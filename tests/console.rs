//! The operator console over real sockets, against `aiproxy fake-kiro`: the sign-in (wrong
//! keys refused and throttled, a client key never opens it, the session cookie's flags),
//! CSRF and cross-site refusals, the accounts' actions and the pool following them (and the
//! pool file, so they survive a restart), adding accounts by every way the page offers, the
//! request journal, and no secret in any answer. The browser drives the same in
//! tests/clients/console/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{read_json, write_json, Fake};
use common::{run_to_exit, temp_dir, Proxy};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ADMIN: &str = "admin-key-for-the-console-tests";
const CLIENT: &str = "client-key-for-the-console-tests";

struct Setup {
    fake: Fake,
    proxy: Proxy,
    dir: PathBuf,
    pool: PathBuf,
}

fn start(extra: &[&str]) -> Setup {
    let fake = Fake::start();
    let dir = temp_dir("console");
    for name in ["a1", "a2"] {
        write_json(
            &dir,
            &format!("{name}.json"),
            &json!({"refreshToken": format!("rt-{name}-{}", uuid::Uuid::new_v4()), "authMethod": "social"}),
        );
    }
    let pool = write_json(
        &dir,
        "provider_pools.json",
        &json!({"kiro-api": [
        {"name": "a1", "credsFile": "a1.json"}, {"name": "a2", "credsFile": "a2.json"}]}),
    );
    let (social, idc, state) = (
        fake.url("/refreshToken"),
        fake.url("/token"),
        dir.join("state"),
    );
    let mut args = vec![
        "--api-key",
        CLIENT,
        "--admin-key",
        ADMIN,
        "--provider-pools-file",
        pool.to_str().unwrap(),
        "--kiro-base-url",
        &fake.process.base,
        "--kiro-refresh-url",
        &social,
        "--kiro-idc-refresh-url",
        &idc,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(&args, &[]);
    Setup {
        fake,
        proxy,
        dir,
        pool,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in console session.
struct Session {
    base: String,
    cookie: String,
    csrf: String,
}

async fn sign_in(base: &str, key: &str) -> Result<Session, (u16, String)> {
    let answer = http()
        .post(format!("{base}/console/login"))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap();
    if answer.status() != 303 {
        return Err((answer.status().as_u16(), answer.text().await.unwrap()));
    }
    let set_cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP here: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = http()
        .get(format!("{base}/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    Ok(Session {
        base: base.to_owned(),
        cookie,
        csrf,
    })
}

impl Session {
    async fn get(&self, path: &str) -> (u16, Value) {
        let answer = http()
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (
            status,
            serde_json::from_str(&answer.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = http()
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (
            status,
            serde_json::from_str(&answer.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn account(&self, name: &str) -> Value {
        let (_, accounts) = self.get("/console/api/accounts").await;
        accounts["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

async fn chat(base: &str, text: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(CLIENT)
        .json_body(
            json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": text}]}),
        )
        .send()
        .await
        .unwrap()
}

trait JsonBody {
    fn json_body(self, body: Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

#[tokio::test]
async fn the_console_is_off_without_an_admin_key_and_says_how_to_turn_it_on() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &[]);
    let answer = http()
        .get(format!("{}/console", proxy.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert!(answer.text().await.unwrap().contains("--admin-key"));
    let (code, stderr) = run_to_exit(
        &[
            "--kiro-mock-mode",
            "--api-key",
            CLIENT,
            "--admin-key",
            CLIENT,
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("also a client API key"), "{stderr}");
    let (code, stderr) = run_to_exit(&["--kiro-mock-mode", "--admin-key", "short"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("shorter than 16"), "{stderr}");
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_the_page_headers() {
    let setup = start(&[]);
    let base = &setup.proxy.base;
    let login = http().get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(login.text().await.unwrap().contains("Admin key"));
    let (status, page) = sign_in(base, "not-the-key").await.err().unwrap();
    assert_eq!(status, 401);
    assert!(page.contains("That is not the admin key."));
    assert_eq!(
        sign_in(base, CLIENT).await.err().unwrap().0,
        401,
        "a client key does not open the console"
    );
    // Nor is the admin key a client key.
    assert_eq!(
        http()
            .get(format!("{base}/v1/models"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let session = sign_in(base, ADMIN).await.unwrap();
    assert_eq!(session.get("/console/api/overview").await.0, 200);
    let anonymous = http()
        .get(format!("{base}/console/api/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // An action without the CSRF token, or from another site, is refused and changes nothing.
    let bare = http()
        .post(format!("{base}/console/api/accounts/a1/disable"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    let cross = http()
        .post(format!("{base}/console/api/accounts/a1/disable"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(
        read_json(&setup.pool)["kiro-api"][0]
            .get("enabled")
            .is_none(),
        "the pool file is untouched"
    );
    // Signing out ends the session.
    let out = http()
        .post(format!("{base}/console/logout"))
        .header("cookie", &session.cookie)
        .form(&[("csrf", session.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(session.get("/console/api/overview").await.0, 401);
    // Wrong keys are throttled (10 attempts a minute; the earlier ones count).
    let mut last = 0;
    for _ in 0..10 {
        last = sign_in(base, "guess").await.err().unwrap().0;
    }
    assert_eq!(last, 429);
    assert_eq!(
        sign_in(base, ADMIN).await.err().unwrap().0,
        429,
        "not even the right key while throttled"
    );
}

#[tokio::test]
async fn account_actions_change_the_pool_and_its_file() {
    let setup = start(&[]);
    let base = &setup.proxy.base;
    let session = sign_in(base, ADMIN).await.unwrap();
    assert_eq!(session.account("a1").await["state"], "healthy");

    let (status, answer) = session
        .post("/console/api/accounts/a1/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(read_json(&setup.pool)["kiro-api"][0]["enabled"], false);
    let a1 = session.account("a1").await;
    assert_eq!(
        (&a1["state"], &a1["reason"], &a1["enabled"]),
        (
            &json!("disabled"),
            &json!("disabled_in_pool_file"),
            &json!(false)
        )
    );
    for _ in 0..4 {
        let answer = chat(base, "who serves").await;
        assert_eq!(answer.headers()["x-aiproxy-account"], "a2");
    }
    assert_eq!(
        session
            .post("/console/api/accounts/a1/enable", json!({}))
            .await
            .0,
        200
    );
    assert_eq!(read_json(&setup.pool)["kiro-api"][0]["enabled"], true);
    assert_eq!(session.account("a1").await["state"], "healthy");

    // A 429 rests the account that got it: the console says which class and until when.
    setup
        .fake
        .script(json!({"status": 429, "retry_after": 30}))
        .await;
    assert_eq!(
        chat(base, "meets a 429").await.status(),
        200,
        "retried on the other account"
    );
    let (_, accounts) = session.get("/console/api/accounts").await;
    let resting = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "cooldown")
        .unwrap()
        .clone();
    assert_eq!(resting["reason"], "rate_limited");
    assert!(resting["cooldown_until"].is_string());
    let name = resting["name"].as_str().unwrap().to_owned();
    assert_eq!(
        session
            .post(&format!("/console/api/accounts/{name}/reset"), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(session.account(&name).await["state"], "healthy");

    let before = setup.fake.stats().await;
    assert_eq!(
        session
            .post("/console/api/accounts/a1/refresh", json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        session
            .post("/console/api/accounts/a1/probe", json!({}))
            .await
            .0,
        200
    );
    let after = setup.fake.stats().await;
    assert_eq!(
        after["refresh_calls"].as_u64().unwrap(),
        before["refresh_calls"].as_u64().unwrap() + 1
    );
    assert!(after["usage_calls"].as_u64().unwrap() > before["usage_calls"].as_u64().unwrap());
    assert!(
        session.account("a1").await["usage"]["limit"].is_number(),
        "the probe read the credits"
    );

    let (status, answer) = session
        .post("/console/api/accounts/a2/remove", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("a2.json is kept"));
    assert!(setup.dir.join("a2.json").exists());
    assert_eq!(
        read_json(&setup.pool)["kiro-api"].as_array().unwrap().len(),
        1
    );
    assert!(session.account("a2").await.is_null());
    let (status, answer) = session
        .post("/console/api/accounts/nobody/disable", json!({}))
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no account named `nobody`"));
}

fn all_secrets(dir: &Path) -> Vec<String> {
    let mut secrets = vec![ADMIN.to_owned(), CLIENT.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Ok(Value::Object(object)) =
                serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap())
            {
                for key in ["accessToken", "refreshToken", "clientSecret", "kiroApiKey"] {
                    if let Some(secret) = object.get(key).and_then(Value::as_str) {
                        secrets.push(secret.to_owned());
                    }
                }
            }
        }
    }
    secrets
}

#[tokio::test]
async fn accounts_are_added_from_the_page_and_no_secret_is_ever_shown() {
    let setup = start(&[]);
    let base = &setup.proxy.base;
    let session = sign_in(base, ADMIN).await.unwrap();

    // Builder ID by device code.
    setup
        .fake
        .control(
            "/__fake/device",
            json!({"answers": ["pending"], "interval": 0}),
        )
        .await;
    let (status, flow) = session.post("/console/api/add/device", json!({"name": "builder", "kind": "builder-id", "start_url": null, "region": "us-east-1"})).await;
    assert_eq!(status, 200, "{flow}");
    assert!(flow["user_code"].as_str().unwrap().contains('-'));
    assert!(flow["verification_uri_complete"]
        .as_str()
        .unwrap()
        .contains("user_code="));
    let id = flow["id"].as_str().unwrap();
    let mut state = Value::Null;
    for _ in 0..100 {
        state = session.get(&format!("/console/api/signin/{id}")).await.1;
        if state["state"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "done", "{state}");
    assert_eq!(session.account("builder").await["state"], "healthy");

    // Google/GitHub by the pasted address.
    let (status, flow) = session
        .post("/console/api/add/social", json!({"name": "google"}))
        .await;
    assert_eq!(status, 200, "{flow}");
    let page = http()
        .get(flow["signin_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let location = page.headers()["location"].to_str().unwrap().to_owned();
    let id = flow["id"].as_str().unwrap();
    let (status, answer) = session
        .post(
            &format!("/console/api/signin/{id}/callback"),
            json!({"url": "http://localhost:3128/oauth/callback?code=x&state=wrong"}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = session
        .post(
            &format!("/console/api/signin/{id}/callback"),
            json!({"url": location}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(session.account("google").await["state"], "healthy");

    // A pasted credential, and an AIClient-2-API pool file.
    let credential = json!({"refreshToken": format!("rt-pasted-{}", uuid::Uuid::new_v4()), "authMethod": "social"});
    let (status, answer) = session
        .post(
            "/console/api/add/credential",
            json!({"name": "pasted", "text": credential.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = session
        .post(
            "/console/api/add/credential",
            json!({"name": "broken", "text": "{\"authMethod\": \"IdC\", \"refreshToken\": \"x\"}"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("clientId"),
        "{answer}"
    );
    let (status, _) = session
        .post(
            "/console/api/add/credential",
            json!({"name": "pasted", "text": credential.to_string()}),
        )
        .await;
    assert_eq!(status, 409, "the name is taken");
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(json!({"refreshToken": format!("rt-a2a-{}", uuid::Uuid::new_v4())}).to_string())
    };
    let theirs = json!({"claude-kiro-oauth": [{"customName": "imported", "KIRO_OAUTH_CREDS_BASE64": encoded}]});
    let (status, answer) = session
        .post(
            "/console/api/add/credential",
            json!({"name": null, "text": theirs.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let names: Vec<String> = session.get("/console/api/accounts").await.1["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["a1", "a2", "builder", "google", "pasted", "imported"]
    );
    // Each serves.
    for _ in 0..12 {
        assert_eq!(chat(base, "round the pool").await.status(), 200);
    }

    // No secret anywhere: every token the fake issued (written to the credential files), the
    // base64 credential, the admin and the client key.
    let mut secrets = all_secrets(&setup.dir);
    secrets.push(encoded);
    assert!(secrets.len() >= 10, "{secrets:?}");
    let mut seen = String::new();
    for path in [
        "/console/api/overview",
        "/console/api/accounts",
        "/console/api/keys",
        "/console/api/requests",
    ] {
        seen.push_str(&session.get(path).await.1.to_string());
    }
    for path in ["/console", "/loadbalancer/instances", "/health", "/metrics"] {
        seen.push_str(
            &http()
                .get(format!("{base}{path}"))
                .header("cookie", &session.cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "a secret was shown");
    }
    let accounts = session.get("/console/api/accounts").await.1;
    assert_eq!(
        accounts["accounts"][2]["secrets"],
        json!({"refresh_token": true, "client_secret": true, "api_key": false})
    );
}

#[tokio::test]
async fn the_request_log_and_the_keys_page() {
    let setup = start(&["--rate-limit-rpm", "100"]);
    let base = &setup.proxy.base;
    let session = sign_in(base, ADMIN).await.unwrap();
    assert_eq!(chat(base, "a private prompt").await.status(), 200);
    setup.fake.script(json!({"status": 400})).await;
    assert_eq!(chat(base, "refused upstream").await.status(), 400);
    let (_, log) = session.get("/console/api/requests").await;
    let requests = log["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["status"], 400, "newest first");
    assert_eq!(
        (
            &requests[1]["key"],
            &requests[1]["model"],
            &requests[1]["status"]
        ),
        (&json!("key-1"), &json!("claude-sonnet-4"), &json!(200))
    );
    assert!(
        requests[1]["account"].is_string() && requests[1]["input_tokens"].as_u64().unwrap() > 0
    );
    assert!(
        !log.to_string().contains("a private prompt"),
        "no prompt text without --console-log-bodies"
    );
    assert_eq!(
        session.get("/console/api/requests?q=400").await.1["requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, keys) = session.get("/console/api/keys").await;
    assert_eq!(keys["keys"][0]["label"], "key-1");
    assert_eq!(keys["keys"][0]["requests"], 2);
    assert_eq!(keys["keys"][0]["limits"], "100 requests/min (burst 100)");
    let (_, overview) = session.get("/console/api/overview").await;
    assert_eq!(overview["last_hour"]["requests"], 2);
    assert_eq!(overview["last_hour"]["client_errors"], 1);
    assert_eq!(overview["minutes"].as_array().unwrap().len(), 60);
    assert_eq!(overview["accounts"], json!({"usable": 2, "total": 2}));

    let bodies = start(&["--console-log-bodies"]);
    let session = sign_in(&bodies.proxy.base, ADMIN).await.unwrap();
    assert_eq!(
        chat(&bodies.proxy.base, "a prompt to keep").await.status(),
        200
    );
    let (_, log) = session.get("/console/api/requests").await;
    assert_eq!(log["bodies"], true);
    assert_eq!(log["requests"][0]["prompt"], "a prompt to keep");
}

#[tokio::test]
async fn the_console_is_served_on_the_metrics_port_too() {
    let mut setup = start(&["--metrics-port", "0"]);
    let internal = setup.proxy.announced("aiproxy metrics");
    let session = sign_in(&internal, ADMIN).await.unwrap();
    let (status, accounts) = session.get("/console/api/accounts").await;
    assert_eq!(status, 200);
    assert_eq!(accounts["accounts"].as_array().unwrap().len(), 2);
    // One process, one set of sessions: the session opened there works on the API port.
    let api_port = Session {
        base: setup.proxy.base.clone(),
        ..session
    };
    assert_eq!(api_port.get("/console/api/overview").await.0, 200);
    // The rest of the API stays off that port.
    let refused = http()
        .get(format!("{internal}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}

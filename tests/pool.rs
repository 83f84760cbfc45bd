//! The account pool over real sockets: aiproxy (the binary) with a pool file of three
//! accounts, each served by its own `aiproxy fake-kiro`, so every fake scripts and counts
//! one account's traffic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{write_json, Fake};
use common::{chat_body, send, temp_dir, Answer, Proxy};
use futures_util::future::join_all;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;

struct Trio {
    fakes: Vec<Fake>,
    proxy: Proxy,
    pools: std::path::PathBuf,
    instances: Vec<Value>,
}

const NAMES: [&str; 3] = ["acct-a", "acct-b", "acct-c"];

impl Trio {
    /// Three accounts (`extra` fields go into every instance), aiproxy started with `args`.
    fn start(extra: Value, args: &[&str]) -> Self {
        let dir = temp_dir("pool");
        let fakes: Vec<Fake> = (0..3).map(|_| Fake::start()).collect();
        let instances: Vec<Value> = fakes
            .iter()
            .zip(NAMES)
            .map(|(fake, name)| {
                let mut instance = fake.pool_instance(&dir, name);
                if let Value::Object(extra) = &extra {
                    instance.as_object_mut().unwrap().extend(extra.clone());
                }
                instance
            })
            .collect();
        let pools = write_json(
            &dir,
            "provider_pools.json",
            &json!({ "kiro-api": instances }),
        );
        let state = dir.join("state");
        let mut all = vec![
            "--provider-pools-file",
            pools.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--retry-base-delay-ms",
            "5",
        ];
        // Accounts that join or come back ramp up over a minute by default; tests that are
        // not about the ramp see the balance without it.
        if !args.contains(&"--pool-slow-start") {
            all.extend_from_slice(&["--pool-slow-start", "0"]);
        }
        all.extend_from_slice(args);
        let proxy = Proxy::start(&all, &[]);
        Self {
            fakes,
            proxy,
            pools,
            instances,
        }
    }

    /// Rewrites the pool file with `instances` and tells aiproxy (SIGHUP).
    fn rewrite(&self, instances: &[Value]) {
        write_json(
            self.pools.parent().unwrap(),
            "provider_pools.json",
            &json!({ "kiro-api": instances }),
        );
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.proxy.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn chat(&self, content: &str, stream: bool, session: Option<&str>) -> Answer {
        let mut request = http::Request::post(format!("{}/v1/chat/completions", self.proxy.base))
            .header("content-type", "application/json");
        if let Some(session) = session {
            request = request.header("x-aiproxy-session", session);
        }
        send(
            request
                .body(Full::from(chat_body(content, stream)))
                .unwrap(),
        )
        .await
    }

    /// `n` requests, `workers` at a time; the answers in order of completion.
    async fn many(&self, n: usize, workers: usize) -> Vec<Answer> {
        let per = n / workers;
        let batches = join_all((0..workers).map(|w| async move {
            let mut answers = Vec::new();
            for i in 0..per {
                answers.push(self.chat(&format!("hello {w} {i}"), i % 2 == 0, None).await);
            }
            answers
        }))
        .await;
        batches.into_iter().flatten().collect()
    }

    async fn calls(&self) -> Vec<u64> {
        let mut calls = Vec::new();
        for fake in &self.fakes {
            calls.push(fake.stats().await["generate_calls"].as_u64().unwrap());
        }
        calls
    }

    async fn get(&self, path: &str) -> Answer {
        send(
            http::Request::get(format!("{}{path}", self.proxy.base))
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    async fn instance(&self, name: &str) -> Value {
        let list = self.get("/loadbalancer/instances").await.json();
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap()
    }
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    let mut s: Vec<u16> = answers.iter().map(|a| a.status).collect();
    s.dedup();
    s
}

#[tokio::test]
async fn equal_accounts_share_the_load_and_the_view_shows_it() {
    let trio = Trio::start(json!({}), &[]);
    let answers = trio.many(600, 6).await;
    assert_eq!(statuses(&answers), [200]);
    let calls = trio.calls().await;
    for (name, calls) in NAMES.iter().zip(&calls) {
        assert!(
            (160..=240).contains(calls),
            "{name}: {calls} of 600 ({calls:?})"
        );
    }
    let view = trio.get("/loadbalancer/instances").await;
    assert_eq!(view.status, 200, "answers without a key");
    let text = view.text();
    assert!(
        !text.contains("rt-acct"),
        "no refresh token in the view: {text}"
    );
    let list = view.json();
    let kiro: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["provider"] == "kiro-api")
        .collect();
    assert_eq!(kiro.len(), 3);
    let total: u64 = kiro.iter().map(|i| i["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 600);
    for i in &kiro {
        assert_eq!(
            (i["healthy"].clone(), i["state"].clone()),
            (json!(true), json!("healthy"))
        );
        assert_eq!(i["in_flight"], 0);
        assert!(
            i["token_expires_at"].is_string() && i["last_used"].is_string(),
            "{i}"
        );
    }
    let health = trio.get("/health").await.json();
    assert_eq!(
        (
            health["status"].clone(),
            health["providers"][0]["healthy"].clone()
        ),
        (json!("ok"), json!(3))
    );
}

#[tokio::test]
async fn a_suspended_account_gets_nothing_after_it_is_found_out() {
    let trio = Trio::start(json!({}), &[]);
    trio.fakes[0]
        .script(json!({"status": 403, "reason": "suspended"}))
        .await;
    let answers = trio.many(500, 10).await;
    assert_eq!(
        statuses(&answers),
        [200],
        "the retry hid the suspension from every client"
    );
    // Up to one request per worker was already on its way when the first answer came back.
    let found_out = trio.calls().await[0];
    assert!((1..=10).contains(&found_out), "{found_out}");
    assert_eq!(statuses(&trio.many(100, 10).await), [200]);
    assert_eq!(trio.calls().await[0], found_out, "none sent while it rests");
    let a = trio.instance("acct-a").await;
    assert_eq!(
        (
            a["state"].clone(),
            a["reason"].clone(),
            a["healthy"].clone()
        ),
        (json!("cooldown"), json!("suspended"), json!(false))
    );
    let health = trio.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "degraded");
}

#[tokio::test]
async fn a_rate_limited_account_rests_for_its_retry_after_then_serves_again() {
    let trio = Trio::start(json!({}), &[]);
    trio.fakes[0]
        .script(json!({"status": 429, "retry_after": 2}))
        .await;
    let answers = trio.many(60, 3).await;
    assert_eq!(statuses(&answers), [200]);
    let a = trio.instance("acct-a").await;
    assert_eq!(
        (a["state"].clone(), a["reason"].clone()),
        (json!("cooldown"), json!("rate_limited"))
    );
    assert!(a["cooldown_until"].is_string());
    // Up to one request per worker was on its way when the 429 came back; none after.
    let found_out = trio.calls().await[0];
    assert!((1..=3).contains(&found_out), "{found_out}");
    trio.many(30, 3).await;
    assert_eq!(
        trio.calls().await[0],
        found_out,
        "nothing sent while it rests"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    trio.many(60, 3).await;
    assert!(
        trio.calls().await[0] > 5,
        "back in the rotation: {:?}",
        trio.calls().await
    );
    assert_eq!(trio.instance("acct-a").await["state"], "healthy");
}

#[tokio::test]
async fn suspicious_activity_means_a_long_rest_and_short_window_a_short_one() {
    let trio = Trio::start(json!({}), &[]);
    trio.fakes[0]
        .script(json!({"status": 429, "reason": "suspicious", "retry_after": 1}))
        .await;
    trio.fakes[1]
        .script(json!({"status": 429, "reason": "DAILY_REQUEST_COUNT"}))
        .await;
    assert_eq!(statuses(&trio.many(30, 3).await), [200]);
    let until = |i: &Value| {
        let text = i["cooldown_until"].as_str().unwrap().to_owned();
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap()
            - time::OffsetDateTime::now_utc()
    };
    let a = trio.instance("acct-a").await;
    assert_eq!(a["reason"], "suspicious");
    assert!(
        until(&a) > time::Duration::minutes(59),
        "an hour, whatever Retry-After said: {a}"
    );
    let b = trio.instance("acct-b").await;
    assert_eq!(b["reason"], "short_window");
    let rest = until(&b);
    assert!(
        rest > time::Duration::minutes(4) && rest <= time::Duration::minutes(5),
        "{b}"
    );
}

#[tokio::test]
async fn all_accounts_resting_answers_503_with_retry_after() {
    let trio = Trio::start(json!({}), &[]);
    for fake in &trio.fakes {
        fake.script(json!({"status": 429, "retry_after": 30})).await;
    }
    // The request that meets all three limits gets the upstream's own 429.
    let first = trio.chat("x", false, None).await;
    assert_eq!(first.status, 429, "{}", first.text());
    assert_eq!(first.headers["retry-after"], "30");
    // The next finds nobody: a 503 that says why and when to come back.
    let next = trio.chat("x", false, None).await;
    assert_eq!(next.status, 503, "{}", next.text());
    let retry: u64 = next.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((28..=30).contains(&retry), "{retry}");
    let message = next.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("all 3 accounts are unavailable")
            && message.contains("acct-b (cooldown: rate_limited"),
        "{message}"
    );
    assert_eq!(trio.calls().await, [1, 1, 1]);
    let health = trio.get("/health").await;
    assert_eq!(health.status, 503);
}

#[tokio::test]
async fn an_open_breaker_tries_again_after_its_backoff_and_closes() {
    let trio = Trio::start(
        json!({}),
        &["--breaker-failures", "2", "--breaker-open", "1"],
    );
    trio.fakes[0]
        .script(json!([{"status": 500}, {"status": 500}]))
        .await;
    let mut sent = 0;
    while trio.instance("acct-a").await["state"] != "open" {
        assert_eq!(
            trio.chat("x", false, None).await.status,
            200,
            "retried elsewhere"
        );
        sent += 1;
        assert!(sent < 200, "acct-a never opened");
    }
    assert_eq!(trio.calls().await[0], 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..30 {
        trio.chat("x", false, None).await;
    }
    assert!(trio.calls().await[0] > 2, "the trial went out");
    assert_eq!(
        trio.instance("acct-a").await["state"],
        "healthy",
        "the healed account is back"
    );
}

#[tokio::test]
async fn retries_never_duplicate_what_the_client_already_got() {
    let trio = Trio::start(json!({}), &[]);
    // Cut off before the first event, on every account: retried until one answers whole.
    for fake in &trio.fakes {
        fake.script(json!({"truncate_after": 0})).await;
    }
    let reply = trio.chat("alpha beta gamma", true, None).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert_eq!(text.matches("alpha").count(), 1, "{text}");
    assert_eq!(reply.headers["x-aiproxy-attempts"], "4");
    // Cut off after text reached the client: an error event, never a second attempt.
    let trio = Trio::start(json!({}), &[]);
    for fake in &trio.fakes {
        fake.script(json!({"truncate_after": 2})).await;
    }
    let reply = trio.chat("alpha beta gamma", true, None).await;
    let text = reply.text();
    assert_eq!(text.matches("alpha").count(), 1, "{text}");
    assert!(text.contains("cut off"), "{text}");
    assert_eq!(trio.calls().await.iter().sum::<u64>(), 1);
}

#[tokio::test]
async fn max_concurrency_holds_per_account() {
    let trio = Trio::start(json!({"maxConcurrency": 2}), &["--request-timeout", "10"]);
    let replies = join_all((0..12).map(|i| {
        let trio = &trio;
        async move {
            trio.chat(
                &format!("slow {i} one two three\nfake-kiro: {{\"event_delay_ms\": 40}}"),
                i % 2 == 0,
                None,
            )
            .await
        }
    }))
    .await;
    assert_eq!(statuses(&replies), [200]);
    for fake in &trio.fakes {
        let peak = fake.stats().await["peak_concurrent_generates"]
            .as_u64()
            .unwrap();
        assert!(peak <= 2, "peak {peak}");
    }
}

#[tokio::test]
async fn a_conversation_stays_on_its_account() {
    let trio = Trio::start(json!({}), &[]);
    let mut homes = std::collections::HashSet::new();
    for session in 0..12 {
        let id = format!("conversation-{session}");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            let reply = trio.chat("x", false, Some(&id)).await;
            seen.insert(
                reply.headers["x-aiproxy-account"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(seen.len(), 1, "{id}: {seen:?}");
        homes.extend(seen);
    }
    assert!(homes.len() >= 2, "sessions spread: {homes:?}");
}

#[tokio::test]
async fn a_pool_file_edit_adds_and_drains_accounts_with_requests_in_flight() {
    let trio = Trio::start(json!({}), &[]);
    // Six slow streams in flight, some of them on acct-a.
    let slow = "one two three four five six seven eight\nfake-kiro: {\"event_delay_ms\": 120}";
    let in_flight = join_all((0..6).map(|_| trio.chat(slow, true, None)));
    let edit = async {
        // The streams start within a few milliseconds on a quiet machine; allow a loaded
        // one (the whole suite running on two cores) up to three seconds.
        let mut on_a = 0;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            on_a = trio.instance("acct-a").await["in_flight"].as_u64().unwrap();
            if on_a >= 1 {
                break;
            }
        }
        assert!(
            on_a >= 1,
            "in-flight balancing put some of the six on acct-a"
        );
        let fourth = Fake::start();
        let mut next: Vec<Value> = trio.instances[1..].to_vec();
        next.push(fourth.pool_instance(trio.pools.parent().unwrap(), "acct-d"));
        trio.rewrite(&next);
        // The reload is quick; give it a moment, then load the new pool.
        tokio::time::sleep(Duration::from_millis(300)).await;
        fourth
    };
    let (replies, fourth) = tokio::join!(in_flight, edit);
    for reply in &replies {
        assert_eq!(reply.status, 200);
        let text = reply.text();
        assert!(
            text.contains("eight") && text.contains("[DONE]"),
            "a drained stream finished: {text}"
        );
    }
    let a_before = trio.calls().await[0];
    assert_eq!(statuses(&trio.many(60, 3).await), [200]);
    assert_eq!(
        trio.calls().await[0],
        a_before,
        "the removed account takes nothing new"
    );
    assert!(
        fourth.stats().await["generate_calls"].as_u64().unwrap() > 5,
        "the added one serves"
    );
    let names: Vec<String> = trio
        .get("/loadbalancer/instances")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["acct-b", "acct-c", "acct-d"]);
}

#[tokio::test]
async fn an_account_disabled_in_the_file_is_shown_and_comes_back_when_enabled() {
    let trio = Trio::start(json!({}), &[]);
    let mut edited = trio.instances.clone();
    edited[0]["enabled"] = json!(false);
    trio.rewrite(&edited);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = trio.instance("acct-a").await;
    assert_eq!(
        (a["state"].clone(), a["reason"].clone()),
        (json!("disabled"), json!("disabled_in_pool_file"))
    );
    trio.many(30, 3).await;
    assert_eq!(trio.calls().await[0], 0);
    trio.rewrite(&trio.instances);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trio.instance("acct-a").await["state"], "healthy");
    trio.many(60, 3).await;
    assert!(trio.calls().await[0] > 0);
}

#[tokio::test]
async fn a_model_only_some_accounts_serve_goes_to_them_without_blaming_the_others() {
    let trio = Trio::start(json!({}), &[]);
    // Accounts b and c stop serving the model the requests ask for (an IdC-only or
    // region-only model, docs/kiro-protocol.md §13.3); a SIGHUP re-reads every model list.
    for fake in &trio.fakes[1..] {
        let answer = send(
            http::Request::post(fake.url("/__fake/models"))
                .body(Full::from(
                    json!({"remove": "claude-sonnet-4.5"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    let refreshed = trio.get("/health").await.json()["models"]["refreshed_at"].clone();
    trio.rewrite(&trio.instances);
    let started = std::time::Instant::now();
    while trio.get("/health").await.json()["models"]["refreshed_at"] == refreshed {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refresh after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = trio.calls().await;
    let answers = trio.many(30, 3).await;
    assert_eq!(statuses(&answers), [200]);
    let after = trio.calls().await;
    assert_eq!(
        after[0] - before[0],
        30,
        "every request on the account serving the model"
    );
    for (i, fake) in trio.fakes.iter().enumerate().skip(1) {
        let stats = fake.stats().await;
        assert_eq!(
            after[i], before[i],
            "account {i} got a request for a model it lacks"
        );
        assert_eq!(stats["rejected_requests"], 0);
    }
    for name in &NAMES[1..] {
        assert_eq!(
            trio.instance(name).await["state"],
            "healthy",
            "{name} was blamed"
        );
    }
}

#[tokio::test]
async fn the_health_probe_takes_out_an_account_without_credits_and_brings_it_back() {
    let trio = Trio::start(json!({}), &["--health-check-interval", "1"]);
    let set_usage = |fake: &Fake, used: f64| {
        let url = fake.url("/__fake/usage");
        async move {
            let answer = send(
                http::Request::post(url)
                    .body(Full::from(
                        json!({"currentUsage": used, "usageLimit": 50.0}).to_string(),
                    ))
                    .unwrap(),
            )
            .await;
            assert_eq!(answer.status, 200);
        }
    };
    set_usage(&trio.fakes[0], 50.0).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let a = trio.instance("acct-a").await;
    assert_eq!(
        (a["state"].clone(), a["reason"].clone()),
        (json!("disabled"), json!("quota_exhausted")),
        "{a}"
    );
    assert_eq!(
        a["cooldown_until"], "2027-01-01T00:00:00Z",
        "out until Kiro's reset date"
    );
    assert_eq!(a["usage"]["remaining"], 0.0);
    let b = trio.instance("acct-b").await;
    assert_eq!(
        (
            b["usage"]["used"].clone(),
            b["usage"]["limit"].clone(),
            b["usage"]["subscription"].clone()
        ),
        (json!(12.5), json!(1000.0), json!("KIRO PRO"))
    );
    trio.many(30, 3).await;
    assert_eq!(trio.calls().await[0], 0, "no user traffic to it");
    set_usage(&trio.fakes[0], 10.0).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        trio.instance("acct-a").await["state"],
        "healthy",
        "credits back, account back"
    );
    assert!(trio.fakes[0].stats().await["usage_calls"].as_u64().unwrap() >= 2);
}

/// A small forward proxy for the egress test: HTTP CONNECT tunnels and absolute-form
/// requests, recording each target and the `Proxy-Authorization` it was given.
/// Each connection's target and `Proxy-Authorization`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

struct TestProxy {
    url: String,
    seen: Seen,
}

impl TestProxy {
    async fn start(userinfo: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{userinfo}@{}", listener.local_addr().unwrap());
        let seen = Seen::default();
        let log = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        let n = client.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                    };
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    let mut lines = text.lines();
                    let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
                    let auth = lines
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                        .map(|(_, v)| v.trim().to_owned());
                    let connect = first[0] == "CONNECT";
                    let target = if connect {
                        first[1].to_owned()
                    } else {
                        first[1]
                            .trim_start_matches("http://")
                            .split('/')
                            .next()
                            .unwrap()
                            .to_owned()
                    };
                    log.lock().unwrap().push((target.clone(), auth));
                    let mut upstream = tokio::net::TcpStream::connect(&target).await.unwrap();
                    if connect {
                        client
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .unwrap();
                        upstream.write_all(&head[end..]).await.unwrap();
                    } else {
                        upstream.write_all(&head).await.unwrap();
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Self { url, seen }
    }
}

#[tokio::test]
async fn an_egress_proxy_carries_exactly_its_accounts_traffic() {
    use base64::Engine;
    let proxy = TestProxy::start("alice:pa%24s").await;
    let dir = temp_dir("egress");
    let (a, b) = (Fake::start(), Fake::start());
    let mut via_proxy = a.pool_instance(&dir, "acct-a");
    via_proxy["egressProxy"] = json!(proxy.url);
    let pools = write_json(
        &dir,
        "provider_pools.json",
        &json!({"kiro-api": [via_proxy, b.pool_instance(&dir, "acct-b")]}),
    );
    let state = dir.join("state");
    let aiproxy = Proxy::start(
        &[
            "--provider-pools-file",
            pools.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    let trio = Trio {
        fakes: vec![a, b],
        proxy: aiproxy,
        pools,
        instances: Vec::new(),
    };
    assert_eq!(statuses(&trio.many(40, 4).await), [200]);
    let calls = trio.calls().await;
    assert!(
        calls[0] > 5 && calls[1] > 5,
        "both accounts served: {calls:?}"
    );
    let a_target = trio.fakes[0]
        .process
        .base
        .trim_start_matches("http://")
        .to_owned();
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 2,
        "its refresh and its chats went through the proxy: {seen:?}"
    );
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pa$s")
    );
    for (target, auth) in &seen {
        assert_eq!(target, &a_target, "only acct-a's traffic: {seen:?}");
        assert_eq!(auth.as_deref(), Some(expected_auth.as_str()));
    }
    let view = trio.get("/loadbalancer/instances").await.text();
    assert!(
        !view.contains("pa$s") && !view.contains("pa%24s") && !view.contains("alice"),
        "{view}"
    );
}

#[test]
fn too_many_accounts_behind_one_egress_are_refused_at_start_up() {
    let dir = temp_dir("egress-cap");
    let fake = Fake::start();
    let instances: Vec<Value> = NAMES.iter().map(|n| fake.pool_instance(&dir, n)).collect();
    let pools = write_json(
        &dir,
        "provider_pools.json",
        &json!({ "kiro-api": instances }),
    );
    let (code, stderr) = common::run_to_exit(
        &[
            "--provider-pools-file",
            pools.to_str().unwrap(),
            "--max-accounts-per-egress",
            "2",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("3 accounts go out through direct (acct-a, acct-b, acct-c), more than --max-accounts-per-egress 2"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_per_account_guard_holds_across_the_pool() {
    // Two requests per minute per account, both at once: six fit, the seventh is refused
    // (the next slot is 30 s away, longer than a request waits), whatever the clients send.
    let trio = Trio::start(json!({"requestsPerMinute": 2, "requestsBurst": 2}), &[]);
    let prompts: Vec<String> = (0..7).map(|i| format!("hi {i}")).collect();
    let answers = join_all(prompts.iter().map(|p| trio.chat(p, false, None))).await;
    let mut codes: Vec<u16> = answers.iter().map(|a| a.status).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 200, 200, 200, 200, 200, 503]);
    let refused = answers.iter().find(|a| a.status == 503).unwrap();
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("requestsPerMinute guard: acct-a (2/min), acct-b (2/min), acct-c (2/min)"),
        "{message}"
    );
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((20..=30).contains(&wait), "{wait}");
    assert_eq!(
        trio.calls().await,
        [2, 2, 2],
        "each account got exactly its guard's worth"
    );
    assert_eq!(trio.instance("acct-a").await["requests_per_minute"], 2);
}

#[tokio::test]
async fn new_credentials_under_an_old_name_start_afresh_and_an_edit_does_not() {
    let trio = Trio::start(json!({}), &[]);
    trio.fakes[0]
        .script(json!({"status": 403, "reason": "suspended"}))
        .await;
    for i in 0..20 {
        trio.chat(&format!("find it {i}"), false, Some(&format!("s{i}")))
            .await;
        if trio.calls().await[0] > 0 {
            break;
        }
    }
    assert_eq!(trio.instance("acct-a").await["reason"], "suspended");
    // An edit that keeps the login (a new weight) keeps the suspension's rest: the
    // upstream's verdict on the account did not change because the file did.
    let mut edited = trio.instances.clone();
    edited[0]["weight"] = json!(2);
    trio.rewrite(&edited);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = trio.instance("acct-a").await;
    assert_eq!(
        (a["state"].clone(), a["weight"].clone()),
        (json!("cooldown"), json!(2))
    );
    // A new sign-in under the same name is another Kiro account: healthy, counted afresh.
    edited[0] = trio.fakes[0].pool_instance(trio.pools.parent().unwrap(), "acct-a");
    trio.rewrite(&edited);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = trio.instance("acct-a").await;
    assert_eq!(
        (
            a["state"].clone(),
            a["requests"].clone(),
            a["errors"].clone()
        ),
        (json!("healthy"), json!(0), json!(0))
    );
    let before = trio.calls().await[0];
    assert_eq!(statuses(&trio.many(60, 3).await), [200]);
    assert!(trio.calls().await[0] > before + 5, "the new login serves");
    assert!(
        trio.instance("acct-a").await["tokens"]["output"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn an_added_account_ramps_up_instead_of_taking_its_share_at_once() {
    let trio = Trio::start(json!({}), &["--pool-slow-start", "60"]);
    // The three first accounts are past the start of their own ramp... by being alone:
    // the comparison is the joiner against them, within the same seconds.
    let fourth = Fake::start();
    let mut next = trio.instances.clone();
    next.push(fourth.pool_instance(trio.pools.parent().unwrap(), "acct-d"));
    trio.rewrite(&next);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trio.instance("acct-d").await["state"], "healthy");
    let before = trio.calls().await;
    for i in 0..300 {
        assert_eq!(
            trio.chat(&format!("ramp {i}"), false, None).await.status,
            200
        );
    }
    let after = trio.calls().await;
    let old: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let joiner = fourth.stats().await["generate_calls"].as_u64().unwrap();
    let old_mean = old.iter().sum::<u64>() as f64 / 3.0;
    assert!(
        joiner >= 1,
        "a joiner gets some traffic from the start: {joiner} vs {old:?}"
    );
    assert!(
        (joiner as f64) < old_mean / 3.0,
        "in its first seconds a joiner gets a small share: {joiner} vs {old:?}"
    );
}

#[tokio::test]
async fn the_probe_chats_on_check_model_only_where_configured_and_acts_on_the_answer() {
    let trio = Trio::start(json!({}), &["--health-check-interval", "1"]);
    let mut edited = trio.instances.clone();
    edited[0]["checkModel"] = json!("claude-sonnet-4-6");
    trio.rewrite(&edited);
    // The probe's chat meets a 429 with no user traffic at all: the account rests.
    trio.fakes[0]
        .script(json!({"status": 429, "retry_after": 60}))
        .await;
    let mut a = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a = trio.instance("acct-a").await;
        if a["state"] == "cooldown" {
            break;
        }
    }
    assert_eq!(
        (
            a["state"].clone(),
            a["reason"].clone(),
            a["last_error"].clone()
        ),
        (
            json!("cooldown"),
            json!("rate_limited"),
            json!("rate_limited")
        ),
        "{a}"
    );
    assert_eq!(
        trio.calls().await,
        [1, 0, 0],
        "only acct-a has a checkModel"
    );
    // A passing chat probe on a healthy account: one chat per period, nothing else.
    let mut edited = trio.instances.clone();
    edited[1]["checkModel"] = json!("claude-sonnet-4-6");
    trio.rewrite(&edited);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let b_calls = trio.calls().await[1];
    assert!((1..=4).contains(&b_calls), "{b_calls}");
    assert_eq!(trio.instance("acct-b").await["state"], "healthy");
}

#[tokio::test]
async fn kiro_5xx_on_every_account_never_lets_in_a_suspended_one_nor_shuts_out_the_others() {
    let trio = Trio::start(json!({}), &[]);
    trio.fakes[0]
        .script(json!({"status": 403, "reason": "suspended"}))
        .await;
    let mut sent = 0;
    while trio.calls().await[0] == 0 {
        assert_eq!(trio.chat("x", false, None).await.status, 200);
        sent += 1;
        assert!(sent < 200, "acct-a never got a request");
    }
    assert_eq!(trio.instance("acct-a").await["state"], "cooldown");
    // Kiro fails on both others, long enough to open both breakers.
    for fake in &trio.fakes[1..] {
        fake.script(Value::Array(vec![json!({"status": 500}); 12]))
            .await;
    }
    let mut answers = Vec::new();
    for i in 0..12 {
        answers.push(trio.chat(&format!("during {i}"), false, None).await.status);
    }
    assert!(
        answers.iter().all(|s| *s == 502 || *s == 200),
        "Kiro's 5xx are honest 502s, never a pool refusal: {answers:?}"
    );
    let metrics = common::metrics_text(&trio.proxy.base).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aiproxy_pool_panic_requests_total{") && !l.ends_with(" 0")),
        "both breakers opened, and panic mode kept them serving: {metrics}"
    );
    // Kiro is back: the two serve at once; the suspended one still rests.
    for i in 0..6 {
        let answer = trio.chat(&format!("after {i}"), false, None).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_ne!(answer.headers["x-aiproxy-account"], "acct-a");
    }
    assert_eq!(
        trio.calls().await[0],
        1,
        "acct-a got nothing while suspended"
    );
    assert_eq!(trio.instance("acct-a").await["state"], "cooldown");
}

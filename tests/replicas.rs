//! Several aiproxy processes sharing state through a real `redis-server` (Debian's package;
//! `.ci/run` installs it), each on its own port with a temp dir, against one
//! `aiproxy fake-kiro`: the client rate limits hold across the replicas, `/health` and
//! `/loadbalancer/instances` say whether state is shared, and Redis going away is survived
//! as `--redis-failure-mode` says (`open`: each replica decides alone, then shares again
//! when Redis is back; `closed`: clear 503s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::Fake;
use common::{send, temp_dir, Answer, Proxy};
use http_body_util::Full;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free port, in a temp dir, persistence off; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more `redis-server` arguments (`--requirepass`, ...).
    fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = temp_dir("redis");
        let extra = extra.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let child = Self::spawn(port, &dir, &extra);
        Self {
            child,
            port,
            dir,
            extra,
        }
    }

    fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server; .ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port (a Redis restart, its data gone).
    fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, &self.dir, &self.extra);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn chat_text(base: &str, text: &str) -> Answer {
    chat_with(base, text, None).await
}

async fn chat_with(base: &str, text: &str, session: Option<&str>) -> Answer {
    let mut request = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-replicas");
    if let Some(session) = session {
        request = request.header("x-aiproxy-session", session);
    }
    send(
        request
            .body(Full::from(common::chat_body(text, false)))
            .unwrap(),
    )
    .await
}

async fn chat(base: &str) -> Answer {
    chat_text(base, "hello").await
}

async fn get_json(base: &str, path: &str) -> Value {
    send(
        http::Request::get(format!("{base}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .json()
}

fn replicas(fake: &Fake, redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Proxy> {
    let url = redis.url();
    (0..n)
        .map(|_| {
            let mut args = vec![
                "--api-key",
                "sk-replicas",
                "--redis-url",
                &url,
                "--redis-prefix",
                "test:",
            ];
            args.extend_from_slice(extra);
            fake.proxy("social", &args)
        })
        .collect()
}

/// `n` requests at once, spread over `proxies`: every one answered 200.
async fn all_answered(proxies: &[Proxy], n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let base = proxies[i % proxies.len()].base.clone();
            tokio::spawn(async move { chat(&base).await })
        })
        .collect();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

/// Polls `done` until it holds, failing with `what` after `within`.
async fn wait_for<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every replica's `/health` says Redis is reachable (they connect in the
/// background).
async fn wait_shared(proxies: &[Proxy]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for proxy in proxies {
        loop {
            let health = get_json(&proxy.base, "/health").await;
            if health["shared_state"]["reachable"] == true {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica never reached Redis: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// 100 requests a minute (all at once allowed, then one back every 0.6 s) for one key,
/// hammered through three replicas: together they let through the limit and what came back
/// while the test ran, not three times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_limit_holds_across_three_replicas() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let proxies = replicas(
        &fake,
        &redis,
        3,
        &["--rate-limit-rpm", "100", "--rate-limit-burst", "100"],
    );
    wait_shared(&proxies).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..240 {
        let base = proxies[i % 3].base.clone();
        tasks.push(tokio::spawn(async move { chat(&base).await }));
    }
    let mut passed = 0;
    let mut refused = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status {
            200 => passed += 1,
            429 => {
                refused += 1;
                assert!(answer.text().contains("Rate limit reached for requests"));
            }
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refilled = (elapsed / 0.6).floor() as i64;
    assert!(passed >= 100, "passed {passed} of 240 in {elapsed:.2} s");
    assert!(
        passed as i64 <= 100 + refilled + 1,
        "passed {passed} of 240 in {elapsed:.2} s: the limit is 100 + {refilled} refilled"
    );
    assert_eq!(passed + refused, 240);
    // The state is shared and says so, on both status views.
    let health = get_json(&proxies[1].base, "/health").await;
    assert_eq!(health["shared_state"]["backend"], "redis");
    assert_eq!(health["shared_state"]["failure_mode"], "open");
    assert_eq!(health["shared_state"]["fallbacks"], 0);
    let instances = get_json(&proxies[2].base, "/loadbalancer/instances").await;
    assert_eq!(instances[0]["shared_state"]["reachable"], true);
}

/// Tokens spent through one replica are gone from the bucket the others see: a budget that
/// holds one such request passes it on replica A and refuses the same request on replica B
/// (with buckets per replica, B would pass it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_is_one_bucket_for_every_replica() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let proxies = replicas(&fake, &redis, 2, &["--rate-limit-tpm", "2000"]);
    wait_shared(&proxies).await;
    let long = "word ".repeat(1500);
    let ask = |base: String| {
        let body = common::chat_body(&long, false);
        async move {
            send(
                http::Request::post(format!("{base}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-replicas")
                    .body(Full::from(body))
                    .unwrap(),
            )
            .await
        }
    };
    let first = ask(proxies[0].base.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let left: u64 = first.headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        left < 1000,
        "the request should take over half the budget; {left} left"
    );
    let second = ask(proxies[1].base.clone()).await;
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(
        second.text().contains("Rate limit reached for tokens"),
        "{}",
        second.text()
    );
}

/// `open`: with Redis gone every replica keeps answering on its own buckets (counted in
/// `/health`), and shares again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_in_open_mode_falls_back_then_shares_again() {
    let fake = Fake::start();
    let mut redis = RedisServer::start();
    let proxies = replicas(
        &fake,
        &redis,
        2,
        &["--rate-limit-rpm", "1000", "--cache-enabled"],
    );
    wait_shared(&proxies).await;
    // Load on both replicas while Redis goes away: no client sees an error.
    let bases: Vec<String> = proxies.iter().map(|p| p.base.clone()).collect();
    let load = tokio::spawn(async move {
        let mut answers = Vec::new();
        for i in 0..60 {
            let answer = chat_text(&bases[i % 2], &format!("under load {i}")).await;
            answers.push((answer.status, answer.text()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.stop();
    for (status, text) in load.await.unwrap() {
        assert_eq!(status, 200, "{text}");
    }
    for proxy in &proxies {
        for _ in 0..5 {
            let answer = chat(&proxy.base).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
    }
    let health = get_json(&proxies[0].base, "/health").await;
    assert_eq!(health["shared_state"]["reachable"], false, "{health}");
    assert!(health["shared_state"]["fallbacks"].as_u64().unwrap() >= 5);
    let metrics = common::metrics_text(&proxies[0].base).await;
    assert!(metrics.contains("redis_fallbacks_total"), "{metrics}");

    redis.restart();
    // The connection comes back on the next calls; the buckets are in Redis again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = chat(&proxies[0].base).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let health = get_json(&proxies[0].base, "/health").await;
        if health["shared_state"]["reachable"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "never shared again: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The other replica probes Redis on its own (once a second while it is down): until it
    // is back too, what it answers is neither limited nor cached in Redis.
    wait_shared(&proxies).await;
    let answer = chat(&proxies[1].base).await;
    assert_eq!(answer.status, 200);
    let keys = redis_cli(&redis, &["--scan", "--pattern", "test:rl:*"]);
    assert!(keys.contains("test:rl:req"), "no bucket in Redis: {keys}");
    // Answers recorded now are shared again.
    let answer = chat_text(&proxies[1].base, "after the outage").await;
    assert_eq!(answer.status, 200);
    wait_for(
        Duration::from_secs(5),
        "no answer shared after the outage",
        || async { redis_cli(&redis, &["ZCARD", "test:cache:index"]).trim() != "0" },
    )
    .await;
}

/// `closed`: with Redis gone a rate-limited request is refused with a 503 that says why and
/// what to do; the key's URL password appears nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_in_closed_mode_answers_503() {
    let fake = Fake::start();
    let mut redis = RedisServer::start();
    let proxies = replicas(
        &fake,
        &redis,
        1,
        &["--rate-limit-rpm", "1000", "--redis-failure-mode", "closed"],
    );
    wait_shared(&proxies).await;
    assert_eq!(chat(&proxies[0].base).await.status, 200);
    redis.stop();
    let answer = chat(&proxies[0].base).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    let error = answer.json();
    assert_eq!(error["error"]["code"], "shared_state_unavailable");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("--redis-failure-mode"), "{message}");
    assert_eq!(answer.headers["retry-after"], "1");
    redis.restart();
    wait_for(
        Duration::from_secs(15),
        "still refused after Redis came back",
        || async { chat(&proxies[0].base).await.status == 200 },
    )
    .await;
}

/// A password in the URL is used (the right one shares state) and never shows: not in
/// `/health`, the instances, the metrics or the log, even when Redis refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_is_used_and_never_shows() {
    let fake = Fake::start();
    let redis = RedisServer::start_with(&["--requirepass", "right-horse-battery"]);
    let right = format!("redis://:right-horse-battery@127.0.0.1:{}/0", redis.port);
    let with_password = fake.proxy(
        "social",
        &["--redis-url", &right, "--rate-limit-rpm", "100"],
    );
    wait_shared(std::slice::from_ref(&with_password)).await;
    assert_eq!(chat(&with_password.base).await.status, 200);
    let health = get_json(&with_password.base, "/health").await.to_string();
    assert!(!health.contains("right-horse"), "{health}");

    let url = format!("redis://default:hunter2-secret@127.0.0.1:{}/0", redis.port);
    let mut proxy = fake.proxy_with_env(
        "social",
        &["--redis-url", &url, "--rate-limit-rpm", "100"],
        &[("RUST_LOG", "info")],
    );
    // The wrong password: AUTH fails, so the replica falls back (open mode).
    let answer = chat(&proxy.base).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = get_json(&proxy.base, "/health").await.to_string();
    let instances = get_json(&proxy.base, "/loadbalancer/instances")
        .await
        .to_string();
    let metrics = common::metrics_text(&proxy.base).await;
    let logs = proxy.stop_and_logs();
    assert!(health.contains(&format!("redis://127.0.0.1:{}/0", redis.port)));
    for text in [&health, &instances, &metrics, &logs] {
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
    }
    assert!(logs.contains("Redis cannot be reached"), "{logs}");
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--no-auth-warning"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn responses_call(base: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    send(
        http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-replicas")
            .body(Full::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap(),
    )
    .await
}

/// A Responses API conversation whose turns land on three different replicas continues on
/// each (as Codex behind a load balancer needs): the stored chain is in Redis, and so are
/// `GET`, `input_items` and `DELETE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_conversation_continues_on_every_replica() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let proxies = replicas(&fake, &redis, 3, &[]);
    wait_shared(&proxies).await;
    let turn = |i: usize, input: &str, previous: Option<&str>| {
        let mut body = serde_json::json!({"model": "claude-sonnet-4-5", "input": input});
        if let Some(previous) = previous {
            body["previous_response_id"] = previous.into();
        }
        let base = proxies[i].base.clone();
        async move {
            let answer = responses_call(&base, "POST", "/v1/responses", Some(body)).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            answer.json()
        }
    };
    let first = turn(0, "my name is Ada and I write programs", None).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    // No pause between turns: the next one goes out as soon as the answer is read.
    let second = turn(1, "what is my name?", Some(&first_id)).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let third = turn(2, "what is my name?", Some(&second_id)).await;
    let alone = turn(2, "what is my name?", None).await;
    let input = |r: &Value| r["usage"]["input_tokens"].as_u64().unwrap();
    assert!(
        input(&third) > input(&second) && input(&second) > input(&alone),
        "each turn carries the whole chain: {} > {} > {}",
        input(&third),
        input(&second),
        input(&alone)
    );

    // GET and input_items from a replica that did not make the response.
    let got = responses_call(
        &proxies[2].base,
        "GET",
        &format!("/v1/responses/{first_id}"),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), first);
    let items = responses_call(
        &proxies[0].base,
        "GET",
        &format!("/v1/responses/{second_id}/input_items"),
        None,
    )
    .await;
    assert_eq!(
        items.json()["data"][0]["content"][0]["text"],
        "what is my name?"
    );
    // Deleted through one replica, gone for all (the one that made it included).
    let deleted = responses_call(
        &proxies[1].base,
        "DELETE",
        &format!("/v1/responses/{first_id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let gone = responses_call(
        &proxies[0].base,
        "GET",
        &format!("/v1/responses/{first_id}"),
        None,
    )
    .await;
    assert_eq!(gone.status, 404);
    let keys = redis_cli(&redis, &["--scan", "--pattern", "test:resp:*"]);
    assert!(keys.contains(&second_id), "{keys}");
    assert!(!keys.contains(&first_id), "{keys}");
}

/// `check-config` says where state is shared (the endpoint, never the password); a URL that
/// is not Redis's, or Redis settings without a URL, stop the start with what to do.
#[test]
fn redis_settings_are_checked_and_shown_without_the_password() {
    let output = common::hermetic_command()
        .args([
            "check-config",
            "--kiro-mock-mode",
            "--redis-url",
            "redis://user:hunter2-secret@cache.internal:6380/2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "redis = redis://cache.internal:6380/2 (prefix aiproxy:, failure mode open, timeout 250 ms)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    let (code, stderr) = common::run_to_exit(
        &[
            "--kiro-mock-mode",
            "--redis-url",
            "http://user:hunter2-secret@x",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("redis://"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let (code, stderr) =
        common::run_to_exit(&["--kiro-mock-mode", "--redis-failure-mode", "closed"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--redis-url"), "{stderr}");
}

/// One login copied onto three "hosts" (a credential file each, as replicas on different
/// machines have), behind one Redis.
fn login_copies(n: usize) -> Vec<std::path::PathBuf> {
    let creds = serde_json::json!({
        "refreshToken": format!("rt-shared-{}", uuid::Uuid::new_v4()),
        "authMethod": "social",
    });
    (0..n)
        .map(|_| common::fake::write_json(&temp_dir("replica-host"), "creds.json", &creds))
        .collect()
}

fn replica_on(fake: &Fake, redis: &RedisServer, creds: &std::path::Path) -> Proxy {
    let url = redis.url();
    fake.proxy_on(
        creds,
        &[
            "--api-key",
            "sk-replicas",
            "--redis-url",
            &url,
            "--redis-prefix",
            "test:",
            // No model list at start: the first chat is what needs the token.
            "--models-refresh-interval",
            "0",
        ],
        &[],
    )
}

/// The fake has had one refresh call, and no `invalid_grant`.
async fn one_refresh_so_far(fake: &Fake, why: &str) {
    let stats = fake.stats().await;
    assert_eq!(stats["invalid_grants"], 0, "{stats}");
    assert_eq!(stats["refresh_calls"], 1, "{why}: {stats}");
}

/// Whether some replica holds a login's refresh lock.
fn refresh_locked(redis: &RedisServer) -> bool {
    !redis_cli(redis, &["KEYS", "test:tok:*:lock"])
        .trim()
        .is_empty()
}

fn refresh_token_in(creds: &std::path::Path) -> String {
    common::fake::read_json(creds)["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A login with no access token yet, on three replicas with a copy of its credential file
/// each, and nine requests at once: one refresh call in all, no `invalid_grant`, and every
/// copy of the file ends with the rotated refresh token (a replica that adopted it from
/// Redis wrote it to its own file too).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_for_an_expired_login_on_three_replicas() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let copies = login_copies(3);
    let original = refresh_token_in(&copies[0]);
    let proxies: Vec<Proxy> = copies
        .iter()
        .map(|c| replica_on(&fake, &redis, c))
        .collect();
    wait_shared(&proxies).await;
    // The refresh takes a while, so all nine requests arrive while it runs.
    fake.control("/__fake/refresh-delay", serde_json::json!({"ms": 300}))
        .await;
    all_answered(&proxies, 9).await;
    one_refresh_so_far(&fake, "one refresh for all three").await;
    let rotated: Vec<String> = copies.iter().map(|c| refresh_token_in(c)).collect();
    assert_ne!(rotated[0], original);
    assert!(
        rotated.iter().all(|t| *t == rotated[0]),
        "every copy has the rotated token"
    );
    // The lock is released once the refresh is written.
    wait_for(
        Duration::from_secs(5),
        "the refresh lock was never released",
        || async { !refresh_locked(&redis) },
    )
    .await;
}

/// `kill -9` of the replica that holds the refresh lock while its refresh is on its way to
/// Kiro: its lock expires, the second replica then refreshes (no `invalid_grant`: the dead
/// one's refresh never reached Kiro), every credential file is whole JSON, and a replica
/// started later on the dead one's stale file takes the rotated tokens from Redis instead of
/// spending its consumed refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_refresh_does_not_lock_the_login_out() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let copies = login_copies(2);
    let original = refresh_token_in(&copies[0]);
    let mut holder = replica_on(&fake, &redis, &copies[0]);
    let other = replica_on(&fake, &redis, &copies[1]);
    wait_shared(std::slice::from_ref(&holder)).await;
    wait_shared(std::slice::from_ref(&other)).await;
    fake.control("/__fake/refresh-delay", serde_json::json!({"ms": 20_000}))
        .await;
    let base = holder.base.clone();
    let in_flight = tokio::spawn(async move { chat(&base).await });
    wait_for(
        Duration::from_secs(10),
        "the first replica never took the lock",
        || async { refresh_locked(&redis) },
    )
    .await;
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    let _ = in_flight.await;
    fake.control("/__fake/refresh-delay", serde_json::json!({"ms": 0}))
        .await;

    let started = Instant::now();
    let answer = chat(&other.base).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?}: the dead replica's lock should expire within its 10 s",
        started.elapsed()
    );
    one_refresh_so_far(&fake, "the killed refresh never reached Kiro").await;
    assert_eq!(
        refresh_token_in(&copies[0]),
        original,
        "the dead replica's file is whole and untouched"
    );
    let rotated = refresh_token_in(&copies[1]);
    assert_ne!(rotated, original);

    // A new replica on the dead one's file: its token is consumed, Redis has the new one.
    let restarted = replica_on(&fake, &redis, &copies[0]);
    wait_shared(std::slice::from_ref(&restarted)).await;
    let answer = chat(&restarted.base).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    one_refresh_so_far(&fake, "adopted from Redis, not refreshed").await;
    assert_eq!(
        refresh_token_in(&copies[0]),
        rotated,
        "and written to its own file"
    );
}

/// An answer recorded through replica A is a hit on replica B (the fake answers once), and
/// in Redis the entries stay within the cache's byte budget, the oldest dropped first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cached_on_one_replica_is_a_hit_on_another() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let proxies = replicas(
        &fake,
        &redis,
        2,
        &[
            "--cache-enabled",
            "--cache-max-bytes",
            "65536",
            "--cache-ttl",
            "600",
            "--models-refresh-interval",
            "0",
        ],
    );
    wait_shared(&proxies).await;
    let first = chat_text(&proxies[0].base, "what is shared?").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.headers["x-aiproxy-cache"], "miss");
    let calls = fake.stats().await["generate_calls"].as_u64().unwrap();
    // The write to Redis runs beside the answer: B may ask before it lands.
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        let answer = chat_text(&proxies[1].base, "what is shared?").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        if answer.headers["x-aiproxy-cache"] == "hit" || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(second.headers["x-aiproxy-cache"], "hit");
    assert_eq!(
        second.json()["choices"][0]["message"]["content"],
        first.json()["choices"][0]["message"]["content"]
    );
    let after = fake.stats().await["generate_calls"].as_u64().unwrap();
    assert!(
        after <= calls + 1,
        "B's hit never reached the fake (at most one miss raced the write)"
    );

    // Many different answers through both: Redis keeps within the 64 KiB budget, and
    // what it holds expires with the cache's TTL.
    let n = 300;
    for i in 0..n {
        let answer = chat_text(&proxies[i % 2].base, &format!("question {i}")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total: i64 = redis_cli(&redis, &["GET", "test:cache:bytes"])
        .trim()
        .parse()
        .unwrap();
    assert!(total > 0 && total <= 65536, "{total} bytes in Redis");
    let entries: usize = redis_cli(&redis, &["ZCARD", "test:cache:index"])
        .trim()
        .parse()
        .unwrap();
    assert!(entries < n, "{entries} entries: the oldest were dropped");
    let newest = redis_cli(&redis, &["ZRANGE", "test:cache:index", "-1", "-1"]);
    let ttl: i64 = redis_cli(&redis, &["PTTL", newest.trim()])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 500_000 && ttl <= 600_000, "PTTL {ttl}");
    let stored: usize = redis_cli(&redis, &["KEYS", "test:cache:*"]).lines().count();
    assert_eq!(
        stored,
        entries + 3,
        "every entry indexed, nothing left over"
    );
}

async fn instance(base: &str, name: &str) -> Value {
    get_json(base, "/loadbalancer/instances")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
        .unwrap()
}

async fn generate_calls(fake: &Fake) -> u64 {
    fake.stats().await["generate_calls"].as_u64().unwrap()
}

/// Two accounts (a fake each) in one pool file, three replicas: the account Kiro suspends
/// behind replica A rests on B and C within a second (nothing more is sent to it through
/// them), and a replica started afterwards learns the rest from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_suspended_behind_one_replica_rests_on_every_replica() {
    let redis = RedisServer::start();
    let fakes = [Fake::start(), Fake::start()];
    let (pools, state) = pool_file(&[("acct-a", &fakes[0], None), ("acct-b", &fakes[1], None)]);
    let start = || pool_replica(&pools, &state, &redis);
    let proxies = vec![start(), start(), start()];
    wait_shared(&proxies).await;
    fakes[0]
        .control(
            "/__fake/script",
            serde_json::json!({"status": 403, "reason": "suspended"}),
        )
        .await;
    for _ in 0..50 {
        let answer = chat(&proxies[0].base).await;
        assert_eq!(answer.status, 200, "the retry hides it: {}", answer.text());
        if generate_calls(&fakes[0]).await > 0 {
            break;
        }
    }
    let found_out = Instant::now();
    assert_eq!(
        instance(&proxies[0].base, "acct-a").await["reason"],
        "suspended"
    );
    for proxy in &proxies[1..] {
        loop {
            let a = instance(&proxy.base, "acct-a").await;
            if a["reason"] == "suspended" {
                assert_eq!(a["state"], "cooldown");
                break;
            }
            assert!(
                found_out.elapsed() < Duration::from_secs(1),
                "not known elsewhere within a second: {a}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    eprintln!(
        "the suspension reached the other two replicas within {:?}",
        found_out.elapsed()
    );
    let sent_to_a = generate_calls(&fakes[0]).await;
    for i in 0..40 {
        let answer = chat(&proxies[1 + i % 2].base).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(
        generate_calls(&fakes[0]).await,
        sent_to_a,
        "B and C sent nothing to the resting account"
    );
    // A replica that starts now reads the rest left in Redis.
    let late = start();
    wait_shared(std::slice::from_ref(&late)).await;
    wait_for(
        Duration::from_secs(3),
        "the late replica never learnt it",
        || async { instance(&late.base, "acct-a").await["reason"] == "suspended" },
    )
    .await;
}

/// A pool file of `(name, fake, maxConcurrency)` accounts (a credential file each), and
/// the state dir beside it.
fn pool_file(accounts: &[(&str, &Fake, Option<usize>)]) -> (std::path::PathBuf, String) {
    let dir = temp_dir("replica-pool");
    let instances: Vec<Value> = accounts
        .iter()
        .map(|(name, fake, max_concurrency)| {
            let mut instance = fake.pool_instance(&dir, name);
            if let Some(cap) = max_concurrency {
                instance["maxConcurrency"] = serde_json::json!(cap);
            }
            instance
        })
        .collect();
    let pools = common::fake::write_json(
        &dir,
        "provider_pools.json",
        &serde_json::json!({ "kiro-api": instances }),
    );
    (pools, dir.join("state").to_str().unwrap().to_owned())
}

/// A replica serving `pools`, sharing through `redis`.
fn pool_replica(pools: &std::path::Path, state: &str, redis: &RedisServer) -> Proxy {
    pool_replica_with(pools, state, redis, &[])
}

/// [`pool_replica`] with `extra` arguments.
fn pool_replica_with(
    pools: &std::path::Path,
    state: &str,
    redis: &RedisServer,
    extra: &[&str],
) -> Proxy {
    let url = redis.url();
    let mut args = vec![
        "--provider-pools-file",
        pools.to_str().unwrap(),
        "--state-dir",
        state,
        "--redis-url",
        &url,
        "--redis-prefix",
        "test:",
        "--pool-slow-start",
        "0",
        "--retry-base-delay-ms",
        "5",
        "--models-refresh-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args, &[])
}

fn leases_held(redis: &RedisServer) -> usize {
    redis_cli(redis, &["ZCARD", "test:lease:acct"])
        .trim()
        .parse()
        .unwrap()
}

/// `maxConcurrency: 2` on three replicas, nine slow requests at once: the fake never has
/// more than two of its calls streaming (each replica alone would allow two: six), and
/// every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_holds_across_replicas() {
    let redis = RedisServer::start();
    let fake = Fake {
        process: Proxy::start_fake(&["--event-delay-ms", "40"]),
    };
    let (pools, state) = pool_file(&[("acct", &fake, Some(2))]);
    let proxies: Vec<Proxy> = (0..3)
        .map(|_| pool_replica(&pools, &state, &redis))
        .collect();
    wait_shared(&proxies).await;
    all_answered(&proxies, 9).await;
    let stats = fake.stats().await;
    assert_eq!(stats["generate_calls"], 9, "{stats}");
    assert_eq!(stats["peak_concurrent_generates"], 2, "{stats}");
    wait_for(
        Duration::from_secs(5),
        "leases left after every stream ended",
        || async { leases_held(&redis) == 0 },
    )
    .await;
}

/// A replica killed with two streams in flight on an account of `maxConcurrency: 2`: its
/// leases expire within the lease TTL (15 s), and the other replica serves the account
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_leaves_no_lease_behind() {
    let redis = RedisServer::start();
    let fake = Fake {
        process: Proxy::start_fake(&["--event-delay-ms", "2000"]),
    };
    let (pools, state) = pool_file(&[("acct", &fake, Some(2))]);
    let mut doomed = pool_replica(&pools, &state, &redis);
    let survivor = pool_replica(&pools, &state, &redis);
    wait_shared(std::slice::from_ref(&doomed)).await;
    wait_shared(std::slice::from_ref(&survivor)).await;
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let base = doomed.base.clone();
            tokio::spawn(async move { chat(&base).await })
        })
        .collect();
    // Killed once both calls reached Kiro, not merely once their leases were taken: a lease
    // is taken before the account's first token, and a kill between the fake's rotation of
    // the refresh token and its write-back (file, then Redis) loses the rotated token with
    // the process, as it would with the real Kiro; that window is not what this test is about.
    wait_for(
        Duration::from_secs(10),
        "the streams never took their leases",
        || async { leases_held(&redis) >= 2 && generate_calls(&fake).await >= 2 },
    )
    .await;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    for stream in streams {
        let _ = stream.await;
    }
    while leases_held(&redis) > 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the dead replica's leases outlived their TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired_after = killed.elapsed();
    assert!(
        expired_after > Duration::from_secs(5),
        "expired by TTL, not released ({expired_after:?})"
    );
    eprintln!("the dead replica's leases expired {expired_after:?} after the kill");
    let answer = chat(&survivor.base).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

async fn chat_in_session(base: &str, session: &str) -> Answer {
    chat_with(base, "hello", Some(session)).await
}

/// A conversation (`x-aiproxy-session`) lands on the same account whichever replica it
/// reaches: affinity is rendezvous hashing over the healthy accounts, and the replicas
/// agree on which those are (their health is shared), so no per-session state is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_account_on_every_replica() {
    let redis = RedisServer::start();
    let fakes = [Fake::start(), Fake::start(), Fake::start()];
    let (pools, state) = pool_file(&[
        ("acct-a", &fakes[0], None),
        ("acct-b", &fakes[1], None),
        ("acct-c", &fakes[2], None),
    ]);
    let proxies: Vec<Proxy> = (0..3)
        .map(|_| pool_replica(&pools, &state, &redis))
        .collect();
    wait_shared(&proxies).await;
    let mut used = std::collections::BTreeSet::new();
    for session in 0..12 {
        let session = format!("conversation-{session}");
        let mut accounts = Vec::new();
        for proxy in &proxies {
            let answer = chat_in_session(&proxy.base, &session).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            accounts.push(
                answer.headers["x-aiproxy-account"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert!(
            accounts.iter().all(|a| *a == accounts[0]),
            "{session} went to {accounts:?}"
        );
        used.insert(accounts[0].clone());
    }
    assert!(
        used.len() > 1,
        "sessions spread over the accounts: {used:?}"
    );
}

/// Least-load weighs every replica's requests: with a stream held open on acct-a through
/// replica A, replica B sends its requests to acct-b (on its own counts the two accounts
/// look idle, and it would split them: ten in a row on acct-b by chance is 1 in 1024).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_load_counts_the_other_replicas_requests() {
    let redis = RedisServer::start();
    let slow = Fake {
        process: Proxy::start_fake(&["--event-delay-ms", "700"]),
    };
    let fast = Fake::start();
    let (pools, state) = pool_file(&[("acct-a", &slow, None), ("acct-b", &fast, None)]);
    let (a, b) = (
        pool_replica(&pools, &state, &redis),
        pool_replica(&pools, &state, &redis),
    );
    wait_shared(std::slice::from_ref(&a)).await;
    wait_shared(std::slice::from_ref(&b)).await;
    // Requests through A until one is held on the slow account (A itself then sends the
    // rest to acct-b: least-load).
    let mut held = Vec::new();
    while instance(&a.base, "acct-a").await["in_flight"]
        .as_u64()
        .unwrap()
        < 1
    {
        assert!(held.len() < 40, "nothing stays on the slow account");
        let base = a.base.clone();
        held.push(tokio::spawn(async move { chat(&base).await }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // B hears of them within two sharing rounds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        let answer = chat(&b.base).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            answer.headers["x-aiproxy-account"], "acct-b",
            "B sent a request to the account A keeps busy"
        );
    }
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
}

/// A login signed in again under the same name (its credential file replaced while the
/// replica was down) is the new login, not the old one's newer tokens from Redis: the new
/// refresh token is refreshed (a second refresh call), and Redis takes its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sign_in_under_the_same_name_is_not_overridden_from_redis() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let copies = login_copies(1);
    let first = replica_on(&fake, &redis, &copies[0]);
    wait_shared(std::slice::from_ref(&first)).await;
    assert_eq!(chat(&first.base).await.status, 200);
    one_refresh_so_far(&fake, "the first login refreshed").await;
    let old_rotated = refresh_token_in(&copies[0]);
    drop(first);

    let new_login = format!("rt-relogin-{}", uuid::Uuid::new_v4());
    common::fake::write_json(
        copies[0].parent().unwrap(),
        "creds.json",
        &serde_json::json!({"refreshToken": new_login, "authMethod": "social"}),
    );
    let second = replica_on(&fake, &redis, &copies[0]);
    wait_shared(std::slice::from_ref(&second)).await;
    let answer = chat(&second.base).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let stats = fake.stats().await;
    assert_eq!(
        stats["refresh_calls"], 2,
        "the new login was refreshed: {stats}"
    );
    assert_eq!(stats["invalid_grants"], 0, "{stats}");
    let now = refresh_token_in(&copies[0]);
    assert!(
        now != old_rotated && now != new_login,
        "the new login's rotation: {now}"
    );
    let shared = redis_cli(&redis, &["--scan", "--pattern", "test:tok:*"]);
    let key = shared
        .lines()
        .find(|k| !k.ends_with(":lock"))
        .unwrap()
        .to_owned();
    let in_redis = redis_cli(&redis, &["GET", &key]);
    assert!(in_redis.contains(&now), "Redis has the new login's tokens");
}

async fn round_trips(proxy: &Proxy) -> u64 {
    get_json(&proxy.base, "/health").await["shared_state"]["round_trips"]
        .as_u64()
        .unwrap()
}

/// With a client limit on requests and tokens and an account with its own
/// `maxConcurrency`, a request costs one round trip to Redis to be admitted (the limit and
/// the lease in one script) and one at its end (the lease given back with the token
/// settlement): two, where deciding each apart costs four. A refusal takes no lease, and
/// nothing reaches Kiro for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_costs_one_round_trip_to_admit_and_one_to_end() {
    let redis = RedisServer::start();
    let fake = Fake::start();
    let (pools, state) = pool_file(&[("acct", &fake, Some(4))]);
    let limits = [
        "--rate-limit-rpm",
        "1",
        "--rate-limit-burst",
        "21",
        "--rate-limit-tpm",
        "1000000",
    ];
    let proxy = pool_replica_with(&pools, &state, &redis, &limits);
    wait_shared(std::slice::from_ref(&proxy)).await;
    // The first request signs the account in (its refresh lock costs round trips of its own).
    assert_eq!(chat(&proxy.base).await.status, 200);
    let settled = || async { leases_held(&redis) == 0 };
    wait_for(
        Duration::from_secs(5),
        "the first lease given back",
        settled,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = round_trips(&proxy).await;
    let mut remaining = Vec::new();
    for _ in 0..20 {
        let answer = chat(&proxy.base).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        remaining.push(answer.headers["x-ratelimit-remaining-requests"].clone());
        assert!(answer.headers.contains_key("x-ratelimit-remaining-tokens"));
    }
    wait_for(Duration::from_secs(5), "every lease given back", settled).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spent = round_trips(&proxy).await - before;
    assert_eq!(
        spent, 40,
        "round trips for 20 requests (admission + end each)"
    );
    assert_eq!(remaining[0], "19");
    assert_eq!(remaining[19], "0");
    // The burst (21) is spent by now: the next one is refused by the same script, takes no
    // lease and costs Kiro nothing.
    let calls = generate_calls(&fake).await;
    let refused = chat(&proxy.base).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.text().contains("Rate limit reached for requests"));
    assert_eq!(generate_calls(&fake).await, calls);
    assert_eq!(leases_held(&redis), 0);
    // Tokens were settled with the usage at each end: the bucket holds less than the
    // estimates of 21 requests would, and it exists (it was charged in Redis).
    let tokens = redis_cli(&redis, &["KEYS", "test:rl:tok:*"]);
    assert!(!tokens.trim().is_empty(), "no token bucket in Redis");
}

/// A streamed Responses turn's last events leave only once the response is in Redis: with
/// Redis holding writes for 150 ms (`CLIENT PAUSE ... WRITE`; reads go on), the next turn,
/// sent to another replica the moment the stream ends, still finds it. (Before, the write
/// ran beside the last event and the next turn got a 404.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_turn_is_stored_before_its_last_event_leaves() {
    let fake = Fake::start();
    let redis = RedisServer::start();
    let proxies = replicas(&fake, &redis, 2, &[]);
    wait_shared(&proxies).await;
    redis_cli(&redis, &["CLIENT", "PAUSE", "150", "WRITE"]);
    let streamed = responses_call(
        &proxies[0].base,
        "POST",
        "/v1/responses",
        Some(serde_json::json!({
            "model": "claude-sonnet-4-5", "input": "my name is Ada", "stream": true
        })),
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let text = streamed.text();
    let completed = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "response.completed")
        .expect("a response.completed event");
    let id = completed["response"]["id"].as_str().unwrap().to_owned();
    let next = responses_call(
        &proxies[1].base,
        "POST",
        "/v1/responses",
        Some(serde_json::json!({
            "model": "claude-sonnet-4-5", "input": "what is my name?", "previous_response_id": id
        })),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text());
}

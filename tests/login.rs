//! `aiproxy login` and `aiproxy accounts` against `aiproxy fake-kiro`: the device flow of
//! Builder ID (pending, slow_down, denied, expired), the social sign-in through the local
//! callback and by the pasted address, and what a new user gets from it: a credential file
//! (or a pool entry) a started aiproxy serves from. Nothing a sign-in issues reaches the
//! terminal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{read_json, Fake};
use common::{hermetic_command, temp_dir, Proxy};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};

/// Runs `aiproxy login ARGS` to its end: exit code, stdout, stderr.
fn login(fake: &Fake, args: &[&str]) -> (i32, String, String) {
    let output = hermetic_command()
        .arg("login")
        .args([
            "--oidc-url",
            &fake.process.base,
            "--kiro-base-url",
            &fake.process.base,
            "--no-browser",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every secret a credential file holds.
fn secrets_of(credential: &Value) -> Vec<String> {
    ["accessToken", "refreshToken", "clientSecret"]
        .iter()
        .filter_map(|k| credential[*k].as_str().map(str::to_owned))
        .collect()
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[tokio::test]
async fn builder_id_device_flow_gives_a_new_user_a_working_proxy() {
    let fake = Fake::start();
    fake.control(
        "/__fake/device",
        json!({"answers": ["pending", "pending"], "interval": 0}),
    )
    .await;
    let dir = temp_dir("login-device");
    let creds = dir.join("creds.json");
    let (code, stdout, stderr) = login(&fake, &["--builder-id", "--out", creds.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("enter the code") && stdout.contains("/device?user_code="),
        "{stdout}"
    );
    assert!(
        stdout.contains("Signed in (BuilderId (us-east-1)), with its Kiro profile"),
        "{stdout}"
    );
    let credential = read_json(&creds);
    assert_eq!(credential["authMethod"], "IdC");
    assert_eq!(credential["provider"], "BuilderId");
    assert!(credential["profileArn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:codewhisperer:"));
    assert_private(&creds);
    for secret in secrets_of(&credential) {
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "a token reached the terminal"
        );
    }
    let stats = fake.stats().await;
    assert_eq!(stats["device_polls"], 3, "two pendings, then the approval");
    assert_eq!(stats["signins"], 1);

    // The README's start command, pointed at the fake: the proxy serves, and refreshes the
    // login's token at the OIDC endpoint with the client the login registered.
    let proxy = Proxy::start(
        &[
            "--model-provider",
            "kiro-api",
            "--kiro-oauth-creds-file",
            creds.to_str().unwrap(),
            "--kiro-base-url",
            &fake.process.base,
            "--kiro-idc-refresh-url",
            &fake.url("/token"),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
        &[],
    );
    let answer = common::post_json(&proxy.base, "/v1/chat/completions", &json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hello from a new login"}]})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "hello from a new login"
    );
    fake.expire_tokens().await;
    let answer = common::post_json(&proxy.base, "/v1/chat/completions", &json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "after a refresh"}]})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_ne!(
        read_json(&creds)["refreshToken"],
        credential["refreshToken"],
        "the rotated refresh token was written back"
    );
    assert_eq!(fake.stats().await["invalid_grants"], 0);
}

#[tokio::test]
async fn slow_down_is_honoured() {
    let fake = Fake::start();
    // The fake answers every poll sooner than the (grown) interval with slow_down again: a
    // client that did not add 5 s would poll until the code expired.
    fake.control(
        "/__fake/device",
        json!({"answers": ["slow_down"], "interval": 0}),
    )
    .await;
    let dir = temp_dir("login-slow");
    let creds = dir.join("creds.json");
    let (code, stdout, stderr) = login(&fake, &["--builder-id", "--out", creds.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        fake.stats().await["device_polls"],
        2,
        "slow_down, then (5 s later) the approval"
    );
}

#[tokio::test]
async fn denied_and_expired_codes_end_with_what_to_do() {
    let fake = Fake::start();
    let dir = temp_dir("login-denied");
    for (answer, says) in [
        ("denied", "denied in the browser"),
        ("expired", "expired before it was approved"),
    ] {
        fake.control(
            "/__fake/device",
            json!({"answers": [answer], "interval": 0}),
        )
        .await;
        let creds = dir.join(format!("{answer}.json"));
        let (code, stdout, stderr) =
            login(&fake, &["--builder-id", "--out", creds.to_str().unwrap()]);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("run it again"),
            "{stderr}"
        );
        assert!(!creds.exists(), "nothing is written for a failed sign-in");
    }
}

#[tokio::test]
async fn login_refuses_what_it_cannot_keep_before_anyone_signs_in() {
    let fake = Fake::start();
    let dir = temp_dir("login-refuse");
    let creds = dir.join("creds.json");
    std::fs::write(&creds, "{\"refreshToken\": \"precious\"}").unwrap();
    let (code, _, stderr) = login(&fake, &["--builder-id", "--out", creds.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("never overwrites a credential"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        "{\"refreshToken\": \"precious\"}"
    );
    let (code, _, stderr) = login(
        &fake,
        &[
            "--idc",
            "--start-url",
            "http://not-https",
            "--out",
            dir.join("x.json").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("not an https:// URL"), "{stderr}");
    assert_eq!(fake.stats().await["device_polls"], 0);
}

/// Starts `aiproxy login --social` and reads up to its sign-in link.
fn start_social(fake: &Fake, pool: &Path, name: &str) -> (Child, String, u16) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = hermetic_command()
        .args(["login", "--social", "--no-browser"])
        .args([
            "--signin-url",
            &fake.url("/signin"),
            "--auth-url",
            &fake.process.base,
        ])
        .args(["--callback-port", &port.to_string()])
        .args(["--pool", pool.to_str().unwrap(), "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut link = String::new();
    for _ in 0..5 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(start) = line.find("http") {
            link = line[start..].trim().to_owned();
            break;
        }
    }
    assert!(link.contains("/signin?state="), "no sign-in link: {link}");
    // The rest of stdout is read after the exit.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (child, link, port)
}

fn wait(child: Child) -> (i32, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn social_sign_in_through_the_local_callback_adds_a_pool_account() {
    let fake = Fake::start();
    let dir = temp_dir("login-social");
    let pool = dir.join("provider_pools.json");
    let (child, link, port) = start_social(&fake, &pool, "google-1");
    assert!(
        link.contains(&format!(
            "redirect_uri=http%3A%2F%2Flocalhost%3A{port}%2Foauth%2Fcallback"
        )),
        "{link}"
    );
    // The browser: Kiro's page sends it back to the local callback.
    let page = reqwest::get(&link).await.unwrap();
    assert!(page.text().await.unwrap().contains("sign-in received"));
    let (code, stderr) = wait(child);
    assert_eq!(code, 0, "{stderr}");
    let entry = &read_json(&pool)["kiro-api"][0];
    assert_eq!(entry["name"], "google-1");
    let creds = dir.join(entry["credsFile"].as_str().unwrap());
    assert_private(&creds);
    let credential = read_json(&creds);
    assert_eq!(credential["authMethod"], "social");
    assert!(credential["profileArn"].is_string());
    // The pool file is one aiproxy serves from.
    let proxy = Proxy::start(
        &[
            "--provider-pools-file",
            pool.to_str().unwrap(),
            "--kiro-base-url",
            &fake.process.base,
            "--kiro-refresh-url",
            &fake.url("/refreshToken"),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
        &[],
    );
    let answer = common::post_json(&proxy.base, "/v1/messages", &json!({"model": "claude-sonnet-4", "max_tokens": 50, "messages": [{"role": "user", "content": "from google"}]})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-aiproxy-account"], "google-1");

    // `aiproxy accounts` reads it from the running proxy, then from the file once it stops.
    let listed = hermetic_command()
        .args(["accounts", "--url", &proxy.base, "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["accounts"][0]["name"], "google-1");
    assert_eq!(listed["accounts"][0]["state"], "healthy");
    assert_eq!(listed["accounts"][0]["requests"], 1);
    drop(proxy);
    let listed = hermetic_command()
        .args([
            "accounts",
            "--url",
            "http://127.0.0.1:9",
            "--pool",
            pool.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("pool file") && table.contains("google-1") && table.contains("social"),
        "{table}"
    );
    for secret in secrets_of(&credential) {
        assert!(!table.contains(&secret));
    }
}

#[tokio::test]
async fn social_sign_in_by_the_pasted_address() {
    let fake = Fake::start();
    let dir = temp_dir("login-paste");
    let pool = dir.join("pool.json");
    let (mut child, link, _) = start_social(&fake, &pool, "remote-1");
    // On a machine without a browser: the sign-in happens elsewhere, and the address the
    // browser ends on (which does not load there) is pasted back.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = no_redirects.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 302);
    let location = page.headers()["location"].to_str().unwrap().to_owned();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    let (code, stderr) = wait(child);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_json(&pool)["kiro-api"][0]["name"], "remote-1");

    // An address from another sign-in is refused, saying what to paste.
    let (mut child, _, _) = start_social(&fake, &dir.join("other.json"), "remote-2");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    let (code, stderr) = wait(child);
    assert_eq!(code, 1);
    assert!(stderr.contains("belongs to another sign-in"), "{stderr}");
}

//! What an operator does around the server, against the built binary: `HEAD` on every `GET`
//! route (monitoring probes and load balancers send it), `aiproxy check-config` on good and
//! broken files, and the completion scripts and man page made from the one CLI definition.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{hermetic_command, post_json, send, temp_dir, Proxy};
use http_body_util::Full;
use serde_json::json;

async fn call(method: &str, url: &str) -> common::Answer {
    send(
        http::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn head_answers_every_get_route_like_get_without_a_body() {
    let proxy = Proxy::start(&["--kiro-mock-mode"], &[]);
    let stored = post_json(
        &proxy.base,
        "/v1/responses",
        &json!({"model": "claude-sonnet-4-5", "input": "store me"}),
    )
    .await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    let id = stored.json()["id"].as_str().unwrap().to_owned();
    let routes = [
        "/health".to_owned(),
        "/metrics".to_owned(),
        "/loadbalancer/instances".to_owned(),
        "/v1/models".to_owned(),
        "/v1/models/claude-sonnet-4-5".to_owned(),
        format!("/v1/responses/{id}"),
        format!("/v1/responses/{id}/input_items"),
        "/v1/models/no-such-model".to_owned(),
    ];
    for route in &routes {
        let url = format!("{}{route}", proxy.base);
        let get = call("GET", &url).await;
        let head = call("HEAD", &url).await;
        assert_eq!(head.status, get.status, "HEAD {route}");
        assert!(head.body.is_empty(), "HEAD {route} sent a body");
        for name in ["content-type", "x-request-id"] {
            assert_eq!(
                head.headers.get(name).is_some(),
                get.headers.get(name).is_some(),
                "HEAD {route}: {name}"
            );
        }
        assert_eq!(
            head.headers.get("content-type"),
            get.headers.get("content-type"),
            "HEAD {route}"
        );
        // The length a GET body would have (the metrics text changes between two reads).
        if route != "/metrics" {
            assert_eq!(
                head.headers.get("content-length"),
                get.headers.get("content-length"),
                "HEAD {route}"
            );
        }
    }
    // A 405 names HEAD beside GET.
    let refused = call("POST", &format!("{}/v1/models", proxy.base)).await;
    assert_eq!(refused.status, 405);
    assert_eq!(refused.headers["allow"], "GET, HEAD");
    let refused = call("PUT", &format!("{}/v1/responses/{id}", proxy.base)).await;
    assert_eq!(refused.headers["allow"], "GET, HEAD, DELETE");
}

/// Runs `aiproxy ARGS` to its end: (exit code, stdout).
fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut command = hermetic_command();
    command.args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn check_config_reports_what_it_resolved_and_exits_0_on_good_files() {
    let dir = temp_dir("check-config");
    let creds = dir.join("creds.json");
    std::fs::write(
        &creds,
        json!({"accessToken": "access-secret-1", "refreshToken": "refresh-secret-1",
               "expiresAt": "2099-01-01T00:00:00Z", "authMethod": "social",
               "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/P"})
        .to_string(),
    )
    .unwrap();
    let pools = dir.join("pools.json");
    std::fs::write(
        &pools,
        json!({"kiro-api": [{"name": "acct-a", "credsFile": creds}, {"name": "acct-b",
               "credsFile": creds, "weight": 3}]})
        .to_string(),
    )
    .unwrap();
    let config = dir.join("aiproxy.toml");
    std::fs::write(
        &config,
        "api_keys = [\"client-secret-1\"]\n[server]\nport = 4100\n[pool]\nmax_retries = 2\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // Flags on both sides of the word, and the environment, as `serve` takes them.
    let (code, out) = run(
        &[
            "--config",
            config,
            "check-config",
            "--provider-pools-file",
            pools.to_str().unwrap(),
        ],
        &[("AIPROXY_HOST", "0.0.0.0")],
    );
    assert_eq!(code, 0, "{out}");
    for line in [
        &format!("configuration file: {config}"),
        "listen = 0.0.0.0:4100",
        "max_retries = 2",
        "api_keys = set (1)",
        "kiro_oauth_creds_base64 = not set",
        "accounts (live):",
        "acct-a: healthy, weight 1",
        "acct-b: healthy, weight 3",
        "no problems",
    ] {
        assert!(out.contains(line), "`{line}` missing from\n{out}");
    }
    for secret in ["client-secret-1", "access-secret-1", "refresh-secret-1"] {
        assert!(!out.contains(secret), "a secret is printed:\n{out}");
    }
    // Nothing listens: the check is over before anything could.
    assert!(!out.contains("listening"), "{out}");
}

#[test]
fn check_config_names_the_file_and_field_of_each_problem_and_exits_1() {
    let dir = temp_dir("check-config-broken");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "[server]\nport = \"eighty\"\n").unwrap();
    let (code, out) = run(
        &["check-config", "--config", bad_toml.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("problem: config file {}", bad_toml.display()))
            && out.contains("port"),
        "{out}"
    );

    let misplaced = dir.join("misplaced.toml");
    std::fs::write(&misplaced, "idle_timeout = 5\n").unwrap();
    let (code, out) = run(
        &["check-config", "--config", misplaced.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`idle_timeout` belongs in the [server] section"),
        "{out}"
    );

    let (code, out) = run(
        &["check-config", "--kiro-mock-mode", "--idle-timeout", "0"],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--idle-timeout"), "{out}");

    // Every broken entry of a pool file, each with its index, name and field.
    let pools = dir.join("pools.json");
    std::fs::write(
        &pools,
        json!({"kiro-api": [
            {"name": "a", "credsFile": "/nonexistent/creds.json"},
            {"name": "b", "credentials": {"refreshToken": "r", "authMethod": "social"}, "weight": 0},
            {"name": "c", "credentials": {"refreshToken": "r", "authMethod": "social"},
             "baseUrl": "ftp://nowhere"}
        ]})
        .to_string(),
    )
    .unwrap();
    let (code, out) = run(
        &[
            "check-config",
            "--provider-pools-file",
            pools.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem:")).collect();
    assert_eq!(problems.len(), 3, "{out}");
    let file = pools.display().to_string();
    for (problem, (entry, field)) in problems.iter().zip([
        ("kiro-api[0] (a)", "/nonexistent/creds.json"),
        ("kiro-api[1] (b)", "weight"),
        ("kiro-api[2] (c)", "baseUrl"),
    ]) {
        assert!(
            problem.contains(&file) && problem.contains(entry) && problem.contains(field),
            "{problem}"
        );
    }

    // Mock mode, like the server, does not read the pool file.
    let (code, out) = run(
        &[
            "check-config",
            "--kiro-mock-mode",
            "--provider-pools-file",
            pools.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accounts (mock):"), "{out}");

    // No account at all is a problem too.
    let (code, out) = run(&["check-config"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("problem: no Kiro credentials found"), "{out}");
}

#[test]
fn completion_scripts_and_the_man_page_come_from_the_cli_definition() {
    let (code, bash) = run(&["completions", "bash"], &[]);
    assert_eq!(code, 0);
    assert!(bash.contains("--kiro-oauth-creds-file") && bash.contains("check-config"));
    let script = temp_dir("completions").join("aiproxy.bash");
    std::fs::write(&script, &bash).unwrap();
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(parsed.success(), "bash -n refused the completion script");
    for (shell, marker) in [
        ("zsh", "#compdef aiproxy"),
        ("fish", "complete -c aiproxy"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, script) = run(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("max-retries"), "{shell}");
    }
    let (code, page) = run(&["man"], &[]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH aiproxy 1"), "{page}");
    assert!(page.contains("\\-\\-pool\\-panic\\-threshold"), "{page}");
}

//! `kill -9` at random moments around a forced token refresh never loses the rotated refresh
//! token: after every cycle in which aiproxy had the refresh answer, the next start serves
//! requests (docs/kiro-protocol.md §3.5; `aiproxy fake-kiro` consumes refresh tokens on use, like
//! Kiro). A kill after the fake consumed the old token but before aiproxy could write the
//! new one anywhere cannot be saved by any client; those cycles are counted apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{read_json, write_json};
use common::{chat_body, temp_dir, Proxy};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const CYCLES: usize = 60;

/// One HTTP/1.0 exchange (no chunked framing to undo) on a fresh connection: (status, body). Status 0 when the server
/// went away before answering.
fn exchange(base: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut socket) = TcpStream::connect(base.trim_start_matches("http://")) else {
        return (0, String::new());
    };
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if socket.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn fake_stats(fake: &Proxy) -> Value {
    let (_, body) = exchange(&fake.base, "GET", "/__fake/stats", "");
    serde_json::from_str::<Value>(&body).unwrap()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Every refresh token on disk: the credential file's and its temp files'.
fn tokens_on_disk(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter_map(|value| value["refreshToken"].as_str().map(str::to_owned))
        .collect()
}

fn seed(creds: &Path) {
    let dir = creds.parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        std::fs::remove_file(entry.path()).unwrap();
    }
    write_json(
        dir,
        "creds.json",
        &json!({"refreshToken": format!("rt-crash-{}", uuid::Uuid::new_v4()), "authMethod": "social"}),
    );
}

#[test]
fn kill_9_around_a_forced_refresh_never_loses_the_rotated_token() {
    let fake = Proxy::start_fake(&[]);
    let dir = temp_dir("crash");
    let creds = dir.join("creds.json");
    seed(&creds);
    let (social, idc) = (
        format!("{}/refreshToken", fake.base),
        format!("{}/token", fake.base),
    );
    let creds_arg = creds.display().to_string();
    // A margin longer than the fake's token lifetime: every start refreshes on its first
    // request, rotating the refresh token.
    let args = [
        "--kiro-oauth-creds-file",
        &creds_arg,
        "--kiro-base-url",
        &fake.base,
        "--kiro-refresh-url",
        &social,
        "--kiro-idc-refresh-url",
        &idc,
        "--token-refresh-margin",
        "7200",
        // No model list read at start-up: the refresh must happen on the first request.
        "--models-refresh-interval",
        "0",
    ];
    let chat = chat_body("after a crash", false);

    // Calibration: how long after the request the rotated token is on disk, so the kills
    // are spread over the refresh and its write-back (and a little after).
    let proxy = Proxy::start(&args, &[]);
    let first = read_json(&creds)["refreshToken"].clone();
    let base = proxy.base.clone();
    let body = chat.clone();
    let started = Instant::now();
    let request =
        std::thread::spawn(move || exchange(&base, "POST", "/v1/chat/completions", &body));
    while std::fs::read(&creds)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_none_or(|v| v["refreshToken"] == first)
    {
        assert!(started.elapsed() < Duration::from_secs(20), "no write-back");
        std::thread::sleep(Duration::from_micros(20));
    }
    // Kills from 30 % of the way (the request is still being read before that) to 10 % past
    // the write-back.
    let written = started.elapsed();
    let (earliest, window) = (written.mul_f64(0.3), written.mul_f64(0.8));
    assert_eq!(request.join().unwrap().0, 200);
    drop(proxy);

    let (mut served, mut recovered, mut before_refresh, mut lost_in_flight) = (0, 0, 0, 0);
    // For each lost cycle: microseconds from the fake's answer to the kill.
    let mut lost_gaps_us: Vec<i64> = Vec::new();
    for cycle in 0..CYCLES {
        let token_before = read_json(&creds)["refreshToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let calls_before = fake_stats(&fake)["refresh_calls"].as_u64().unwrap();
        let mut proxy = Proxy::start(&args, &[]);
        let base = proxy.base.clone();
        let body = chat.clone();
        let request =
            std::thread::spawn(move || exchange(&base, "POST", "/v1/chat/completions", &body));
        let nanos = earliest.as_nanos() as u64
            + (uuid::Uuid::new_v4().as_u128() % window.as_nanos().max(1)) as u64;
        std::thread::sleep(Duration::from_nanos(nanos));
        let killed_at = now_us();
        proxy.child.kill().unwrap();
        proxy.child.wait().unwrap();
        let _ = request.join();
        let stats = fake_stats(&fake);
        let consumed = stats["refresh_calls"].as_u64().unwrap() > calls_before;
        let on_disk = tokens_on_disk(&dir);
        let saved = on_disk.iter().any(|t| *t != token_before);
        let orphaned = std::fs::read_dir(&dir).unwrap().count() > 1;

        let proxy = Proxy::start(&args, &[]);
        let (status, answer) = exchange(&proxy.base, "POST", "/v1/chat/completions", &chat);
        drop(proxy);
        if status == 200 {
            served += 1;
            recovered += usize::from(orphaned && saved);
            before_refresh += usize::from(!consumed);
            continue;
        }
        assert!(
            consumed && !saved,
            "cycle {cycle} (kill after {nanos} ns): the next start failed ({status} {answer}) \
             although the rotated token had reached the disk ({} token(s) there)",
            on_disk.len()
        );
        // The fake consumed the token, and nothing new reached the disk: the answer was
        // still on its way. No client can save this; start over with a fresh login.
        lost_in_flight += 1;
        let answered = stats["last_refresh_answered_us"].as_u64().unwrap();
        lost_gaps_us.push(
            killed_at.saturating_sub(answered) as i64 - answered.saturating_sub(killed_at) as i64,
        );
        seed(&creds);
    }
    eprintln!(
        "{CYCLES} kill -9 cycles from {earliest:?} to {:?} after the request: {served} restarts served \
         ({recovered} from an orphan temp file, {before_refresh} killed before the refresh), \
         {lost_in_flight} lost with the answer in flight (kill - answer, us: {lost_gaps_us:?})",
        earliest + window
    );
    assert_eq!(served + lost_in_flight, CYCLES);
    assert!(
        served > lost_in_flight,
        "most kills must be survivable ({served} served, {lost_in_flight} lost)"
    );
}

/// A symlinked credential file (the Kiro IDE's login linked into place) is written through:
/// the link stays a link and its target gets the rotated token, so the IDE is not locked out.
#[cfg(unix)]
#[test]
fn a_symlinked_credential_file_is_rotated_through_the_link() {
    let fake = Proxy::start_fake(&[]);
    let dir = temp_dir("symlink");
    let ide = dir.join("ide");
    std::fs::create_dir_all(&ide).unwrap();
    let target = write_json(
        &ide,
        "kiro-auth-token.json",
        &json!({"refreshToken": format!("rt-link-{}", uuid::Uuid::new_v4()), "authMethod": "social", "ideField": 1}),
    );
    let link = dir.join("creds.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let before = read_json(&target)["refreshToken"].clone();
    let (link_arg, social) = (
        link.display().to_string(),
        format!("{}/refreshToken", fake.base),
    );
    let proxy = Proxy::start(
        &[
            "--kiro-oauth-creds-file",
            &link_arg,
            "--kiro-base-url",
            &fake.base,
            "--kiro-refresh-url",
            &social,
        ],
        &[],
    );
    let (status, body) = exchange(
        &proxy.base,
        "POST",
        "/v1/chat/completions",
        &chat_body("hi", false),
    );
    assert_eq!(status, 200, "{body}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let after = read_json(&target);
    assert_ne!(
        after["refreshToken"], before,
        "the target holds the rotated token"
    );
    assert_eq!(after["ideField"], 1, "unknown fields kept");
    let mut names: Vec<String> = std::fs::read_dir(&ide)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".kiro-auth-token.json.lock", "kiro-auth-token.json"],
        "no temp file left; the rotation lock sits beside the target"
    );
}

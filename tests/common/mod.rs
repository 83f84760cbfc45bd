//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fake;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The URL of the next `WHAT listening on URL` line of a process's stdout; the line read
/// instead when it is not one.
fn next_listening(stdout: &mut BufReader<ChildStdout>, what: &str) -> Result<String, String> {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let prefix = format!("{what} listening on ");
    match line.trim().strip_prefix(prefix.as_str()) {
        Some(url) => Ok(url.to_owned()),
        None => Err(line),
    }
}

/// A started `aiproxy` binary, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub base: String,
    /// The rest of its stdout, where it announces its other listeners.
    stdout: BufReader<ChildStdout>,
}

impl Proxy {
    /// Starts the binary with `--port 0` plus `args`, with `envs`, and waits for its
    /// "listening" line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
        all.extend_from_slice(args);
        Self::spawn(&all, envs, "aiproxy")
    }

    /// Starts `aiproxy fake-kiro --port 0` plus `args`.
    pub fn start_fake(args: &[&str]) -> Self {
        let mut all = vec!["fake-kiro", "--port", "0"];
        all.extend_from_slice(args);
        Self::spawn(&all, &[], "fake-kiro")
    }

    /// Like [`Proxy::start`], with the descriptor limit (soft, hard) set before exec.
    pub fn start_with_nofile(nofile: (u64, u64), args: &[&str], envs: &[(&str, &str)]) -> Self {
        let script = format!(
            "ulimit -Sn {} && ulimit -Hn {} && exec \"$0\" \"$@\"",
            nofile.0, nofile.1
        );
        let mut command = hermetic(Command::new("sh"));
        command
            .args(["-c", &script, env!("CARGO_BIN_EXE_aiproxy")])
            .args(["--host", "127.0.0.1", "--port", "0"]);
        Self::spawn_command(command, args, envs, "aiproxy")
    }

    fn spawn(args: &[&str], envs: &[(&str, &str)], what: &str) -> Self {
        Self::spawn_command(hermetic_command(), args, envs, what)
    }

    fn spawn_command(
        mut command: Command,
        args: &[&str],
        envs: &[(&str, &str)],
        what: &str,
    ) -> Self {
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn aiproxy");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let base = match next_listening(&mut stdout, what) {
            Ok(base) => base,
            Err(line) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "{what} did not start: {line:?} {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            }
        };
        Self {
            child,
            base,
            stdout,
        }
    }

    /// The URL of the next listener the process announced (`WHAT listening on URL`): the
    /// metrics port's, started with `--metrics-port 0` (a port picked beforehand and freed can
    /// be taken by another test before the process binds it).
    pub fn announced(&mut self, what: &str) -> String {
        next_listening(&mut self.stdout, what)
            .unwrap_or_else(|line| panic!("expected {what}'s listening line, got {line:?}"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the process and returns what it logged.
    pub fn kill_and_logs(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs()
    }

    /// What the exited process wrote to stderr.
    fn logs(&mut self) -> String {
        use std::io::Read;
        let mut logs = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut logs);
        }
        logs
    }

    /// Stops the process with SIGTERM (so its log writer flushes) and returns what it logged.
    pub fn stop_and_logs(&mut self) -> String {
        self.terminate();
        self.wait_exit(Duration::from_secs(20));
        self.logs()
    }

    /// Waits for exit with a deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "aiproxy did not exit in {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, without the developer's KIRO_*/AIPROXY_* variables and with a throw-away
/// HOME (so a real Kiro IDE login is never picked up).
pub fn hermetic_command() -> Command {
    hermetic(Command::new(env!("CARGO_BIN_EXE_aiproxy")))
}

/// `command` without the developer's KIRO_*/AIPROXY_*/OTEL_* variables and with a throw-away HOME.
pub fn hermetic(mut command: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("KIRO_")
            || key.starts_with("AIPROXY_")
            || key.starts_with("OTEL_")
            || key == "XDG_STATE_HOME"
        {
            command.env_remove(key.as_ref());
        }
    }
    command.env("HOME", temp_dir("home"));
    command
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aiproxy-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary to completion (for start-up failures).
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut command = hermetic_command();
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args);
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("aiproxy kept running; expected it to refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A plain HTTP/1.1 answer.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request over a socket.
pub async fn send(request: http::Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `POST {base}{path}` with a JSON body and the headers both APIs take.
pub async fn post_json(base: &str, path: &str, body: &serde_json::Value) -> Answer {
    send(
        http::Request::post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(Full::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// `GET {base}/metrics`, as text.
pub async fn metrics_text(base: &str) -> String {
    send(
        http::Request::get(format!("{base}/metrics"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .text()
}

/// `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

/// A chat completion request body.
pub fn chat_body(content: &str, stream: bool) -> String {
    serde_json::json!({
        "model": "claude-3-sonnet-20240229",
        "messages": [{"role": "user", "content": content}],
        "stream": stream
    })
    .to_string()
}

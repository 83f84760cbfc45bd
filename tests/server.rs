//! The `aiproxy` binary over real sockets: start-up, configuration precedence, HTTP/1.1 and
//! h2c, graceful shutdown with a stream in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{chat_body, run_to_exit, send, sse_data, Proxy};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::Write;
use std::time::Duration;

const MOCK: (&str, &str) = ("KIRO_MOCK_MODE", "true");

fn get(base: &str, path: &str, key: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("{base}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-model-provider", "kiro-api")
        .body(Full::default())
        .unwrap()
}

fn post_chat(base: &str, key: &str, body: String) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{base}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-model-provider", "kiro-api")
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

#[tokio::test]
async fn seed_flow_over_http1() {
    let proxy = Proxy::start(
        &["--model-provider", "kiro-api", "--api-key", "your-api-key"],
        &[MOCK],
    );
    let models = send(get(&proxy.base, "/v1/models", "your-api-key")).await;
    assert_eq!(models.status, 200);
    assert!(models.text().contains("claude-3-haiku-20240307"));

    let answer = send(post_chat(
        &proxy.base,
        "your-api-key",
        chat_body("Hello, Claude!", false),
    ))
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "Hello, Claude!"
    );

    let stream = send(post_chat(
        &proxy.base,
        "your-api-key",
        chat_body("Count from 1 to 5", true),
    ))
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(sse_data(&stream.text()).last().unwrap(), "[DONE]");

    assert_eq!(
        send(get(&proxy.base, "/v1/models", "wrong")).await.status,
        401
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let proxy = Proxy::start(&["--api-key", "k"], &[MOCK]);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client
        .request(get(&proxy.base, "/v1/models", "k"))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

/// The protocol is told from the first bytes however slowly they come: a preface in two
/// pieces is still h2c (the server answers with its SETTINGS frame), and an HTTP/1 request
/// whose first byte alone could begin the preface is still served as HTTP/1.
#[test]
fn the_protocol_is_told_from_first_bytes_that_come_in_pieces() {
    use std::io::Read;
    let proxy = Proxy::start(&[], &[MOCK]);
    let addr = proxy.base.trim_start_matches("http://").to_owned();
    let read_some = |socket: &mut std::net::TcpStream| {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buffer = vec![0u8; 4096];
        let n = socket.read(&mut buffer).unwrap();
        buffer.truncate(n);
        buffer
    };

    let mut h2 = std::net::TcpStream::connect(&addr).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // The rest of the preface, then an empty SETTINGS frame (length 0, type 4, stream 0).
    h2.write_all(b"\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    let answer = read_some(&mut h2);
    assert!(answer.len() >= 9, "{answer:?}");
    assert_eq!(answer[3], 4, "not an HTTP/2 SETTINGS frame: {answer:?}");

    let body = chat_body("hello", false);
    let request = format!(
        "OST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut h1 = std::net::TcpStream::connect(&addr).unwrap();
    h1.write_all(b"P").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    h1.write_all(request.as_bytes()).unwrap();
    let answer = String::from_utf8(read_some(&mut h1)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_0() {
    let mut proxy = Proxy::start(&["--kiro-mock-event-delay-ms", "80"], &[MOCK]);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(post_chat(
            &proxy.base,
            "",
            chat_body("one two three four five six seven eight", true),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("assistant"));

    proxy.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New connections are refused while the old stream keeps going.
    let refused = tokio::net::TcpStream::connect(proxy.base.trim_start_matches("http://")).await;
    assert!(refused.is_err(), "listener must be closed after SIGTERM");

    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        rest.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    let text = String::from_utf8(rest).unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]", "stream was cut: {text}");
    assert!(text.contains("eight"));
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_stream_still_open_when_the_grace_runs_out_ends_with_an_error_event() {
    for (path, anthropic) in [("/v1/chat/completions", false), ("/v1/messages", true)] {
        let mut proxy = Proxy::start(
            &[
                "--kiro-mock-event-delay-ms",
                "200",
                "--shutdown-timeout",
                "1",
            ],
            &[MOCK],
        );
        let words = vec!["word"; 60].join(" ");
        let body = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": true,
                                      "messages": [{"role": "user", "content": words}]});
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = http::Request::post(format!("{}{path}", proxy.base))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(Full::from(body.to_string()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let _first = body.frame().await.unwrap().unwrap();
        proxy.terminate();
        let mut rest = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => rest.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(error) => panic!("{path}: the stream was cut: {error}"),
            }
        }
        let text = String::from_utf8(rest).unwrap();
        // 60 words at 200 ms each outlast the 1 s grace: the answer is incomplete, and says so.
        assert!(text.contains("shutting down"), "{path}: {text}");
        if anthropic {
            assert!(text.contains("event: error"), "{text}");
        } else {
            let data = sse_data(&text);
            let error = data.iter().find(|d| d.contains("shutting down")).unwrap();
            let error: serde_json::Value = serde_json::from_str(error).unwrap();
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("retry"),
                "{error}"
            );
        }
        assert_eq!(proxy.wait_exit(Duration::from_secs(10)).code(), Some(0));
    }
}

#[test]
fn without_credentials_or_mock_mode_start_up_fails_with_a_hint() {
    let (code, stderr) = run_to_exit(&[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("KIRO_MOCK_MODE=true"), "{stderr}");
}

#[test]
fn bad_values_exit_2_naming_the_flag_or_key() {
    let (code, stderr) = run_to_exit(&["--log-format", "xml"], &[MOCK]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--log-format") && stderr.contains("json"),
        "{stderr}"
    );

    let (code, stderr) = run_to_exit(&[], &[MOCK, ("KIRO_MOCK_MODE", "perhaps")]);
    assert_eq!(code, 2, "{stderr}");

    let mut file = tempfile();
    writeln!(file.1, "[server]\nport = \"eighty\"").unwrap();
    let (code, stderr) = run_to_exit(&["--config", file.0.to_str().unwrap()], &[MOCK]);
    assert_eq!(code, 2);
    assert!(stderr.contains("port"), "{stderr}");
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("aiproxy-test-{}.toml", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[tokio::test]
async fn precedence_defaults_file_env_flags() {
    let (path, mut file) = tempfile();
    writeln!(
        file,
        "api_keys = [\"file-key\"]\n[kiro]\nkiro_mock_mode = true"
    )
    .unwrap();
    let config = path.to_str().unwrap();

    // File only: its key works, mock mode comes from the file.
    let proxy = Proxy::start(&["--config", config], &[]);
    assert_eq!(
        send(get(&proxy.base, "/v1/models", "file-key"))
            .await
            .status,
        200
    );
    drop(proxy);

    // Environment beats the file.
    let proxy = Proxy::start(&["--config", config], &[("AIPROXY_API_KEY", "env-1,env-2")]);
    assert_eq!(
        send(get(&proxy.base, "/v1/models", "env-2")).await.status,
        200
    );
    assert_eq!(
        send(get(&proxy.base, "/v1/models", "file-key"))
            .await
            .status,
        401
    );
    drop(proxy);

    // Flags beat the environment.
    let proxy = Proxy::start(
        &["--config", config, "--api-key", "flag-key"],
        &[("AIPROXY_API_KEY", "env-1")],
    );
    assert_eq!(
        send(get(&proxy.base, "/v1/models", "flag-key"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(get(&proxy.base, "/v1/models", "env-1")).await.status,
        401
    );
    drop(proxy);

    // Environment beats the file for mock mode too.
    let (code, _) = run_to_exit(&["--config", config], &[("KIRO_MOCK_MODE", "false")]);
    assert_eq!(code, 2);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn query_key_never_reaches_the_logs() {
    let mut proxy = Proxy::start(
        &["--api-key", "sekret-query-key"],
        &[MOCK, ("RUST_LOG", "debug")],
    );
    let answer = send(
        http::Request::get(format!("{}/v1/models?key=sekret-query-key", proxy.base))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let answer = send(get(&proxy.base, "/v1/models", "sekret-header-key")).await;
    assert_eq!(answer.status, 401);
    // SIGTERM, so the log writer flushes the request lines before the process ends.
    let logs = proxy.stop_and_logs();
    assert!(logs.contains("/v1/models"), "logging is on: {logs}");
    assert!(!logs.contains("sekret"), "a key leaked into the logs");
}

/// Serves the mock-mode pipeline in this process until `stop` fires, with a 1 s grace.
async fn in_process_server(
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (String, tokio::task::JoinHandle<()>) {
    let config = aiproxy::config::Config {
        kiro_mock_mode: true,
        kiro_mock_event_delay: Duration::from_millis(100),
        ..aiproxy::config::Config::default()
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = aiproxy::server::Limits {
        shutdown_grace: Duration::from_secs(1),
        ..aiproxy::server::Limits::default()
    };
    let served = tokio::spawn(aiproxy::server::serve(
        listener,
        pipeline,
        async move {
            let _ = stop.await;
        },
        limits,
    ));
    (base, served)
}

#[tokio::test]
async fn a_server_that_shut_down_does_not_end_the_streams_of_the_next_one() {
    // The first server shuts down while a stream is open: its grace ends that stream.
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (base, served) = in_process_server(stopped).await;
    let long: String = (0..40).map(|i| format!("w{i} ")).collect();
    let open = tokio::spawn(send(post_chat(&base, "", chat_body(&long, true))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let first = open.await.unwrap();
    assert!(
        first.text().contains("shutting down"),
        "the first server's grace ended its stream: {}",
        first.text()
    );
    served.await.unwrap();

    // The next server in the same process streams to the end as usual.
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (base, served) = in_process_server(stopped).await;
    let answer = send(post_chat(&base, "", chat_body("one two three", true))).await;
    let text = answer.text();
    assert!(!text.contains("shutting down"), "{text}");
    assert!(text.contains("[DONE]"), "{text}");
    stop.send(()).unwrap();
    served.await.unwrap();
}

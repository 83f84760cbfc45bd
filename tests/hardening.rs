//! The server against hostile and careless clients, over real sockets against the binary:
//! silent sockets cannot lock real clients out (with a lowered descriptor limit), trickled
//! headers and bodies and idle keep-alives are cut, a long stream is not, and the descriptor
//! limit is raised at start-up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{chat_body, send, sse_data, Proxy};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MOCK: (&str, &str) = ("KIRO_MOCK_MODE", "true");

fn addr(proxy: &Proxy) -> String {
    proxy.base.trim_start_matches("http://").to_owned()
}

fn chat_request(
    base: &str,
    content: &str,
    stream: bool,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::from(chat_body(content, stream)))
        .unwrap()
}

/// Reads until the server closes the socket; the bytes it sent first. Panics if the
/// server keeps it open past `patience` (a bound on a hang, not a timing assertion).
fn read_until_closed(socket: &mut TcpStream, patience: Duration) -> Vec<u8> {
    socket.set_read_timeout(Some(patience)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[tokio::test]
async fn silent_sockets_cannot_lock_out_a_real_client() {
    // 256 descriptors: the default cap is then 64 client connections.
    let mut proxy = Proxy::start_with_nofile((256, 256), &[], &[MOCK, ("RUST_LOG", "info")]);
    let target = addr(&proxy);
    // More silent sockets than the server has descriptors.
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&target).unwrap())
        .collect();
    let answer = send(chat_request(&proxy.base, "still served", false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "still served"
    );
    // The server made room by closing silent sockets (the oldest first).
    let mut closed = 0;
    for socket in silent.iter_mut().take(200) {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if matches!(socket.read(&mut [0u8; 1]), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 190,
        "only {closed} of the oldest 200 silent sockets were closed"
    );
    drop(silent);
    let logs = proxy.stop_and_logs();
    assert!(
        !logs.contains("accept failed"),
        "ran out of descriptors: {logs}"
    );
    assert!(logs.contains("max_client_connections=64"), "{logs}");
}

#[tokio::test]
async fn the_descriptor_limit_is_raised_to_the_hard_limit() {
    let mut proxy = Proxy::start_with_nofile((256, 4096), &[], &[MOCK, ("RUST_LOG", "info")]);
    let logs = proxy.stop_and_logs();
    assert!(
        logs.contains("before=256 after=4096"),
        "no or wrong descriptor-limit line: {logs}"
    );
}

#[test]
fn trickled_headers_are_cut_after_the_header_read_timeout() {
    let proxy = Proxy::start(&["--header-read-timeout", "1"], &[MOCK]);
    let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Never finished: the connection watchdog closes it (hyper has no HTTP/1 timer here,
    // so nothing is answered first).
    let sent = read_until_closed(&mut socket, Duration::from_secs(10));
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));

    // A connection that never sends a byte is closed too.
    let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
    assert!(read_until_closed(&mut socket, Duration::from_secs(10)).is_empty());
}

#[test]
fn idle_keep_alive_is_closed_after_the_idle_timeout_not_before() {
    let proxy = Proxy::start(
        &["--header-read-timeout", "1", "--idle-timeout", "3"],
        &[MOCK],
    );
    let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write_all(request).unwrap();
    let mut buffer = [0u8; 8192];
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = socket.read(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    // Idle longer than the header-read timeout, shorter than the idle timeout: still open.
    std::thread::sleep(Duration::from_millis(1500));
    socket.write_all(request).unwrap();
    let n = socket.read(&mut buffer).unwrap();
    assert!(
        String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"),
        "a keep-alive connection was cut by the header-read timeout"
    );
    // Then idle past the idle timeout: closed.
    assert!(read_until_closed(&mut socket, Duration::from_secs(10)).is_empty());
}

#[test]
fn a_trickled_body_gets_408_in_the_openai_shape() {
    let proxy = Proxy::start(&["--body-read-timeout", "1"], &[MOCK]);
    let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\"",
        )
        .unwrap();
    let answer = read_until_closed(&mut socket, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--body-read-timeout"));
}

#[tokio::test]
async fn a_long_stream_is_not_cut_by_the_client_timeouts() {
    // Ten events 400 ms apart: four seconds, longer than every client timeout here.
    let proxy = Proxy::start(
        &[
            "--header-read-timeout",
            "1",
            "--idle-timeout",
            "1",
            "--body-read-timeout",
            "1",
            "--kiro-mock-event-delay-ms",
            "400",
        ],
        &[MOCK],
    );
    let answer = send(chat_request(
        &proxy.base,
        "one two three four five six seven eight nine ten",
        true,
    ))
    .await;
    assert_eq!(answer.status, 200);
    let data = sse_data(&answer.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let proxy = Proxy::start(&["--max-body-bytes", "1024"], &[MOCK]);
    let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
    socket
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    // Not a byte of the 10 MB follows: the answer comes anyway.
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = socket.read(&mut buffer).unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
}

fn preflight(base: &str, origin: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::options(format!("{base}/v1/chat/completions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .body(http_body_util::Full::default())
        .unwrap()
}

#[tokio::test]
async fn browsers_from_allowed_origins_pass_cors_and_others_do_not() {
    let proxy = Proxy::start(
        &[
            "--api-key",
            "k",
            "--cors-allow-origin",
            "https://app.example.com,http://localhost:5173",
        ],
        &[MOCK],
    );
    // The preflight carries no key (browsers never send one there) and is answered.
    let answer = send(preflight(&proxy.base, "https://app.example.com")).await;
    assert_eq!(answer.status, 204, "{}", answer.text());
    let header = |answer: &common::Answer, name: &str| {
        answer
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&answer, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let methods = header(&answer, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&answer, "access-control-allow-headers").unwrap();
    assert!(allowed.contains("x-stainless-os"), "{allowed}");
    // The real request still needs its key, and carries the CORS headers.
    let mut request = chat_request(&proxy.base, "from a browser", false);
    request
        .headers_mut()
        .insert("origin", "http://localhost:5173".parse().unwrap());
    assert_eq!(send(request).await.status, 401);
    let mut request = chat_request(&proxy.base, "from a browser", false);
    request
        .headers_mut()
        .insert("origin", "http://localhost:5173".parse().unwrap());
    request
        .headers_mut()
        .insert("authorization", "Bearer k".parse().unwrap());
    let answer = send(request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        header(&answer, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );
    // Another origin gets no CORS headers, so the browser refuses the answer.
    let answer = send(preflight(&proxy.base, "https://evil.example")).await;
    assert!(header(&answer, "access-control-allow-origin").is_none());

    // Without --cors-allow-origin there is no CORS at all: the preflight needs a key.
    let closed = Proxy::start(&["--api-key", "k"], &[MOCK]);
    let answer = send(preflight(&closed.base, "https://app.example.com")).await;
    assert_eq!(answer.status, 401);
    assert!(header(&answer, "access-control-allow-origin").is_none());
}

#[test]
fn a_cors_origin_that_is_not_an_origin_is_refused_at_start_up() {
    let (code, stderr) = common::run_to_exit(
        &["--cors-allow-origin", "https://app.example.com/path"],
        &[MOCK],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--cors-allow-origin") && stderr.contains("is not an origin"),
        "{stderr}"
    );
}

#[test]
fn requests_hyper_refuses_get_an_error_body_that_says_why() {
    let proxy = Proxy::start(&[], &[MOCK]);
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases = [
        (huge_header, "431", "request_header_fields_too_large"),
        (many_headers, "431", "request_header_fields_too_large"),
        ("GARBAGE\r\n\r\n".to_owned(), "400", "malformed_http"),
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
                .to_owned(),
            "400",
            "malformed_http",
        ),
    ];
    for (request, status, code) in cases {
        let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let answer =
            String::from_utf8(read_until_closed(&mut socket, Duration::from_secs(10))).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], code, "{body}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 40);
    }
    // Served requests on the same server are untouched.
    let mut socket = TcpStream::connect(addr(&proxy)).unwrap();
    socket
        .write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer =
        String::from_utf8(read_until_closed(&mut socket, Duration::from_secs(10))).unwrap();
    assert!(answer.contains("unknown_endpoint"), "{answer}");
}

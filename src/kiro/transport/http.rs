//! The live transport: a pooled HTTPS client (rustls; HTTP/2 by ALPN, else HTTP/1.1),
//! IDE-persona headers (docs/kiro-protocol.md §4.1), and timeouts on connect + first bytes and on
//! the idle gap between chunks, never on the length of a stream. (The bound on concurrent
//! requests is the account's, in [`crate::kiro::KiroService`]'s `poll_ready`.)
//!
//! The chat path uses hyper-util's pooled client directly: reqwest (kept for the rare token
//! refreshes) re-parses the URL, merges headers and wraps every response on each call, which
//! was about a tenth of the proxy's CPU per request at saturation.

use crate::chat::ChatError;
use crate::kiro::auth::account::{describe_failure, root_cause, AccessToken, KIRO_VERSION};
use crate::kiro::protocol::stream::ByteStream;
use crate::kiro::transport::egress::{Connector, EgressProxy};
use crate::kiro::transport::trust::KiroTrust;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyDataStream, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Node/OS strings of the Kiro IDE user agent.
const UA_OS: &str = "darwin#24.6.0";
const UA_NODE: &str = "22.21.1";
const SDK_VERSION: &str = "1.0.34";

/// An upstream answer with its body still streaming.
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body chunks.
    pub body: ByteStream,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<Connector>, Full<Bytes>>;

/// The read buffer of an HTTP/1 connection to Kiro. Its answers are event-stream frames of
/// a few hundred bytes; hyper's adaptive buffer starts at 8 KiB per read, and a stream
/// holds a head read and a body read, so 1000 concurrent streams held ~16 MiB of read
/// buffers where 4 KiB reads hold half (a larger frame takes more than one read).
const UPSTREAM_READ_BYTES: usize = 4096;

/// An account's pooled chat client (each account has its own: see `Accounts`).
#[derive(Clone, Debug)]
pub struct HttpUpstream {
    client: HttpsClient,
    timeout: Duration,
}

impl HttpUpstream {
    /// `max_connections` bounds idle pooled connections per host; `timeout` bounds connect +
    /// first bytes, and each idle gap of a stream; `egress` is the proxy to dial through;
    /// `trust` the authorities its TLS accepts.
    pub fn new(
        max_connections: usize,
        timeout: Duration,
        egress: Option<&EgressProxy>,
        trust: &KiroTrust,
    ) -> Result<Self, String> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        tcp.enforce_http(false);
        let connector = match egress {
            Some(proxy) => proxy.connector(tcp),
            None => Connector::Direct(tcp),
        };
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(trust.tls_config()?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .http1_read_buf_exact_size(UPSTREAM_READ_BYTES)
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(tls);
        Ok(Self { client, timeout })
    }

    /// Builds the reqwest client of the token refreshes and REST calls (through `egress`
    /// when set; an unusable proxy is an error that names only its address), trusting
    /// `trust`'s authorities.
    pub fn client(
        max_connections: usize,
        timeout: Duration,
        egress: Option<&EgressProxy>,
        trust: &KiroTrust,
    ) -> Result<reqwest::Client, String> {
        let mut builder = trust.apply(reqwest::Client::builder())?;
        if let Some(proxy) = egress {
            builder = builder.proxy(proxy.reqwest()?);
        }
        builder
            .use_rustls_tls()
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            // Kiro answers in place; following a redirect would resend the refresh token to
            // wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// Sends one POST. The request is handed to the client before the future is made, so the
    /// future (room in every waiting request) holds the client's call, not its arguments
    /// and a copy of them beside it.
    pub fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl Future<Output = Result<UpstreamResponse, ChatError>> + Send + 'static {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        let send = tokio::time::timeout_at(deadline, self.client.request(request));
        async move { answer(send.await, uri, timeout, deadline) }
    }
}

/// The client's answer to [`HttpUpstream::post`], or what went wrong, in the model tier's terms.
fn answer(
    sent: Result<
        Result<Response<Incoming>, hyper_util::client::legacy::Error>,
        tokio::time::error::Elapsed,
    >,
    uri: Uri,
    timeout: Duration,
    deadline: Instant,
) -> Result<UpstreamResponse, ChatError> {
    let response = sent
        .map_err(|_| ChatError::Timeout {
            message: format!(
                "Kiro did not answer within {}s (--request-timeout)",
                timeout.as_secs()
            ),
        })?
        .map_err(|e| ChatError::Upstream {
            message: describe_client_error(&e, &uri),
        })?;
    let (parts, body) = response.into_parts();
    let chunks = BodyDataStream::new(body).map(move |chunk| {
        chunk.map_err(|e| {
            let cause = Some(root_cause(&e));
            std::io::Error::other(describe_failure(
                "broken response body",
                &host_of(&uri),
                cause,
            ))
        })
    });
    let body = TimedStream {
        inner: Box::pin(chunks),
        idle: timeout,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
        last: None,
    };
    Ok(UpstreamResponse {
        status: parts.status,
        headers: parts.headers,
        body: Box::pin(body),
    })
}

/// `cannot connect (host:port): connection refused`, worded like the refresh errors
/// (`describe_reqwest`).
fn describe_client_error(error: &hyper_util::client::legacy::Error, uri: &Uri) -> String {
    let kind = if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    describe_failure(kind, &host_of(uri), Some(root_cause(error)))
}

fn host_of(uri: &Uri) -> String {
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    format!("{}:{port}", uri.host().unwrap_or_default())
}

/// The Kiro IDE request headers of one account. The constant part (user agents with the
/// machine id) is built once; each call only adds its invocation id and bearer token.
#[derive(Clone, Debug)]
pub struct IdeHeaders {
    base: HeaderMap,
}

impl IdeHeaders {
    /// Headers for the account with this machine id.
    pub fn new(machine_id: &str) -> Self {
        let mut base = HeaderMap::with_capacity(12);
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                base.insert(name, value);
            }
        };
        put("content-type", "application/json".into());
        put("accept", "application/json".into());
        put("amz-sdk-request", "attempt=1; max=3".into());
        put("x-amzn-codewhisperer-optout", "true".into());
        put("x-amzn-kiro-agent-mode", "vibe".into());
        put(
            "x-amz-user-agent",
            format!("aws-sdk-js/{SDK_VERSION} KiroIDE-{KIRO_VERSION}-{machine_id}"),
        );
        put(
            "user-agent",
            format!(
                "aws-sdk-js/{SDK_VERSION} ua/2.1 os/{UA_OS} lang/js md/nodejs#{UA_NODE} \
                 api/codewhispererstreaming#{SDK_VERSION} m/E KiroIDE-{KIRO_VERSION}-{machine_id}"
            ),
        );
        Self { base }
    }

    /// The headers of one call with `token` (every account, mock ones too, has one).
    pub fn for_call(&self, token: &AccessToken) -> HeaderMap {
        let mut headers = self.base.clone();
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
        if let Ok(id) = HeaderValue::from_str(id) {
            headers.insert(INVOCATION_ID, id);
        }
        // Built in place: one buffer, no `format!` and copy.
        let secret = token.token.expose();
        let mut bearer = bytes::BytesMut::with_capacity(7 + secret.len());
        bearer.extend_from_slice(b"Bearer ");
        bearer.extend_from_slice(secret.as_bytes());
        if let Ok(mut value) = HeaderValue::from_maybe_shared(bearer.freeze()) {
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        if let Some(kind) = token.token_type {
            headers.insert(TOKEN_TYPE, HeaderValue::from_static(kind));
        }
        headers
    }
}

// Names as constants: inserting by `&str` copies a non-standard name into a new buffer.
const INVOCATION_ID: HeaderName = HeaderName::from_static("amz-sdk-invocation-id");
const TOKEN_TYPE: HeaderName = HeaderName::from_static("tokentype");

/// A body stream with a deadline for the first chunk and an idle timeout after it.
///
/// The timer is moved only when it fires (to the last chunk's time plus the idle timeout,
/// when that is still ahead): moving it on every chunk re-registered it with the runtime's
/// timer wheel once per streamed event.
struct TimedStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    /// When the last chunk came.
    last: Option<Instant>,
}

impl Stream for TimedStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let idle = self.idle;
        if let Poll::Ready(item) = self.inner.as_mut().poll_next(cx) {
            let now = Instant::now();
            if self.last.is_none() && self.sleep.deadline() > now + idle {
                // The first chunk came with time to spare: idle timeouts from here on.
                self.sleep.as_mut().reset(now + idle);
            }
            self.last = Some(now);
            return Poll::Ready(item);
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let idle_until = self.last.map(|last| last + idle);
            if let Some(until) = idle_until.filter(|&until| until > Instant::now()) {
                self.sleep.as_mut().reset(until);
                continue;
            }
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no data from Kiro for {}s (--request-timeout)",
                    idle.as_secs()
                ),
            ))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks at these times (from the start), then nothing more (a stalled body).
    fn timed(at_ms: &'static [u64], idle: Duration) -> (TimedStream, Instant) {
        let start = Instant::now();
        let chunks = futures_util::stream::unfold(0, move |i| async move {
            match at_ms.get(i) {
                Some(&at) => {
                    tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                    Some((Ok(Bytes::from_static(b"chunk")), i + 1))
                }
                None => std::future::pending().await,
            }
        });
        let stream = TimedStream {
            inner: Box::pin(chunks),
            idle,
            sleep: Box::pin(tokio::time::sleep_until(start + idle)),
            last: None,
        };
        (stream, start)
    }

    /// When each chunk came and when the body timed out, in ms from the start.
    async fn run(mut stream: TimedStream, start: Instant) -> (Vec<u128>, u128) {
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            let at = (Instant::now() - start).as_millis();
            match item {
                Ok(_) => chunks.push(at),
                Err(error) => {
                    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
                    assert_eq!(
                        error.to_string(),
                        "no data from Kiro for 1s (--request-timeout)"
                    );
                    return (chunks, at);
                }
            }
        }
        panic!("the stalled body ended without a timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_the_last_chunk_not_the_first_deadline() {
        // Gaps of 600 ms, under the 1 s timeout, past the first chunk's deadline (1 s).
        let (stream, start) = timed(&[600, 1200, 1800], Duration::from_secs(1));
        let (chunks, timed_out) = run(stream, start).await;
        assert_eq!(chunks, [600, 1200, 1800]);
        assert_eq!(timed_out, 2800);
    }

    #[tokio::test(start_paused = true)]
    async fn no_first_chunk_times_out_at_its_deadline() {
        let (stream, start) = timed(&[], Duration::from_secs(1));
        assert_eq!(run(stream, start).await, (vec![], 1000));
        // A first chunk just in time, then a stall.
        let (stream, start) = timed(&[999], Duration::from_secs(1));
        assert_eq!(run(stream, start).await, (vec![999], 1999));
    }
}

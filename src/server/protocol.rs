//! Which HTTP a client speaks (HTTP/1.1, or h2c with prior knowledge; over TLS, what ALPN
//! chose), and its connection served by hyper.
//!
//! hyper-util's `auto` builder tells them apart by reading the first 24 bytes and handing
//! them back to hyper on its first read. hyper then sees a partial head, reads again
//! wanting 8 KiB free after those 24 bytes, and its read buffer doubles: every HTTP/1
//! connection held a 16 KiB read buffer (16 MiB for 1000 open streams). Peeking instead
//! leaves the bytes in the socket, so hyper's first read takes the head into its 8 KiB
//! buffer.

use super::error_bodies::ErrorBodies;
use super::{BoxError, ResponseBody, H2_PING, H2_PING_TIMEOUT, MAX_HEADER_BYTES};
use futures_util::TryFutureExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// What an h2c client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait for more of a preface that has only begun (peeking returns at once
/// while bytes wait in the socket, so it cannot wait for more by itself).
const PREFACE_PAUSE: Duration = Duration::from_millis(5);

/// The protocol of a connection, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Peeks until the first bytes leave the h2c preface (HTTP/1) or complete it (h2c); a
/// connection closed before sending anything is HTTP/1's to end.
async fn sniff(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        tokio::time::sleep(PREFACE_PAUSE).await;
    }
}

/// A hyper service a connection can be served with (the server's service, wrapped).
pub(super) trait Hyper<B: ResponseBody>:
    HttpService<Incoming, ResBody = B, Future: Send + 'static, Error: Into<BoxError>> + Send + 'static
{
}

impl<S, B: ResponseBody> Hyper<B> for S where
    S: HttpService<Incoming, ResBody = B, Future: Send + 'static, Error: Into<BoxError>>
        + Send
        + 'static
{
}

/// The connection settings of both protocols, and the TLS of the listener if it has one.
#[derive(Clone)]
pub(super) struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

impl Builders {
    /// `h2_max_streams` is HTTP/2's concurrent streams per connection.
    pub(super) fn new(h2_max_streams: u32, tls: Option<TlsAcceptor>) -> Self {
        let mut http1 = http1::Builder::new();
        // No HTTP/1 timer: hyper's header-read timeout would also run while a keep-alive
        // connection waits for its next request, cutting it after the header-read timeout
        // instead of the idle timeout. The connection watchdog in `serve` times both.
        // The head's own bound: the buffer's alone is not one (a read may fill more than
        // the buffer was asked to grow by, so a head past it could still be parsed whole).
        http1
            .max_header_size(MAX_HEADER_BYTES)
            .max_buf_size(MAX_HEADER_BYTES.max(8192));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(h2_max_streams)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .keep_alive_interval(H2_PING)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Self { http1, http2, tls }
    }

    /// Serves `stream` with `service` in the protocol it speaks (over TLS first when the
    /// listener has it), watched by `watcher` for the graceful shutdown.
    ///
    /// This future is room in every connection's task for the connection's whole life, so
    /// it holds no more than it must: the TLS handshake and stream (a rustls connection,
    /// kilobytes) are boxed on their own, and the connection hyper serves is boxed as soon
    /// as it is built (with the task's own fix in `super`, a plain connection's task went
    /// from 6.9 to 1.5 KiB; see the test there).
    pub(super) async fn serve<S, B>(
        self: Arc<Self>,
        stream: TcpStream,
        service: S,
        watcher: Watcher,
    ) -> Result<(), BoxError>
    where
        S: Hyper<B>,
        B: ResponseBody,
    {
        match &self.tls {
            None => {
                let protocol = sniff(&stream).await?;
                self.connection(stream, protocol, service, watcher).await
            }
            Some(acceptor) => {
                Box::pin(async {
                    let stream = acceptor.accept(stream).await?;
                    let protocol = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    self.connection(stream, protocol, service, watcher).await
                })
                .await
            }
        }
    }

    /// The connection hyper serves, boxed (each protocol's is then its own size, and the
    /// caller's future holds a pointer, not room for the larger).
    fn connection<IO, S, B>(
        &self,
        io: IO,
        protocol: Protocol,
        service: S,
        watcher: Watcher,
    ) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Hyper<B>,
        B: ResponseBody,
    {
        let io = TokioIo::new(ErrorBodies::new(io));
        match protocol {
            Protocol::Http1 => Box::pin(
                watcher
                    .watch(self.http1.serve_connection(io, service))
                    .map_err(BoxError::from),
            ),
            Protocol::Http2 => Box::pin(
                watcher
                    .watch(self.http2.serve_connection(io, service))
                    .map_err(BoxError::from),
            ),
        }
    }
}

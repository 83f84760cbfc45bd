//! `aiproxy fake-kiro`: the fake on a loopback socket, for tests, demos and benchmarks.
//! Served by the same accept loop as aiproxy itself ([`crate::server::serve`]).

use super::FakeKiro;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};

type Body = crate::server::tracked::IdleTimeoutBody<Incoming>;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body the fake reads (Kiro's own limit is far lower; see `MAX_WEIGHTED_PAYLOAD`).
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// In-flight fake streams get this long to finish at shutdown.
const GRACE: Duration = Duration::from_secs(5);

type ChunkResult = Result<Frame<Bytes>, std::io::Error>;
type FakeBody = Either<
    StreamBody<
        futures_util::stream::Map<
            super::FrameStream,
            fn(Result<Bytes, std::io::Error>) -> ChunkResult,
        >,
    >,
    Full<Bytes>,
>;

fn to_frame(chunk: Result<Bytes, std::io::Error>) -> ChunkResult {
    chunk.map(Frame::data)
}

async fn handle(fake: FakeKiro, request: Request<Body>) -> Result<Response<FakeBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let message =
                serde_json::json!({ "message": format!("cannot read the request body: {error}") });
            let mut response = Response::new(Either::Right(Full::from(message.to_string())));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    let request = Request::from_parts(parts, bytes);
    let hold = fake.hold(&request);
    if !hold.is_zero() {
        // A client that goes away meanwhile closes the connection, and hyper drops this
        // future with it: the request is never processed.
        tokio::time::sleep(hold).await;
    }
    let response = fake.handle(request);
    let frames: fn(Result<Bytes, std::io::Error>) -> ChunkResult = to_frame;
    Ok(response.map(|stream| Either::Left(StreamBody::new(stream.map(frames)))))
}

/// How the fake listens besides its socket.
#[derive(Clone)]
pub struct Listening {
    /// HTTPS instead of plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// HTTP/2 streams per connection.
    pub h2_max_streams: u32,
}

/// Serves `fake` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    fake: FakeKiro,
    listening: Listening,
    shutdown: impl Future<Output = ()>,
) {
    let service = tower::service_fn(move |request: Request<Body>| handle(fake.clone(), request));
    let limits = crate::server::Limits {
        shutdown_grace: GRACE,
        h2_max_streams: listening.h2_max_streams,
        ..crate::server::Limits::default()
    };
    crate::server::serve_tls(listener, listening.tls, service, shutdown, limits).await;
}

//! `aiproxy fake-kiro`: the fake on a loopback socket, for tests, demos and benchmarks.

use super::FakeKiro;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

type Body = http_body_util::Either<
    StreamBody<
        futures_util::stream::Map<
            super::FrameStream,
            fn(Result<Bytes, std::io::Error>) -> Result<hyper::body::Frame<Bytes>, std::io::Error>,
        >,
    >,
    Full<Bytes>,
>;

fn to_frame(
    chunk: Result<Bytes, std::io::Error>,
) -> Result<hyper::body::Frame<Bytes>, std::io::Error> {
    chunk.map(hyper::body::Frame::data)
}

async fn handle(fake: FakeKiro, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, 32 * 1024 * 1024).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let mut response = Response::new(http_body_util::Either::Right(Full::from(format!(
                "{{\"message\":\"cannot read the request body: {error}\"}}"
            ))));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    let response = fake.handle(Request::from_parts(parts, bytes));
    use futures_util::StreamExt;
    let mapper: fn(
        Result<Bytes, std::io::Error>,
    ) -> Result<hyper::body::Frame<Bytes>, std::io::Error> = to_frame;
    Ok(response.map(|stream| http_body_util::Either::Left(StreamBody::new(stream.map(mapper)))))
}

/// Serves `fake` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, fake: FakeKiro, shutdown: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let fake = fake.clone();
                let service = hyper::service::service_fn(move |request| handle(fake.clone(), request));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}

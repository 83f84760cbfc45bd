//! Per-connection request tracking and the body-read idle timeout.
//!
//! [`Tracked`] wraps the served service for one connection: it counts a request as in flight
//! from the call until its response body is finished or dropped (so a long stream keeps its
//! connection busy, never idle), and gives the request body an idle timeout
//! ([`IdleTimeoutBody`]) so that a client trickling its body cannot hold a connection. It also
//! gives each request a head of its own (see `server::own_head`).

use super::connections::Connection;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body went quiet for longer than the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving for {} s (--body-read-timeout); send the body without pauses", .0.as_secs())]
pub struct BodyReadTimeout(pub Duration);

/// The served service of one connection (see the module docs).
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    connection: Arc<Connection>,
    body_read_timeout: Duration,
    served_on: ServedOn,
}

impl<S> Tracked<S> {
    /// Tracks `inner`'s requests on `connection`; each request carries a [`ServedOn`] with
    /// `ending`, its server's end-of-grace signal, as an extension.
    pub fn new(
        inner: S,
        connection: Arc<Connection>,
        body_read_timeout: Duration,
        ending: super::StreamsEnding,
    ) -> Self {
        let served_on = ServedOn {
            ending,
            connection: connection.id(),
        };
        Self {
            inner,
            connection,
            body_read_timeout,
            served_on,
        }
    }
}

/// Where a request was served (one extension of every request, made once per connection):
/// its server's end-of-grace signal (see [`super::StreamsEnding`]), and which of that
/// server's connections it came on (the fake Kiro tells by it whether aiproxy keeps its
/// accounts on separate connections).
#[derive(Clone, Debug)]
pub struct ServedOn {
    /// The server's end-of-grace signal.
    pub ending: super::StreamsEnding,
    /// The connection's number, unique in its server.
    pub connection: u64,
}

/// The connection was closed to make room while this request arrived.
#[derive(Debug, thiserror::Error)]
#[error("connection closed to make room for new connections")]
pub struct Closing;

impl<S, B, ResBody> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<IdleTimeoutBody<B>>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = BoxError;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !self.connection.begin() {
            return TrackedFuture {
                inner: None,
                guard: None,
            };
        }
        let guard = InFlight(Arc::clone(&self.connection));
        let timeout = self.body_read_timeout;
        let (mut head, body) = request.into_parts();
        super::own_head::own_head(&mut head);
        head.extensions.insert(self.served_on.clone());
        let request = Request::from_parts(head, IdleTimeoutBody::new(body, timeout));
        TrackedFuture {
            inner: Some(self.inner.call(request)),
            guard: Some(guard),
        }
    }
}

/// Ends the request on its connection when dropped.
#[derive(Debug)]
struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project! {
    /// The response future of [`Tracked`].
    pub struct TrackedFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<InFlight>,
    }
}

impl<F, ResBody, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(Box::new(Closing)));
        };
        let response = ready!(inner.poll(cx)).map_err(Into::into)?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, guard })))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it ends or is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A request body that fails with [`BodyReadTimeout`] when no frame arrives for the
    /// timeout. The timer is armed only while the body is actually waiting, so a body that
    /// came with its headers costs no timer at all.
    pub struct IdleTimeoutBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<B> IdleTimeoutBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.sleep.set(None);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.timeout)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        Poll::Ready(Some(Err(Box::new(BodyReadTimeout(*this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    /// A body whose frames arrive through a channel, like a client's bytes.
    fn channel_body() -> (
        tokio::sync::mpsc::Sender<Bytes>,
        impl Body<Data = Bytes, Error = BoxError>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let frames = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok::<_, BoxError>(Frame::data(b))))
        });
        (tx, http_body_util::StreamBody::new(frames))
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_is_read_a_quiet_one_times_out() {
        let (tx, body) = channel_body();
        let body = IdleTimeoutBody::new(body, Duration::from_secs(5));
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Bytes::from_static(b"ab")).await.unwrap();
            }
            // Total 12 s, each gap under the timeout: then the body ends.
        });
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"ababab");
        sender.await.unwrap();

        let (tx, body) = channel_body();
        let mut body = std::pin::pin!(IdleTimeoutBody::new(body, Duration::from_secs(5)));
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        assert!(body.as_mut().frame().await.unwrap().is_ok());
        let error = body.as_mut().frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyReadTimeout>(), "{error}");
        drop(tx);
    }
}

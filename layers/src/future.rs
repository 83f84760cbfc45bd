//! The one response future shared by the layers of this crate.

use crate::RejectBody;
use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// Response future of every layer here: the inner call, or a rejection that is ready.
    #[project = RejectFutureProj]
    pub enum RejectFuture<F> {
        /// The layer let the request through; waiting on the inner service.
        Inner { #[pin] future: F },
        /// The layer rejected the request.
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<F, B, E> Future for RejectFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RejectBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RejectFutureProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(RejectBody::inner))),
            RejectFutureProj::Rejected { response } => {
                let response = response.take().unwrap_or_default();
                Poll::Ready(Ok(response.map(RejectBody::rejected)))
            }
        }
    }
}

//! The response body of every layer in this crate: the inner service's body, or the
//! error body of a rejection.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// Either the wrapped service's body or a rejection's fixed error body.
    ///
    /// An enum rather than a boxed body, so that stacking layers costs no allocation.
    #[project = RejectBodyProj]
    pub enum RejectBody<B> {
        /// The inner service answered.
        Inner { #[pin] body: B },
        /// A layer rejected the request; the body is complete in memory.
        Rejected { bytes: Option<Bytes> },
    }
}

impl<B> RejectBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    pub(crate) fn rejected(bytes: Bytes) -> Self {
        Self::Rejected {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl<B> Body for RejectBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            RejectBodyProj::Inner { body } => body.poll_frame(cx),
            RejectBodyProj::Rejected { bytes } => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Rejected { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Rejected { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

//! The stream half shared by the SSE encoders (Chat Completions, Messages, Responses, legacy
//! completions): drains the event stream
//! through an [`SseEncoder`], sends what it produced, turns an upstream error or a stream
//! that ends without a stop into the encoder's failure events, and sends the encoder's
//! keep-alive after a quiet stretch. When the server's shutdown grace is about to run out,
//! the event stream fails ([`Ending`]), so an open stream ends with the encoder's failure
//! events too, never a silent cut.

use super::keep_alive::KeepAlive;
use crate::chat::{ChatError, ChatEvent, ChatStream};
use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// One SSE event with a name (`event: NAME` / `data: JSON`), as the Anthropic and Responses
/// streams frame them.
pub fn named_event(name: &str, data: &impl Serialize) -> Result<Bytes, serde_json::Error> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut buf, data)?;
    buf.extend_from_slice(b"\n\n");
    Ok(Bytes::from(buf))
}

/// One API's SSE encoding.
pub trait SseEncoder: Send + Unpin {
    /// Takes one event; true when the answer is complete.
    fn event(&mut self, event: ChatEvent) -> bool;
    /// The answer failed after the stream began.
    fn fail(&mut self, error: &ChatError);
    /// The next chunk ready to send.
    fn next_chunk(&mut self) -> Option<Bytes>;
    /// What is sent after a quiet stretch.
    fn keep_alive(&self) -> Bytes;
    /// Ready when the chunks waiting may leave. An encoder that started a write the client
    /// relies on once it reads the last event (a stored response, which the next turn may
    /// ask another replica for) holds them until the write is done. Ready by default.
    fn poll_release(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// See the module docs.
pub struct SseStream<E> {
    inner: ChatStream,
    encoder: E,
    keep_alive: KeepAlive,
    finished: bool,
}

impl<E: SseEncoder> SseStream<E> {
    /// Encodes `inner` with `encoder`, with a keep-alive after `quiet`.
    pub fn new(inner: ChatStream, encoder: E, quiet: Duration) -> Self {
        Self {
            inner,
            encoder,
            keep_alive: KeepAlive::new(quiet),
            finished: false,
        }
    }
}

impl<E: SseEncoder> Stream for SseStream<E> {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        loop {
            if this.encoder.poll_release(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(bytes) = this.encoder.next_chunk() {
                this.keep_alive.sent();
                return Poll::Ready(Some(bytes));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => this.finished = this.encoder.event(event),
                Poll::Ready(Some(Err(error))) => {
                    this.encoder.fail(&error);
                    this.finished = true;
                }
                Poll::Ready(None) => {
                    this.encoder.fail(&ChatError::ended_without_stop());
                    this.finished = true;
                }
                Poll::Pending => {
                    if this.keep_alive.due(cx) {
                        return Poll::Ready(Some(this.encoder.keep_alive()));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A streamed answer's events, failing with [`ChatError::Busy`] when its server's shutdown
/// grace period is about to run out while the answer still waits for the upstream: the
/// encoder turns that into the API's error event.
pub struct Ending {
    inner: ChatStream,
    ending: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
}

impl Ending {
    /// `inner`, ended by `ending` (the request's [`crate::server::StreamsEnding`]; `None`
    /// when no aiproxy server carries the request, e.g. an embedding app's own).
    pub fn wrap(inner: ChatStream, ending: Option<&crate::server::StreamsEnding>) -> ChatStream {
        match ending {
            Some(ending) => Box::pin(Self {
                inner,
                ending: Some(Box::pin(ending.cancelled())),
            }),
            None => inner,
        }
    }
}

impl Stream for Ending {
    type Item = Result<ChatEvent, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => {}
            ready => return ready,
        }
        let Some(ending) = this.ending.as_mut() else {
            return Poll::Pending;
        };
        if std::future::Future::poll(ending.as_mut(), cx).is_pending() {
            return Poll::Pending;
        }
        this.ending = None;
        Poll::Ready(Some(Err(ChatError::Busy {
            message: "aiproxy is shutting down and its grace period ran out before this answer \
                      finished; retry the request"
                .into(),
            retry_after: None,
        })))
    }
}

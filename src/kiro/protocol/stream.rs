//! The upstream body (bytes) -> frames -> Kiro events -> [`ChatEvent`]s, incrementally:
//! every event leaves as soon as its frame is complete; nothing is buffered beyond the
//! current partial frame.

use crate::chat::{ChatError, ChatEvent, ChatStream};
use crate::kiro::protocol::eventstream::{FrameDecoder, KiroEvent};
use crate::kiro::protocol::translate::Translator;
use bytes::Bytes;
use futures_util::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A byte stream as delivered by the transport.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Wraps an upstream body into a chat event stream.
pub fn chat_stream(body: ByteStream, translator: Translator) -> ChatStream {
    Box::pin(KiroChatStream {
        body,
        decoder: FrameDecoder::new(),
        translator,
        queue: VecDeque::with_capacity(4),
        pending_error: None,
        done: false,
    })
}

struct KiroChatStream {
    body: ByteStream,
    decoder: FrameDecoder,
    translator: Translator,
    queue: VecDeque<ChatEvent>,
    /// An error found while events were still queued: sent after them, in order.
    pending_error: Option<ChatError>,
    done: bool,
}

impl KiroChatStream {
    fn decode_available(&mut self) -> Result<(), ChatError> {
        while let Some(frame) = self
            .decoder
            .next_frame()
            .map_err(|e| ChatError::Truncated {
                message: e.to_string(),
            })?
        {
            let event = KiroEvent::from_frame(&frame).map_err(|e| ChatError::Upstream {
                message: e.to_string(),
            })?;
            self.translator.on_event(event, &mut self.queue)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ChatError> {
        if self.decoder.pending() > 0 {
            return Err(ChatError::Truncated {
                message: format!(
                    "the upstream stream ended inside an event frame ({} bytes left over); retry the request",
                    self.decoder.pending()
                ),
            });
        }
        self.translator.finish(&mut self.queue)
    }
}

impl Stream for KiroChatStream {
    type Item = Result<ChatEvent, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Some(error) = this.pending_error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let step = match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    this.decoder.push_bytes(bytes);
                    this.decode_available()
                }
                Poll::Ready(Some(Err(error))) if error.kind() == std::io::ErrorKind::TimedOut => {
                    Err(ChatError::Timeout {
                        message: error.to_string(),
                    })
                }
                Poll::Ready(Some(Err(error))) => Err(ChatError::Upstream {
                    message: format!("reading the upstream stream failed: {error}"),
                }),
                Poll::Ready(None) => {
                    this.done = true;
                    this.finish()
                }
            };
            if let Err(error) = step {
                this.done = true;
                this.pending_error = Some(error);
            }
        }
    }
}

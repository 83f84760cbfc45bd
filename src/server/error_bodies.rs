//! Bodies for the answers hyper writes by itself. A request hyper cannot parse (headers over
//! the size or count limit: `431`; a malformed request line, header or framing: `400`) is
//! answered inside hyper with an empty body and the connection closed, before any service
//! sees it. [`ErrorBodies`] sits between hyper and the socket and gives those answers an
//! OpenAI-shaped JSON body that says what was wrong, so clients and their logs can tell.
//!
//! hyper's own answers are recognised by their head: `HTTP/1.1 400` or `431` with
//! `connection: close` and `content-length: 0`. aiproxy's services never answer a 4xx like
//! that (every rejection of theirs carries a JSON body), so nothing else is touched; HTTP/2
//! frames never start with `HTTP/1.1`.

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// A socket whose hyper-made error answers get bodies (see the module docs).
    pub struct ErrorBodies<IO> {
        #[pin]
        io: IO,
        // A rewritten answer still being written.
        pending: Bytes,
    }
}

impl<IO> ErrorBodies<IO> {
    /// Wraps `io`.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            pending: Bytes::new(),
        }
    }
}

const EMPTY_CLOSE: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";

/// The answer to write instead of `head`, when `head` is one of hyper's own error answers.
fn rewrite(head: &[u8]) -> Option<Bytes> {
    let (status, message, code) = if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "The request headers are too large (over 64 KiB in all) or too many (over 100). \
             Send fewer or smaller headers.",
            "request_header_fields_too_large",
        )
    } else if head.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "The request is not valid HTTP/1.1 (a malformed request line or header, or \
             conflicting Content-Length / Transfer-Encoding framing). Fix the client or send \
             the request with a standard HTTP library.",
            "malformed_http",
        )
    } else {
        return None;
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &head[..end + 2];
    head.windows(EMPTY_CLOSE.len())
        .position(|w| w == EMPTY_CLOSE)?;
    let body = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": code,
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    Some(Bytes::from(answer))
}

impl<IO: AsyncWrite> ErrorBodies<IO> {
    /// Writes what is pending; ready when nothing is.
    fn poll_pending(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while !this.pending.is_empty() {
            let written = ready!(this.io.as_mut().poll_write(cx, this.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.pending.advance(written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead> AsyncRead for ErrorBodies<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for ErrorBodies<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            // Taken whole: hyper's answer is replaced, and what we send instead is written
            // before anything else (hyper closes the connection after it).
            *self.as_mut().project().pending = answer;
            let _ = self.as_mut().poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        // hyper's error answers have no body: the head is the only slice.
        if let [only] = bufs {
            if rewrite(only).is_some() {
                return self.poll_write(cx, only);
            }
        }
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_empty_error_answers_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 23:31:46 GMT\r\n\r\n";
        let answer = rewrite(hyper_431).unwrap();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "request_header_fields_too_large");

        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n";
        assert!(rewrite(ours).is_none(), "a service's own 400 has its body");
        assert!(
            rewrite(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").is_none()
        );
        assert!(rewrite(b"\x00\x00\x12\x04").is_none(), "an HTTP/2 frame");
    }
}

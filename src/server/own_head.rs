//! Request heads that do not keep the connection's read buffer alive.
//!
//! hyper parses a request head in place: the URI and every header value are slices of the
//! connection's read buffer (8 KiB at least). While one slice lives, so does the whole buffer,
//! and as soon as the body has been read hyper reserves a second buffer to watch the
//! connection for a hang-up. A request that waits for its answer (and a stream, whose request
//! lives as long as its layers need it) so held two read buffers. [`own_head`] moves the head's
//! bytes into one buffer of their own, sized to fit (a few hundred bytes): heaptrack at the
//! peak of 1,000 concurrent streams measured 6.8 MB of first read buffers before and none after.
//! The body's slice is the API's to drop once parsed (see `api::chat`).

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderValue, Uri};

/// Copies `parts`' URI and header values into one new buffer they share, so that nothing in
/// the head refers to the buffer it was parsed from. Names need no copy: hyper's are static
/// or allocated on their own.
pub fn own_head(parts: &mut Parts) {
    let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
    let absolute;
    let target = match parts.uri.path_and_query() {
        Some(path) if origin_form => path.as_str(),
        _ => {
            absolute = parts.uri.to_string();
            absolute.as_str()
        }
    };
    let values: usize = parts.headers.values().map(HeaderValue::len).sum();
    let mut buffer = BytesMut::with_capacity(target.len() + values);
    buffer.extend_from_slice(target.as_bytes());
    for value in parts.headers.values() {
        buffer.extend_from_slice(value.as_bytes());
    }
    let mut buffer: Bytes = buffer.freeze();
    let target = buffer.split_to(target.len());
    if let Ok(uri) = Uri::from_maybe_shared(target) {
        parts.uri = uri;
    }
    for value in parts.headers.values_mut() {
        let bytes = buffer.split_to(value.len());
        // Always valid: the same bytes made a header value before.
        if let Ok(mut owned) = HeaderValue::from_maybe_shared(bytes) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head whose URI and values are slices of `read`, as hyper builds it.
    fn head_in(read: &Bytes, target: &str) -> Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let at = |text: &str| {
            let start = read
                .windows(text.len())
                .position(|w| w == text.as_bytes())
                .unwrap();
            read.slice(start..start + text.len())
        };
        parts.uri = Uri::from_maybe_shared(at(target)).unwrap();
        parts.headers.insert(
            "authorization",
            HeaderValue::from_maybe_shared(at("Bearer k-1")).unwrap(),
        );
        parts
            .headers
            .append("x-tag", HeaderValue::from_maybe_shared(at("one")).unwrap());
        parts
            .headers
            .append("x-tag", HeaderValue::from_maybe_shared(at("two")).unwrap());
        parts.headers.insert(
            "x-custom-empty",
            HeaderValue::from_maybe_shared(read.slice(0..0)).unwrap(),
        );
        parts
    }

    #[test]
    fn the_head_no_longer_holds_the_read_buffer_and_reads_the_same() {
        for target in [
            "/v1/chat/completions?beta=true",
            "http://proxy.example:8080/v1/messages",
        ] {
            let read = Bytes::from(format!(
                "POST {target} HTTP/1.1\r\nauthorization: Bearer k-1\r\nx-tag: one\r\nx-tag: two\r\n\r\n"
            ));
            let mut parts = head_in(&read, target);
            parts
                .headers
                .get_mut("authorization")
                .unwrap()
                .set_sensitive(true);
            assert!(
                !read.is_unique(),
                "the head is made of slices of the buffer"
            );

            own_head(&mut parts);

            assert!(
                read.is_unique(),
                "{target}: a slice of the buffer is still alive"
            );
            assert_eq!(parts.uri, target);
            let tags: Vec<_> = parts.headers.get_all("x-tag").iter().collect();
            assert_eq!(tags, ["one", "two"]);
            assert_eq!(parts.headers["authorization"], "Bearer k-1");
            assert!(parts.headers["authorization"].is_sensitive());
            assert!(!parts.headers["x-tag"].is_sensitive());
            assert_eq!(parts.headers["x-custom-empty"], "");
        }
    }
}

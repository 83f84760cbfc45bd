//! Bounded request ids: a client's `x-request-id` is echoed and logged, so one that is too
//! long or holds anything but visible ASCII is dropped here and a fresh one is made by the
//! request-id layer after this one (tower-http's `SetRequestId` keeps a valid one).
//!
//! Put it right outside the layer that sets request ids (in aiproxy: tower-http's
//! `SetRequestIdLayer`):
//!
//! ```
//! use aiproxy_layers::request_id::BoundRequestIdLayer;
//! use tower::ServiceBuilder;
//! # let set_request_id = tower::service_fn(|_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) });
//! let service = ServiceBuilder::new()
//!     .layer(BoundRequestIdLayer::new())
//!     .service(set_request_id);
//! ```

use http::{HeaderName, Request};
use std::task::{Context, Poll};

/// Longest accepted request id.
pub const MAX_REQUEST_ID: usize = 128;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a client's request id may be kept: 1 to [`MAX_REQUEST_ID`] visible ASCII
/// characters.
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| b.is_ascii_graphic())
}

/// Adds [`BoundRequestId`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BoundRequestIdLayer;

impl BoundRequestIdLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> tower_layer::Layer<S> for BoundRequestIdLayer {
    type Service = BoundRequestId<S>;

    fn layer(&self, inner: S) -> BoundRequestId<S> {
        BoundRequestId { inner }
    }
}

/// Drops an unacceptable `x-request-id` (and any duplicates) before the inner service.
#[derive(Clone, Debug)]
pub struct BoundRequestId<S> {
    inner: S,
}

impl<S, B> tower_service::Service<Request<B>> for BoundRequestId<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers_mut();
        let mut ids = headers.get_all(&X_REQUEST_ID).iter();
        let keep = match (ids.next(), ids.next()) {
            (None, _) => true,
            (Some(id), None) => is_acceptable(id.as_bytes()),
            (Some(_), Some(_)) => false,
        };
        if !keep {
            headers.remove(&X_REQUEST_ID);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The `x-request-id` the inner service sees when the client sends `ids`.
    async fn seen(ids: &[&str]) -> Option<String> {
        let inner = tower::service_fn(|r: Request<()>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(
                r.headers()
                    .get(&X_REQUEST_ID)
                    .map(|v| v.to_str().unwrap().to_owned()),
            ))
        });
        let service = tower_layer::Layer::layer(&BoundRequestIdLayer::new(), inner);
        let mut request = Request::new(());
        for id in ids {
            request
                .headers_mut()
                .append(&X_REQUEST_ID, http::HeaderValue::from_str(id).unwrap());
        }
        service.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn keeps_sane_ids_and_drops_the_rest() {
        assert_eq!(seen(&["abc-123"]).await.as_deref(), Some("abc-123"));
        let at_limit = "a".repeat(MAX_REQUEST_ID);
        assert_eq!(seen(&[&at_limit]).await, Some(at_limit.clone()));
        assert_eq!(
            seen(&[&format!("{at_limit}b")]).await,
            None,
            "one over the limit"
        );
        assert_eq!(seen(&["has space"]).await, None);
        assert_eq!(seen(&["a", "b"]).await, None, "two ids: neither is trusted");
        assert_eq!(seen(&[]).await, None);
    }
}

//! Switching any HTTP layer on or off by configuration.
//!
//! [`ToggleLayer`] wraps an optional layer. Switched off, the request goes straight to the
//! inner service: one enum match per call and per body frame, no boxing, no allocation.
//! The response body is an [`http_body_util::Either`] of the two bodies, so layers that
//! change the body type (tracing, panic catching, auth) can be toggled too.
//!
//! ```
//! use aiproxy_layers::auth::AuthLayer;
//! use aiproxy_layers::toggle::ToggleLayer;
//! use tower::ServiceBuilder;
//!
//! let check_keys = false; // e.g. from configuration
//! let svc = ServiceBuilder::new()
//!     .layer(ToggleLayer::new(check_keys.then(|| AuthLayer::new(["k"]))))
//!     .service(tower::service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     }));
//! # let _ = svc;
//! ```

use http::Response;
use http_body_util::Either;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Applies the wrapped layer when it is `Some`, else nothing.
#[derive(Clone, Debug)]
pub struct ToggleLayer<L> {
    layer: Option<L>,
}

impl<L> ToggleLayer<L> {
    /// On with `Some(layer)`, off with `None`.
    pub fn new(layer: Option<L>) -> Self {
        Self { layer }
    }
}

impl<L, S> Layer<S> for ToggleLayer<L>
where
    L: Layer<S>,
{
    type Service = Toggle<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.layer {
            Some(layer) => Toggle::On(layer.layer(inner)),
            None => Toggle::Off(inner),
        }
    }
}

/// A service that is either the layered service (`On`) or the bare inner one (`Off`).
#[derive(Clone, Debug)]
pub enum Toggle<On, Off> {
    /// The layer is switched on.
    On(On),
    /// The layer is switched off: calls go to the inner service directly.
    Off(Off),
}

/// An HTTP response, named by its body type, so that the body types of [`Toggle`]'s
/// response are projections of its services rather than extra parameters of its impl.
pub trait HttpResponse {
    /// The body type.
    type Body;
    /// The response with the body wrapped by `wrap`.
    fn map_body<T>(self, wrap: impl FnOnce(Self::Body) -> T) -> Response<T>;
}

impl<B> HttpResponse for Response<B> {
    type Body = B;

    fn map_body<T>(self, wrap: impl FnOnce(B) -> T) -> Response<T> {
        self.map(wrap)
    }
}

type BodyOf<R> = <R as HttpResponse>::Body;

// Generic over the whole request type on purpose: an impl for `Request<B>` made rustc's
// trait solving exponential in the number of stacked toggles (a test calling `oneshot` on
// the five-toggle pipeline did not compile within 20 minutes).
impl<On, Off, Req> Service<Req> for Toggle<On, Off>
where
    On: Service<Req>,
    On::Response: HttpResponse,
    Off: Service<Req, Error = On::Error>,
    Off::Response: HttpResponse,
{
    type Response = Response<Either<BodyOf<On::Response>, BodyOf<Off::Response>>>;
    type Error = On::Error;
    type Future = ToggleFuture<On::Future, Off::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::On(service) => service.poll_ready(cx),
            Self::Off(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            Self::On(service) => ToggleFuture::On {
                future: service.call(request),
            },
            Self::Off(service) => ToggleFuture::Off {
                future: service.call(request),
            },
        }
    }
}

pin_project! {
    /// Response future of [`Toggle`].
    #[project = ToggleFutureProj]
    pub enum ToggleFuture<OnFuture, OffFuture> {
        /// Waiting on the layered service.
        On { #[pin] future: OnFuture },
        /// Waiting on the inner service directly.
        Off { #[pin] future: OffFuture },
    }
}

impl<OnFuture, OffFuture, OnResponse, OffResponse, E> Future for ToggleFuture<OnFuture, OffFuture>
where
    OnFuture: Future<Output = Result<OnResponse, E>>,
    OffFuture: Future<Output = Result<OffResponse, E>>,
    OnResponse: HttpResponse,
    OffResponse: HttpResponse,
{
    type Output = Result<Response<Either<BodyOf<OnResponse>, BodyOf<OffResponse>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ToggleFutureProj::On { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map_body(Either::Left))),
            ToggleFutureProj::Off { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map_body(Either::Right))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthLayer;
    use http::Request;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    async fn status_without_key(on: bool) -> (u16, String) {
        let service = ServiceBuilder::new()
            .layer(ToggleLayer::new(on.then(|| AuthLayer::new(["secret"]))))
            .service(tower::service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::from("inner")))
            }));
        let response = service.oneshot(Request::new(String::new())).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn on_applies_the_layer_and_off_skips_it() {
        let (status, body) = status_without_key(true).await;
        assert_eq!(status, 401);
        assert!(body.contains("API key"), "{body}");
        assert_eq!(status_without_key(false).await, (200, "inner".to_owned()));
    }
}

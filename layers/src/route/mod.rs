//! Provider routing.
//!
//! Chooses the provider of a request from, in order: the `X-Model-Provider` header, the
//! `Model-Provider` header, a `/{provider}/v1/...` path prefix (which is then stripped, so
//! `/kiro-api/v1/models` reaches the inner service as `/v1/models`), else the configured
//! default. The choice is inserted as a [`ProviderId`](crate::ProviderId) extension.
//! A provider that is not known is answered with `400` naming the known ones.
//!
//! # Example
//!
//! ```
//! use aiproxy_layers::route::RouteLayer;
//! use aiproxy_layers::ProviderId;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio_test_block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(RouteLayer::new("kiro-api", ["kiro-api"]))
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         let provider = req.extensions().get::<ProviderId>().cloned();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(
//!             http_body_util::Full::new(bytes::Bytes::from(format!("{provider:?} {}", req.uri())))
//!         ))
//!     }));
//! let response = svc
//!     .oneshot(http::Request::get("/kiro-api/v1/models").body(()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 200);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

mod layer;
mod service;

/// Response future of this layer's service.
pub type ResponseFuture<F> = crate::RejectFuture<F>;
pub use layer::RouteLayer;
pub use service::{path_prefix, Route};

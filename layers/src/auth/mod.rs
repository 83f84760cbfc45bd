//! API-key authentication.
//!
//! The key is read from the first of these that is present:
//! `Authorization: Bearer <key>`, `x-api-key: <key>`, `x-goog-api-key: <key>`, `?key=<key>`.
//! It is compared in constant time against every configured key (no early exit on the
//! first match, so timing does not reveal which key or how many bytes matched). A `?key=`
//! parameter is removed from the URI before the request goes further, so inner services
//! and their logs never see it.
//!
//! On success the request gets a [`ClientKey`](crate::ClientKey) extension holding a
//! non-secret label (`key-1`, `key-2`, ... in configuration order). On failure the answer
//! is `401` in the error shape the client expects (OpenAI, Anthropic or gRPC, see
//! [`ErrorShape`](crate::ErrorShape)). With no keys configured the layer lets everything
//! through as `anonymous`; say so loudly at start-up.
//!
//! Paths added with [`AuthLayer::public_path`] (e.g. `/health`) skip the check, and so do
//! CORS preflights after [`AuthLayer::public_preflights`].
//!
//! # Example: around any `http` service
//!
//! ```
//! use aiproxy_layers::auth::AuthLayer;
//! use aiproxy_layers::ClientKey;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The inner service sees the key's label, never the key.
//! let inner = tower::service_fn(|request: http::Request<String>| async move {
//!     let label = request.extensions().get::<ClientKey>().map(|k| k.label().to_owned());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(label.unwrap_or_default()))
//! });
//! let service = AuthLayer::new(["my-key"]).public_path("/health").layer(inner);
//!
//! let with_key = http::Request::get("/v1/models")
//!     .header("authorization", "Bearer my-key")
//!     .body(String::new())?;
//! assert_eq!(service.clone().oneshot(with_key).await?.status(), 200);
//!
//! let without = http::Request::get("/v1/models").body(String::new())?;
//! assert_eq!(service.clone().oneshot(without).await?.status(), 401);
//!
//! let public = http::Request::get("/health").body(String::new())?;
//! assert_eq!(service.oneshot(public).await?.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! The two examples below need axum and tonic, which this crate does not depend on; the
//! same code is compiled and run in aiproxy's `tests/embed.rs`.
//!
//! # Example: one route of an axum app
//!
//! ```ignore
//! use aiproxy_layers::auth::AuthLayer;
//! use axum::{routing::get, Router};
//!
//! let app: Router = Router::new()
//!     .route("/private", get(|| async { "secret" }))
//!     .route_layer(AuthLayer::new(["my-key"]))
//!     .route("/public", get(|| async { "hello" }));
//! ```
//!
//! # Example: a tonic server
//!
//! ```ignore
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! tonic::transport::Server::builder()
//!     .layer(aiproxy_layers::auth::AuthLayer::new(["my-key"]))
//!     .add_service(health)
//!     .serve(addr)
//!     .await?;
//! // A client sends `authorization: Bearer my-key` as metadata; without it the call
//! // fails with gRPC status UNAUTHENTICATED.
//! ```

mod layer;
mod service;

/// Response future of this layer's service.
pub type ResponseFuture<F> = crate::RejectFuture<F>;
pub use layer::AuthLayer;
pub use service::Auth;

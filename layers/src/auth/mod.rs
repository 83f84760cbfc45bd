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

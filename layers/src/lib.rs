//! Reusable tower layers from aiproxy.
//!
//! Two tiers. The HTTP-tier layers ([`auth`], [`route`], [`request_id`], [`toggle`], the HTTP
//! half of [`metrics`]) are generic over `http::Request<B>` and wrap the inner service's
//! response body in a small enum ([`RejectBody`]) so that a rejection can carry an
//! API-shaped error body without boxing. They work the same in aiproxy's own pipeline, in an
//! axum `Router` (`.layer(...)` / `.route_layer(...)`) and around a tonic server
//! (`tonic::transport::Server::builder().layer(...)`), where rejections are answered as
//! gRPC trailers-only responses. The model-tier layers ([`model`]: retry, pool, ready,
//! health; [`cache`], [`rate_limit`], the model half of [`metrics`]) are generic over any
//! request, response and error that implement the small traits of [`model`]
//! (`HasExtensions`, `Observe`, `Failure`); the `testing` feature has scriptable doubles of
//! all three.
//!
//! | module | what it does | extension it adds |
//! |---|---|---|
//! | [`auth`] | API key check (Bearer, `x-api-key`, `x-goog-api-key`, `?key=`), constant time | [`ClientKey`] |
//! | [`route`] | provider selection from headers or a `/{provider}/...` path prefix | [`ProviderId`] |
//! | [`request_id`] | drops a client `x-request-id` over 128 characters or not visible ASCII, so a fresh one is made | |
//! | [`cache`] | model-tier answer cache: per-client keys, stored only after a complete stream, replayed as stream or body, identical misses coalesced, `Cache-Control` honoured | + `CacheStatus` (response) |
//! | [`metrics`] | OpenTelemetry instruments for HTTP requests (route, status, duration, overhead) and model operations (duration, first token, tokens, streams, retries) | |
//! | [`rate_limit`] | model-tier rate limits per client: requests per minute with a burst (governor), tokens per minute estimated at admission and settled with the real usage | writes `RateLimitSlot` |
//! | [`toggle`] | switches any HTTP layer on or off by configuration, free when off | |
//! | [`model`] | model tier: [`model::retry`] (the one place that calls again), [`model::pool`] (one account per request, breakers, panic mode), [`model::ready`] (bounded wait for a slot), [`model::health`], [`model::store`] | `Attempts`, `AccountId` |
//! | `testing` (feature) | scriptable mock accounts, requests, responses and errors for testing a stack | |

pub mod auth;
mod body;
pub mod cache;
mod extensions;
mod future;
pub mod metrics;
pub mod model;
mod quota;
pub mod rate_limit;
mod rejection;
pub mod request_id;
pub mod route;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod toggle;

pub use body::RejectBody;
pub use extensions::{ClientKey, ProviderId};
pub use future::RejectFuture;
pub use rejection::{ErrorShape, Rejection};

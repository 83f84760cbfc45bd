//! aiproxy: an OpenAI- and Anthropic-compatible proxy for Claude models served through Kiro
//! accounts, built as one tower pipeline (see [`pipeline`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceExt;
//! let pipeline = aiproxy::pipeline::build(&aiproxy::config::Config::mock())?;
//! let response = pipeline
//!     .oneshot(http::Request::get("/v1/models").body(http_body_util::Empty::<bytes::Bytes>::new())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```

pub mod api;
pub mod body;
pub mod catalog;
pub mod chat;
pub mod check_config;
pub mod cli;
pub mod config;
pub mod console;
pub mod kiro;
pub mod model;
pub mod pipeline;
pub mod replicas;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod token_count;

//! The Kiro provider: wire types, request builder, event-stream decoder, fake, service.

pub mod account;
pub mod accounts;
pub mod credentials;
pub mod egress;
pub mod errors;
pub mod eventstream;
pub mod fake;
pub mod file_lock;
pub mod http;
pub mod model_list;
pub mod overflow;
pub mod persist;
pub mod pool_file;
pub mod request;
pub mod service;
pub mod stream;
pub mod thinking;
pub mod token_source;
pub mod token_store;
pub mod translate;
pub mod usage;
pub mod wire;

pub use service::{KiroService, Transport};

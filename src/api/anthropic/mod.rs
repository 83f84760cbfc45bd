//! The Anthropic Messages surface: `/v1/messages` and `/v1/messages/count_tokens`.

pub mod request;
pub mod response;

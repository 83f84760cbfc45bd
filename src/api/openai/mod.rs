//! The OpenAI Chat Completions surface.

pub mod request;
pub mod response;

//! aiproxy: an OpenAI- and Anthropic-compatible proxy for Claude models served through Kiro
//! accounts, built as one tower pipeline (see [`pipeline`]).

pub mod chat;
pub mod kiro;
pub mod tokens;

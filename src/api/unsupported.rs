//! Request fields Kiro has no equivalent for and aiproxy cannot emulate. Two kinds:
//!
//! - Fields whose absence the client would notice in the answer (token log-probabilities,
//!   audio, predicted outputs, hosted web search, remote MCP servers): refused with a 400
//!   that names the field and says why, never accepted and ignored.
//! - Sampling hints (`temperature`, `top_p`, `top_k`, `seed`, `presence_penalty`,
//!   `frequency_penalty`): Kiro takes none of them (docs/kiro-protocol.md §4.4). Refusing them
//!   would break nearly every client, so they are accepted, and every answer names the ones
//!   the request carried in the `x-aiproxy-not-honoured` header, so nothing is silent.

use crate::api::json::Obj;
use crate::chat::ChatError;
use serde_json::Value;

/// The sampling hints of the Chat Completions and Responses APIs.
pub const OPENAI_SAMPLING: [&str; 5] = [
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
];

/// The sampling hints of the Messages API.
pub const ANTHROPIC_SAMPLING: [&str; 3] = ["temperature", "top_p", "top_k"];

/// Which of `names` the request carries.
pub fn sampling_hints(root: &Obj<'_>, names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|name| root.get(name).is_some())
        .collect()
}

fn refused(field: &str, why: &str) -> ChatError {
    ChatError::invalid(field, format!("`{field}` is not available here: {why}"))
}

/// `n` / `best_of`: one answer per request is what Kiro gives.
pub fn refuse_several(root: &Obj<'_>, field: &str) -> Result<(), ChatError> {
    if root.u32(field)?.is_some_and(|n| n != 1) {
        return Err(ChatError::invalid(
            field,
            format!("Only `{field}: 1` is supported; send one request per completion."),
        ));
    }
    Ok(())
}

/// The Chat Completions fields that cannot be honoured.
pub fn refuse_openai(root: &Obj<'_>) -> Result<(), ChatError> {
    if root.bool("logprobs")? == Some(true) || root.u32("top_logprobs")?.is_some_and(|n| n > 0) {
        let field = if root.get("top_logprobs").is_some() {
            "top_logprobs"
        } else {
            "logprobs"
        };
        return Err(refused(field, "Kiro does not report token probabilities."));
    }
    if root
        .get("logit_bias")
        .is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
    {
        return Err(refused(
            "logit_bias",
            "Kiro takes no token biases; steer the model in the prompt instead.",
        ));
    }
    if root.get("audio").is_some() {
        return Err(refused(
            "audio",
            "the Claude models served here answer in text only.",
        ));
    }
    if let Some(Value::Array(modalities)) = root.get("modalities") {
        if modalities.iter().any(|m| m != "text") {
            return Err(refused(
                "modalities",
                "the Claude models served here answer in text only (`[\"text\"]`).",
            ));
        }
    }
    if root.get("prediction").is_some() {
        return Err(refused(
            "prediction",
            "predicted outputs need OpenAI's speculative decoding; send the request without it.",
        ));
    }
    if root.get("web_search_options").is_some() {
        return Err(refused("web_search_options", "web search through Kiro is served on the Messages API (the server tool web_search_20250305) and the Responses API (the hosted web_search tool), not on Chat Completions; use one of those, or offer a search function tool."));
    }
    Ok(())
}

/// The Messages API fields that cannot be honoured.
pub fn refuse_anthropic(root: &Obj<'_>) -> Result<(), ChatError> {
    if root.get("mcp_servers").is_some() {
        return Err(refused(
            "mcp_servers",
            "remote MCP servers run on Anthropic's side; connect them in your client instead.",
        ));
    }
    if root.get("container").is_some() {
        return Err(refused(
            "container",
            "code-execution containers run on Anthropic's side.",
        ));
    }
    Ok(())
}

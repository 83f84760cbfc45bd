//! Kiro's web search (docs/kiro-protocol.md §14.1): one JSON-RPC 2.0 `tools/call` of the tool
//! `web_search` on the API host's `/mcp`, with the chat call's bearer and IDE headers plus
//! the account's profile ARN. The answer's text content is a JSON document of results.

use crate::chat::web_search::{SearchErrorCode, SearchHit, SearchOutcome};
use crate::chat::ChatError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

/// The path of the MCP endpoint on the API host.
pub const MCP_PATH: &str = "/mcp";
/// The header that names the account's profile.
pub const PROFILE_ARN_HEADER: &str = "x-amzn-kiro-profile-arn";

/// The JSON-RPC body of one search. Its id has the shape Kiro's own client gives it
/// (`web_search_tooluse_<22>_<ms>_<8>`).
pub fn body(query: &str) -> Bytes {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let id = format!(
        "web_search_tooluse_{}_{millis}_{}",
        &random[..22],
        &random[22..30]
    );
    let body = json!({
        "id": id,
        "jsonrpc": "2.0",
        "method": "tools/call",
        "params": {"name": "web_search", "arguments": {"query": query}},
    });
    Bytes::from(body.to_string())
}

#[derive(Deserialize)]
struct RpcAnswer {
    #[serde(default)]
    result: Option<RpcResult>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RpcResult {
    #[serde(default)]
    content: Vec<RpcContent>,
    #[serde(default, rename = "isError")]
    is_error: bool,
}

#[derive(Deserialize)]
struct RpcContent {
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Results {
    #[serde(default)]
    results: Vec<RawHit>,
}

#[derive(Deserialize)]
struct RawHit {
    #[serde(default)]
    title: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    snippet: Option<String>,
    #[serde(default, rename = "publishedDate")]
    published_date: Option<i64>,
}

/// Reads a 2xx answer of the MCP endpoint. A JSON-RPC error or an answer that is not one is
/// the upstream's failure (retried on another account, counted by its breaker); a tool
/// result flagged `isError` is the search's own failure, told to the model and the client.
pub fn parse(answer: &[u8]) -> Result<SearchOutcome, ChatError> {
    let answer: RpcAnswer = serde_json::from_slice(answer).map_err(|e| ChatError::Upstream {
        message: format!("Kiro's web search answered something that is not JSON-RPC: {e}"),
    })?;
    if let Some(error) = answer.error {
        return Err(ChatError::Upstream {
            message: format!(
                "Kiro's web search failed with JSON-RPC error {}: {}",
                error.code, error.message
            ),
        });
    }
    let result = answer.result.ok_or_else(|| ChatError::Upstream {
        message: "Kiro's web search answered with neither a result nor an error".into(),
    })?;
    let text = result.content.first().map_or("", |c| c.text.as_str());
    if result.is_error {
        tracing::info!(message = text, "Kiro's web search reported an error");
        return Ok(Err(SearchErrorCode::Unavailable));
    }
    let results: Results = serde_json::from_str(text).map_err(|e| ChatError::Upstream {
        message: format!("Kiro's web search results do not parse: {e}"),
    })?;
    Ok(Ok(results
        .results
        .into_iter()
        .filter(|hit| !hit.url.is_empty())
        .map(|hit| SearchHit {
            title: if hit.title.is_empty() {
                hit.url.clone()
            } else {
                hit.title
            },
            url: hit.url,
            snippet: hit.snippet.unwrap_or_default(),
            page_age: hit.published_date.and_then(page_age),
        })
        .collect()))
}

/// A publication time in milliseconds since the epoch, as Anthropic words page ages
/// (`January 1, 2026`).
fn page_age(millis: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)).ok()?;
    Some(format!("{} {}, {}", at.month(), at.day(), at.year()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_a_json_rpc_tools_call_with_kiros_id_shape() {
        let body: serde_json::Value = serde_json::from_slice(&body("rust news")).unwrap();
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["method"], "tools/call");
        assert_eq!(
            body["params"],
            json!({"name": "web_search", "arguments": {"query": "rust news"}})
        );
        let id = body["id"].as_str().unwrap();
        let parts: Vec<&str> = id
            .strip_prefix("web_search_tooluse_")
            .unwrap()
            .split('_')
            .collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>()[..1], [22]);
        assert_eq!(parts[2].len(), 8);
    }

    #[test]
    fn results_errors_and_tool_errors_are_told_apart() {
        let text = json!({"results": [{"title": "T", "url": "https://a.example/x", "snippet": "S",
            "publishedDate": 1767225600000_i64, "id": "1", "domain": "a.example"}], "totalResults": 1});
        let answer = json!({"id": "x", "jsonrpc": "2.0",
            "result": {"content": [{"type": "text", "text": text.to_string()}], "isError": false}});
        let hits = parse(answer.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(hits[0].page_age.as_deref(), Some("January 1, 2026"));
        assert_eq!(
            (hits[0].title.as_str(), hits[0].snippet.as_str()),
            ("T", "S")
        );

        let tool_error = json!({"id": "x", "jsonrpc": "2.0",
            "result": {"content": [{"type": "text", "text": "quota"}], "isError": true}});
        assert_eq!(
            parse(tool_error.to_string().as_bytes()).unwrap(),
            Err(SearchErrorCode::Unavailable)
        );
        let rpc_error =
            json!({"id": "x", "jsonrpc": "2.0", "error": {"code": -32603, "message": "boom"}});
        let error = parse(rpc_error.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("-32603: boom"), "{error}");
        assert!(matches!(parse(b"<html>"), Err(ChatError::Upstream { .. })));
    }
}

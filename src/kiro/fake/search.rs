//! The fake's `/mcp`: Kiro's web search (docs/kiro-protocol.md §14.1), checked as strictly as
//! the chat call: the IDE headers, the profile ARN header, JSON-RPC 2.0 with the id shape,
//! method and params Kiro's client sends. Results are deterministic for a query; steps
//! queued with `POST /__fake/search` script failures.

use serde::Deserialize;
use serde_json::{json, Value};

/// One scripted search answer (`POST /__fake/search`, a JSON object or an array).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchStep {
    /// Answer with this HTTP status (429 with `Retry-After: 1`, 5xx, 403 ...).
    #[serde(default)]
    pub status: Option<u16>,
    /// Answer with a JSON-RPC error carrying this message.
    #[serde(default)]
    pub rpc_error: Option<String>,
    /// Answer with a tool result flagged `isError`.
    #[serde(default)]
    pub is_error: bool,
    /// Wait this long before the body.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer with these results (objects of Kiro's shape) instead of the default ones.
    #[serde(default)]
    pub results: Option<Vec<Value>>,
}

/// The headers Kiro's search needs, as (name, what it must contain).
const HEADERS: [(&str, &str); 4] = [
    ("content-type", "application/json"),
    ("user-agent", "KiroIDE"),
    ("x-amz-user-agent", "KiroIDE"),
    (
        crate::kiro::search::PROFILE_ARN_HEADER,
        "arn:aws:codewhisperer:",
    ),
];

/// The JSON-RPC id and the query of a valid search call, or what is wrong with it.
pub fn check(headers: &http::HeaderMap, body: &[u8]) -> Result<(Value, String), String> {
    for (name, needs) in HEADERS {
        let value = headers.get(name).and_then(|v| v.to_str().ok());
        match value {
            None if name == crate::kiro::search::PROFILE_ARN_HEADER => {
                return Err("profileArn is required for this request.".into())
            }
            None => return Err(format!("the search call has no `{name}` header")),
            Some(value) if !value.contains(needs) => {
                return Err(format!(
                    "the search call's `{name}` header is `{value}`, without `{needs}`"
                ))
            }
            Some(_) => {}
        }
    }
    if headers.get("amz-sdk-invocation-id").is_none() {
        return Err("the search call has no `amz-sdk-invocation-id` header".into());
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|e| format!("the search body is not JSON: {e}"))?;
    if body.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("the search body's `jsonrpc` is not \"2.0\"".into());
    }
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    if !id
        .as_str()
        .is_some_and(|id| id.starts_with("web_search_tooluse_"))
    {
        return Err(format!(
            "the search body's `id` is {id}, not web_search_tooluse_..."
        ));
    }
    if body.get("method").and_then(Value::as_str) != Some("tools/call") {
        return Err("the search body's `method` is not `tools/call`".into());
    }
    let params = body.get("params").and_then(Value::as_object);
    let Some(params) = params else {
        return Err("the search body has no `params` object".into());
    };
    if params.get("name").and_then(Value::as_str) != Some("web_search") || params.len() != 2 {
        return Err("the search `params` must be exactly {name: \"web_search\", arguments}".into());
    }
    let arguments = params.get("arguments").and_then(Value::as_object);
    let query = arguments
        .filter(|a| a.len() == 1)
        .and_then(|a| a.get("query"))
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty());
    match query {
        Some(query) => Ok((id, query.to_owned())),
        None => Err("the search `arguments` must be exactly {query: <non-empty string>}".into()),
    }
}

/// The fake's results for `query`: three pages on three domains, the same every time.
pub fn results(query: &str) -> Vec<Value> {
    let slug: String = query
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    ["example.com", "docs.example.org", "news.example.net"]
        .iter()
        .enumerate()
        .map(|(n, domain)| {
            let n = n + 1;
            json!({
                "title": format!("Fake result {n} for {query}"),
                "url": format!("https://{domain}/{slug}/{n}"),
                "snippet": format!("Excerpt {n} of a page about {query}."),
                "publishedDate": 1_767_225_600_000_i64 + (n as i64) * 86_400_000,
                "id": format!("fake-{n}"),
                "domain": domain,
                "maxVerbatimWordLimit": 25,
                "publicDomain": false,
            })
        })
        .collect()
}

/// The JSON-RPC answer of a search with `id`.
pub fn answer(id: Value, query: &str, step: &SearchStep) -> Value {
    if let Some(message) = &step.rpc_error {
        return json!({"id": id, "jsonrpc": "2.0", "error": {"code": -32603, "message": message}});
    }
    if step.is_error {
        return json!({"id": id, "jsonrpc": "2.0", "result": {
            "content": [{"type": "text", "text": "The web search failed."}], "isError": true}});
    }
    let results = step.results.clone().unwrap_or_else(|| results(query));
    let text =
        json!({"results": results, "totalResults": results.len(), "query": query, "error": null});
    json!({"id": id, "jsonrpc": "2.0", "result": {
        "content": [{"type": "text", "text": text.to_string()}], "isError": false}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("user-agent", "aws-sdk-js KiroIDE-0.9-x"),
            ("x-amz-user-agent", "aws-sdk-js KiroIDE-0.9-x"),
            ("amz-sdk-invocation-id", "1"),
            (
                "x-amzn-kiro-profile-arn",
                "arn:aws:codewhisperer:us-east-1:1:profile/X",
            ),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_call_like_kiros_own_passes_and_each_deviation_is_named() {
        let body = crate::kiro::search::body("rust");
        let (_, query) = check(&headers(), &body).unwrap();
        assert_eq!(query, "rust");

        let mut no_arn = headers();
        no_arn.remove("x-amzn-kiro-profile-arn");
        assert!(check(&no_arn, &body)
            .unwrap_err()
            .contains("profileArn is required"));
        let extra = json!({"id": "web_search_tooluse_x", "jsonrpc": "2.0", "method": "tools/call",
            "params": {"name": "web_search", "arguments": {"query": "q", "count": 3}}});
        assert!(check(&headers(), extra.to_string().as_bytes())
            .unwrap_err()
            .contains("arguments"));
        let wrong_method =
            json!({"id": "web_search_tooluse_x", "jsonrpc": "2.0", "method": "tools/list"});
        assert!(check(&headers(), wrong_method.to_string().as_bytes())
            .unwrap_err()
            .contains("method"));
    }
}

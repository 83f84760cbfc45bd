//! What the fake serves: its model list (§13.3 entry shapes, with the capabilities the
//! 2026 models have), the `ListAvailableModels` call that pages through it, and the list's
//! changes at run time (`POST /__fake/models`), so the catalog refresh can be tested.

use serde_json::{json, Value};

pub use crate::kiro::accounts::model_list::TARGET;

/// Entries per `ListAvailableModels` page (small, so that paging is exercised).
pub const PAGE_SIZE: usize = 4;

/// Reasoning schema of the 4.6+ models (§13.3: `additionalModelRequestFieldsSchema`).
fn reasoning_schema(efforts: &[&str]) -> Value {
    json!({"type": "object", "properties": {
        "thinking": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["adaptive", "disabled"]},
            "display": {"type": "string", "enum": ["summarized", "omitted"]}}},
        "output_config": {"type": "object", "properties": {
            "effort": {"type": "string", "enum": efforts}}}}})
}

fn entry(
    id: &str,
    name: &str,
    window: u64,
    output: u64,
    rate: f64,
    schema: Option<Value>,
) -> Value {
    let mut entry = json!({
        "modelId": id, "modelName": name, "description": format!("{name} (fake)"),
        "supportedInputTypes": ["TEXT", "IMAGE"],
        "tokenLimits": {"maxInputTokens": window, "maxOutputTokens": output},
        "promptCaching": {"supportsPromptCaching": true, "maximumCacheCheckpointsPerRequest": 4,
                          "minimumTokensPerCacheCheckpoint": 1024},
        "rateMultiplier": rate, "rateUnit": "Credit",
    });
    if let Some(schema) = schema {
        entry["additionalModelRequestFieldsSchema"] = schema;
    }
    entry
}

/// The models the fake serves until told otherwise.
pub fn default_models() -> Vec<Value> {
    let effort = reasoning_schema(&["low", "medium", "high", "max"]);
    let newest = reasoning_schema(&["low", "medium", "high", "xhigh", "max"]);
    let text_only = |mut entry: Value| {
        entry["supportedInputTypes"] = json!(["TEXT"]);
        entry["promptCaching"] = json!({"supportsPromptCaching": false});
        entry
    };
    vec![
        entry("auto", "Auto", 200_000, 64_000, 1.0, None),
        entry(
            "claude-sonnet-4",
            "Claude Sonnet 4",
            200_000,
            64_000,
            1.3,
            None,
        ),
        entry(
            "claude-sonnet-4.5",
            "Claude Sonnet 4.5",
            200_000,
            64_000,
            1.3,
            None,
        ),
        entry(
            "claude-sonnet-4.6",
            "Claude Sonnet 4.6",
            1_000_000,
            64_000,
            1.3,
            Some(effort.clone()),
        ),
        entry(
            "claude-haiku-4.5",
            "Claude Haiku 4.5",
            200_000,
            64_000,
            0.4,
            None,
        ),
        entry(
            "claude-opus-4.5",
            "Claude Opus 4.5",
            200_000,
            64_000,
            2.2,
            None,
        ),
        entry(
            "claude-opus-4.6",
            "Claude Opus 4.6",
            1_000_000,
            64_000,
            2.2,
            Some(effort.clone()),
        ),
        entry(
            "claude-opus-4.7",
            "Claude Opus 4.7",
            1_000_000,
            64_000,
            2.2,
            Some(effort),
        ),
        entry(
            "claude-opus-4.8",
            "Claude Opus 4.8",
            1_000_000,
            128_000,
            2.2,
            Some(newest.clone()),
        ),
        entry(
            "claude-opus-5",
            "Claude Opus 5",
            1_000_000,
            128_000,
            2.5,
            Some(newest.clone()),
        ),
        entry(
            "claude-sonnet-5",
            "Claude Sonnet 5",
            1_000_000,
            64_000,
            1.5,
            Some(newest.clone()),
        ),
        entry(
            "claude-haiku-5.5",
            "Claude Haiku 5.5",
            200_000,
            64_000,
            0.5,
            Some(newest.clone()),
        ),
        entry(
            "claude-opus-5.5",
            "Claude Opus 5.5",
            1_000_000,
            128_000,
            2.5,
            Some(newest),
        ),
        text_only(entry(
            "deepseek-3.2",
            "DeepSeek 3.2",
            128_000,
            8_192,
            0.3,
            None,
        )),
        text_only(entry(
            "qwen3-coder-next",
            "Qwen3 Coder Next",
            256_000,
            16_384,
            0.3,
            None,
        )),
    ]
}

/// The page of `models` that `body` asks for, or the 400 Kiro would answer.
pub fn page(models: &[Value], body: &[u8]) -> Result<Value, Value> {
    let invalid = |message: String| json!({"__type": "ValidationException", "message": message});
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the request body is not JSON: {e}")))?;
    if request.get("origin").and_then(Value::as_str).is_none() {
        return Err(invalid("origin is required".into()));
    }
    if request
        .get("profileArn")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid("profileArn is required".into()));
    }
    let start = match request.get("nextToken").and_then(Value::as_str) {
        None => 0,
        Some(token) => token
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < models.len())
            .ok_or_else(|| invalid(format!("invalid nextToken `{token}`")))?,
    };
    let end = (start + PAGE_SIZE).min(models.len());
    let mut answer = json!({
        "models": &models[start..end],
        "defaultModel": {"modelId": "auto"},
    });
    if end < models.len() {
        answer["nextToken"] = json!(format!("page-{end}"));
    }
    Ok(answer)
}

/// Applies a `POST /__fake/models` body: `{"add": entry}` (replacing an entry of the same
/// id) or `{"remove": "id"}`.
pub fn change(models: &mut Vec<Value>, body: &[u8]) -> Result<(), String> {
    let request: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if let Some(entry) = request.get("add") {
        let id = entry
            .get("modelId")
            .and_then(Value::as_str)
            .ok_or("`add` needs an entry with a modelId")?;
        match models.iter_mut().find(|m| m["modelId"] == id) {
            Some(existing) => *existing = entry.clone(),
            None => models.push(entry.clone()),
        }
        return Ok(());
    }
    if let Some(id) = request.get("remove").and_then(Value::as_str) {
        models.retain(|m| m["modelId"] != id);
        return Ok(());
    }
    Err("send {\"add\": {\"modelId\": ...}} or {\"remove\": \"id\"}".into())
}

/// Whether `models` has `id`.
pub fn serves(models: &[Value], id: &str) -> bool {
    served(models, id).is_some()
}

/// The entry of model `id`, if the fake serves it.
pub fn served<'a>(models: &'a [Value], id: &str) -> Option<&'a Value> {
    models.iter().find(|m| m["modelId"] == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_need_a_profile_and_a_valid_token() {
        let models = default_models();
        let first = page(&models, br#"{"origin": "KIRO_CLI", "profileArn": "p"}"#).unwrap();
        assert_eq!(first["models"].as_array().unwrap().len(), PAGE_SIZE);
        assert_eq!(first["nextToken"], "page-4");
        let body = json!({"origin": "KIRO_CLI", "profileArn": "p", "nextToken": "page-12"});
        let last = page(&models, body.to_string().as_bytes()).unwrap();
        assert!(last.get("nextToken").is_none());
        assert!(
            page(&models, br#"{"origin": "KIRO_CLI"}"#).unwrap_err()["message"]
                .as_str()
                .unwrap()
                .contains("profileArn")
        );
        let bad = json!({"origin": "KIRO_CLI", "profileArn": "p", "nextToken": "page-99"});
        assert!(page(&models, bad.to_string().as_bytes()).is_err());
    }

    #[test]
    fn models_are_added_replaced_and_removed() {
        let mut models = default_models();
        change(&mut models, br#"{"add": {"modelId": "claude-opus-6"}}"#).unwrap();
        assert!(serves(&models, "claude-opus-6"));
        change(&mut models, br#"{"remove": "claude-opus-6"}"#).unwrap();
        assert!(!serves(&models, "claude-opus-6"));
        assert!(change(&mut models, br#"{"add": {}}"#).is_err());
    }
}

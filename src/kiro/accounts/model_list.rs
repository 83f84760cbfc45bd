//! `ListAvailableModels` (docs/kiro-protocol.md §13.3): what one account serves, with each
//! model's limits and capabilities. AWS JSON 1.0 on the management host, paginated with
//! `nextToken`, and it needs the account's profileArn.
//!
//! The entries are kept as Kiro sent them ([`ListedModel::raw`], unknown fields included) and
//! read into the catalog's [`Capabilities`] here, once per listing.

pub use crate::catalog::{Capabilities, ListedModel, Listing, PromptCaching, Reasoning};
use serde::Deserialize;
use serde_json::{json, Value};

/// `x-amz-target` of the call.
pub const TARGET: &str = "AmazonCodeWhispererService.ListAvailableModels";
/// `content-type` of AWS JSON 1.0.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// Pages read at most: a server that keeps handing out tokens cannot keep us looping.
pub const MAX_PAGES: usize = 32;

/// One page of the answer.
#[derive(Debug)]
pub struct Page {
    /// Its models.
    pub models: Vec<ListedModel>,
    /// `defaultModel.modelId`.
    pub default_model: Option<String>,
    /// Where the next page starts, if there is one.
    pub next_token: Option<String>,
}

/// The body that asks for the page at `next_token` (the first page without one).
pub fn request_body(profile_arn: &str, next_token: Option<&str>) -> Value {
    let mut body = json!({"origin": "KIRO_CLI", "profileArn": profile_arn});
    if let Some(token) = next_token {
        body["nextToken"] = json!(token);
    }
    body
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPage {
    #[serde(default)]
    models: Vec<Value>,
    default_model: Option<Value>,
    next_token: Option<String>,
}

/// Parses one page. An entry without a `modelId` is skipped (it could not be asked for).
pub fn parse_page(body: &[u8]) -> Result<Page, String> {
    let raw: RawPage = serde_json::from_slice(body)
        .map_err(|e| format!("ListAvailableModels answered unexpected JSON ({e})"))?;
    Ok(Page {
        models: raw.models.into_iter().filter_map(parse_model).collect(),
        default_model: raw
            .default_model
            .as_ref()
            .and_then(|m| m.get("modelId"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        next_token: raw.next_token.filter(|t| !t.is_empty()),
    })
}

fn parse_model(raw: Value) -> Option<ListedModel> {
    let id = raw.get("modelId")?.as_str()?.to_owned();
    let limit = |key: &str| raw.pointer(&format!("/tokenLimits/{key}"))?.as_u64();
    let capabilities = Capabilities {
        input_types: strings(raw.get("supportedInputTypes"))
            .into_iter()
            .map(|t| t.to_ascii_lowercase())
            .collect(),
        reasoning: raw
            .get("additionalModelRequestFieldsSchema")
            .and_then(reasoning),
        prompt_caching: raw.get("promptCaching").and_then(prompt_caching),
        native_max_tokens: raw
            .pointer("/additionalModelRequestFieldsSchema/properties/max_tokens")
            .is_some(),
        rate_multiplier: raw.get("rateMultiplier").and_then(Value::as_f64),
        rate_unit: raw
            .get("rateUnit")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    Some(ListedModel {
        max_input_tokens: limit("maxInputTokens"),
        max_output_tokens: limit("maxOutputTokens"),
        name: raw
            .get("modelName")
            .and_then(Value::as_str)
            .map(str::to_owned),
        id,
        capabilities,
        raw,
    })
}

/// The reasoning a request-fields schema allows: `properties.thinking.properties.{type,
/// display}.enum` and `properties.output_config.properties.effort.enum` (or
/// `properties.reasoning.properties.effort.enum`, the GPT models' key).
fn reasoning(schema: &Value) -> Option<Reasoning> {
    let props = schema.get("properties")?;
    let values = |path: &str| strings(props.pointer(path));
    let (effort, effort_key) = match values("/output_config/properties/effort/enum") {
        levels if levels.is_empty() => (values("/reasoning/properties/effort/enum"), "reasoning"),
        levels => (levels, "output_config"),
    };
    let reasoning = Reasoning {
        thinking_types: values("/thinking/properties/type/enum"),
        display: values("/thinking/properties/display/enum"),
        effort_levels: effort,
        effort_key,
    };
    let any = !reasoning.thinking_types.is_empty() || !reasoning.effort_levels.is_empty();
    any.then_some(reasoning)
}

fn prompt_caching(value: &Value) -> Option<PromptCaching> {
    if value.get("supportsPromptCaching").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    Some(PromptCaching {
        max_checkpoints: value
            .get("maximumCacheCheckpointsPerRequest")
            .and_then(Value::as_u64),
        min_tokens_per_checkpoint: value
            .get("minimumTokensPerCacheCheckpoint")
            .and_then(Value::as_u64),
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_gives_limits_capabilities_and_keeps_unknown_fields() {
        let body = json!({
            "models": [{
                "modelId": "claude-opus-4.8", "modelName": "Claude Opus 4.8",
                "supportedInputTypes": ["TEXT", "IMAGE"],
                "tokenLimits": {"maxInputTokens": 1_000_000, "maxOutputTokens": 128_000},
                "promptCaching": {"supportsPromptCaching": true, "maximumCacheCheckpointsPerRequest": 4,
                                  "minimumTokensPerCacheCheckpoint": 1024},
                "additionalModelRequestFieldsSchema": {"type": "object", "properties": {
                    "thinking": {"properties": {"type": {"enum": ["adaptive", "disabled"]},
                                                "display": {"enum": ["summarized", "omitted"]}}},
                    "output_config": {"properties": {"effort": {"enum": ["low", "medium", "high", "xhigh", "max"]}}}}},
                "rateMultiplier": 2.2, "rateUnit": "Credit", "newField": {"x": 1}
            }, {"modelId": "claude-haiku-4.5", "supportedInputTypes": ["TEXT"],
                "promptCaching": {"supportsPromptCaching": false}},
               {"modelName": "no id"}],
            "defaultModel": {"modelId": "auto"},
            "nextToken": "p2"
        });
        let page = parse_page(body.to_string().as_bytes()).unwrap();
        assert_eq!(page.next_token.as_deref(), Some("p2"));
        assert_eq!(page.default_model.as_deref(), Some("auto"));
        assert_eq!(page.models.len(), 2, "the entry without modelId is skipped");
        let opus = &page.models[0];
        assert_eq!(
            (opus.max_input_tokens, opus.max_output_tokens),
            (Some(1_000_000), Some(128_000))
        );
        let reasoning = opus.capabilities.reasoning.as_ref().unwrap();
        assert_eq!(reasoning.thinking_types, ["adaptive", "disabled"]);
        assert_eq!(reasoning.effort_levels.len(), 5);
        assert_eq!(opus.capabilities.input_types, ["text", "image"]);
        assert_eq!(
            opus.capabilities.prompt_caching,
            Some(PromptCaching {
                max_checkpoints: Some(4),
                min_tokens_per_checkpoint: Some(1024)
            })
        );
        assert_eq!(opus.raw["newField"]["x"], 1);
        let haiku = &page.models[1];
        assert!(haiku.capabilities.reasoning.is_none());
        assert!(haiku.capabilities.prompt_caching.is_none());
        assert!(haiku.capabilities.refuses_images());
        assert!(!opus.capabilities.refuses_images());
        assert!(parse_page(b"[]").is_err());
    }

    #[test]
    fn the_request_names_the_profile_and_the_page() {
        assert_eq!(
            request_body("arn:p", None),
            json!({"origin": "KIRO_CLI", "profileArn": "arn:p"})
        );
        assert_eq!(request_body("arn:p", Some("t"))["nextToken"], "t");
    }
}

//! `GET /v1/models` and `GET /v1/models/{id}`: the live catalog, in OpenAI's `model` shape or
//! (when the request carries `anthropic-version`) Anthropic's, each entry with its limits and
//! capabilities in extra fields both schemas leave open.

use super::{error, json_response, ApiState};
use crate::body::ResponseBody;
use crate::catalog::{CatalogSource, ModelEntry};
use aiproxy_layers::Rejection;
use http::{Response, StatusCode};
use serde_json::{json, Value};

/// The list, in the shape the client speaks.
pub(super) fn list(state: &ApiState, anthropic: bool) -> Response<ResponseBody> {
    let snapshot = state.catalog.snapshot();
    let source = snapshot.source;
    let data: Vec<Value> = snapshot
        .entries()
        .iter()
        .map(|entry| describe(entry, source, anthropic))
        .collect();
    let body = if anthropic {
        let first = data.first().map(|m| m["id"].clone());
        let last = data.last().map(|m| m["id"].clone());
        json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
    } else {
        json!({"object": "list", "data": data})
    };
    json_response(StatusCode::OK, body.to_string())
}

/// One model (the SDKs' `models.retrieve`); the id may be percent-encoded (`%5B1m%5D`).
pub(super) fn by_id(
    state: &ApiState,
    id: &str,
    anthropic: bool,
) -> Result<Response<ResponseBody>, Rejection> {
    let id = percent_decoded(id);
    let snapshot = state.catalog.snapshot();
    let entry = snapshot
        .get(&id)
        .ok_or_else(|| error::rejection(&state.catalog.not_found(&id)))?;
    let mut body = describe(entry, snapshot.source, anthropic);
    if let Some(raw) = &entry.listed {
        body["kiro"] = (**raw).clone();
    }
    Ok(json_response(StatusCode::OK, body.to_string()))
}

fn describe(entry: &ModelEntry, source: CatalogSource, anthropic: bool) -> Value {
    let mut model = if anthropic {
        let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.created);
        json!({"type": "model", "id": entry.id,
               "display_name": entry.display_name.as_deref().unwrap_or(&entry.id),
               "created_at": crate::kiro::auth::credentials::format_time(created),
               "max_input_tokens": entry.context_window,
               "max_tokens": entry.max_output_tokens})
    } else {
        json!({"id": entry.id, "object": "model", "created": entry.created, "owned_by": "kiro",
               "display_name": entry.display_name,
               "context_window": entry.context_window,
               "max_output_tokens": entry.max_output_tokens})
    };
    let caps = &entry.capabilities;
    model["kiro_model_id"] = json!(entry.kiro_model_id);
    model["capabilities"] = json!({
        "input_types": caps.input_types,
        "reasoning": caps.reasoning.as_ref().map(|r| json!({
            "thinking_types": r.thinking_types, "display": r.display, "effort_levels": r.effort_levels,
        })),
        "prompt_caching": caps.prompt_caching.as_ref().map(|p| json!({
            "max_checkpoints": p.max_checkpoints,
            "min_tokens_per_checkpoint": p.min_tokens_per_checkpoint,
        })),
        "rate_multiplier": caps.rate_multiplier,
        "rate_unit": caps.rate_unit,
    });
    model["source"] = json!(match source {
        CatalogSource::Accounts => "accounts",
        CatalogSource::File => "file",
    });
    model
}

fn percent_decoded(id: &str) -> String {
    if !id.contains('%') {
        return id.to_owned();
    }
    form_urlencoded::parse(format!("id={}", id.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| id.to_owned(), |(_, value)| value.into_owned())
}

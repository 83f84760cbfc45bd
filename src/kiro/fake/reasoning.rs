//! Native reasoning as the fake checks and answers it (docs/kiro-protocol.md §13.1, §13.2):
//! `additionalModelRequestFields` against the model's `additionalModelRequestFieldsSchema`
//! (no schema: the field is refused; unknown keys and values outside the `enum`s are
//! refused), signed `reasoningContentEvent`s, and the signatures of replayed reasoning
//! checked like Kiro checks them.

use crate::kiro::protocol::wire::{HistoryEntry, KiroRequest, ReasoningContent};
use serde_json::{json, Map, Value};

/// What the fields switched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Native {
    /// The effort asked for, if any.
    pub effort: Option<String>,
}

/// Kiro's 400 body for refused fields.
pub fn refused(message: String) -> Value {
    json!({"message": message, "reason": "INVALID_ADDITIONAL_MODEL_REQUEST_FIELDS"})
}

/// Checks `fields` against the model entry's schema; `Ok(None)`: reasoning stays off
/// (`thinking.type: disabled`).
pub fn check(fields: &Value, model: &Value) -> Result<Option<Native>, String> {
    let Some(schema) = model.get("additionalModelRequestFieldsSchema") else {
        return Err("additionalModelRequestFields is not supported for this model".into());
    };
    let Some(fields) = fields.as_object() else {
        return Err("Invalid additionalModelRequestFields: expected an object".into());
    };
    check_object(fields, schema, "")?;
    let thinking = fields
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str);
    let effort = fields
        .get("output_config")
        .or_else(|| fields.get("reasoning"))
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if fields.contains_key("output_config") && thinking.is_some_and(|t| t != "adaptive") {
        return Err(
            "Invalid additionalModelRequestFields: output_config requires thinking.type adaptive"
                .into(),
        );
    }
    let on = thinking == Some("adaptive") || (thinking.is_none() && effort.is_some());
    Ok(on.then_some(Native { effort }))
}

fn check_object(fields: &Map<String, Value>, schema: &Value, path: &str) -> Result<(), String> {
    for (key, value) in fields {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(property) = schema.get("properties").and_then(|p| p.get(key)) else {
            return Err(format!(
                "Invalid additionalModelRequestFields: property '{at}' is not defined"
            ));
        };
        match value {
            Value::Object(inner) => check_object(inner, property, &at)?,
            other => {
                if let Some(allowed) = property.get("enum").and_then(Value::as_array) {
                    if !allowed.contains(other) {
                        return Err(format!(
                            "Invalid additionalModelRequestFields: '{at}' must be one of {}",
                            Value::Array(allowed.clone())
                        ));
                    }
                }
                let number = other.as_f64();
                let bound = |key: &str| property.get(key).and_then(Value::as_f64);
                let below = bound("minimum").zip(number).is_some_and(|(min, n)| n < min);
                let above = bound("maximum").zip(number).is_some_and(|(max, n)| n > max);
                if below || above {
                    return Err(format!(
                        "Invalid additionalModelRequestFields: '{at}' is out of range"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The fake's encrypted reasoning for `text`: opaque to the client, verifiable by the
/// fake when it comes back (a stand-in for Kiro's ciphertext).
pub fn seal(text: &str) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(text);
    format!("{body}.{}", sign(&body))
}

/// Whether `data` is reasoning the fake sealed.
fn sealed(data: &str) -> bool {
    data.rsplit_once('.')
        .is_some_and(|(body, signature)| sign(body) == signature)
}

/// The fake's signature of reasoning `text` (a keyed hash: a changed text or a made-up
/// signature does not verify).
pub fn sign(text: &str) -> String {
    let hash = blake3::keyed_hash(b"aiproxy fake kiro reasoning key!", text.as_bytes());
    format!("fake-sig-{}", &hash.to_hex()[..32])
}

/// Kiro's check of replayed reasoning: every `reasoningText` must carry the signature Kiro
/// gave that text, every `redactedContent` be what Kiro sealed. `Err`: the 400 body.
pub fn check_signatures(request: &KiroRequest) -> Result<usize, Value> {
    let mut verified = 0;
    for (index, entry) in request.conversation_state.history.iter().enumerate() {
        let HistoryEntry::AssistantResponseMessage(message) = entry else {
            continue;
        };
        let valid = match &message.reasoning_content {
            Some(ReasoningContent::ReasoningText(reasoning)) => {
                sign(&reasoning.text) == reasoning.signature
            }
            Some(ReasoningContent::RedactedContent(data)) => sealed(data),
            None => continue,
        };
        if !valid {
            return Err(json!({
                "message": format!("messages.{index}.content.0: Invalid signature in thinking block"),
                "reason": "THINKING_SIGNATURE_INVALID"
            }));
        }
        verified += 1;
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::fake::models::default_models;

    fn model(id: &str) -> Value {
        default_models()
            .into_iter()
            .find(|m| m["modelId"] == id)
            .unwrap()
    }

    #[test]
    fn fields_are_checked_against_the_models_schema() {
        let opus = model("claude-opus-4.8");
        let ok = json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}});
        assert_eq!(
            check(&ok, &opus).unwrap(),
            Some(Native {
                effort: Some("xhigh".into())
            })
        );
        let unknown = json!({"reasoning": {"effort": "high"}});
        assert_eq!(
            check(&unknown, &opus).unwrap_err(),
            "Invalid additionalModelRequestFields: property 'reasoning' is not defined"
        );
        let bad_level = json!({"output_config": {"effort": "extreme"}});
        assert!(check(&bad_level, &opus)
            .unwrap_err()
            .contains("'output_config.effort' must be one of"));
        let sibling = json!({"thinking": {"type": "disabled"}, "output_config": {"effort": "low"}});
        assert!(check(&sibling, &opus).is_err());
        assert_eq!(
            check(&json!({"thinking": {"type": "disabled"}}), &opus).unwrap(),
            None
        );
    }

    #[test]
    fn older_models_refuse_the_field() {
        let old = model("claude-sonnet-4.5");
        assert_eq!(
            check(&json!({"thinking": {"type": "adaptive"}}), &old).unwrap_err(),
            "additionalModelRequestFields is not supported for this model"
        );
    }

    #[test]
    fn signatures_verify_only_their_own_text() {
        let signature = sign("step one");
        assert_eq!(signature, sign("step one"));
        assert_ne!(signature, sign("step two"));
    }
}

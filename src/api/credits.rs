//! The credits an answer cost (Kiro's `meteringEvent`, docs/kiro-protocol.md §14.4), where the
//! client and the operator see them: the `x-aiproxy-credits` header of a non-stream answer,
//! `kiro_credits` in every API's usage object (streams included), the
//! `aiproxy_kiro_credits_total` counter by account, model and API key, and the request span.

use crate::chat::Usage;
use aiproxy_layers::metrics::bound::{self, Series};
use http::HeaderValue;
use opentelemetry::metrics::{BoundCounter, Counter, Meter};
use opentelemetry::KeyValue;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// The response header of a non-stream answer's credits.
pub const HEADER: &str = "x-aiproxy-credits";

/// The usage's credits, when the upstream reported any.
pub fn of(usage: &Usage) -> Option<f64> {
    (usage.credits > 0.0).then_some(usage.credits)
}

/// The header value of the usage's credits, when there are any.
pub fn header(usage: &Usage) -> Option<HeaderValue> {
    of(usage).and_then(|credits| HeaderValue::from_str(&format!("{credits}")).ok())
}

/// Adds `kiro_credits` to an API's usage object (an extension field: the schemas allow more
/// properties, and the SDKs keep them).
pub fn extend_usage(usage_json: &mut Value, usage: &Usage) {
    if let (Some(credits), Value::Object(map)) = (of(usage), usage_json) {
        map.insert("kiro_credits".into(), Value::from(credits));
    }
}

/// `aiproxy_kiro_credits_total`: credits spent, by account, model and API key label.
#[derive(Clone, Debug)]
pub struct CreditsCounter(Arc<Credits>);

#[derive(Debug)]
struct Credits {
    counter: Counter<f64>,
    /// Bound by label set (see `aiproxy_layers::metrics::bound`).
    series: Series<LabelSet, OnceLock<BoundCounter<f64>>>,
}

/// Account, model and API key label.
type LabelSet = (Arc<str>, Arc<str>, Arc<str>);

impl CreditsCounter {
    /// The counter on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self(Arc::new(Credits {
            counter: meter
                .f64_counter("kiro.credits")
                .with_description(
                    "Kiro credits the answers cost (meteringEvent), by account, model and API key",
                )
                .build(),
            series: Series::with_max_sets(bound::MAX_SETS),
        }))
    }

    /// Counts one answer's credits (the labels are shared, not copied).
    pub fn add(&self, credits: f64, account: &Arc<str>, model: &Arc<str>, api_key: Arc<str>) {
        if credits <= 0.0 {
            return;
        }
        let key = (Arc::clone(account), Arc::clone(model), Arc::clone(&api_key));
        let slot = self.0.series.get(key);
        bound::add(&self.0.counter, slot.as_deref(), credits, || {
            [
                KeyValue::new("account", Arc::clone(account)),
                KeyValue::new("gen_ai.request.model", Arc::clone(model)),
                KeyValue::new("api_key", api_key),
            ]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credits_extend_the_usage_only_when_there_are_some() {
        let mut usage_json = json!({"input_tokens": 1});
        extend_usage(&mut usage_json, &Usage::default());
        assert_eq!(usage_json, json!({"input_tokens": 1}));
        let spent = Usage {
            credits: 0.0125,
            ..Usage::default()
        };
        extend_usage(&mut usage_json, &spent);
        assert_eq!(usage_json["kiro_credits"], 0.0125);
        assert_eq!(header(&spent).unwrap(), "0.0125");
        assert!(header(&Usage::default()).is_none());
    }
}

//! What the console's pages read (`GET /console/api/...`): JSON built from the pool's views
//! (the same objects as `/loadbalancer/instances`), the accounts' identities, and the
//! journal. Never a secret: secrets are only said to be set.

use super::Console;
use crate::telemetry::journal::{Entry, Minute};
use serde_json::{json, Value};
use std::time::SystemTime;

impl Console {
    /// `GET /console/api/overview`: the last hour (totals and one point per minute), the
    /// accounts that serve, panic mode.
    pub(super) fn overview(&self) -> Value {
        let minutes = self.journal().minutes(SystemTime::now());
        let mut total = Minute::default();
        for m in &minutes {
            total.requests += m.requests;
            total.rate_limited += m.rate_limited;
            total.client_errors += m.client_errors;
            total.upstream_errors += m.upstream_errors;
            total.latency_ms_sum += m.latency_ms_sum;
            total.latency_ms_max = total.latency_ms_max.max(m.latency_ms_max);
            total.input_tokens += m.input_tokens;
            total.output_tokens += m.output_tokens;
            total.credits += m.credits;
            total.cache_hits += m.cache_hits;
            total.cache_lookups += m.cache_lookups;
        }
        let instances = crate::api::status::instance_list(&self.inner.views.providers);
        let usable = instances.iter().filter(|i| i["usable"] == true).count();
        let panic = instances.iter().any(|i| i["pool_panic"] == true);
        let mut last_hour = serde_json::to_value(&total).unwrap_or_default();
        last_hour["errors"] =
            json!(total.rate_limited + total.client_errors + total.upstream_errors);
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.inner.views.started.elapsed().as_secs(),
            "last_hour": last_hour,
            "minutes": minutes,
            "accounts": {"usable": usable, "total": instances.len()},
            "panic": panic,
        })
    }

    /// `GET /console/api/accounts`: one object per account, `/loadbalancer/instances`'s
    /// with the identity (machine id prefix, egress), which secrets are set, whether the
    /// pool file has it on, and the models it serves.
    pub(super) fn accounts_view(&self) -> Value {
        let identities = self.inner.accounts.identities();
        let accounts: Vec<Value> = crate::api::status::instance_list(&self.inner.views.providers)
            .into_iter()
            .map(|mut instance| {
                let name = instance["name"].as_str().unwrap_or_default().to_owned();
                if let Some(identity) = identities.iter().find(|i| i.name == name) {
                    instance["machine_id_prefix"] = json!(identity.machine_id_prefix);
                    instance["egress"] = json!(identity.egress);
                    instance["egress_password_set"] = json!(identity.egress_password_set);
                    instance["secrets"] = identity
                        .secrets_set
                        .iter()
                        .map(|(key, set)| ((*key).to_owned(), Value::Bool(*set)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                    instance["enabled"] = json!(identity.enabled);
                    instance["format"] = json!(identity.format);
                }
                instance["models"] = json!(self.inner.accounts.models_served(&name));
                instance
            })
            .collect();
        json!({
            "accounts": accounts,
            "pool_file": self.inner.accounts.pool_file().map(|p| p.display().to_string()),
        })
    }

    /// `GET /console/api/keys`: per API key label (never a key), what it sent and what its
    /// limits are.
    pub(super) fn keys_view(&self) -> Value {
        let totals = self.journal().keys();
        let mut labels: Vec<String> = (1..=self.inner.key_count)
            .map(|i| format!("key-{i}"))
            .collect();
        for (label, _) in &totals {
            if !labels.iter().any(|l| **l == **label) {
                labels.push(label.to_string());
            }
        }
        let keys: Vec<Value> = labels
            .iter()
            .map(|label| {
                let t = totals
                    .iter()
                    .find(|(l, _)| &**l == label)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                let mut key = serde_json::to_value(&t).unwrap_or_default();
                key["label"] = json!(label);
                key["limits"] = json!(self.limits_of(label));
                key
            })
            .collect();
        json!({ "keys": keys })
    }

    fn limits_of(&self, label: &str) -> String {
        let settings = &self.inner.rate_limits;
        let limits = settings
            .keys
            .iter()
            .find(|(l, _)| l == label)
            .map_or(&settings.default, |(_, l)| l);
        let mut parts = Vec::new();
        if let Some(q) = limits.requests {
            parts.push(format!("{} requests/min (burst {})", q.per_minute, q.burst));
        }
        if let Some(t) = limits.tokens_per_minute {
            parts.push(format!("{t} tokens/min"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// `GET /console/api/requests?q=...`: the last requests, newest first, those whose key,
    /// model, account, status or error contain `q`.
    pub(super) fn requests_view(&self, query: Option<&str>) -> Value {
        let filter = query
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "q")
                    .map(|(_, v)| v.trim().to_ascii_lowercase())
            })
            .filter(|q| !q.is_empty());
        let matches = |e: &Entry| {
            let Some(filter) = &filter else { return true };
            [
                e.key.to_string(),
                e.model.to_string(),
                e.account.as_deref().unwrap_or_default().to_owned(),
                e.status.to_string(),
                e.error.unwrap_or_default().to_owned(),
                e.cache.unwrap_or_default().to_owned(),
            ]
            .iter()
            .any(|field| field.to_ascii_lowercase().contains(filter.as_str()))
        };
        let journal = self.journal();
        let list: Vec<Entry> = journal
            .recent()
            .into_iter()
            .filter(|e| matches(e))
            .collect();
        json!({ "requests": list, "bodies": journal.logs_bodies() })
    }
}

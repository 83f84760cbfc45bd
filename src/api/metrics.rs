//! `GET /metrics`: the pipeline's instruments as Prometheus text, plus the accounts' state
//! read at scrape time from the same views `/loadbalancer/instances` shows (requests and
//! errors by kind, breaker state, cooldown, in-flight, token refreshes, Kiro credits). No
//! secret is a label: accounts appear by their configured names.

use super::status::{members, Member};
use super::{ApiState, ProviderStatus};
use crate::body::ResponseBody;
use crate::kiro::accounts::usage::UsageLimits;
use aiproxy_layers::model::health::State;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::SystemTime;

/// Renders the registry.
pub(super) fn render(state: &ApiState) -> Response<ResponseBody> {
    let (text, content_type) = state.metrics.render();
    let mut response = Response::new(ResponseBody::full(text));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const STATES: [State; 5] = [
    State::Healthy,
    State::Open,
    State::HalfOpen,
    State::Cooldown,
    State::Disabled,
];

/// Registers the per-account instruments on `meter`; their callbacks read `providers` at
/// every scrape.
pub fn observe_accounts(meter: &Meter, providers: &[ProviderStatus]) {
    let providers: Arc<[ProviderStatus]> = providers.into();
    // Each instrument reads the accounts through this, with the two labels every account
    // series carries.
    let each = {
        let providers = Arc::clone(&providers);
        move |f: &mut dyn FnMut(&Member, [KeyValue; 2])| {
            for provider in providers.iter() {
                for member in members(provider) {
                    let labels = [
                        KeyValue::new("provider", provider.id.clone()),
                        KeyValue::new("account", Arc::clone(&member.view.spec.name)),
                    ];
                    f(&member, labels);
                }
            }
        }
    };
    let each = Arc::new(each);
    let on = |each: &Arc<_>| Arc::clone(each);

    // The pool as a whole: panic mode (see aiproxy_layers::model::pool).
    let per_pool = |read: fn(&aiproxy_layers::model::pool::PoolStatus) -> u64| {
        let pools = Arc::clone(&providers);
        move |o: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
            for provider in pools.iter() {
                let labels = [KeyValue::new("provider", provider.id.clone())];
                o.observe(read(&(provider.pool)()), &labels);
            }
        }
    };
    meter
        .u64_observable_counter("pool.panic_requests")
        .with_description("Requests sent to an account whose breaker was open because too few accounts could serve (panic mode)")
        .with_callback(per_pool(|status| status.panic_requests))
        .build();
    meter
        .u64_observable_gauge("pool.panic")
        .with_description("1 while the pool is in panic mode (too few accounts can serve, so open breakers serve too)")
        .with_callback(per_pool(|status| u64::from(status.panic)))
        .build();
    let e = on(&each);
    meter
        .u64_observable_counter("upstream.requests")
        .with_description("Requests sent to each account (retries included)")
        .with_callback(move |o| e(&mut |m, l| o.observe(m.view.load.requests, &l)))
        .build();
    let e = on(&each);
    meter
        .u64_observable_counter("upstream.errors")
        .with_description(
            "Failed requests of each account by error type (its fault or the upstream's)",
        )
        .with_callback(move |o| {
            e(&mut |m, [provider, account]| {
                for (kind, count) in &m.view.load.errors_by_kind {
                    let labels = [
                        provider.clone(),
                        account.clone(),
                        KeyValue::new("error_type", *kind),
                    ];
                    o.observe(*count, &labels);
                }
            })
        })
        .build();
    let e = on(&each);
    meter
        .u64_observable_gauge("account.in_flight")
        .with_description("Requests each account is serving now (streams included)")
        .with_callback(move |o| e(&mut |m, l| o.observe(m.view.load.in_flight as u64, &l)))
        .build();
    let e = on(&each);
    meter
        .u64_observable_gauge("account.state")
        .with_description("1 for the state each account is in (healthy, open, half_open, cooldown, disabled), 0 for the others")
        .with_callback(move |o| {
            e(&mut |m, [provider, account]| {
                let now = m.state().0;
                for state in STATES {
                    let labels = [
                        provider.clone(),
                        account.clone(),
                        KeyValue::new("state", state.as_str()),
                    ];
                    o.observe(u64::from(state == now), &labels);
                }
            })
        })
        .build();
    let e = on(&each);
    meter
        .f64_observable_gauge("account.cooldown.remaining")
        .with_unit("s")
        .with_description("Seconds until each resting account may serve again (0 when it serves)")
        .with_callback(move |o| {
            e(&mut |m, l| {
                let left = m.view.health.until.map_or(0.0, seconds_from_now);
                o.observe(left, &l)
            })
        })
        .build();
    let e = on(&each);
    meter
        .u64_observable_counter("token.refreshes")
        .with_description(
            "Access-token refreshes of each account by result (ok, invalid_grant, failed)",
        )
        .with_callback(move |o| {
            e(&mut |m, [provider, account]| {
                let Some(status) = &m.account else { return };
                let failures = status.refresh_failures;
                for (result, count) in [
                    ("ok", status.refreshes),
                    ("invalid_grant", failures.invalid_grant),
                    ("failed", failures.failed),
                ] {
                    let labels = [
                        provider.clone(),
                        account.clone(),
                        KeyValue::new("result", result),
                    ];
                    o.observe(count, &labels);
                }
            })
        })
        .build();
    let credits: [Credits; 3] = [
        (
            "account.credits.used",
            "",
            "Kiro credits each account used this period (getUsageLimits, as the health probe last read it)",
            |u| Some(u.used),
        ),
        (
            "account.credits.limit",
            "",
            "Kiro credits of each account's period",
            |u| Some(u.limit),
        ),
        (
            "account.credits.reset",
            "s",
            "Seconds until each account's credits reset",
            |u| u.next_reset.map(seconds_from_now),
        ),
    ];
    for (name, unit, description, read) in credits {
        let e = on(&each);
        meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| {
                e(&mut |m, l| {
                    if let Some(value) = m.usage.as_ref().and_then(read) {
                        o.observe(value, &l)
                    }
                })
            })
            .build();
    }
}

/// A credits gauge: name, unit, description, and how to read it off the usage.
type Credits = (
    &'static str,
    &'static str,
    &'static str,
    fn(&UsageLimits) -> Option<f64>,
);

fn seconds_from_now(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::now())
        .map_or(0.0, |d| d.as_secs_f64())
}

//! The status views: `GET /health` and `GET /loadbalancer/instances`. Both answer without
//! an API key (as the product guide shows them; `--admin-require-key` puts the second
//! behind the key), so they show names, states, counters and short reason codes only:
//! never a token, a key or an upstream message (the details are in the log).

use super::{json_response, ApiState, ProviderStatus};
use crate::body::ResponseBody;
use crate::kiro::auth::credentials::format_time;
use aiproxy_layers::model::health::State;
use aiproxy_layers::model::pool::{MemberView, PoolStatus};
use http::{Response, StatusCode};
use serde_json::{json, Value};

/// One member as the views show it: the pool's view merged with the live account's own
/// state (a suspended or revoked account is disabled whatever its breaker says).
pub(super) struct Member {
    pub(super) view: MemberView,
    pub(super) account: Option<crate::kiro::auth::account::AccountStatus>,
    pub(super) usage: Option<crate::kiro::accounts::usage::UsageLimits>,
}

impl Member {
    pub(super) fn state(&self) -> (State, Option<&'static str>) {
        match self.account.as_ref().and_then(|a| a.disabled) {
            Some(code) => (State::Disabled, Some(code)),
            None => (self.view.health.state, self.view.health.reason),
        }
    }

    fn healthy(&self) -> bool {
        self.state().0 == State::Healthy
    }

    /// Serving now: healthy, or kept out by its breaker alone while the pool is in panic
    /// mode (which sends it traffic anyway).
    fn usable(&self, panic: bool) -> bool {
        match self.state().0 {
            State::Healthy => true,
            State::Open | State::HalfOpen => panic,
            State::Cooldown | State::Disabled => false,
        }
    }
}

/// The members of `provider`'s pool, and whether the pool is in panic mode.
pub(super) fn pool(provider: &ProviderStatus) -> (Vec<Member>, PoolStatus) {
    let mut status = (provider.pool)();
    let views = std::mem::take(&mut status.members);
    (members_of(provider, views), status)
}

pub(super) fn members(provider: &ProviderStatus) -> Vec<Member> {
    pool(provider).0
}

fn members_of(provider: &ProviderStatus, views: Vec<MemberView>) -> Vec<Member> {
    let accounts = provider
        .accounts
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    views
        .into_iter()
        .map(|view| {
            let account = accounts.iter().find(|a| a.name() == &*view.spec.name);
            Member {
                view,
                account: account.map(|a| a.status()),
                usage: account.and_then(|a| a.usage()),
            }
        })
        .collect()
}

/// `/health`: 200 `ok` when every account can serve, 200 `degraded` when some can (or the
/// pool is in panic mode), 503 `unavailable` when none can (so load balancers stop routing
/// here).
pub(super) fn health(state: &ApiState) -> Response<ResponseBody> {
    let (mut usable_total, mut accounts_total, mut any_panic) = (0, 0, false);
    let providers: Vec<_> = state
        .providers
        .iter()
        .map(|p| {
            let (members, pool) = pool(p);
            let accounts: Vec<_> = members
                .iter()
                .map(|m| {
                    let (state, reason) = m.state();
                    json!({
                        "name": &*m.view.spec.name,
                        "format": m.account.as_ref().map_or("mock", |a| a.format),
                        "usable": m.usable(pool.panic),
                        "state": state.as_str(),
                        "reason": reason,
                        "token_expires_at": m.account.as_ref().and_then(|a| a.token_expires_at).map(format_time),
                        "refreshes": m.account.as_ref().map_or(0, |a| a.refreshes),
                    })
                })
                .collect();
            let healthy = members.iter().filter(|m| m.healthy()).count();
            let usable = members.iter().filter(|m| m.usable(pool.panic)).count();
            let word = health_word(usable, members.len(), pool.panic);
            usable_total += usable;
            accounts_total += members.len();
            any_panic |= pool.panic;
            json!({"id": p.id, "mode": p.mode, "status": word,
                   "healthy": healthy, "usable": usable, "total": members.len(),
                   "panic": pool.panic, "panic_requests": pool.panic_requests,
                   "accounts": accounts})
        })
        .collect();
    let word = health_word(usable_total, accounts_total, any_panic);
    let body = json!({
        "status": word,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "providers": providers,
        "models": models(state),
        "shared_state": shared_state(state),
    });
    let status = if word == "unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, body.to_string())
}

/// Where the served catalog comes from: `accounts` (their ListAvailableModels answers), or
/// `built-in` / `file` when no account could list its models, with why.
fn models(state: &ApiState) -> serde_json::Value {
    let catalog = &state.catalog;
    let snapshot = catalog.snapshot();
    let source = match snapshot.source {
        crate::catalog::CatalogSource::Accounts => "accounts",
        _ if catalog.origin() == "built-in" => "built-in",
        _ => "file",
    };
    json!({
        "source": source,
        "catalog_file": catalog.origin(),
        "listed": snapshot.entries().len(),
        "default_model": snapshot.default_model,
        "refreshed_at": snapshot.refreshed_at.map(format_time),
        "problems": snapshot.problems,
    })
}

/// `usable` of `total` accounts serve; in panic mode they serve, but not as they should:
/// degraded, not down.
fn health_word(usable: usize, total: usize, panic: bool) -> &'static str {
    match (usable, total) {
        (0, _) => "unavailable",
        (u, t) if u < t || panic => "degraded",
        _ => "ok",
    }
}

/// `/loadbalancer/instances`: a JSON array, one object per account of every provider (the
/// guide's `jq '.[] | select(.provider == "kiro-api")'` works on it).
pub(super) fn instances(state: &ApiState) -> Response<ResponseBody> {
    let shared = shared_state(state);
    let mut list = instance_list(&state.providers);
    for instance in &mut list {
        if let Some(object) = instance.as_object_mut() {
            object.insert("shared_state".into(), shared.clone());
        }
    }
    json_response(StatusCode::OK, Value::Array(list).to_string())
}

/// Whether this replica's state is shared (`redis`, with whether it answers) or its own
/// (`local`).
fn shared_state(state: &ApiState) -> Value {
    match &state.shared_state {
        Some(view) => (view.0)(),
        None => json!({"backend": "local"}),
    }
}

/// One object per account of every provider, as `/loadbalancer/instances` shows them (the
/// console's accounts page shows the same objects).
pub fn instance_list(providers: &[ProviderStatus]) -> Vec<Value> {
    providers
        .iter()
        .flat_map(|p| {
            let (members, pool) = pool(p);
            members.into_iter().map(move |m| {
                let (health, reason) = m.state();
                let v = &m.view;
                json!({
                    "id": format!("{}/{}", p.id, v.spec.name),
                    "provider": p.id,
                    "name": &*v.spec.name,
                    "mode": p.mode,
                    "healthy": m.healthy(),
                    // Whether it takes requests now (see `usable` in /health), and whether
                    // its pool is in panic mode.
                    "usable": m.usable(pool.panic),
                    "pool_panic": pool.panic,
                    "state": health.as_str(),
                    "reason": reason,
                    "weight": v.spec.weight,
                    "max_concurrency": v.spec.max_concurrency,
                    "requests_per_minute": v.spec.requests_per_minute.map(|q| q.per_minute.get()),
                    "in_flight": v.load.in_flight,
                    "requests": v.load.requests,
                    "errors": v.load.errors,
                    "consecutive_failures": v.health.consecutive_failures,
                    "last_error": v.load.last_error,
                    "last_used": v.load.last_used.map(format_time),
                    // Tokens its streams reported since start (or since it became another
                    // account), as the pool's store counts them.
                    "tokens": {
                        "input": v.load.tokens.input,
                        "output": v.load.tokens.output,
                        "cache_read": v.load.tokens.cache_read,
                        "cache_write": v.load.tokens.cache_write,
                    },
                    // Credits its answers cost (Kiro's meteringEvent), summed since start.
                    "credits_spent": v.load.tokens.credits,
                    "cooldown_until": v.health.until.map(format_time),
                    "token_expires_at": m.account.as_ref().and_then(|a| a.token_expires_at).map(format_time),
                    // Credits from getUsageLimits, as the health probe last read them.
                    "usage": m.usage.as_ref().map(|u| json!({
                        "used": u.used,
                        "limit": u.limit,
                        "remaining": (u.limit - u.used).max(0.0),
                        "resets_at": u.next_reset.map(format_time),
                        "subscription": u.subscription,
                    })),
                })
            })
        })
        .collect()
}

//! The leaf against the in-process fake: the model-tier contract of `crate::model`.

use super::*;
use crate::catalog::Catalog;
use crate::chat::{ChatRequest, Message, Role, StopReason};
use crate::kiro::auth::account::AccessToken;
use crate::kiro::auth::token_source::FixedToken;
use crate::kiro::fake::script::Step;
use crate::model::resolve::{Resolve, ResolveLayer};
use std::future::poll_fn;
use tower::{Layer, ServiceExt};

fn request(text: &str) -> ModelRequest {
    ModelRequest::new(ChatRequest {
        model: "claude-sonnet-4-5".into(),
        system: Vec::new(),
        messages: vec![Message::text(Role::User, text)],
        tools: Vec::new(),
        tool_choice: Default::default(),
        single_tool_call: false,
        output: None,
        sampling: Default::default(),
        thinking: None,
        stream: true,
        metadata: Default::default(),
        cache_marks: Default::default(),
        web_search: None,
    })
}

fn leaf(
    fake: &FakeKiro,
    slots: usize,
) -> (crate::model::resolve::Resolve<KiroService>, Arc<FixedToken>) {
    let account = Arc::new(FixedToken::new("acct-1"));
    let service = KiroService::mock(fake.clone(), account.clone(), slots);
    (
        ResolveLayer::new(Catalog::builtin().unwrap()).layer(service),
        account,
    )
}

fn step(value: serde_json::Value) -> Step {
    serde_json::from_value(value).unwrap()
}

/// Waits for a slot, then starts a response (its stream not yet read).
async fn open(service: &mut Resolve<KiroService>, text: &str) -> ModelResponse {
    service
        .ready()
        .await
        .unwrap()
        .call(request(text))
        .await
        .unwrap()
}

async fn drain(response: ModelResponse) -> Vec<ChatEvent> {
    response.events.map(|e| e.unwrap()).collect().await
}

#[tokio::test]
async fn the_response_names_its_account_and_starts_with_start() {
    let fake = FakeKiro::new();
    let (service, _) = leaf(&fake, 4);
    let response = service.oneshot(request("hello there")).await.unwrap();
    assert_eq!(
        response.extensions.get::<AccountId>(),
        Some(&AccountId(Arc::from("acct-1")))
    );
    let events = drain(response).await;
    assert!(matches!(events[0], ChatEvent::Start { .. }));
    assert!(matches!(
        events.last(),
        Some(ChatEvent::Stop(StopReason::EndTurn))
    ));
}

#[tokio::test]
async fn a_full_account_is_not_ready_and_its_slot_lives_until_the_stream_ends() {
    let fake = FakeKiro::new();
    let (mut service, _) = leaf(&fake, 1);
    let response = open(&mut service, "one").await;
    // The stream is still open: its slot is held, so the account is not ready.
    let mut probe = service.clone();
    let pending = poll_fn(|cx| Poll::Ready(probe.poll_ready(cx))).await;
    assert!(pending.is_pending(), "ready while the only slot is in use");
    drain(response).await;
    let ready = poll_fn(|cx| Poll::Ready(probe.poll_ready(cx))).await;
    assert!(
        matches!(ready, Poll::Ready(Ok(()))),
        "the slot came back at end of stream"
    );
}

#[tokio::test]
async fn a_dropped_stream_gives_its_slot_back() {
    let fake = FakeKiro::new();
    let (mut service, _) = leaf(&fake, 1);
    let response = open(&mut service, "one two").await;
    drop(response);
    let ready = poll_fn(|cx| Poll::Ready(service.poll_ready(cx))).await;
    assert!(matches!(ready, Poll::Ready(Ok(()))));
}

#[tokio::test]
async fn failures_before_the_first_upstream_event_are_the_futures_errors() {
    let fake = FakeKiro::new();
    let (service, _) = leaf(&fake, 4);
    // No frame at all, then a broken first frame: nothing reached the client, so the future
    // fails (safe to retry) instead of a stream that fails after Start.
    fake.push_script([step(serde_json::json!({"truncate_after": 0}))]);
    let error = service.clone().oneshot(request("x")).await.unwrap_err();
    assert_eq!(error.fault(), crate::chat::Fault::Upstream, "{error}");
    fake.push_script([step(serde_json::json!({"corrupt_frame": 0}))]);
    let error = service.clone().oneshot(request("x")).await.unwrap_err();
    assert!(matches!(error, ChatError::Truncated { .. }), "{error}");
    fake.push_script([step(serde_json::json!({"status": 429, "retry_after": 7}))]);
    let error = service.clone().oneshot(request("x")).await.unwrap_err();
    assert_eq!(error.fault(), crate::chat::Fault::Account);
    assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(7)));
}

#[tokio::test]
async fn a_suspension_names_the_account_and_rests_it_through_the_pool() {
    use aiproxy_layers::model::{Failure, Penalty, RateLimitClass};
    let fake = FakeKiro::new();
    let (service, _account) = leaf(&fake, 4);
    fake.push_script([step(
        serde_json::json!({"status": 403, "reason": "suspended"}),
    )]);
    let error = service.clone().oneshot(request("x")).await.unwrap_err();
    assert!(matches!(error, ChatError::AccountUnavailable { .. }));
    assert!(error.to_string().contains("acct-1"), "{error}");
    assert_eq!(
        error.penalty(),
        Penalty::Cooldown {
            class: RateLimitClass::Suspended,
            retry_after: None
        },
        "the breaker rests it; the leaf does not disable it for good"
    );
    assert!(
        service.clone().oneshot(request("x")).await.is_ok(),
        "a later call goes out again (the pool decides when)"
    );
}

#[tokio::test]
async fn without_resolution_above_it_the_leaf_says_the_stack_is_wrong() {
    let service = KiroService::mock(FakeKiro::new(), Arc::new(FixedToken::new("a")), 1);
    let error = service.oneshot(request("x")).await.unwrap_err();
    assert!(matches!(error, ChatError::Internal { .. }), "{error}");
}

/// A mock account whose tokens carry no profile ARN.
#[derive(Debug)]
struct NoProfile(FixedToken);

impl TokenSource for NoProfile {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn machine_id(&self) -> &str {
        self.0.machine_id()
    }
    fn token(&self) -> futures_util::future::BoxFuture<'_, Result<AccessToken, ChatError>> {
        Box::pin(async {
            let token = self.0.token().await?;
            Ok(AccessToken {
                profile_arn: None,
                ..token
            })
        })
    }
    fn token_after_rejection<'a>(
        &'a self,
        rejected: &'a crate::secret::Secret,
    ) -> futures_util::future::BoxFuture<'a, Result<AccessToken, ChatError>> {
        self.0.token_after_rejection(rejected)
    }
    fn mark_unusable(&self, code: &'static str, reason: String) {
        self.0.mark_unusable(code, reason);
    }
}

#[tokio::test]
async fn a_search_is_one_mcp_call_and_needs_the_profile() {
    use crate::chat::web_search::SearchQuery;
    let fake = FakeKiro::new();
    let search = |service: KiroService| async move {
        let mut request = request("x");
        request.extensions.insert(SearchQuery {
            id: "srvtoolu_1".into(),
            query: "tokio".into(),
        });
        service.oneshot(request).await
    };
    let with_profile = KiroService::mock(fake.clone(), Arc::new(FixedToken::new("a")), 1);
    let events = drain(search(with_profile).await.unwrap()).await;
    assert!(
        matches!(&events[1], ChatEvent::WebSearchResult { id, outcome } if id == "srvtoolu_1" && outcome.as_ref().as_ref().is_ok_and(|hits| hits.len() == 3))
    );
    assert_eq!(fake.stats().search_calls, 1);
    let without = KiroService::mock(fake.clone(), Arc::new(NoProfile(FixedToken::new("b"))), 1);
    let error = search(without).await.unwrap_err();
    assert_eq!(
        error.kind(),
        "model_not_served_here",
        "another account may search"
    );
    assert!(error.to_string().contains("no profile ARN"), "{error}");
    assert_eq!(fake.stats().search_calls, 1, "nothing was sent");
}

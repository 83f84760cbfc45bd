//! The rate-limit layer against the scriptable model service.

use super::*;
use crate::model::{StreamEnd, StreamReport, TokenUsage};
use crate::testing::{MockAccount, MockError, MockRequest, TokenEstimate};
use crate::ClientKey;
use std::time::Duration;
use tower::{Layer, ServiceExt};

fn request(key: &str, estimate: u64) -> (MockRequest, RateLimitSlot) {
    let slot = RateLimitSlot::default();
    let mut request = MockRequest::default();
    request.extensions.insert(ClientKey::from_label(key));
    request.extensions.insert(TokenEstimate(estimate));
    request.extensions.insert(slot.clone());
    (request, slot)
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn requests(per_minute: u32, burst: u32) -> Limits {
    Limits {
        requests: Some(RequestQuota {
            per_minute: nz(per_minute),
            burst: nz(burst),
        }),
        tokens_per_minute: None,
    }
}

fn tokens(per_minute: u32) -> Limits {
    Limits {
        requests: None,
        tokens_per_minute: Some(nz(per_minute)),
    }
}

fn layer(default: Limits) -> RateLimitLayer {
    RateLimitLayer::new(Arc::new(MemoryStore::new()), default)
}

fn usage(input: u64, output: u64) -> StreamReport {
    StreamReport {
        end: StreamEnd::Complete,
        error_kind: None,
        duration: Duration::from_millis(10),
        time_to_first_event: None,
        usage: Some(TokenUsage {
            input,
            output,
            ..TokenUsage::default()
        }),
    }
}

#[tokio::test]
async fn a_burst_passes_then_requests_are_refused_with_the_wait() {
    let account = MockAccount::new("a");
    let service = layer(requests(60, 3)).layer(account.clone());
    for expected_remaining in [2, 1, 0] {
        let (req, slot) = request("key-1", 0);
        service.clone().oneshot(req).await.unwrap();
        let window = slot.get().unwrap().requests.unwrap();
        assert_eq!((window.limit, window.remaining), (60, expected_remaining));
    }
    let (req, slot) = request("key-1", 0);
    let Err(MockError::Throttled(throttled)) = service.clone().oneshot(req).await else {
        panic!("the fourth request passed");
    };
    assert_eq!(throttled.limit, LimitKind::Requests);
    let wait = throttled.retry_after.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert!(throttled
        .message
        .contains("`key-1` may send 60 requests per minute (bursts of 3)"));
    assert_eq!(slot.get().unwrap().requests.unwrap().remaining, 0);
    assert_eq!(account.calls(), 3, "a refused request goes no further");
    // Another client has its own bucket.
    service.oneshot(request("key-2", 0).0).await.unwrap();
}

#[tokio::test]
async fn a_key_override_replaces_the_default() {
    let account = MockAccount::new("a");
    let service = layer(requests(60, 1))
        .with_override("key-2", requests(60, 5))
        .with_override("key-3", Limits::default())
        .layer(account.clone());
    service
        .clone()
        .oneshot(request("key-1", 0).0)
        .await
        .unwrap();
    assert!(service
        .clone()
        .oneshot(request("key-1", 0).0)
        .await
        .is_err());
    for _ in 0..5 {
        service
            .clone()
            .oneshot(request("key-2", 0).0)
            .await
            .unwrap();
    }
    assert!(service
        .clone()
        .oneshot(request("key-2", 0).0)
        .await
        .is_err());
    for _ in 0..20 {
        let (req, slot) = request("key-3", 0);
        service.clone().oneshot(req).await.unwrap();
        assert_eq!(slot.get(), None, "an unlimited key gets no decision");
    }
}

#[tokio::test]
async fn tokens_are_charged_at_admission_and_settled_with_the_real_usage() {
    let account = MockAccount::new("a");
    // 60 tokens per minute: one back per second, nothing measurable during the test.
    let service = layer(tokens(60)).layer(account.clone());
    let (req, slot) = request("key-1", 20);
    let response = service.clone().oneshot(req).await.unwrap();
    assert_eq!(slot.get().unwrap().tokens.unwrap().remaining, 40);
    // The answer used 50 tokens: 30 more than estimated are charged when it ends.
    response.end_with(usage(20, 30));
    let (req, slot) = request("key-1", 11);
    let Err(MockError::Throttled(throttled)) = service.clone().oneshot(req).await else {
        panic!("passed beyond the settled budget");
    };
    assert_eq!(throttled.limit, LimitKind::Tokens);
    assert!(throttled.retry_after.unwrap() >= Duration::from_millis(900));
    assert!(slot.get().unwrap().tokens.unwrap().remaining <= 10);
    // What is left passes.
    let response = service
        .clone()
        .oneshot(request("key-1", 10).0)
        .await
        .unwrap();
    // An answer that used fewer tokens than estimated gives the rest back.
    response.end_with(usage(2, 0));
    let (req, slot) = request("key-1", 8);
    service.clone().oneshot(req).await.unwrap();
    assert!(slot.get().unwrap().tokens.unwrap().remaining <= 1);
}

#[tokio::test]
async fn a_failed_call_gives_its_tokens_back() {
    let account = MockAccount::new("a");
    account.script(Err(MockError::upstream()));
    let service = layer(tokens(60)).layer(account.clone());
    assert!(service
        .clone()
        .oneshot(request("key-1", 60).0)
        .await
        .is_err());
    service.oneshot(request("key-1", 60).0).await.unwrap();
    assert_eq!(account.calls(), 2);
}

#[tokio::test]
async fn a_request_larger_than_a_minute_of_tokens_never_passes() {
    let service = layer(tokens(100)).layer(MockAccount::new("a"));
    let Err(MockError::Throttled(throttled)) = service.oneshot(request("key-1", 101).0).await
    else {
        panic!("an oversized request passed");
    };
    assert_eq!(throttled.retry_after, None);
    assert!(
        throttled.message.contains("Request too large"),
        "{}",
        throttled.message
    );
}

#[tokio::test]
async fn a_refused_request_gives_its_tokens_back() {
    let service = layer(Limits {
        requests: Some(RequestQuota {
            per_minute: nz(1),
            burst: nz(1),
        }),
        tokens_per_minute: Some(nz(60)),
    })
    .layer(MockAccount::new("a"));
    service
        .clone()
        .oneshot(request("key-1", 10).0)
        .await
        .unwrap();
    let (req, slot) = request("key-1", 10);
    let Err(MockError::Throttled(throttled)) = service.oneshot(req).await else {
        panic!("the second request passed");
    };
    assert_eq!(throttled.limit, LimitKind::Requests);
    // The tokens taken before the request bucket refused were returned.
    assert!(slot.get().unwrap().tokens.unwrap().remaining >= 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_of_one_key_never_exceed_the_limit() {
    let account = MockAccount::new("a");
    // One request back per minute: only the burst of 25 can pass during the test.
    let service = layer(requests(1, 25)).layer(account.clone());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let mut passed = 0;
                for _ in 0..40 {
                    if service.clone().oneshot(request("key-1", 0).0).await.is_ok() {
                        passed += 1;
                    }
                }
                passed
            })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        passed += task.await.unwrap();
    }
    assert_eq!(passed, 25);
    assert_eq!(account.calls(), 25);
}

/// A shared store's answers, scripted: each `admit` takes the next (decided later, as a
/// store across the network decides).
struct Remote {
    answers: std::sync::Mutex<Vec<Result<Admission, StoreUnavailable>>>,
    settled: std::sync::Mutex<Vec<i64>>,
}

impl RateLimitStore for Remote {
    fn admit(&self, _key: &str, _ask: Ask) -> Decision {
        let answer = self.answers.lock().unwrap().remove(0);
        Decision::Later(Box::pin(async move {
            tokio::task::yield_now().await;
            answer
        }))
    }

    fn settle_tokens(&self, _key: &str, _per_minute: NonZeroU32, delta: i64) {
        self.settled.lock().unwrap().push(delta);
    }
}

#[tokio::test]
async fn a_store_that_decides_later_admits_refuses_and_fails_through_the_same_layer() {
    let (admitted, refused) = token_window();
    let window = admitted.tokens.unwrap();
    let store = remote(vec![
        Ok(Ok(admitted)),
        Ok(Err(refused)),
        Err(StoreUnavailable {
            message: "redis is down".into(),
        }),
    ]);
    let account = MockAccount::new("a");
    let service = RateLimitLayer::new(store.clone(), tokens(100)).layer(account.clone());

    // Admitted: the account is called after the decision, the status reaches the slot, and
    // the tokens used beyond the estimate are settled when the answer ends.
    let (first, slot) = request("k", 20);
    let response = service.clone().oneshot(first).await.unwrap();
    assert_eq!(slot.get().unwrap().tokens, Some(window));
    response.end_with(usage(25, 5));
    assert_eq!(account.calls(), 1);
    assert_eq!(*store.settled.lock().unwrap(), vec![10]);

    // Refused: the account is not called; the refusal says which limit and when.
    let (second, _) = request("k", 20);
    match service.clone().oneshot(second).await.unwrap_err() {
        MockError::Throttled(t) => {
            assert_eq!(t.limit, LimitKind::Tokens);
            assert_eq!(t.retry_after, Some(Duration::from_secs(3)));
            assert!(
                t.message.contains("`k` may use 100 tokens per minute"),
                "{}",
                t.message
            );
        }
        other => panic!("{other:?}"),
    }
    // The store could not decide (closed mode): its error, nothing sent.
    let (third, _) = request("k", 20);
    match service.oneshot(third).await.unwrap_err() {
        MockError::StoreUnavailable(down) => assert_eq!(down.message, "redis is down"),
        other => panic!("{other:?}"),
    }
    assert_eq!(account.calls(), 1);
}

/// What the test leaf does with a request's deferred decision.
#[derive(Clone)]
enum LeafMode {
    /// Decides through the store, before calling the account.
    Alone,
    /// Decides with an answer of its own round trip and parks its end on the ticket.
    Combined(Admission),
    /// Claims, then gives up (drops the claim undecided).
    GivesUp,
    /// Never looks at it.
    Ignores,
}

/// A leaf in front of the mock account that honours `defer_to_leaf`; the ends it parked
/// are recorded with the settlement they ran with.
#[derive(Clone)]
struct Leaf {
    account: MockAccount,
    mode: LeafMode,
    ends: Arc<std::sync::Mutex<Vec<Option<TokenSettle>>>>,
}

impl tower::Service<MockRequest> for Leaf {
    type Response = crate::testing::MockResponse;
    type Error = MockError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, MockError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), MockError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: MockRequest) -> Self::Future {
        let mut account = self.account.clone();
        let mode = self.mode.clone();
        let ends = Arc::clone(&self.ends);
        Box::pin(async move {
            let ticket = request.extensions.get::<DeferredAdmission>().cloned();
            let claim = ticket.as_ref().and_then(DeferredAdmission::claim);
            match (mode.clone(), claim) {
                (LeafMode::Alone, Some(claim)) => claim.decide_alone::<MockError>().await?,
                (LeafMode::Combined(admission), Some(claim)) => claim.decide(admission)?,
                (LeafMode::GivesUp, Some(claim)) => drop(claim),
                _ => {}
            }
            let response = account.call(request).await?;
            if let (LeafMode::Combined(_), Some(ticket)) = (mode, ticket) {
                let record = Arc::clone(&ends);
                if let Err(end) =
                    ticket.defer_end(Box::new(move |settle| record.lock().unwrap().push(settle)))
                {
                    end(None);
                }
            }
            Ok(response)
        })
    }
}

fn remote(answers: Vec<Result<Admission, StoreUnavailable>>) -> Arc<Remote> {
    Arc::new(Remote {
        answers: std::sync::Mutex::new(answers),
        settled: std::sync::Mutex::default(),
    })
}

fn deferred(store: &Arc<Remote>, mode: LeafMode) -> (RateLimit<Leaf>, Leaf) {
    let leaf = Leaf {
        account: MockAccount::new("a"),
        mode,
        ends: Arc::default(),
    };
    let layer = RateLimitLayer::new(store.clone(), tokens(100)).defer_to_leaf();
    (layer.layer(leaf.clone()), leaf)
}

fn token_window() -> (RateLimitStatus, Refused) {
    let window = Window {
        limit: 100,
        remaining: 40,
        reset: Duration::from_secs(36),
    };
    let status = RateLimitStatus {
        requests: None,
        tokens: Some(window),
    };
    let refused = Refused {
        limit: LimitKind::Tokens,
        denied: Denied {
            wait: Some(Duration::from_secs(3)),
            window,
        },
        status,
    };
    (status, refused)
}

#[tokio::test]
async fn a_deferred_decision_is_made_by_the_leaf_before_it_calls_the_account() {
    let (admitted, refused) = token_window();
    let store = remote(vec![Ok(Ok(admitted)), Ok(Err(refused))]);
    let (service, leaf) = deferred(&store, LeafMode::Alone);
    let (first, slot) = request("k", 20);
    let response = service.clone().oneshot(first).await.unwrap();
    assert_eq!(slot.get().unwrap().tokens, admitted.tokens);
    response.end_with(usage(25, 5));
    assert_eq!(*store.settled.lock().unwrap(), vec![10]);

    let (second, slot) = request("k", 20);
    let Err(MockError::Throttled(throttled)) = service.oneshot(second).await else {
        panic!("the refused request passed");
    };
    assert_eq!(throttled.retry_after, Some(Duration::from_secs(3)));
    assert_eq!(slot.get().unwrap().tokens, admitted.tokens);
    assert_eq!(
        leaf.account.calls(),
        1,
        "the refused request reached the account"
    );
}

#[tokio::test]
async fn a_leaf_deciding_in_its_own_round_trip_ends_with_the_settlement_in_one() {
    let (admitted, refused) = token_window();
    let store = remote(vec![]);
    let (service, leaf) = deferred(&store, LeafMode::Combined(Ok(admitted)));
    let (first, slot) = request("k", 20);
    let response = service.clone().oneshot(first).await.unwrap();
    assert_eq!(slot.get().unwrap().tokens, admitted.tokens);
    assert!(
        leaf.ends.lock().unwrap().is_empty(),
        "the end ran before the answer did"
    );
    response.end_with(usage(12, 3));
    // The settlement went with the leaf's end, not through the store.
    let settled = leaf.ends.lock().unwrap().clone();
    assert_eq!(settled.len(), 1);
    let settle = settled[0].clone().unwrap();
    assert_eq!(
        (&*settle.key, settle.per_minute.get(), settle.delta),
        ("k", 100, -5)
    );
    assert!(store.settled.lock().unwrap().is_empty());

    // An answer dropped unread still runs the parked end (a lease is never left behind).
    let (second, _) = request("k", 20);
    drop(service.clone().oneshot(second).await.unwrap());
    assert_eq!(leaf.ends.lock().unwrap().len(), 2);

    // A second call of the same request (a search, then the answer) runs the first call's
    // parked end when it starts: that end waits for no later call.
    let ticket = DeferredAdmission::new(
        Arc::new(super::layer::Shared::for_tests(store.clone())),
        Arc::from("k"),
        Ask {
            requests: None,
            tokens: Some((nz(100), 20)),
        },
        None,
    );
    ticket.claim().unwrap().decide(Ok(admitted)).unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    assert!(ticket
        .defer_end(Box::new(move |settle| {
            assert_eq!(settle, None);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }))
        .is_ok());
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(ticket.claim().is_none(), "decided already");
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));

    // A refusal from the leaf's round trip: the account is not called.
    let (service, leaf) = deferred(&store, LeafMode::Combined(Err(refused)));
    let (third, _) = request("k", 20);
    assert!(matches!(
        service.oneshot(third).await,
        Err(MockError::Throttled(_))
    ));
    assert_eq!(leaf.account.calls(), 0);
}

#[tokio::test]
async fn what_no_leaf_decided_is_decided_when_the_answer_is_there() {
    let (admitted, refused) = token_window();
    for mode in [LeafMode::Ignores, LeafMode::GivesUp] {
        let store = remote(vec![Ok(Ok(admitted)), Ok(Err(refused))]);
        let (service, leaf) = deferred(&store, mode);
        let (first, slot) = request("k", 20);
        let response = service.clone().oneshot(first).await.unwrap();
        assert_eq!(slot.get().unwrap().tokens, admitted.tokens);
        response.end_with(usage(30, 0));
        assert_eq!(*store.settled.lock().unwrap(), vec![10]);
        let (second, _) = request("k", 20);
        assert!(matches!(
            service.oneshot(second).await,
            Err(MockError::Throttled(_))
        ));
        // Both reached the account; the refusal dropped the second answer.
        assert_eq!(leaf.account.calls(), 2);
        assert!(store.answers.lock().unwrap().is_empty());
    }
}

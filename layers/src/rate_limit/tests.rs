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
    let window = Window {
        limit: 100,
        remaining: 40,
        reset: Duration::from_secs(36),
    };
    let admitted = RateLimitStatus {
        requests: None,
        tokens: Some(window),
    };
    let refused = Refused {
        limit: LimitKind::Tokens,
        denied: Denied {
            wait: Some(Duration::from_secs(3)),
            window,
        },
        status: admitted,
    };
    let store = Arc::new(Remote {
        answers: std::sync::Mutex::new(vec![
            Ok(Ok(admitted)),
            Ok(Err(refused)),
            Err(StoreUnavailable {
                message: "redis is down".into(),
            }),
        ]),
        settled: std::sync::Mutex::default(),
    });
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

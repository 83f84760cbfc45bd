use super::*;
use crate::model::pool::{MemberSpec, Pool, PoolConfig};
use crate::model::{Penalty, RateLimitClass, StreamEnd};
use crate::testing::{MockAccount, MockError, MockRequest};
use tower::ServiceExt;

fn pool(accounts: &[&MockAccount]) -> Pool<MockAccount> {
    let config = PoolConfig {
        slow_start: Duration::ZERO,
        ..PoolConfig::default()
    };
    Pool::new(
        config,
        accounts
            .iter()
            .map(|a| {
                let spec = MemberSpec {
                    name: Arc::from(a.name),
                    weight: 1,
                    max_concurrency: 10,
                    requests_per_minute: None,
                };
                (spec, (*a).clone())
            })
            .collect(),
    )
}

fn fast() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn an_upstream_failure_is_retried_on_another_account() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    a.fail_always(Some(MockError::upstream()));
    b.fail_always(Some(MockError::upstream()));
    let service = RetryLayer::new(fast()).layer(pool(&[&a, &b]));
    // Whichever is first fails; heal the other one.
    b.fail_always(None);
    let response = service.oneshot(MockRequest::default()).await.unwrap();
    let attempts = response.extensions.get::<Attempts>().unwrap().tried();
    assert_eq!(response.account, "b");
    assert!(attempts.len() <= 2 && attempts.last().map(|s| &**s) == Some("b"));
    if attempts.len() == 2 {
        assert_eq!(&*attempts[0], "a");
    }
    response.end(StreamEnd::Complete);
}

#[tokio::test]
async fn a_request_fault_is_never_retried() {
    let a = MockAccount::new("a");
    a.fail_always(Some(MockError::request()));
    let service = RetryLayer::new(fast()).layer(pool(&[&a]));
    assert!(service.oneshot(MockRequest::default()).await.is_err());
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn retries_stop_at_the_maximum() {
    let a = MockAccount::new("a");
    a.fail_always(Some(MockError::upstream()));
    let service = RetryLayer::new(fast()).layer(pool(&[&a]));
    assert!(service.oneshot(MockRequest::default()).await.is_err());
    assert_eq!(a.calls(), 4, "one attempt and three retries");
}

#[tokio::test]
async fn a_rate_limited_account_hands_over_at_once() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    for account in [&a, &b] {
        account.script(Err(MockError::penalty(
            Fault::Account,
            Penalty::Cooldown {
                class: RateLimitClass::Plain,
                retry_after: Some(Duration::from_secs(60)),
            },
        )));
    }
    let service = RetryLayer::new(fast()).layer(pool(&[&a, &b]));
    // Both cool down for a minute: the retry sees NoAccount with a long wait and gives up,
    // answering the real 429 rather than the pool's "no account".
    let error = service.oneshot(MockRequest::default()).await.unwrap_err();
    assert!(
        matches!(
            error,
            MockError::Fails {
                fault: Fault::Account,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        (a.calls(), b.calls()),
        (1, 1),
        "each tried once, none while resting"
    );
}

#[test]
fn delays_follow_the_fault() {
    let policy = RetryPolicy::<MockError>::new(RetryConfig {
        max_retries: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    });
    let upstream = |retry_after| MockError::Fails {
        fault: Fault::Upstream,
        penalty: Penalty::Failure,
        retry_after,
    };
    for _ in 0..100 {
        assert!(policy.delay_for(&upstream(None)).unwrap() < Duration::from_millis(100));
    }
    assert_eq!(
        policy.delay_for(&upstream(Some(Duration::from_secs(1)))),
        Some(Duration::from_secs(1)),
        "a Retry-After within the cap is honoured"
    );
    let short_wait = MockError::None(crate::model::pool::NoAccount {
        message: String::new(),
        retry_after: Some(Duration::from_secs(1)),
    });
    assert_eq!(policy.delay_for(&short_wait), Some(Duration::from_secs(1)));
    let long_wait = MockError::None(crate::model::pool::NoAccount {
        message: String::new(),
        retry_after: Some(Duration::from_secs(30)),
    });
    assert_eq!(policy.delay_for(&long_wait), None);
    assert_eq!(policy.delay_for(&MockError::request()), None);
}

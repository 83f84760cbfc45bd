use super::*;
use crate::model::{RateLimitClass, StreamReport, TokenUsage};
use crate::testing::{MockAccount, MockError, MockRequest, MockResponse};
use std::collections::HashMap;
use tower::ServiceExt;

fn spec(name: &'static str, weight: u32, max_concurrency: usize) -> MemberSpec {
    MemberSpec {
        name: Arc::from(name),
        weight,
        max_concurrency,
        requests_per_minute: None,
    }
}

fn pool_of(accounts: &[&MockAccount], config: PoolConfig) -> Pool<MockAccount> {
    Pool::new(
        config,
        accounts
            .iter()
            .map(|a| (spec(a.name, 1, 100), (*a).clone()))
            .collect(),
    )
}

fn no_ramp() -> PoolConfig {
    PoolConfig {
        slow_start: Duration::ZERO,
        ..PoolConfig::default()
    }
}

async fn one(pool: &Pool<MockAccount>, request: MockRequest) -> Result<MockResponse, MockError> {
    pool.clone().oneshot(request).await
}

async fn served_by(pool: &Pool<MockAccount>, request: MockRequest) -> &'static str {
    let response = one(pool, request).await.unwrap();
    let name = response.account;
    response.end(StreamEnd::Complete);
    name
}

#[tokio::test]
async fn equal_accounts_share_the_load_within_a_fifth() {
    let accounts = [
        MockAccount::new("a"),
        MockAccount::new("b"),
        MockAccount::new("c"),
    ];
    let pool = pool_of(&accounts.iter().collect::<Vec<_>>(), no_ramp());
    // Streams stay open in batches of 30, so in-flight counts matter too.
    let mut open = Vec::new();
    for i in 0..3000 {
        open.push(one(&pool, MockRequest::default()).await.unwrap());
        if i % 30 == 29 {
            open.drain(..).for_each(|r| r.end(StreamEnd::Complete));
        }
    }
    for account in &accounts {
        let calls = account.calls();
        assert!(
            (800..=1200).contains(&calls),
            "{}: {calls} of 3000",
            account.name
        );
    }
}

#[tokio::test]
async fn weights_split_idle_traffic() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = Pool::new(
        no_ramp(),
        vec![
            (spec("a", 3, 100), a.clone()),
            (spec("b", 1, 100), b.clone()),
        ],
    );
    for _ in 0..2000 {
        served_by(&pool, MockRequest::default()).await;
    }
    let share = a.calls() as f64 / 2000.0;
    assert!((0.68..=0.82).contains(&share), "weight 3 of 4 got {share}");
}

#[tokio::test]
async fn the_idler_account_wins() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = pool_of(&[&a, &b], no_ramp());
    // Hold 10 streams open on whichever account took them; the next ones go elsewhere.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(one(&pool, MockRequest::default()).await.unwrap());
    }
    let on_a = held.iter().filter(|r| r.account == "a").count();
    assert!(
        (4..=6).contains(&on_a),
        "in-flight balancing keeps them even: {on_a}"
    );
}

#[tokio::test]
async fn an_account_that_keeps_failing_is_left_alone() {
    let (bad, good) = (MockAccount::new("bad"), MockAccount::new("good"));
    bad.fail_always(Some(MockError::upstream()));
    let pool = pool_of(&[&bad, &good], no_ramp());
    let mut failures = 0;
    for _ in 0..200 {
        match one(&pool, MockRequest::default()).await {
            Ok(response) => response.end(StreamEnd::Complete),
            Err(_) => failures += 1,
        }
    }
    assert_eq!(bad.calls(), 5, "the breaker opened at the threshold");
    assert_eq!(failures, 5);
    let view = &pool.views()[0];
    assert_eq!(view.health.state.as_str(), "open");
    assert_eq!((view.load.requests, view.load.errors), (5, 5));
}

#[tokio::test]
async fn client_faults_and_abandoned_streams_do_not_count() {
    let a = MockAccount::new("a");
    let pool = pool_of(&[&a], no_ramp());
    for _ in 0..20 {
        a.script(Err(MockError::request()));
        let _ = one(&pool, MockRequest::default()).await;
        drop(one(&pool, MockRequest::default()).await.unwrap());
        one(&pool, MockRequest::default())
            .await
            .unwrap()
            .end(StreamEnd::Failed(Fault::Request));
    }
    let view = &pool.views()[0];
    assert_eq!(
        (view.health.state.as_str(), view.load.errors),
        ("healthy", 0)
    );
    assert_eq!(view.load.in_flight, 0, "every load guard was released");
}

#[tokio::test]
async fn a_failing_stream_counts_against_its_account() {
    let a = MockAccount::new("a");
    let pool = pool_of(&[&a], no_ramp());
    for _ in 0..5 {
        one(&pool, MockRequest::default())
            .await
            .unwrap()
            .end(StreamEnd::Failed(Fault::Upstream));
    }
    assert_eq!(pool.views()[0].health.state.as_str(), "open");
}

#[tokio::test]
async fn all_cooling_down_answers_when_the_first_comes_back() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = pool_of(&[&a, &b], no_ramp());
    for (account, secs) in [(&a, 30), (&b, 12)] {
        account.fail_always(Some(MockError::penalty(
            Fault::Account,
            Penalty::Cooldown {
                class: RateLimitClass::Plain,
                retry_after: Some(Duration::from_secs(secs)),
            },
        )));
    }
    for _ in 0..2 {
        let _ = one(&pool, MockRequest::default()).await;
    }
    let Err(MockError::None(none)) = one(&pool, MockRequest::default()).await else {
        panic!("expected NoAccount");
    };
    assert_eq!((a.calls(), b.calls()), (1, 1), "none sent while cooling");
    let retry = none.retry_after.unwrap().as_secs();
    assert!((11..=12).contains(&retry), "{retry}");
    assert!(
        none.message.contains("a (cooldown: rate_limited, back in"),
        "{}",
        none.message
    );
    assert!(
        none.message.starts_with("all 2 accounts are unavailable"),
        "{}",
        none.message
    );
}

#[tokio::test]
async fn a_conversation_stays_on_its_account() {
    let accounts = [
        MockAccount::new("a"),
        MockAccount::new("b"),
        MockAccount::new("c"),
    ];
    let pool = pool_of(&accounts.iter().collect::<Vec<_>>(), no_ramp());
    let mut homes = HashMap::new();
    for session in 0..60 {
        let key = SessionKey::of(&format!("session-{session}"));
        let mut seen = Vec::new();
        for _ in 0..10 {
            let mut request = MockRequest::default();
            request.extensions.insert(key);
            seen.push(served_by(&pool, request).await);
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
        *homes.entry(seen[0]).or_insert(0) += 1;
    }
    assert_eq!(
        homes.len(),
        3,
        "sessions spread over the accounts: {homes:?}"
    );
    // Its account fails: the session moves, and comes back once the account heals.
    let key = SessionKey::of("session-0");
    let home = accounts.iter().find(|a| {
        let mut request = MockRequest::default();
        request.extensions.insert(key);
        futures_ready(served_by(&pool, request)) == a.name
    });
    let home = home.unwrap();
    home.fail_always(Some(MockError::penalty(
        Fault::Account,
        Penalty::Disable {
            reason: "suspended",
            until: None,
        },
    )));
    let mut request = MockRequest::default();
    request.extensions.insert(key);
    let _ = one(&pool, request.clone()).await;
    assert_ne!(served_by(&pool, request.clone()).await, home.name);
}

/// Runs a future that never waits (the mock answers at once).
fn futures_ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the mock future waited"),
    }
}

#[tokio::test]
async fn max_concurrency_makes_the_pool_wait_for_a_stream_to_end() {
    let a = MockAccount::new("a");
    let mut pool = Pool::new(no_ramp(), vec![(spec("a", 1, 2), a.clone())]);
    let first = one(&pool, MockRequest::default()).await.unwrap();
    let _second = one(&pool, MockRequest::default()).await.unwrap();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(
        Service::<MockRequest>::poll_ready(&mut pool, &mut cx).is_pending(),
        "both slots in use"
    );
    first.end(StreamEnd::Complete);
    assert!(Service::<MockRequest>::poll_ready(&mut pool, &mut cx).is_ready());
}

#[tokio::test]
async fn a_retry_goes_to_another_account() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = pool_of(&[&a, &b], no_ramp());
    let attempts = Attempts::default();
    let mut request = MockRequest::default();
    request.extensions.insert(attempts.clone());
    let first = served_by(&pool, request.clone()).await;
    let second = served_by(&pool, request.clone()).await;
    assert_ne!(first, second);
    // Both tried: the next attempt may use either again.
    served_by(&pool, request).await;
    assert_eq!(attempts.count(), 3);
}

#[tokio::test]
async fn a_new_account_ramps_up() {
    let (old, new) = (MockAccount::new("old"), MockAccount::new("new"));
    let config = PoolConfig {
        slow_start: Duration::from_secs(3600),
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, vec![(spec("old", 1, 100), old.clone())]);
    // The first members of a pool do not ramp; the one that joins later does.
    assert!(pool.members()[0].added_at.elapsed() >= Duration::from_secs(3600));
    pool.replace(
        vec![
            (spec("old", 1, 100), old.clone()),
            (spec("new", 1, 100), new.clone()),
        ],
        false,
    );
    for _ in 0..2000 {
        served_by(&pool, MockRequest::default()).await;
    }
    let share = new.calls() as f64 / 2000.0;
    // At the start of its ramp it is a candidate 10 % of the time, then wins half of those.
    assert!(
        (0.02..=0.12).contains(&share),
        "new account's share {share}"
    );
}

#[tokio::test]
async fn removed_accounts_drain_and_kept_ones_keep_their_state() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = pool_of(&[&a, &b], no_ramp());
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(one(&pool, MockRequest::default()).await.unwrap());
    }
    pool.replace(vec![(spec("b", 1, 100), b.clone())], false);
    for _ in 0..10 {
        assert_eq!(served_by(&pool, MockRequest::default()).await, "b");
    }
    // Streams on the removed account finish normally.
    held.into_iter().for_each(|r| r.end(StreamEnd::Complete));
    let views = pool.views();
    assert_eq!(views.len(), 1);
    assert!(views[0].load.requests >= 10, "b kept its counters");
    assert_eq!(views[0].load.in_flight, 0);
}

#[tokio::test]
async fn a_rate_limit_wave_halves_what_the_rest_take() {
    let accounts: Vec<MockAccount> = ["a", "b", "c", "d"]
        .into_iter()
        .map(MockAccount::new)
        .collect();
    let mut pool = Pool::new(
        no_ramp(),
        accounts
            .iter()
            .map(|a| (spec(a.name, 1, 4), a.clone()))
            .collect(),
    );
    for account in &accounts[..3] {
        account.fail_always(Some(MockError::penalty(
            Fault::Account,
            Penalty::Cooldown {
                class: RateLimitClass::Plain,
                retry_after: Some(Duration::from_secs(60)),
            },
        )));
    }
    // Each of a, b, c gets one request and starts cooling: 3 of 4 is a wave.
    while accounts[..3].iter().any(|a| a.calls() == 0) {
        let _ = one(&pool, MockRequest::default()).await;
    }
    let mut held = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    while Service::<MockRequest>::poll_ready(&mut pool, &mut cx).is_ready() {
        held.push(one(&pool, MockRequest::default()).await.unwrap());
        assert!(held.len() <= 4, "the wave did not slow admission");
    }
    assert_eq!(held.len(), 2, "d takes half its cap while the others cool");
    assert!(held.iter().all(|r| r.account == "d"));
}

fn guarded_spec(name: &'static str, per_minute: u32, burst: u32) -> MemberSpec {
    MemberSpec {
        requests_per_minute: Some(RequestQuota {
            per_minute: std::num::NonZeroU32::new(per_minute).unwrap(),
            burst: std::num::NonZeroU32::new(burst).unwrap(),
        }),
        ..spec(name, 1, 100)
    }
}

#[tokio::test]
async fn the_per_account_guard_holds_across_the_pool() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = Pool::new(
        no_ramp(),
        vec![
            (guarded_spec("a", 2, 2), a.clone()),
            (guarded_spec("b", 2, 2), b.clone()),
        ],
    );
    // Four requests fit (two per account, whichever the balancer prefers).
    for _ in 0..4 {
        served_by(&pool, MockRequest::default()).await;
    }
    assert_eq!((a.calls(), b.calls()), (2, 2));
    // The next slot is 30 s away, longer than a request waits: a clear refusal, at once.
    let Err(MockError::None(none)) = one(&pool, MockRequest::default()).await else {
        panic!("a fifth request passed the guards");
    };
    assert!(
        none.message
            .contains("requestsPerMinute guard: a (2/min), b (2/min)"),
        "{}",
        none.message
    );
    let wait = none.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert_eq!(a.calls() + b.calls(), 4);
}

#[tokio::test]
async fn a_request_waits_for_a_guard_that_frees_soon() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    // `a`: one request per 100 ms; `b`: none left for a minute after its first.
    let pool = Pool::new(
        no_ramp(),
        vec![
            (guarded_spec("a", 600, 1), a.clone()),
            (guarded_spec("b", 1, 1), b.clone()),
        ],
    );
    served_by(&pool, MockRequest::default()).await;
    served_by(&pool, MockRequest::default()).await;
    assert_eq!(
        (a.calls(), b.calls()),
        (1, 1),
        "the second goes to the account with room"
    );
    // Both at their guard now: the third waits for `a`'s next slot instead of failing.
    let started = Instant::now();
    assert_eq!(served_by(&pool, MockRequest::default()).await, "a");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(b.calls(), 1);
}

#[tokio::test]
async fn a_forgotten_account_starts_afresh_in_slow_start() {
    let a = MockAccount::new("a");
    let pool = pool_of(&[&a], no_ramp());
    served_by(&pool, MockRequest::default()).await;
    pool.disable("a", "invalid_grant", None);
    // New credentials under the same name: forgotten, so the reload starts it afresh...
    pool.forget("a");
    pool.replace(vec![(spec("a", 1, 100), a.clone())], false);
    let view = &pool.views()[0];
    assert_eq!(view.health.state.as_str(), "healthy");
    assert_eq!(view.load.requests, 0, "the counters are the new account's");
    assert!(
        pool.members()[0].added_at.elapsed() < Duration::from_secs(5),
        "it ramps up like any new account"
    );
    // ... while a reload without new credentials keeps a disable until the operator acts.
    pool.disable("a", "invalid_grant", None);
    pool.replace(vec![(spec("a", 1, 100), a.clone())], false);
    assert_eq!(pool.views()[0].health.state.as_str(), "disabled");
    pool.replace(vec![(spec("a", 1, 100), a.clone())], true);
    assert_eq!(pool.views()[0].health.state.as_str(), "healthy");
}

#[tokio::test]
async fn pools_on_one_store_share_health_and_load() {
    let store: Arc<dyn PoolStore> = Arc::new(MemoryStore::new());
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let members = || {
        vec![
            (spec("a", 1, 100), a.clone()),
            (spec("b", 1, 100), b.clone()),
        ]
    };
    let first = Pool::with_store(no_ramp(), Arc::clone(&store), members());
    let second = Pool::with_store(no_ramp(), Arc::clone(&store), members());
    a.script(Err(MockError::penalty(
        Fault::Account,
        Penalty::Cooldown {
            class: RateLimitClass::Plain,
            retry_after: Some(Duration::from_secs(60)),
        },
    )));
    // Whichever pool the 429 reached, the other rests the account too.
    while a.calls() == 0 {
        let _ = one(&first, MockRequest::default()).await;
    }
    let calls = a.calls();
    for _ in 0..50 {
        assert_eq!(served_by(&second, MockRequest::default()).await, "b");
    }
    assert_eq!(a.calls(), calls);
    // A stream open through one pool is load the other sees.
    let open = one(&first, MockRequest::default()).await.unwrap();
    assert_eq!(second.views()[1].load.in_flight, 1);
    open.end(StreamEnd::Complete);
    assert_eq!(second.views()[1].load.in_flight, 0);
}

#[tokio::test]
async fn the_tokens_each_account_used_are_summed() {
    let a = MockAccount::new("a");
    let pool = pool_of(&[&a], no_ramp());
    for input in [100, 20] {
        one(&pool, MockRequest::default())
            .await
            .unwrap()
            .end_with(StreamReport {
                end: StreamEnd::Complete,
                error_kind: None,
                duration: Duration::from_millis(5),
                time_to_first_event: Some(Duration::from_millis(1)),
                usage: Some(TokenUsage {
                    input,
                    output: 7,
                    cache_read: 50,
                    ..TokenUsage::default()
                }),
            });
    }
    let tokens = pool.views()[0].load.tokens;
    assert_eq!(
        (tokens.input, tokens.output, tokens.cache_read),
        (120, 14, 100)
    );
}

#[tokio::test]
async fn the_only_account_keeps_serving_through_the_upstreams_faults() {
    let a = MockAccount::new("a");
    let pool = pool_of(&[&a], no_ramp());
    a.fail_always(Some(MockError::upstream()));
    for _ in 0..5 {
        assert!(one(&pool, MockRequest::default()).await.is_err());
    }
    let status = pool.status();
    assert_eq!(status.members[0].health.state.as_str(), "open");
    assert!(status.panic, "its one account is out: panic mode");
    // Still failing: each request still fails honestly, and still reaches the account.
    assert!(one(&pool, MockRequest::default()).await.is_err());
    assert_eq!(a.calls(), 6, "panic mode sent it the request");
    a.fail_always(None);
    served_by(&pool, MockRequest::default()).await;
    let status = pool.status();
    assert_eq!(status.members[0].health.state.as_str(), "healthy");
    assert!(!status.panic, "a success closed the breaker");
    assert_eq!(status.panic_requests, 2);
}

#[tokio::test]
async fn panic_mode_never_admits_an_account_resting_for_its_own_fault() {
    let (a, b, c) = (
        MockAccount::new("a"),
        MockAccount::new("b"),
        MockAccount::new("c"),
    );
    let pool = pool_of(&[&a, &b, &c], no_ramp());
    a.script(Err(MockError::penalty(
        Fault::Account,
        Penalty::Cooldown {
            class: RateLimitClass::Suspended,
            retry_after: None,
        },
    )));
    // `a` is the first to be tried when the session key ranks it first; any request that
    // reaches it rests it.
    while a.calls() == 0 {
        let _ = one(&pool, MockRequest::default()).await;
    }
    b.fail_always(Some(MockError::upstream()));
    c.fail_always(Some(MockError::upstream()));
    for _ in 0..100 {
        if pool.views()[1..]
            .iter()
            .all(|v| v.health.state == State::Open)
        {
            break;
        }
        let _ = one(&pool, MockRequest::default()).await;
    }
    let states: Vec<_> = pool
        .views()
        .iter()
        .map(|v| v.health.state.as_str())
        .collect();
    assert_eq!(states, ["cooldown", "open", "open"]);
    assert!(pool.status().panic);
    b.fail_always(None);
    c.fail_always(None);
    let before = a.calls();
    for _ in 0..20 {
        let name = served_by(&pool, MockRequest::default()).await;
        assert_ne!(name, "a", "a suspended account stays out, panic or not");
    }
    assert_eq!(a.calls(), before);
}

#[tokio::test]
async fn without_panic_mode_an_open_breaker_refuses() {
    let a = MockAccount::new("a");
    let pool = pool_of(
        &[&a],
        PoolConfig {
            panic_threshold: 0.0,
            ..no_ramp()
        },
    );
    a.fail_always(Some(MockError::upstream()));
    for _ in 0..5 {
        let _ = one(&pool, MockRequest::default()).await;
    }
    a.fail_always(None);
    let refused = one(&pool, MockRequest::default()).await.unwrap_err();
    assert!(matches!(refused, MockError::None(_)), "{refused:?}");
    assert!(!pool.status().panic);
}

#[tokio::test]
async fn the_operator_resets_a_resting_account_by_name() {
    let (a, b) = (MockAccount::new("a"), MockAccount::new("b"));
    let pool = pool_of(&[&a, &b], no_ramp());
    pool.penalise(
        "a",
        &Penalty::Cooldown {
            class: RateLimitClass::Plain,
            retry_after: Some(Duration::from_secs(600)),
        },
        "rate_limited",
    );
    for _ in 0..10 {
        assert_eq!(served_by(&pool, MockRequest::default()).await, "b");
    }
    assert!(pool.reset_breaker("a"));
    assert!(!pool.reset_breaker("nobody"));
    let mut served = std::collections::HashSet::new();
    for _ in 0..20 {
        served.insert(served_by(&pool, MockRequest::default()).await);
    }
    assert!(served.contains("a"), "{served:?}");
}

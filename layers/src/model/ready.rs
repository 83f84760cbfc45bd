//! Waiting for a free account inside the call, bounded, instead of in `poll_ready`.
//!
//! The pool is not ready while every account is full (backpressure, as tower wants). The
//! layers above it that can answer on their own (a cache hit, a rate-limit refusal) should
//! not wait for that: this layer is always ready, and each call waits for the inner service
//! to be ready (at most `max_wait`, then [`NotReady`]) before it is sent. So only requests
//! that need an account wait for one, and none waits without bound.
//!
//! # Example: a full account makes the call wait, not the caller's `poll_ready`
//!
//! ```
//! use aiproxy_layers::model::pool::{MemberSpec, Pool, PoolConfig};
//! use aiproxy_layers::model::ready::WaitReadyLayer;
//! use aiproxy_layers::model::StreamEnd;
//! use aiproxy_layers::testing::{MockAccount, MockError, MockRequest};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let only = MockAccount::new("only");
//! let spec = MemberSpec {
//!     name: Arc::from("only"),
//!     weight: 1,
//!     max_concurrency: 1,
//!     requests_per_minute: None,
//! };
//! let pool = Pool::new(PoolConfig::default(), vec![(spec, only)]);
//! let stack = WaitReadyLayer::new(Duration::from_millis(50)).layer(pool);
//! // The one slot is taken by a stream still open...
//! let open = stack.clone().oneshot(MockRequest::default()).await.unwrap();
//! // ...so the next call waits its 50 ms and is told why, instead of hanging.
//! let busy = stack.clone().oneshot(MockRequest::default()).await.unwrap_err();
//! assert!(matches!(busy, MockError::NotReady(ref n) if n.waited >= Duration::from_millis(50)));
//! // When the stream ends the slot is free again.
//! open.end(StreamEnd::Complete);
//! let next = stack.oneshot(MockRequest::default()).await.unwrap();
//! assert_eq!(next.account, "only");
//! # }
//! ```

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// The inner service stayed not ready for the whole wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// How long the call waited.
    pub waited: Duration,
}

/// Adds [`WaitReady`] (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct WaitReadyLayer {
    max_wait: Duration,
}

impl WaitReadyLayer {
    /// Each call waits at most `max_wait` for the inner service.
    pub fn new(max_wait: Duration) -> Self {
        Self { max_wait }
    }
}

impl<S> Layer<S> for WaitReadyLayer {
    type Service = WaitReady<S>;

    fn layer(&self, inner: S) -> WaitReady<S> {
        WaitReady {
            inner,
            max_wait: self.max_wait,
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct WaitReady<S> {
    inner: S,
    max_wait: Duration,
}

impl<S, Req> Service<Req> for WaitReady<S>
where
    S: Service<Req> + Clone,
    S::Error: From<NotReady>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WaitReadyFuture<S, Req>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The clone is the one that waits and is called (tower's clone-then-swap pattern
        // would leave `self` with a service another caller already readied).
        WaitReadyFuture {
            state: State::Waiting {
                inner: self.inner.clone(),
                request: Some(request),
                // The timer is armed only if the first readiness check finds no slot: an
                // account with room (the usual case) costs no timer.
                deadline: None,
                max_wait: self.max_wait,
            },
        }
    }
}

pin_project! {
    /// [`WaitReady`]'s future: waits (bounded) for the inner service, then runs its call.
    pub struct WaitReadyFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Waiting {
            inner: S,
            request: Option<Req>,
            deadline: Option<Pin<Box<tokio::time::Sleep>>>,
            max_wait: Duration,
        },
        Calling { #[pin] future: S::Future },
    }
}

impl<S, Req> Future for WaitReadyFuture<S, Req>
where
    S: Service<Req>,
    S::Error: From<NotReady>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Waiting {
                    inner,
                    request,
                    deadline,
                    max_wait,
                } => {
                    match inner.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => {
                            let max_wait = *max_wait;
                            let sleep = deadline
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(max_wait)));
                            if sleep.as_mut().poll(cx).is_ready() {
                                return Poll::Ready(Err(S::Error::from(NotReady {
                                    waited: max_wait,
                                })));
                            }
                            return Poll::Pending;
                        }
                    }
                    let Some(request) = request.take() else {
                        // Only reachable by polling after completion, which futures forbid.
                        return Poll::Pending;
                    };
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{pool::Pool, pool::PoolConfig, StreamEnd};
    use crate::testing::{MockAccount, MockError, MockRequest};
    use tower::ServiceExt;

    fn full_pool() -> (Pool<MockAccount>, MockAccount) {
        let a = MockAccount::new("a");
        let spec = crate::model::pool::MemberSpec {
            name: "a".into(),
            weight: 1,
            max_concurrency: 1,
            requests_per_minute: None,
        };
        let config = PoolConfig {
            slow_start: Duration::ZERO,
            ..PoolConfig::default()
        };
        (Pool::new(config, vec![(spec, a.clone())]), a)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_a_slot_then_goes() {
        let (pool, a) = full_pool();
        let held = pool.clone().oneshot(MockRequest::default()).await.unwrap();
        let mut service = WaitReadyLayer::new(Duration::from_secs(5)).layer(pool);
        // Ready at once, although the only account is full.
        std::future::poll_fn(|cx| Service::<MockRequest>::poll_ready(&mut service, cx))
            .await
            .unwrap();
        let waiting = tokio::spawn(service.call(MockRequest::default()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(a.calls(), 1, "still waiting for the slot");
        held.end(StreamEnd::Complete);
        waiting.await.unwrap().unwrap().end(StreamEnd::Complete);
        assert_eq!(a.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let (pool, a) = full_pool();
        let _held = pool.clone().oneshot(MockRequest::default()).await.unwrap();
        let service = WaitReadyLayer::new(Duration::from_secs(3)).layer(pool);
        let error = service.oneshot(MockRequest::default()).await.unwrap_err();
        assert_eq!(
            error,
            MockError::from(NotReady {
                waited: Duration::from_secs(3)
            })
        );
        assert_eq!(a.calls(), 1, "nothing was sent");
    }
}

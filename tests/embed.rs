//! aiproxy inside other applications: the pipeline under a path of an axum app, the `auth`
//! layer on one of the app's routes, and the `auth` layer around a tonic gRPC server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../examples/axum_embed.rs"]
#[allow(dead_code)]
mod axum_embed;

use aiproxy::config::Config;
use aiproxy_layers::auth::AuthLayer;
use bytes::Bytes;
use common::send;
use http_body_util::Full;
use tonic::metadata::MetadataValue;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn serve_axum() -> String {
    let app = axum_embed::app(&Config::mock()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn request(
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn pipeline_mounted_under_a_path_of_an_axum_app() {
    let base = serve_axum().await;
    let models = send(request("GET", format!("{base}/ai/v1/models"), &[], "")).await;
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["object"], "list");

    let body = common::chat_body("embedded hello", false);
    let chat = send(request(
        "POST",
        format!("{base}/ai/v1/chat/completions"),
        &[("content-type", "application/json")],
        &body,
    ))
    .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    assert_eq!(
        chat.json()["choices"][0]["message"]["content"],
        "embedded hello"
    );

    let home = send(request("GET", format!("{base}/"), &[], "")).await;
    assert_eq!(
        (home.status, home.text().as_str()),
        (200, "hello from the host app")
    );
}

#[tokio::test]
async fn auth_layer_guards_one_route_of_the_app() {
    let base = serve_axum().await;
    let denied = send(request("GET", format!("{base}/admin"), &[], "")).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"]["type"], "invalid_request_error");
    let allowed = send(request(
        "GET",
        format!("{base}/admin"),
        &[("x-api-key", "admin-key")],
        "",
    ))
    .await;
    assert_eq!(
        (allowed.status, allowed.text().as_str()),
        (200, "admin area, caller key-1")
    );
}

#[tokio::test]
async fn auth_layer_around_a_tonic_server() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(AuthLayer::new(["grpc-key"]))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap()
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut anonymous = HealthClient::new(channel.clone());
    let status = anonymous
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("Missing API key"),
        "{}",
        status.message()
    );

    let token: MetadataValue<_> = "Bearer grpc-key".parse().unwrap();
    let mut authorised =
        HealthClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        });
    let response = authorised
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}

/// An embedder tests its own stack of the model-tier layers against the crate's scriptable
/// mock accounts (feature `testing`), with no upstream at all.
#[tokio::test]
async fn an_embedder_tests_a_retry_and_pool_stack_with_the_public_mocks() {
    use aiproxy_layers::model::pool::{MemberSpec, Pool, PoolConfig};
    use aiproxy_layers::model::retry::{RetryConfig, RetryLayer};
    use aiproxy_layers::model::{Attempts, StreamEnd};
    use aiproxy_layers::testing::{MockAccount, MockError, MockRequest};
    use std::sync::Arc;
    use tower::{Layer, ServiceExt};

    let (flaky, steady) = (MockAccount::new("flaky"), MockAccount::new("steady"));
    flaky.fail_always(Some(MockError::upstream()));
    let spec = |name: &str| MemberSpec {
        name: Arc::from(name),
        weight: 1,
        max_concurrency: 4,
        requests_per_minute: None,
    };
    let pool = Pool::new(
        PoolConfig {
            slow_start: std::time::Duration::ZERO,
            ..PoolConfig::default()
        },
        vec![
            (spec("flaky"), flaky.clone()),
            (spec("steady"), steady.clone()),
        ],
    );
    let stack = RetryLayer::new(RetryConfig {
        base_delay: std::time::Duration::from_millis(1),
        ..RetryConfig::default()
    })
    .layer(pool);
    for _ in 0..10 {
        let response = stack.clone().oneshot(MockRequest::default()).await.unwrap();
        assert_eq!(
            response.account, "steady",
            "retried onto the steady account"
        );
        let attempts = response.extensions.get::<Attempts>().unwrap().count();
        assert!((1..=2).contains(&attempts), "{attempts}");
        response.end(StreamEnd::Complete);
    }
    assert_eq!(steady.calls(), 10);
}

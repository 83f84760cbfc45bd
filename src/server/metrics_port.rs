//! The `--metrics-port` listener's service: the pipeline, for `GET /metrics` alone (every
//! other request is answered 404 here, so nothing else of the API is reachable on that port).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Lets `GET /metrics` (and `HEAD`) through to the inner service; answers the rest 404.
#[derive(Clone, Debug)]
pub struct MetricsOnly<S>(pub S);

/// The 404 of the metrics port, in the OpenAI error shape like every other aiproxy error.
fn not_here(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {
        "message": format!("{method} {path} is not served on the metrics port; it serves only GET /metrics and, with --admin-key, the console at /console (the API is on --port)."),
        "type": "invalid_request_error", "param": null, "code": "unknown_endpoint"}});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for MetricsOnly<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let allowed = matches!(*request.method(), Method::GET | Method::HEAD)
            && request.uri().path() == "/metrics";
        if !allowed {
            let refused = not_here(request.method(), request.uri().path());
            return Box::pin(std::future::ready(Ok(refused.map(Either::Right))));
        }
        let future = self.0.call(request);
        Box::pin(async move { Ok(future.await?.map(Either::Left)) })
    }
}

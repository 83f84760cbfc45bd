use super::layer::RouteConfig;
use super::ResponseFuture;
use crate::{ErrorShape, ProviderId, Rejection};
use http::{Request, StatusCode, Uri};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

const PROVIDER_HEADERS: [&str; 2] = ["x-model-provider", "model-provider"];

/// Middleware that picks the provider of each request. Built by
/// [`RouteLayer`](super::RouteLayer).
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    config: Arc<RouteConfig>,
}

impl<S> Route<S> {
    pub(crate) fn new(inner: S, config: Arc<RouteConfig>) -> Self {
        Self { inner, config }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Route<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<crate::RejectBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match choose(&self.config, &request) {
            Ok(choice) => {
                if let Some(stripped) = choice.stripped_uri {
                    *request.uri_mut() = stripped;
                }
                request.extensions_mut().insert(choice.provider);
                ResponseFuture::Inner {
                    future: self.inner.call(request),
                }
            }
            Err(rejection) => {
                let (parts, _body) = request.into_parts();
                let shape = ErrorShape::for_request(&parts);
                ResponseFuture::Rejected {
                    response: Some(rejection.into_response(shape)),
                }
            }
        }
    }
}

struct Choice {
    provider: ProviderId,
    stripped_uri: Option<Uri>,
}

fn choose<B>(config: &RouteConfig, request: &Request<B>) -> Result<Choice, Rejection> {
    let prefix = path_prefix(request.uri().path());
    let stripped_uri = match prefix {
        Some(name) if config.find(name).is_some() => strip_prefix(request.uri(), name),
        Some(name) => return Err(unknown(config, name, "path prefix")),
        None => None,
    };
    for header in PROVIDER_HEADERS {
        if let Some(value) = request.headers().get(header) {
            let name = value.to_str().unwrap_or("<non-ASCII value>").trim();
            return match config.find(name) {
                Some(provider) => Ok(Choice {
                    provider: provider.clone(),
                    stripped_uri,
                }),
                None => Err(unknown(config, name, header)),
            };
        }
    }
    let provider = match prefix.and_then(|name| config.find(name)) {
        Some(provider) => provider.clone(),
        None => config.default.clone(),
    };
    Ok(Choice {
        provider,
        stripped_uri,
    })
}

/// `/{provider}/v1/...` -> `Some(provider)`; `/v1/...`, `/health` -> `None`.
pub fn path_prefix(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (first, after) = rest.split_once('/')?;
    let is_api_path = after == "v1" || after.starts_with("v1/") || after.starts_with("v1beta");
    (is_api_path && !first.is_empty() && !first.starts_with("v1")).then_some(first)
}

fn strip_prefix(uri: &Uri, name: &str) -> Option<Uri> {
    let path_and_query = uri.path_and_query()?.as_str();
    let rest = path_and_query.get(name.len() + 1..)?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(rest.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn unknown(config: &RouteConfig, name: &str, source: &str) -> Rejection {
    Rejection::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        format!(
            "Unknown model provider `{name}` (from {source}). Known providers: {}. \
             Set the `X-Model-Provider` header to one of them, or leave it out to use the default.",
            config.known_list()
        ),
    )
    .with_code("unknown_provider")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteLayer;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};
    use tower_layer::Layer;

    async fn call(request: Request<()>) -> (StatusCode, String) {
        let layer = RouteLayer::new("kiro-api", ["kiro-api", "other"]);
        let svc = layer.layer(service_fn(|req: Request<()>| async move {
            let provider = req.extensions().get::<ProviderId>().map(|p| p.to_string());
            let text = format!("{} {}", provider.unwrap_or_default(), req.uri());
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
        }));
        let response = svc.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::builder().uri(uri)
    }

    #[tokio::test]
    async fn headers_then_prefix_then_default() {
        let r = call(
            get("/v1/models")
                .header("X-Model-Provider", "other")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(r, (StatusCode::OK, "other /v1/models".into()));
        let r = call(
            get("/v1/models")
                .header("Model-Provider", "other")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(r, (StatusCode::OK, "other /v1/models".into()));
        let r = call(get("/other/v1/chat/completions?x=1").body(()).unwrap()).await;
        assert_eq!(r, (StatusCode::OK, "other /v1/chat/completions?x=1".into()));
        let r = call(get("/v1/models").body(()).unwrap()).await;
        assert_eq!(r, (StatusCode::OK, "kiro-api /v1/models".into()));
        let r = call(get("/health").body(()).unwrap()).await;
        assert_eq!(r, (StatusCode::OK, "kiro-api /health".into()));
    }

    #[tokio::test]
    async fn unknown_provider_is_400_naming_known_ones() {
        let (status, body) = call(
            get("/v1/models")
                .header("X-Model-Provider", "nope")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("`nope`"), "{body}");
        assert!(body.contains("kiro-api, other"), "{body}");
        let (status, body) = call(get("/nope/v1/models").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("path prefix"), "{body}");
    }

    #[test]
    fn prefix_detection() {
        assert_eq!(path_prefix("/kiro-api/v1/models"), Some("kiro-api"));
        assert_eq!(path_prefix("/v1/models"), None);
        assert_eq!(path_prefix("/health"), None);
        assert_eq!(path_prefix("/a/b/c"), None);
    }
}

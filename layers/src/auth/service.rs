use super::layer::AuthConfig;
use super::ResponseFuture;
use crate::{ClientKey, ErrorShape, Rejection};
use http::header::{HeaderMap, AUTHORIZATION};
use http::{Request, StatusCode, Uri};
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tower_service::Service;

/// Middleware that checks API keys. Built by [`AuthLayer`](super::AuthLayer).
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    config: Arc<AuthConfig>,
}

impl<S> Auth<S> {
    pub(crate) fn new(inner: S, config: Arc<AuthConfig>) -> Self {
        Self { inner, config }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
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
        let (client, strip_query_key) = match check(&self.config, &request) {
            Ok(found) => found,
            Err(rejection) => {
                let (parts, _body) = request.into_parts();
                let shape = ErrorShape::for_request(&parts);
                return ResponseFuture::Rejected {
                    response: Some(rejection.into_response(shape)),
                };
            }
        };
        if strip_query_key {
            *request.uri_mut() = without_key_param(request.uri());
        }
        request.extensions_mut().insert(client);
        ResponseFuture::Inner {
            future: self.inner.call(request),
        }
    }
}

fn is_preflight<B>(request: &Request<B>) -> bool {
    request.method() == http::Method::OPTIONS
        && request.headers().contains_key(http::header::ORIGIN)
        && request
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Where the key came from matters only to remove `?key=` afterwards.
enum KeySource<'a> {
    Header(&'a [u8]),
    Query(String),
}

fn check<B>(config: &AuthConfig, request: &Request<B>) -> Result<(ClientKey, bool), Rejection> {
    let from_query = |uri: &Uri| uri.query().and_then(key_param).map(KeySource::Query);
    let presented = presented_key(request.headers()).map(KeySource::Header);
    let presented = presented.or_else(|| from_query(request.uri()));
    let is_query = matches!(presented, Some(KeySource::Query(_)));

    if config.keys.is_empty() {
        return Ok((ClientKey::anonymous(), is_query));
    }
    if config.public_paths.contains(request.uri().path())
        || (config.public_preflights && is_preflight(request))
    {
        return Ok((ClientKey::anonymous(), is_query));
    }
    let presented: &[u8] = match &presented {
        Some(KeySource::Header(bytes)) => bytes,
        Some(KeySource::Query(text)) => text.as_bytes(),
        None => return Err(missing_key()),
    };
    match matching_key(&config.keys, presented) {
        Some(position) => Ok((config.labels[position].clone(), is_query)),
        None => Err(invalid_key()),
    }
}

/// Compares against every configured key without stopping at the first match.
fn matching_key(keys: &[Box<[u8]>], presented: &[u8]) -> Option<usize> {
    let mut found = None;
    for (position, key) in keys.iter().enumerate() {
        if bool::from(key.as_ref().ct_eq(presented)) && found.is_none() {
            found = Some(position);
        }
    }
    found
}

fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let bytes = value.as_bytes();
        let scheme = b"bearer ";
        if bytes.len() > scheme.len() && bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(bytes[scheme.len()..].trim_ascii());
        }
    }
    ["x-api-key", "x-goog-api-key"]
        .into_iter()
        .find_map(|name| headers.get(name))
        .map(|value| value.as_bytes().trim_ascii())
        .filter(|key| !key.is_empty())
}

/// The value of `key=` in a query string, percent-decoded.
fn key_param(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned())
        .filter(|key| !key.is_empty())
}

/// The same URI without any `key=` query parameter.
fn without_key_param(uri: &Uri) -> Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with("key=") && !pair.is_empty())
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => {
            parts.path_and_query = Some(pq);
            Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}

fn missing_key() -> Rejection {
    Rejection::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Missing API key. Send it as `Authorization: Bearer <key>`, `x-api-key: <key>`, \
         `x-goog-api-key: <key>` or the `?key=<key>` query parameter.",
    )
}

fn invalid_key() -> Rejection {
    Rejection::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Invalid API key. Use one of the keys this server was started with \
         (--api-key / AIPROXY_API_KEY).",
    )
    .with_code("invalid_api_key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthLayer;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};
    use tower_layer::Layer;

    /// Echoes the client label and the URI the inner service saw.
    async fn echo(request: Request<()>) -> Result<http::Response<Full<Bytes>>, Infallible> {
        let label = request
            .extensions()
            .get::<ClientKey>()
            .map(|c| c.label().to_owned())
            .unwrap_or_default();
        Ok(http::Response::new(Full::from(format!(
            "{label} {}",
            request.uri()
        ))))
    }

    async fn call(layer: &AuthLayer, request: Request<()>) -> (StatusCode, String) {
        let response = layer
            .layer(service_fn(echo))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::builder().uri(uri)
    }

    #[tokio::test]
    async fn accepts_every_key_location() {
        let layer = AuthLayer::new(["k1", "k2"]);
        let cases = [
            get("/x").header("authorization", "Bearer k2"),
            get("/x").header("authorization", "bearer k2"),
            get("/x").header("x-api-key", "k2"),
            get("/x").header("x-goog-api-key", "k2"),
        ];
        for builder in cases {
            let (status, body) = call(&layer, builder.body(()).unwrap()).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, "key-2 /x");
        }
    }

    #[tokio::test]
    async fn preflights_pass_without_a_key_only_when_allowed() {
        let preflight = || {
            Request::builder()
                .method(http::Method::OPTIONS)
                .uri("/v1/chat/completions")
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
                .body(())
                .unwrap()
        };
        let strict = AuthLayer::new(["k"]);
        assert_eq!(call(&strict, preflight()).await.0, StatusCode::UNAUTHORIZED);
        let open = AuthLayer::new(["k"]).public_preflights();
        assert_eq!(
            call(&open, preflight()).await,
            (StatusCode::OK, "anonymous /v1/chat/completions".into())
        );
        // An OPTIONS that is not a preflight, or any other method, still needs the key.
        let plain = Request::builder()
            .method(http::Method::OPTIONS)
            .uri("/v1/chat/completions")
            .header("origin", "https://app.example.com")
            .body(())
            .unwrap();
        assert_eq!(call(&open, plain).await.0, StatusCode::UNAUTHORIZED);
        let post = Request::builder()
            .method(http::Method::POST)
            .uri("/v1/chat/completions")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap();
        assert_eq!(call(&open, post).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn query_key_is_accepted_and_removed() {
        let layer = AuthLayer::new(["s3cr%t"]);
        let request = get("/v1/models?a=1&key=s3cr%25t&b=2").body(()).unwrap();
        let (status, body) = call(&layer, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "key-1 /v1/models?a=1&b=2");
        assert!(!body.contains("s3cr"));
    }

    #[tokio::test]
    async fn wrong_and_missing_keys_get_401_in_openai_shape() {
        let layer = AuthLayer::new(["right"]);
        let (status, body) = call(
            &layer,
            get("/v1/models")
                .header("x-api-key", "wrong")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_api_key");
        assert!(
            !body.contains("wrong"),
            "the presented key must not be echoed"
        );

        let (status, body) = call(&layer, get("/v1/models").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Missing API key"));
    }

    #[tokio::test]
    async fn anthropic_routes_get_anthropic_errors() {
        let layer = AuthLayer::new(["right"]);
        let (status, body) = call(&layer, get("/v1/messages").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["type"], "authentication_error");
    }

    #[tokio::test]
    async fn public_paths_and_open_mode_pass() {
        let layer = AuthLayer::new(["right"]).public_path("/health");
        let (status, body) = call(&layer, get("/health").body(()).unwrap()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "anonymous /health")
        );

        let open = AuthLayer::new(Vec::<String>::new());
        assert!(!open.is_enforcing());
        let (status, body) = call(&open, get("/v1/models").body(()).unwrap()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "anonymous /v1/models")
        );
    }

    #[test]
    fn matching_key_finds_position() {
        let keys: Vec<Box<[u8]>> = vec![b"aa".to_vec().into(), b"bb".to_vec().into()];
        assert_eq!(matching_key(&keys, b"bb"), Some(1));
        assert_eq!(matching_key(&keys, b"b"), None);
        assert_eq!(matching_key(&keys, b""), None);
    }
}

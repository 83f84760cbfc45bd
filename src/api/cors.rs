//! CORS for browser clients (`--cors-allow-origin`): preflights are answered here (the auth
//! layer lets them through, since browsers send no key on them) and every answer to an
//! allowed origin carries the `access-control-*` headers. Without configured origins none
//! of this runs and no CORS header is ever sent.
//!
//! Done in the adapter rather than with tower-http's `CorsLayer`: that layer needs a
//! `Default` body type, which the toggled stack does not have, and nesting one more generic
//! service made the test crates' builds far slower.

use crate::body::ResponseBody;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

const METHODS: &str = "GET, POST, DELETE, HEAD";
/// Headers a browser client may read from an answer.
const EXPOSED: &str = "x-request-id, x-aiproxy-account, x-aiproxy-attempts, x-aiproxy-usage, \
                       x-aiproxy-not-honoured, x-aiproxy-dropped-tools, x-aiproxy-cache, \
                       x-aiproxy-overhead-ms, retry-after, x-ratelimit-limit-requests, \
                       x-ratelimit-remaining-requests, x-ratelimit-reset-requests, \
                       x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens";

/// The allowed origins.
#[derive(Clone, Debug)]
pub struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    /// CORS for `origins` (`*`: any); `None` when there are none.
    pub fn new(origins: &[String]) -> Option<Self> {
        if origins.is_empty() {
            return None;
        }
        Some(Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        })
    }

    fn allowed<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        (self.any || self.origins.iter().any(|o| o == origin)).then_some(origin)
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`): `204`, with the CORS headers when the origin is
    /// allowed (without them the browser refuses the real request).
    pub fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<ResponseBody>> {
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(
            VARY,
            HeaderValue::from_static("origin, access-control-request-headers"),
        );
        if self.allowed(headers).is_some() {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
            out.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            // Browser SDKs send their own headers (x-stainless-*, anthropic-*, ...): allow
            // what was asked for.
            if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
        }
        Some(response)
    }

    /// Adds the CORS headers to the answer of a request from an allowed origin.
    pub fn decorate(&self, request: &HeaderMap, response: &mut Response<ResponseBody>) {
        let Some(origin) = self.allowed(request) else {
            return;
        };
        let allow = self.allow_origin(origin);
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        out.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        out.append(VARY, HeaderValue::from_static("origin"));
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }
}

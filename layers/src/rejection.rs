//! API-shaped error responses, shared by every layer and by aiproxy's own adapters so an
//! error looks the same whichever part of the stack produced it.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{request, Response, StatusCode};
use serde_json::json;

/// Which wire format an error must be written in, decided from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","code","param"}}`: OpenAI routes and the default.
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`: `/v1/messages` and its sub-paths.
    Anthropic,
    /// gRPC trailers-only response (`grpc-status`, `grpc-message`) for tonic services.
    Grpc,
}

impl ErrorShape {
    /// Picks the shape a client of this request expects.
    pub fn for_request(parts: &request::Parts) -> Self {
        let is_grpc = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if is_grpc {
            Self::Grpc
        } else if is_anthropic_path(parts.uri.path()) {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }
}

fn is_anthropic_path(path: &str) -> bool {
    path.ends_with("/v1/messages") || path.contains("/v1/messages/")
}

/// An error answer: HTTP status, a machine-readable type/code and a message that says what
/// was wrong and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// OpenAI `error.type` (e.g. `invalid_request_error`).
    pub kind: &'static str,
    /// OpenAI `error.code` (e.g. `invalid_api_key`), if any.
    pub code: Option<&'static str>,
    /// The request field the error is about, if any (OpenAI `error.param`).
    pub param: Option<String>,
    /// Human-readable: what was wrong and what to do.
    pub message: String,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Rejection {
    /// A rejection with the given status, OpenAI error type and message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Sets the OpenAI `error.code`.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Sets the OpenAI `error.param` (the request field at fault).
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The Anthropic `error.type` for this rejection's status.
    pub fn anthropic_kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 422 => {
                if self.status == StatusCode::NOT_FOUND {
                    "not_found_error"
                } else {
                    "invalid_request_error"
                }
            }
            401 => "authentication_error",
            402 | 403 => "permission_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
    }

    /// The JSON body of this error in the given shape (`None` for gRPC, which has no body).
    pub fn body_json(&self, shape: ErrorShape) -> Option<serde_json::Value> {
        match shape {
            ErrorShape::OpenAi => Some(json!({
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "code": self.code,
                    "param": self.param,
                }
            })),
            ErrorShape::Anthropic => Some(json!({
                "type": "error",
                "error": { "type": self.anthropic_kind(), "message": self.message }
            })),
            ErrorShape::Grpc => None,
        }
    }

    /// Renders the complete response in the given shape.
    pub fn into_response(self, shape: ErrorShape) -> Response<Bytes> {
        let mut response = match self.body_json(shape) {
            Some(body) => {
                let bytes = Bytes::from(body.to_string());
                let mut response = Response::new(bytes);
                *response.status_mut() = self.status;
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            None => self.grpc_response(),
        };
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }

    fn grpc_response(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(grpc_code(self.status)));
        if let Ok(message) = HeaderValue::from_str(&percent_encode_grpc(&self.message)) {
            headers.insert("grpc-message", message);
        }
        response
    }
}

/// gRPC status code for an HTTP status (the inverse of the gRPC HTTP mapping).
fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 | 413 => 3,  // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 12,       // UNIMPLEMENTED
        429 => 8,        // RESOURCE_EXHAUSTED
        502..=504 => 14, // UNAVAILABLE
        _ => 13,         // INTERNAL
    }
}

/// `grpc-message` is percent-encoded outside printable ASCII (gRPC over HTTP/2 spec).
fn percent_encode_grpc(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str, content_type: Option<&str>) -> request::Parts {
        let mut builder = http::Request::builder().uri(path);
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn shape_follows_path_and_content_type() {
        assert_eq!(
            ErrorShape::for_request(&parts("/v1/chat/completions", None)),
            ErrorShape::OpenAi
        );
        assert_eq!(
            ErrorShape::for_request(&parts("/v1/messages", None)),
            ErrorShape::Anthropic
        );
        assert_eq!(
            ErrorShape::for_request(&parts("/kiro-api/v1/messages/count_tokens", None)),
            ErrorShape::Anthropic
        );
        assert_eq!(
            ErrorShape::for_request(&parts(
                "/grpc.health.v1.Health/Check",
                Some("application/grpc")
            )),
            ErrorShape::Grpc
        );
    }

    #[test]
    fn openai_body_has_all_four_fields() {
        let r = Rejection::new(StatusCode::BAD_REQUEST, "invalid_request_error", "bad")
            .with_param("messages");
        let body = r.body_json(ErrorShape::OpenAi).unwrap();
        assert_eq!(body["error"]["param"], "messages");
        assert!(body["error"]["code"].is_null());
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn anthropic_body_maps_status_to_type() {
        let r = Rejection::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "no key");
        let body = r.body_json(ErrorShape::Anthropic).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
    }

    #[test]
    fn grpc_rejection_is_trailers_only() {
        let r = Rejection::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing key: 100%",
        );
        let response = r.into_response(ErrorShape::Grpc);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()["grpc-message"], "missing key: 100%25");
    }
}

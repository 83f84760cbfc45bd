//! Helpers for tests against `aiproxy fake-kiro`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{chat_body, send, temp_dir, Proxy};
use aiproxy::config::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tower::ServiceExt;

pub struct Fake {
    pub process: Proxy,
}

impl Fake {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `aiproxy fake-kiro` with these flags (`--tls-cert`, `--event-delay-ms`, ...).
    pub fn start_with(args: &[&str]) -> Self {
        Self {
            process: Proxy::start_fake(args),
        }
    }

    /// aiproxy with one account on `fake` (`auth`: `social`, whose refresh hands out a
    /// profileArn, or `idc`, whose does not).
    pub fn proxy(&self, auth: &str, args: &[&str]) -> Proxy {
        self.proxy_with_env(auth, args, &[])
    }

    /// [`Fake::proxy`] with environment variables (`RUST_LOG=info` to read its log lines).
    pub fn proxy_with_env(&self, auth: &str, args: &[&str], envs: &[(&str, &str)]) -> Proxy {
        let dir = temp_dir("fake-account");
        let mut creds =
            json!({"refreshToken": format!("rt-{}", uuid::Uuid::new_v4()), "authMethod": auth});
        if auth == "idc" {
            creds["clientId"] = json!("cid");
            creds["clientSecret"] = json!("csecret");
        }
        let creds = write_json(&dir, "creds.json", &creds);
        self.proxy_on(&creds, args, envs)
    }

    /// aiproxy with the account of the credential file `creds` on this fake (its state
    /// dir beside the file).
    pub fn proxy_on(&self, creds: &Path, args: &[&str], envs: &[(&str, &str)]) -> Proxy {
        let state = creds.parent().unwrap().join("state");
        let (social, idc) = (self.url("/refreshToken"), self.url("/token"));
        let mut all = vec![
            "--kiro-oauth-creds-file",
            creds.to_str().unwrap(),
            "--kiro-base-url",
            &self.process.base,
            "--kiro-refresh-url",
            &social,
            "--kiro-idc-refresh-url",
            &idc,
            "--state-dir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Proxy::start(&all, envs)
    }

    /// A pool file entry `name` for a new social account on this fake (its credential file
    /// written into `dir`).
    pub fn pool_instance(&self, dir: &Path, name: &str) -> Value {
        let creds = write_json(
            dir,
            &format!("{name}.json"),
            &json!({"refreshToken": format!("rt-{name}-{}", uuid::Uuid::new_v4()), "authMethod": "social"}),
        );
        json!({
            "name": name,
            "credsFile": creds,
            "baseUrl": self.process.base,
            "refreshUrl": self.url("/refreshToken"),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.base)
    }

    pub async fn stats(&self) -> Value {
        let answer = send(
            http::Request::get(self.url("/__fake/stats"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        answer.json()
    }

    /// POSTs `body` to one of the fake's control endpoints, which must take it.
    pub async fn control(&self, path: &str, body: Value) {
        let answer = send(
            http::Request::post(self.url(path))
                .body(Full::from(body.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    }

    pub async fn script(&self, steps: Value) {
        self.control("/__fake/script", steps).await;
    }

    /// Sets what `ListAvailableProfiles` lists from now on.
    pub async fn set_profiles(&self, profiles: Value) {
        self.control("/__fake/profiles", profiles).await;
    }

    /// Invalidates every access token the fake issued (the next chat call gets a 403).
    pub async fn expire_tokens(&self) {
        let answer = send(
            http::Request::post(self.url("/__fake/expire-tokens"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }

    /// Uses up a refresh token directly, as another machine would.
    pub async fn burn_refresh_token(&self, token: &str) {
        let answer = send(
            http::Request::post(self.url("/refreshToken"))
                .body(Full::from(json!({ "refreshToken": token }).to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }

    /// A pipeline in live mode against this fake, with one fresh social credential file;
    /// `tweak` adjusts the configuration first.
    pub fn pipeline(&self, tweak: impl FnOnce(&mut Config)) -> aiproxy::pipeline::Pipeline {
        let dir = super::temp_dir("live");
        let path = write_json(
            &dir,
            "creds.json",
            &json!({"refreshToken": format!("rt-{}", uuid::Uuid::new_v4()), "authMethod": "social"}),
        );
        let mut config = Config {
            kiro_oauth_creds_file: Some(path),
            ..self.config(&dir)
        };
        tweak(&mut config);
        aiproxy::pipeline::build(&config).unwrap()
    }

    pub fn config(&self, dir: &Path) -> Config {
        Config {
            kiro_base_url: Some(self.process.base.clone()),
            kiro_refresh_url: Some(self.url("/refreshToken")),
            kiro_idc_refresh_url: Some(self.url("/token")),
            state_dir: dir.join("state"),
            ..Config::default()
        }
    }
}

pub fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn chat(pipeline: &aiproxy::pipeline::Pipeline, content: &str, stream: bool) -> Reply {
    post_json(pipeline, "/v1/chat/completions", chat_body(content, stream)).await
}

/// POSTs a JSON body to `path` of the pipeline, in-process.
pub async fn post_json(
    pipeline: &aiproxy::pipeline::Pipeline,
    path: &str,
    body: impl Into<Bytes>,
) -> Reply {
    request(pipeline, "POST", path, None, body).await
}

/// Sends `method path` with a JSON body (and `key` as the bearer) to the pipeline, in-process.
pub async fn request(
    pipeline: &aiproxy::pipeline::Pipeline,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request.body(Full::<Bytes>::from(body.into())).unwrap();
    let response = pipeline.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// `GET /loadbalancer/instances` of the pipeline, in-process.
pub async fn instances(pipeline: &aiproxy::pipeline::Pipeline) -> Value {
    let reply = request(pipeline, "GET", "/loadbalancer/instances", None, "").await;
    reply.json()
}

pub fn content_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

//! A per-account egress proxy (`egressProxy` in the pool file): `http://`, `https://` (both
//! by HTTP CONNECT) or `socks5://`, with optional `user:password@`. It carries all of that
//! account's Kiro traffic: chats (through hyper-util's tunnel and SOCKS5 connectors under
//! rustls) and token refreshes and REST calls (reqwest's proxy). The credentials are a
//! [`Secret`]: shown nowhere; logs and errors name the proxy as `scheme://host:port`.

use crate::secret::Secret;
use http::Uri;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::HttpConnector;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which protocol the proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HTTP CONNECT (`http://` or `https://` URL).
    Connect,
    /// SOCKS5 (`socks5://`, names resolved by the proxy).
    Socks5,
}

/// A parsed egress proxy.
#[derive(Clone)]
pub struct EgressProxy {
    kind: Kind,
    /// `scheme://host:port`, without credentials.
    address: Uri,
    auth: Option<(String, Secret)>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EgressProxy({self})")
    }
}

impl std::fmt::Display for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.address.to_string().trim_end_matches('/'))
    }
}

impl PartialEq for EgressProxy {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl EgressProxy {
    /// Whether it carries a user and password (shown as set / not set, never the value).
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }

    /// Parses `url`; the error says what is wrong without repeating the URL (it may hold a
    /// password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must be a URL like http://host:port or socks5://user:pass@host:port")?;
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Kind::Connect,
            "socks5" | "socks5h" => Kind::Socks5,
            other => {
                return Err(format!(
                    "scheme `{other}` is not supported; use http, https or socks5"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let (auth, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    percent_decode(s).ok_or("the user or password is not valid percent-encoding")
                };
                (Some((decode(user)?, Secret::new(decode(password)?))), host)
            }
            None => (None, rest),
        };
        if host.is_empty() || host.contains('/') {
            return Err("must be scheme://[user:password@]host:port, without a path".into());
        }
        let default_port = match kind {
            Kind::Connect if scheme.eq_ignore_ascii_case("https") => 443,
            Kind::Connect => 80,
            Kind::Socks5 => 1080,
        };
        let host = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:{default_port}")
        };
        let scheme = match kind {
            Kind::Connect => scheme.to_ascii_lowercase(),
            Kind::Socks5 => "socks5".into(),
        };
        let address = format!("{scheme}://{host}")
            .parse::<Uri>()
            .map_err(|_| "the host is not valid".to_owned())?;
        Ok(Self {
            kind,
            address,
            auth,
        })
    }

    /// The proxy for reqwest (token refreshes, REST calls).
    pub fn reqwest(&self) -> Result<reqwest::Proxy, String> {
        let scheme = match self.kind {
            Kind::Connect => self.address.scheme_str().unwrap_or("http"),
            // socks5h: the proxy resolves names, as the chat connector does.
            Kind::Socks5 => "socks5h",
        };
        let authority = self
            .address
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let proxy = reqwest::Proxy::all(format!("{scheme}://{authority}"))
            .map_err(|e| format!("reqwest refused the proxy: {e}"))?;
        Ok(match &self.auth {
            Some((user, password)) => proxy.basic_auth(user, password.expose()),
            None => proxy,
        })
    }

    /// The connector the chat client dials through.
    pub fn connector(&self, tcp: HttpConnector) -> Connector {
        match self.kind {
            Kind::Connect => {
                let mut tunnel = Tunnel::new(self.address.clone(), tcp);
                if let Some((user, password)) = &self.auth {
                    use base64::Engine;
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{}", password.expose()));
                    if let Ok(mut value) = http::HeaderValue::from_str(&format!("Basic {token}")) {
                        value.set_sensitive(true);
                        tunnel = tunnel.with_auth(value);
                    }
                }
                Connector::Tunnel(tunnel)
            }
            Kind::Socks5 => {
                let mut socks = SocksV5::new(self.address.clone(), tcp).local_dns(false);
                if let Some((user, password)) = &self.auth {
                    socks = socks.with_auth(user.clone(), password.expose().to_owned());
                }
                Connector::Socks(socks)
            }
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How the chat client reaches Kiro: directly, or through the account's egress proxy.
#[derive(Clone, Debug)]
pub enum Connector {
    /// Straight TCP.
    Direct(HttpConnector),
    /// HTTP CONNECT tunnel.
    Tunnel(Tunnel<HttpConnector>),
    /// SOCKS5.
    Socks(SocksV5<HttpConnector>),
}

type Io = <HttpConnector as tower::Service<Uri>>::Response;

impl tower::Service<Uri> for Connector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Self::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
            Self::Socks(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Self::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Self::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Self::Socks(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_never_shows_the_password() {
        let p = EgressProxy::parse("http://alice:s%40cret@10.0.0.1:3128").unwrap();
        assert_eq!(p.to_string(), "http://10.0.0.1:3128");
        assert_eq!(
            p.auth.as_ref().map(|(u, s)| (u.as_str(), s.expose())),
            Some(("alice", "s@cret"))
        );
        assert!(!format!("{p:?}").contains("cret"));
        let s = EgressProxy::parse("socks5://proxy.example").unwrap();
        assert_eq!(
            (s.kind, s.to_string()),
            (Kind::Socks5, "socks5://proxy.example:1080".into())
        );
        for bad in ["ftp://h:1", "h:1", "http://", "http://u:p@h:1/path"] {
            let error = EgressProxy::parse(bad).unwrap_err();
            assert!(!error.contains("u:p"), "{error}");
        }
    }
}

//! The console's sign-in: the operator key, then a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` when the request came over TLS, 8 hours) whose session holds
//! a CSRF token every action must echo in `x-csrf-token` (or, for the sign-out form, a
//! `csrf` field). Sign-in attempts are throttled for the whole process (10 a minute), so a
//! key cannot be guessed through the page; the key is compared in constant time.

use crate::secret::{random_token, Secret};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "aiproxy_console";
/// How long a session lives.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 64;
/// Sign-in attempts a minute, for the whole process.
const ATTEMPTS_PER_MINUTE: u32 = 10;

/// Equal in constant time (blake3's hash comparison is).
pub fn same(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// A signed-in session, as a request presents it.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The session's CSRF token.
    pub csrf: String,
    id: [u8; 32],
}

/// The sessions and the sign-in throttle.
#[derive(Debug)]
pub struct Sessions {
    admin_key: Secret,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    throttle: DefaultDirectRateLimiter,
}

/// Why a sign-in was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The key is not the admin key.
    WrongKey,
    /// Too many attempts: try again after this long.
    Throttled(Duration),
}

impl Sessions {
    /// Sessions for the console opened by `admin_key`.
    pub fn new(admin_key: Secret) -> Self {
        let per_minute = NonZeroU32::new(ATTEMPTS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Self {
            admin_key,
            sessions: Mutex::new(HashMap::new()),
            throttle: RateLimiter::direct(Quota::per_minute(per_minute)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signs in with `key`: the new session's cookie value.
    pub fn sign_in(&self, key: &str) -> Result<String, Refused> {
        if let Err(not_until) = self.throttle.check() {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(Refused::Throttled(wait.max(Duration::from_secs(1))));
        }
        if !same(key, self.admin_key.expose()) {
            return Err(Refused::WrongKey);
        }
        let token = random_token();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| *id)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            *blake3::hash(token.as_bytes()).as_bytes(),
            Session {
                csrf: random_token(),
                expires: now + LIFETIME,
            },
        );
        Ok(token)
    }

    /// The session the request's cookie names, if it is live.
    pub fn session(&self, headers: &HeaderMap) -> Option<Signed> {
        let token = cookie(headers, COOKIE)?;
        let id = *blake3::hash(token.as_bytes()).as_bytes();
        let mut sessions = self.lock();
        match sessions.get(&id) {
            Some(session) if session.expires > Instant::now() => Some(Signed {
                csrf: session.csrf.clone(),
                id,
            }),
            Some(_) => {
                sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Ends the session.
    pub fn sign_out(&self, signed: &Signed) {
        self.lock().remove(&signed.id);
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value of a new session (`secure`: the request came over TLS).
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the request came over TLS: an `https` URI, or a TLS terminator in front that
/// says so (`X-Forwarded-Proto: https`, `Forwarded: proto=https`).
pub fn over_tls(uri: &http::Uri, headers: &HeaderMap) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    uri.scheme_str() == Some("https")
        || header("x-forwarded-proto")
            .is_some_and(|p| p.split(',').next().map(str::trim) == Some("https"))
        || header("forwarded").is_some_and(|f| f.contains("proto=https"))
}

/// A request from another site (a browser says so in `Sec-Fetch-Site`, or its `Origin` is not
/// this host): refused for every action, with or without a CSRF token.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if text(http::header::HeaderName::from_static("sec-fetch-site"))
        .is_some_and(|site| site == "cross-site")
    {
        return true;
    }
    match (text(http::header::ORIGIN), text(http::header::HOST)) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, rest)| rest) != Some(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie_value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(&format!("other=1; {COOKIE}={cookie_value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn the_right_key_opens_a_session_and_sign_out_ends_it() {
        let sessions = Sessions::new(Secret::new("admin-key-of-the-test"));
        assert_eq!(sessions.sign_in("client-key"), Err(Refused::WrongKey));
        let token = sessions.sign_in("admin-key-of-the-test").unwrap();
        let signed = sessions.session(&headers(&token)).unwrap();
        assert_eq!(signed.csrf.len(), 43);
        assert!(sessions.session(&headers("forged")).is_none());
        sessions.sign_out(&signed);
        assert!(sessions.session(&headers(&token)).is_none());
    }

    #[test]
    fn sign_in_attempts_are_throttled() {
        let sessions = Sessions::new(Secret::new("admin-key-of-the-test"));
        for _ in 0..ATTEMPTS_PER_MINUTE {
            assert_eq!(sessions.sign_in("wrong"), Err(Refused::WrongKey));
        }
        assert!(matches!(
            sessions.sign_in("admin-key-of-the-test"),
            Err(Refused::Throttled(_))
        ));
    }

    #[test]
    fn cookies_and_origins() {
        let cookie = set_cookie("t", true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/console",
            "Max-Age=28800",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!set_cookie("t", false).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, "127.0.0.1:3000".parse().unwrap());
        h.insert(
            http::header::ORIGIN,
            "http://127.0.0.1:3000".parse().unwrap(),
        );
        assert!(!cross_site(&h));
        h.insert(
            http::header::ORIGIN,
            "https://evil.example".parse().unwrap(),
        );
        assert!(cross_site(&h));
        let mut tls = HeaderMap::new();
        tls.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(over_tls(&"/console".parse().unwrap(), &tls));
    }
}

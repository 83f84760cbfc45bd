//! Typed request extensions: the contracts between layers.

use std::fmt;
use std::sync::Arc;

/// Who is calling, as far as the `auth` layer could tell. Carries a stable, non-secret
/// label of the matched key (`key-1`, `key-2`, ... in configuration order, or `anonymous`
/// when no keys are configured): never the key itself, so it is safe in logs, metrics
/// and cache keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(Arc<str>);

impl ClientKey {
    /// The label used when the server runs without API keys.
    pub fn anonymous() -> Self {
        // One label for the whole process: a request takes a clone, not a new allocation.
        static ANONYMOUS: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("anonymous"));
        Self(Arc::clone(&ANONYMOUS))
    }

    /// A client with this label (embedders that authenticate themselves, and tests).
    pub fn from_label(label: impl Into<Arc<str>>) -> Self {
        Self(label.into())
    }

    /// The label of the key at `position` (from 0) of the auth layer's list: `key-1`, ...
    pub fn numbered(position: usize) -> Self {
        Self(Arc::from(format!("key-{}", position + 1)))
    }

    /// The non-secret label of this client.
    pub fn label(&self) -> &str {
        &self.0
    }

    /// The label, shared (for metric labels, without a copy).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The provider a request is meant for, chosen by the `route` layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderId(Arc<str>);

impl ProviderId {
    /// Wraps a provider name such as `kiro-api`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The provider name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The provider name, shared (for labels that outlive the request).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

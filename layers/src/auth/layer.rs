use super::service::Auth;
use crate::ClientKey;
use std::collections::HashSet;
use std::sync::Arc;
use tower_layer::Layer;

/// Shared, immutable-after-build configuration of the auth check.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuthConfig {
    pub(crate) keys: Vec<Box<[u8]>>,
    /// Each key's client label (`key-1`, ...), built once: a request takes a clone.
    pub(crate) labels: Vec<ClientKey>,
    pub(crate) public_paths: HashSet<String>,
    pub(crate) public_preflights: bool,
}

/// Applies [`Auth`] to a service. See the [module docs](super) for the rules.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    config: Arc<AuthConfig>,
}

impl AuthLayer {
    /// Accepts requests carrying any of `keys`. Empty keys are ignored; no keys at all
    /// means every request is let through as `anonymous`.
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys: Vec<Box<[u8]>> = keys
            .into_iter()
            .filter(|k| !k.as_ref().is_empty())
            .map(|k| k.as_ref().as_bytes().to_vec().into_boxed_slice())
            .collect();
        let labels = (0..keys.len()).map(ClientKey::numbered).collect();
        Self {
            config: Arc::new(AuthConfig {
                keys,
                labels,
                public_paths: HashSet::new(),
                public_preflights: false,
            }),
        }
    }

    /// Lets requests to exactly this path through without a key.
    pub fn public_path(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config)
            .public_paths
            .insert(path.into());
        self
    }

    /// Lets CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// through without a key: browsers never send credentials on a preflight, and a CORS
    /// layer below answers them without touching the API.
    pub fn public_preflights(mut self) -> Self {
        Arc::make_mut(&mut self.config).public_preflights = true;
        self
    }

    /// Whether any key is configured (false = open server).
    pub fn is_enforcing(&self) -> bool {
        !self.config.keys.is_empty()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::new(inner, Arc::clone(&self.config))
    }
}

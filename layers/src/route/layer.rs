use super::service::Route;
use crate::ProviderId;
use std::sync::Arc;
use tower_layer::Layer;

#[derive(Debug)]
pub(crate) struct RouteConfig {
    pub(crate) default: ProviderId,
    pub(crate) known: Vec<ProviderId>,
}

impl RouteConfig {
    pub(crate) fn find(&self, name: &str) -> Option<&ProviderId> {
        self.known
            .iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    pub(crate) fn known_list(&self) -> String {
        let names: Vec<&str> = self.known.iter().map(ProviderId::as_str).collect();
        names.join(", ")
    }
}

/// Applies [`Route`] to a service. See the [module docs](super) for the rules.
#[derive(Clone, Debug)]
pub struct RouteLayer {
    config: Arc<RouteConfig>,
}

impl RouteLayer {
    /// Routes to `default` unless a request names another of the `known` providers.
    /// `default` is added to `known` if it is not there.
    pub fn new<I, P>(default: &str, known: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let mut known: Vec<ProviderId> = known
            .into_iter()
            .map(|name| ProviderId::new(name.as_ref()))
            .collect();
        let default = ProviderId::new(default);
        if !known.contains(&default) {
            known.push(default.clone());
        }
        Self {
            config: Arc::new(RouteConfig { default, known }),
        }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route::new(inner, Arc::clone(&self.config))
    }
}

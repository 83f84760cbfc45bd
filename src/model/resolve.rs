//! Model resolution, once for the whole model tier: the client's model id (with an optional
//! `-thinking` suffix) is looked up in the catalog and the entry travels down as a
//! [`ResolvedModel`] extension, so neither retries nor the accounts of a pool look it up
//! again. An unknown id fails here, before any account is chosen, and so do images for a
//! model whose capabilities say it takes text only.

use super::{ModelRequest, ResolvedModel};
use crate::catalog::Catalog;
use crate::chat::ChatError;
use aiproxy_layers::metrics::ModelLabel;
use futures_util::future::{self, Either, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Adds [`Resolve`] around a model service.
#[derive(Clone, Debug)]
pub struct ResolveLayer {
    catalog: Catalog,
}

impl ResolveLayer {
    /// Resolves against `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }
}

impl<S> tower::Layer<S> for ResolveLayer {
    type Service = Resolve<S>;

    fn layer(&self, inner: S) -> Resolve<S> {
        Resolve {
            inner,
            catalog: self.catalog.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Resolve<S> {
    inner: S,
    catalog: Catalog,
}

impl<S, R> tower::Service<ModelRequest> for Resolve<S>
where
    S: tower::Service<ModelRequest, Response = R, Error = ChatError>,
{
    type Response = R;
    type Error = ChatError;
    type Future = Either<S::Future, Ready<Result<R, ChatError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChatError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: ModelRequest) -> Self::Future {
        let Some((entry, thinking_suffix)) = self.catalog.resolve(&request.chat.model) else {
            return Either::Right(future::ready(Err(self
                .catalog
                .not_found(&request.chat.model))));
        };
        if entry.capabilities.refuses_images() && has_images(&request.chat) {
            return Either::Right(future::ready(Err(ChatError::invalid(
                "messages",
                format!(
                    "`{}` does not take images (its input types: {}); send text only, or pick \
                     a model whose input_types on GET /v1/models include image.",
                    request.chat.model,
                    entry.capabilities.input_types.join(", ")
                ),
            ))));
        }
        request
            .extensions
            .insert(ModelLabel(Arc::from(entry.id.as_str())));
        request.extensions.insert(ResolvedModel {
            entry,
            thinking_suffix,
        });
        Either::Left(self.inner.call(request))
    }
}

fn has_images(chat: &crate::chat::ChatRequest) -> bool {
    chat.messages
        .iter()
        .flat_map(|m| &m.parts)
        .any(|p| matches!(p, crate::chat::Part::Image { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatRequest, Message, Role};
    use tower::{Layer, ServiceExt};

    fn request(model: &str) -> ModelRequest {
        ModelRequest::new(ChatRequest {
            model: model.into(),
            system: Vec::new(),
            messages: vec![Message::text(Role::User, "hi")],
            tools: Vec::new(),
            tool_choice: Default::default(),
            single_tool_call: false,
            output: None,
            sampling: Default::default(),
            thinking: None,
            stream: false,
            metadata: Default::default(),
            cache_marks: Default::default(),
            web_search: None,
        })
    }

    /// Echoes what it was given.
    fn echo() -> impl tower::Service<
        ModelRequest,
        Response = Option<ResolvedModel>,
        Error = ChatError,
        Future = Ready<Result<Option<ResolvedModel>, ChatError>>,
    > + Clone {
        tower::service_fn(|r: ModelRequest| {
            future::ready(Ok(r.extensions.get::<ResolvedModel>().cloned()))
        })
    }

    #[tokio::test]
    async fn known_ids_and_the_thinking_suffix_resolve_unknown_ones_fail_before_the_leaf() {
        let layer = ResolveLayer::new(Catalog::builtin().unwrap());
        let resolved = layer
            .layer(echo())
            .oneshot(request("claude-sonnet-4-5-thinking"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resolved.entry.kiro_model_id, "claude-sonnet-4.5");
        assert!(resolved.thinking_suffix);
        let error = layer
            .layer(echo())
            .oneshot(request("gpt-4"))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ChatError::ModelNotFound {
                model: "gpt-4".into(),
                unserved: None
            }
        );
    }
}

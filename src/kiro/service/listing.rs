//! The account's side of the live catalog: `ListAvailableModels` over the account's own
//! transport, token and headers (docs/kiro-protocol.md §13.3), all pages of it; what the account
//! serves is remembered so the leaf can send a model it does not serve to another account.

use super::{read_bounded, KiroService, Target};
use crate::kiro::accounts::model_list::{self, Listing, MAX_PAGES};
use crate::kiro::protocol::errors;
use bytes::Bytes;
use http::HeaderValue;
use std::collections::HashSet;
use std::sync::Arc;

/// A page bigger than this is not a model list.
const MAX_PAGE_BYTES: usize = 1024 * 1024;

impl KiroService {
    /// Every page of the account's `ListAvailableModels` (refreshing its token once when
    /// Kiro rejects it). `Err` says why the account could not list its models, without any
    /// secret in it.
    pub async fn list_models(&self) -> Result<Listing, String> {
        let shared = &self.shared;
        let mut token = shared.tokens.token().await.map_err(|e| e.to_string())?;
        let Some(profile_arn) = token.profile_arn.clone() else {
            return Err(
                "no profileArn is known for the account, and ListAvailableModels needs \
                        one (IdC logins often have none); add `profileArn` to its credentials"
                    .into(),
            );
        };
        let mut listing = Listing::default();
        let mut next: Option<String> = None;
        let mut refreshed = false;
        let mut pages = 0;
        while pages < MAX_PAGES {
            let body = model_list::request_body(&profile_arn, next.as_deref()).to_string();
            let mut headers = shared.headers.for_call(&token);
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(model_list::CONTENT_TYPE),
            );
            headers.insert("x-amz-target", HeaderValue::from_static(model_list::TARGET));
            let response = shared
                .transport
                .post(Target::Management, headers, Bytes::from(body))
                .await
                .map_err(|e| e.to_string())?;
            let answer = read_bounded(response.body, MAX_PAGE_BYTES).await;
            if errors::is_bearer_invalid(response.status, &answer) && !refreshed {
                refreshed = true;
                token = shared
                    .tokens
                    .token_after_rejection(&token.token)
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            if !response.status.is_success() {
                let error = super::failure(
                    shared.tokens.as_ref(),
                    &token,
                    response.status,
                    &response.headers,
                    &answer,
                );
                return Err(format!("ListAvailableModels: {error}"));
            }
            let page = model_list::parse_page(&answer)?;
            pages += 1;
            listing.models.extend(page.models);
            listing.default_model = listing.default_model.or(page.default_model);
            match page.next_token {
                Some(token) => next = Some(token),
                None => {
                    self.remember_served(&listing);
                    return Ok(listing);
                }
            }
        }
        Err(format!(
            "ListAvailableModels was still paginating after {MAX_PAGES} pages"
        ))
    }

    fn remember_served(&self, listing: &Listing) {
        let served: HashSet<String> = listing.models.iter().map(|m| m.id.clone()).collect();
        *self
            .shared
            .served
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(served));
    }
}

impl super::Shared {
    /// Whether the account is known not to serve `kiro_model_id` (unknown until it listed
    /// its models).
    pub(super) fn refuses_model(&self, kiro_model_id: &str) -> bool {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|served| !served.contains(kiro_model_id))
    }
}

//! The leaf's web search: one MCP call on the account (docs/kiro-protocol.md §14.1), answered
//! as a stream of one [`ChatEvent::WebSearchResult`], so the search passes retry, the pool
//! and its breakers, and the metrics like a chat.

use super::{failure, read_bounded, refused, Shared, Target, MAX_ERROR_BODY};
use crate::chat::web_search::SearchQuery;
use crate::chat::{ChatError, ChatEvent, StopReason};
use crate::kiro::search;
use crate::model::{ModelRequest, ModelResponse};
use aiproxy_layers::metrics::UpstreamClock;
use http::{HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::Instant;

/// The largest search answer read (a page of results is a few kilobytes).
const MAX_ANSWER: usize = 1024 * 1024;

pub(super) async fn search(
    shared: &Shared,
    request: &ModelRequest,
    query: &SearchQuery,
) -> Result<ModelResponse, ChatError> {
    let tokens = &shared.tokens;
    let clock = request.extensions.get::<UpstreamClock>();
    let waited = Instant::now();
    let token = tokens.token().await?;
    // Kiro's search needs the account's profile; an account without one still chats, so
    // the pool tries another account and this one is not blamed.
    let Some(arn) = token.profile_arn.as_deref() else {
        return Err(ChatError::NotServedHere {
            message: format!(
                "Kiro account `{}` has no profile ARN, which Kiro's web search needs; add \
                 `profileArn` to its credentials",
                tokens.name()
            ),
        });
    };
    let mut headers = shared.headers.for_call(&token);
    let arn = HeaderValue::from_str(arn).map_err(|_| ChatError::AccountUnavailable {
        message: format!(
            "Kiro account `{}`: its profile ARN is not a valid header value",
            tokens.name()
        ),
    })?;
    headers.insert(search::PROFILE_ARN_HEADER, arn);
    let answer = async {
        let response = shared
            .transport
            .post(Target::Mcp, headers, search::body(&query.query))
            .await?;
        if matches!(
            response.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(refused(tokens.as_ref(), &token, response).await);
        }
        let status = response.status;
        let limit = if status.is_success() {
            MAX_ANSWER
        } else {
            MAX_ERROR_BODY
        };
        let body = read_bounded(response.body, limit).await;
        if !status.is_success() {
            return Err(failure(
                tokens.as_ref(),
                &token,
                status,
                &response.headers,
                &body,
            ));
        }
        search::parse(&body)
    }
    .await;
    if let Some(clock) = clock {
        clock.add(waited.elapsed());
    }
    let outcome = answer?;
    let events = [
        ChatEvent::Start {
            id: Arc::from(query.id.as_str()),
            model: Arc::from(request.chat.model.as_str()),
            input_tokens: 0,
        },
        ChatEvent::WebSearchResult {
            id: query.id.clone(),
            outcome: Arc::new(outcome),
        },
        ChatEvent::Stop(StopReason::EndTurn),
    ];
    let mut response = ModelResponse::new(Box::pin(futures_util::stream::iter(events.map(Ok))));
    response.extensions.insert(shared.account_id.clone());
    Ok(response)
}

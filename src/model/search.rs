//! Web search as a server tool: a server-side tool loop.
//!
//! A request that offers web search ([`ChatRequest::web_search`]) reaches the model with a
//! `web_search` tool beside the client's own. When the model calls it, this layer runs the
//! search (a model-tier call of its own, marked with [`SearchQuery`] and labelled `search`
//! in the metrics, so it goes through retry and the pool to an account like a chat), hands
//! the model the results and lets the turn go on; the client sees the search as
//! [`ChatEvent::WebSearchCall`] and [`ChatEvent::WebSearchResult`] between the model's own
//! events, and its own tool calls pass through (renumbered across the loop's model calls).
//!
//! - At most `max_uses` searches run (10 when the client set none); a call beyond them is
//!   answered with [`SearchErrorCode::MaxUsesExceeded`], to the model and the client.
//! - A failed search (the upstream's error, no account with a profile ARN, a timeout) is an
//!   error result the model and the client see, never the request's failure.
//! - A turn that also calls the client's tools ends after its searches, with those calls,
//!   as Anthropic's does: the client answers them and the conversation goes on.
//! - A request that asks in so many words for one search (Claude Code's WebSearch tool:
//!   [`asked_query`]) is searched at once; the model then answers over the results.
//! - Usage is the sum of the loop's model calls; `max_tokens` bounds their output together.
//!
//! The layer sits above the metrics, the cache and emulation, so each of its model calls
//! and searches is measured, cached and emulated on its own; a request without web search
//! passes straight through.

use super::{ModelRequest, ModelResponse};
use crate::chat::web_search::{
    asked_query, render, SearchErrorCode, SearchOutcome, SearchQuery, WebSearchTool,
    MAX_QUERY_CHARS, TOOL_NAME,
};
use crate::chat::{
    ChatError, ChatEvent, ChatStream, Message, Part, Role, StopReason, Tool, ToolChoice, Usage,
};
use aiproxy_layers::metrics::OperationName;
use futures_util::future::{BoxFuture, Either};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// Searches per request when the client set no `max_uses`.
pub const DEFAULT_MAX_USES: u32 = 10;

/// Adds [`WebSearch`] around a model service.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebSearchLayer;

impl<S> tower::Layer<S> for WebSearchLayer {
    type Service = WebSearch<S>;

    fn layer(&self, inner: S) -> WebSearch<S> {
        WebSearch { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct WebSearch<S> {
    inner: S,
}

impl<S> Service<ModelRequest> for WebSearch<S>
where
    S: Service<ModelRequest, Response = ModelResponse, Error = ChatError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ModelResponse;
    type Error = ChatError;
    type Future = Either<S::Future, BoxFuture<'static, Result<ModelResponse, ChatError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChatError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ModelRequest) -> Self::Future {
        let Some(tool) = request.chat.web_search.clone() else {
            return Either::Left(self.inner.call(request));
        };
        // The ready service serves the first call; the clone serves the loop's later ones.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(SearchLoop::start(ready, request, tool)))
    }
}

/// A call the model began in the current turn.
enum Call {
    /// A web search: its upstream id and its arguments so far.
    Search { id: String, json: String },
    /// The client's own tool, renumbered for the client.
    Client { index: u32 },
}

/// The state of one request's loop.
struct SearchLoop<S> {
    service: S,
    original: ModelRequest,
    tool: WebSearchTool,
    /// Turns the searches added to the conversation so far.
    added: Vec<Message>,
    searches: u32,
    rounds: u32,
    events: Option<ChatStream>,
    out: VecDeque<ChatEvent>,
    started: bool,
    finished: bool,
    /// Usage of the finished model calls, and of the current one.
    total: Usage,
    current: Usage,
    /// The current model call's assistant turn (for the next call's history) and calls.
    turn: Vec<Part>,
    calls: BTreeMap<u32, Call>,
    /// Whether the current model call called a client tool.
    called_client: bool,
    client_calls: u32,
}

impl<S> SearchLoop<S>
where
    S: Service<ModelRequest, Response = ModelResponse, Error = ChatError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn start(
        ready: S,
        original: ModelRequest,
        tool: WebSearchTool,
    ) -> Result<ModelResponse, ChatError> {
        let mut run = Self {
            service: ready.clone(),
            original,
            tool,
            added: Vec::new(),
            searches: 0,
            rounds: 0,
            events: None,
            out: VecDeque::new(),
            started: false,
            finished: false,
            total: Usage::default(),
            current: Usage::default(),
            turn: Vec::new(),
            calls: BTreeMap::new(),
            called_client: false,
            client_calls: 0,
        };
        let response = match run.asked() {
            Some(query) => {
                let upstream_id = crate::chat::random_id("tooluse_");
                let (use_part, result_part) = run.search(ready, upstream_id, query).await;
                run.add_round(vec![use_part], vec![result_part]);
                run.call_model(run.service.clone()).await?
            }
            None => run.call_model(ready).await?,
        };
        let ModelResponse { events, extensions } = response;
        run.events = Some(events);
        let events = futures_util::stream::unfold(run, |mut run| async move {
            run.next().await.map(|item| (item, run))
        });
        Ok(ModelResponse {
            events: Box::pin(events),
            extensions,
        })
    }

    /// The query of a request that is only a search request (see [`asked_query`]).
    fn asked(&self) -> Option<String> {
        let chat = &self.original.chat;
        if !chat.tools.is_empty() || chat.messages.len() != 1 {
            return None;
        }
        chat.messages[0].parts.iter().find_map(|part| match part {
            Part::Text(text) => asked_query(text).map(str::to_owned),
            _ => None,
        })
    }

    fn max_uses(&self) -> u32 {
        self.tool.max_uses.unwrap_or(DEFAULT_MAX_USES)
    }

    /// The request the model gets now: the client's, with the search tool and the turns
    /// the searches added.
    fn model_request(&self) -> ModelRequest {
        let mut chat = (*self.original.chat).clone();
        chat.web_search = None;
        chat.tools.push(Tool {
            name: TOOL_NAME.into(),
            description: self.tool.description(),
            input_schema: WebSearchTool::input_schema(),
        });
        if !self.added.is_empty() {
            chat.messages.extend(self.added.iter().cloned());
            // A choice that forced a search is met once a search ran.
            let forced_search =
                matches!(&chat.tool_choice, ToolChoice::Tool(name) if name == TOOL_NAME);
            let only_search = self.original.chat.tools.is_empty();
            if forced_search || (only_search && chat.tool_choice == ToolChoice::Any) {
                chat.tool_choice = ToolChoice::Auto;
            }
            if let Some(max) = chat.sampling.max_tokens.as_mut() {
                let spent = u32::try_from(self.total.output).unwrap_or(u32::MAX);
                *max = max.saturating_sub(spent).max(1);
            }
        }
        ModelRequest {
            chat: Arc::new(chat),
            extensions: self.original.extensions.clone(),
        }
    }

    async fn call_model(&mut self, service: S) -> Result<ModelResponse, ChatError> {
        self.rounds += 1;
        service.oneshot(self.model_request()).await
    }

    /// The turns of one round: the model's (its searches included) and their results.
    fn add_round(&mut self, assistant: Vec<Part>, results: Vec<Part>) {
        self.added.push(Message {
            role: Role::Assistant,
            parts: assistant,
        });
        self.added.push(Message {
            role: Role::User,
            parts: results,
        });
    }

    /// Runs one search for `query` (empty when the model's call had none); the client sees
    /// it, and the parts returned (the call and its result) carry it into the conversation.
    async fn search(&mut self, service: S, upstream_id: String, query: String) -> (Part, Part) {
        let id = crate::chat::random_id("srvtoolu_");
        let query = query.trim().to_owned();
        self.searches += 1;
        let outcome = if query.is_empty() {
            Err(SearchErrorCode::InvalidInput)
        } else if query.chars().count() > MAX_QUERY_CHARS {
            Err(SearchErrorCode::QueryTooLong)
        } else if self.searches > self.max_uses() {
            Err(SearchErrorCode::MaxUsesExceeded)
        } else {
            let mut request = ModelRequest {
                chat: Arc::clone(&self.original.chat),
                extensions: self.original.extensions.clone(),
            };
            request.extensions.insert(SearchQuery {
                id: id.clone(),
                query: query.clone(),
            });
            request.extensions.insert(OperationName("search"));
            run(service, request, self.tool.clone()).await
        };
        let text = render(&query, &outcome);
        let is_error = outcome.is_err();
        self.out.push_back(ChatEvent::WebSearchCall {
            id: id.clone(),
            query: query.clone(),
        });
        self.out.push_back(ChatEvent::WebSearchResult {
            id,
            outcome: Arc::new(outcome),
        });
        (
            Part::ToolUse {
                id: upstream_id.clone(),
                name: TOOL_NAME.into(),
                input: json!({ "query": query }),
            },
            Part::ToolResult {
                tool_use_id: upstream_id,
                content: text,
                is_error,
            },
        )
    }

    async fn next(&mut self) -> Option<Result<ChatEvent, ChatError>> {
        loop {
            if self.started {
                if let Some(event) = self.out.pop_front() {
                    return Some(Ok(event));
                }
            }
            if self.finished {
                return None;
            }
            let events = self.events.as_mut()?;
            match events.next().await {
                Some(Ok(event)) => {
                    if let Err(error) = self.take(event).await {
                        self.finished = true;
                        self.out.clear();
                        return Some(Err(error));
                    }
                }
                Some(Err(error)) => {
                    self.finished = true;
                    return Some(Err(error));
                }
                // Ended without a stop: a truncation, which the tier above reports as one.
                None => {
                    self.finished = true;
                    self.events = None;
                }
            }
        }
    }

    /// Looks at one event of the current model call.
    async fn take(&mut self, event: ChatEvent) -> Result<(), ChatError> {
        match event {
            ChatEvent::Start { .. } if self.started => {}
            ChatEvent::Start { .. } => {
                self.started = true;
                self.out.push_front(event);
            }
            ChatEvent::TextDelta(ref text) => {
                match self.turn.last_mut() {
                    Some(Part::Text(existing)) => existing.push_str(text),
                    _ => self.turn.push(Part::Text(text.clone())),
                }
                self.out.push_back(event);
            }
            ChatEvent::ThinkingDelta(ref text) => {
                match self.turn.last_mut() {
                    Some(Part::Thinking(existing)) => existing.push_str(text),
                    _ => self.turn.push(Part::Thinking(text.clone())),
                }
                self.out.push_back(event);
            }
            ChatEvent::ThinkingSignature(ref signature) => {
                if let Some(Part::Thinking(text)) = self.turn.last_mut() {
                    let text = std::mem::take(text);
                    self.turn.pop();
                    self.turn.push(Part::SignedThinking {
                        text,
                        signature: signature.clone(),
                    });
                }
                self.out.push_back(event);
            }
            ChatEvent::RedactedThinking(ref data) => {
                self.turn.push(Part::RedactedThinking(data.clone()));
                self.out.push_back(event);
            }
            ChatEvent::ToolCallStart { index, id, name } if name == TOOL_NAME => {
                self.calls.insert(
                    index,
                    Call::Search {
                        id,
                        json: String::new(),
                    },
                );
            }
            ChatEvent::ToolCallStart { index, id, name } => {
                let outer = self.next_client_index();
                self.calls.insert(index, Call::Client { index: outer });
                self.called_client = true;
                self.out.push_back(ChatEvent::ToolCallStart {
                    index: outer,
                    id,
                    name,
                });
            }
            ChatEvent::ToolCallDelta { index, json } => match self.calls.get_mut(&index) {
                Some(Call::Search { json: input, .. }) => input.push_str(&json),
                Some(Call::Client { index }) => {
                    let index = *index;
                    self.out.push_back(ChatEvent::ToolCallDelta { index, json });
                }
                None => {}
            },
            ChatEvent::ToolCallEnd { index } => {
                if let Some(Call::Client { index }) = self.calls.get(&index) {
                    self.out.push_back(ChatEvent::ToolCallEnd { index: *index });
                }
            }
            ChatEvent::Usage(usage) => self.current = usage,
            ChatEvent::StopSequence(_) => self.out.push_back(event),
            ChatEvent::WebSearchCall { .. } | ChatEvent::WebSearchResult { .. } => {
                self.out.push_back(event);
            }
            ChatEvent::Stop(reason) => return self.turn_ended(reason).await,
        }
        Ok(())
    }

    /// The client's index of its next tool call (counted across the loop's model calls).
    fn next_client_index(&mut self) -> u32 {
        let index = self.client_calls;
        self.client_calls += 1;
        index
    }

    /// A model call ended: run its searches and call the model again, or end the answer.
    async fn turn_ended(&mut self, reason: StopReason) -> Result<(), ChatError> {
        add(&mut self.total, &std::mem::take(&mut self.current));
        let calls = std::mem::take(&mut self.calls);
        let searches: Vec<(String, String)> = calls
            .into_values()
            .filter_map(|call| match call {
                Call::Search { id, json } => Some((id, json)),
                Call::Client { .. } => None,
            })
            .collect();
        let called_client = std::mem::take(&mut self.called_client);
        if searches.is_empty() {
            self.finish(reason);
            return Ok(());
        }
        let mut results = Vec::with_capacity(searches.len());
        for (upstream_id, input) in searches {
            let (use_part, result_part) = self
                .search(self.service.clone(), upstream_id, query_of(&input))
                .await;
            self.turn.push(use_part);
            results.push(result_part);
        }
        // The client's own calls wait for its answers; a loop that keeps searching past
        // its budget ends (each of its calls was already told the budget is spent).
        if called_client {
            self.finish(StopReason::ToolUse);
            return Ok(());
        }
        if self.rounds > self.max_uses() + 1 {
            self.finish(StopReason::EndTurn);
            return Ok(());
        }
        let turn = std::mem::take(&mut self.turn);
        self.add_round(turn, results);
        let response = self.call_model(self.service.clone()).await?;
        self.events = Some(response.events);
        Ok(())
    }

    fn finish(&mut self, reason: StopReason) {
        self.out.push_back(ChatEvent::Usage(self.total));
        self.out.push_back(ChatEvent::Stop(reason));
        self.finished = true;
    }
}

/// The search itself, through the tier below (retry, pool, an account's MCP call), its
/// hits filtered as the client's tool asks.
async fn run<S>(service: S, request: ModelRequest, tool: WebSearchTool) -> SearchOutcome
where
    S: Service<ModelRequest, Response = ModelResponse, Error = ChatError>,
{
    let failed = |error: ChatError| {
        tracing::warn!(error = %error, kind = error.kind(), "web search failed");
        Err(match error {
            ChatError::RateLimited { .. }
            | ChatError::QuotaExhausted { .. }
            | ChatError::Throttled { .. } => SearchErrorCode::TooManyRequests,
            _ => SearchErrorCode::Unavailable,
        })
    };
    let mut events = match service.oneshot(request).await {
        Ok(response) => response.events,
        Err(error) => return failed(error),
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(ChatEvent::WebSearchResult { outcome, .. }) => {
                return match &*outcome {
                    Ok(hits) => Ok(tool.filter(hits.clone())),
                    Err(code) => Err(*code),
                };
            }
            Ok(_) => {}
            Err(error) => return failed(error),
        }
    }
    failed(ChatError::ended_without_stop())
}

/// The `query` of a search call's JSON arguments (empty when there is none).
fn query_of(input: &str) -> String {
    serde_json::from_str::<Value>(input)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

fn add(total: &mut Usage, more: &Usage) {
    total.input += more.input;
    total.output += more.output;
    total.cache_read += more.cache_read;
    total.cache_write += more.cache_write;
    total.estimated |= more.estimated;
    total.credits += more.credits;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::web_search::SearchHit;
    use crate::chat::ChatRequest;
    use std::sync::Mutex;
    use tower::Layer;

    /// A scriptable model tier: model calls answer with the next scripted events (and are
    /// recorded); searches answer with `search` (a result, or a failure).
    #[derive(Clone)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Vec<ChatEvent>>>>,
        seen: Arc<Mutex<Vec<ModelRequest>>>,
        search: Result<SearchOutcome, ChatError>,
    }

    impl Script {
        fn new(answers: Vec<Vec<ChatEvent>>, search: Result<SearchOutcome, ChatError>) -> Self {
            Self {
                answers: Arc::new(Mutex::new(answers.into())),
                seen: Arc::default(),
                search,
            }
        }
    }

    impl Service<ModelRequest> for Script {
        type Response = ModelResponse;
        type Error = ChatError;
        type Future = futures_util::future::Ready<Result<ModelResponse, ChatError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ChatError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: ModelRequest) -> Self::Future {
            let events = match request.extensions.get::<SearchQuery>() {
                Some(query) => match &self.search {
                    Ok(outcome) => vec![
                        start(),
                        ChatEvent::WebSearchResult {
                            id: query.id.clone(),
                            outcome: Arc::new(outcome.clone()),
                        },
                        ChatEvent::Stop(StopReason::EndTurn),
                    ],
                    Err(error) => return futures_util::future::ready(Err(error.clone())),
                },
                None => {
                    self.seen.lock().unwrap().push(request);
                    self.answers.lock().unwrap().pop_front().unwrap_or_default()
                }
            };
            let stream = futures_util::stream::iter(events.into_iter().map(Ok));
            futures_util::future::ready(Ok(ModelResponse::new(Box::pin(stream))))
        }
    }

    fn start() -> ChatEvent {
        ChatEvent::Start {
            id: Arc::from("m"),
            model: Arc::from("m"),
            input_tokens: 5,
        }
    }

    fn call(index: u32, name: &str, json: &str) -> Vec<ChatEvent> {
        vec![
            ChatEvent::ToolCallStart {
                index,
                id: format!("t{index}"),
                name: name.into(),
            },
            ChatEvent::ToolCallDelta {
                index,
                json: json.into(),
            },
            ChatEvent::ToolCallEnd { index },
        ]
    }

    fn usage(output: u64) -> ChatEvent {
        ChatEvent::Usage(Usage {
            input: 10,
            output,
            ..Usage::default()
        })
    }

    fn request(max_uses: Option<u32>) -> ModelRequest {
        ModelRequest::new(ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "find it")],
            sampling: crate::chat::Sampling {
                max_tokens: Some(100),
                ..Default::default()
            },
            web_search: Some(WebSearchTool {
                max_uses,
                ..WebSearchTool::default()
            }),
            ..ChatRequest::default()
        })
    }

    async fn run_loop(script: Script, request: ModelRequest) -> Vec<ChatEvent> {
        let response = WebSearchLayer.layer(script).oneshot(request).await.unwrap();
        response
            .events
            .map(|event| event.unwrap())
            .collect::<Vec<_>>()
            .await
    }

    fn hit() -> SearchHit {
        SearchHit {
            title: "T".into(),
            url: "https://a.example/x".into(),
            snippet: "S".into(),
            page_age: None,
        }
    }

    #[tokio::test]
    async fn the_model_searches_reads_the_results_and_answers_in_one_stream() {
        let mut first = vec![start(), ChatEvent::TextDelta("Let me look. ".into())];
        first.extend(call(0, TOOL_NAME, r#"{"query":"rust"}"#));
        first.extend([usage(20), ChatEvent::Stop(StopReason::ToolUse)]);
        let second = vec![
            start(),
            ChatEvent::TextDelta("Found it.".into()),
            usage(30),
            ChatEvent::Stop(StopReason::EndTurn),
        ];
        let script = Script::new(vec![first, second], Ok(Ok(vec![hit()])));
        let events = run_loop(script.clone(), request(None)).await;
        let starts = events
            .iter()
            .filter(|e| matches!(e, ChatEvent::Start { .. }));
        assert_eq!(starts.count(), 1, "{events:?}");
        assert!(matches!(&events[2], ChatEvent::WebSearchCall { query, .. } if query == "rust"));
        assert!(
            matches!(&events[3], ChatEvent::WebSearchResult { outcome, .. } if outcome.as_ref().as_ref().is_ok_and(|h| h.len() == 1))
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ChatEvent::ToolCallStart { .. })),
            "the search call is the server's"
        );
        assert_eq!(
            events[events.len() - 2],
            ChatEvent::Usage(Usage {
                input: 20,
                output: 50,
                ..Usage::default()
            }),
            "the model calls' usage, summed"
        );
        assert_eq!(events.last(), Some(&ChatEvent::Stop(StopReason::EndTurn)));
        // The second call carried the search and its result, and what was left of max_tokens.
        let seen = script.seen.lock().unwrap();
        let second = &seen[1].chat;
        assert_eq!(second.sampling.max_tokens, Some(80));
        assert!(second.tools.iter().any(|t| t.name == TOOL_NAME));
        let tail = &second.messages[second.messages.len() - 2..];
        assert!(
            matches!(&tail[0].parts[..], [Part::Text(t), Part::ToolUse { id, .. }] if t == "Let me look. " && id == "t0")
        );
        assert!(
            matches!(&tail[1].parts[..], [Part::ToolResult { tool_use_id, content, is_error: false }]
            if tool_use_id == "t0" && content.contains("https://a.example/x"))
        );
    }

    #[tokio::test]
    async fn client_calls_pass_renumbered_and_end_the_turn_after_the_searches() {
        let mut first = vec![start()];
        first.extend(call(0, TOOL_NAME, r#"{"query":"a"}"#));
        first.extend(call(1, "client_tool", "{}"));
        first.push(ChatEvent::Stop(StopReason::ToolUse));
        let script = Script::new(vec![first], Ok(Ok(vec![hit()])));
        let events = run_loop(script.clone(), request(None)).await;
        assert!(
            events.contains(&ChatEvent::ToolCallStart {
                index: 0,
                id: "t1".into(),
                name: "client_tool".into()
            }),
            "{events:?}"
        );
        assert!(events.contains(&ChatEvent::ToolCallEnd { index: 0 }));
        assert!(events
            .iter()
            .any(|e| matches!(e, ChatEvent::WebSearchResult { .. })));
        assert_eq!(events.last(), Some(&ChatEvent::Stop(StopReason::ToolUse)));
        assert_eq!(
            script.seen.lock().unwrap().len(),
            1,
            "the client answers its tool first"
        );
    }

    #[tokio::test]
    async fn failures_limits_and_bad_queries_are_results_not_errors() {
        let outcome = |events: &[ChatEvent]| -> Vec<Option<SearchErrorCode>> {
            events
                .iter()
                .filter_map(|e| match e {
                    ChatEvent::WebSearchResult { outcome, .. } => {
                        Some(outcome.as_ref().as_ref().err().copied())
                    }
                    _ => None,
                })
                .collect()
        };
        let long = format!(r#"{{"query":"{}"}}"#, "q".repeat(MAX_QUERY_CHARS + 1));
        let mut first = vec![start()];
        first.extend(call(0, TOOL_NAME, r#"{"query":"a"}"#));
        first.extend(call(1, TOOL_NAME, r#"{"query":"b"}"#));
        first.extend(call(2, TOOL_NAME, &long));
        first.extend(call(3, TOOL_NAME, "{}"));
        first.push(ChatEvent::Stop(StopReason::ToolUse));
        let done = vec![
            start(),
            ChatEvent::TextDelta("ok".into()),
            ChatEvent::Stop(StopReason::EndTurn),
        ];
        let rate_limited = ChatError::RateLimited {
            message: "slow down".into(),
            retry_after: None,
        };
        let script = Script::new(vec![first, done], Err(rate_limited));
        let events = run_loop(script, request(Some(1))).await;
        assert_eq!(
            outcome(&events),
            [
                Some(SearchErrorCode::TooManyRequests),
                Some(SearchErrorCode::MaxUsesExceeded),
                Some(SearchErrorCode::QueryTooLong),
                Some(SearchErrorCode::InvalidInput),
            ]
        );
        assert_eq!(events.last(), Some(&ChatEvent::Stop(StopReason::EndTurn)));
    }

    #[tokio::test]
    async fn a_request_that_only_asks_for_a_search_is_searched_before_the_model_answers() {
        let answer = vec![
            start(),
            ChatEvent::TextDelta("summary".into()),
            ChatEvent::Stop(StopReason::EndTurn),
        ];
        let script = Script::new(vec![answer], Ok(Ok(vec![hit()])));
        let mut request = request(None);
        Arc::make_mut(&mut request.chat).messages = vec![Message::text(
            Role::User,
            "Perform a web search for the query: tokio",
        )];
        Arc::make_mut(&mut request.chat).tool_choice = ToolChoice::Tool(TOOL_NAME.into());
        let events = run_loop(script.clone(), request).await;
        assert!(matches!(&events[0], ChatEvent::Start { .. }));
        assert!(matches!(&events[1], ChatEvent::WebSearchCall { query, .. } if query == "tokio"));
        assert!(matches!(&events[3], ChatEvent::TextDelta(t) if t == "summary"));
        let seen = script.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one model call, after the search");
        assert_eq!(
            seen[0].chat.tool_choice,
            ToolChoice::Auto,
            "the forced search is done"
        );
        assert_eq!(seen[0].chat.messages.len(), 3);
    }
}

//! What the generic cache layer ([`aiproxy_layers::cache`]) needs of the model tier: the key
//! of a [`ModelRequest`] and the recording and replay of a [`ModelResponse`]'s events.
//!
//! The key is a blake3 hash of the canonical request (model, system, messages, tools, tool
//! choice, sampling, output format, thinking; not the stream flag, not the session) and the
//! client's key label, so one client's answer is never another's. It hashes the requests'
//! `Debug` form, fed to the hasher without building the string: every field takes part, the
//! same request always gives the same key within a build, and a field added later is in the
//! key without anyone remembering to add it.

use super::{ModelRequest, ModelResponse};
use crate::chat::web_search::SearchQuery;
use crate::chat::{ChatError, ChatEvent, ChatRequest, ChatStream};
use aiproxy_layers::cache::{CacheKey, Cacheable, Replay};
use futures_util::{Stream, StreamExt};
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

impl Cacheable for ModelRequest {
    /// None for a web search (its results are the searched web's, not a model's answer).
    fn cache_key(&self) -> Option<CacheKey> {
        if self.extensions.get::<SearchQuery>().is_some() {
            return None;
        }
        Some(key_of(&self.chat))
    }
}

/// Feeds formatted text into the hasher.
struct Hashing(blake3::Hasher);

impl std::fmt::Write for Hashing {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

fn key_of(chat: &ChatRequest) -> CacheKey {
    let ChatRequest {
        model,
        system,
        messages,
        tools,
        tool_choice,
        single_tool_call,
        sampling,
        output,
        thinking,
        stream: _,
        metadata,
        // Where Kiro may cache the prompt does not change the answer.
        cache_marks: _,
        web_search,
    } = chat;
    let mut hashing = Hashing(blake3::Hasher::new());
    // Writing into the hasher cannot fail.
    let _ = write!(
        hashing,
        "{}\n{model}\n{system:?}\n{messages:?}\n{tools:?}\n{tool_choice:?}\n{single_tool_call}\n{sampling:?}\n{output:?}\n{thinking:?}\n{web_search:?}",
        metadata.client.label(),
    );
    CacheKey(*hashing.0.finalize().as_bytes())
}

type Done = Box<dyn FnOnce(Option<Vec<ChatEvent>>) + Send>;

/// Collects the events as they pass and tells `done` how the stream ended.
struct Recorder {
    seen: Vec<ChatEvent>,
    done: Option<Done>,
}

impl Recorder {
    /// Looks at one item; true when the stream is over (told to `done`).
    fn see(&mut self, item: &Option<Result<ChatEvent, ChatError>>) -> bool {
        let outcome = match item {
            Some(Ok(event)) => {
                self.seen.push(event.clone());
                if !matches!(event, ChatEvent::Stop(_)) {
                    return false;
                }
                Some(std::mem::take(&mut self.seen))
            }
            Some(Err(_)) | None => None,
        };
        if let Some(done) = self.done.take() {
            done(outcome);
        }
        true
    }
}

struct Recording {
    inner: Option<ChatStream>,
    recorder: Recorder,
}

impl Stream for Recording {
    type Item = Result<ChatEvent, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = match inner.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        if this.recorder.see(&item) {
            this.inner = None;
        }
        Poll::Ready(item)
    }
}

impl Drop for Recording {
    /// The client went away before the end: the rest is read in a task of its own, so the
    /// answer is still stored (the account produces it either way).
    fn drop(&mut self) {
        let (Some(mut inner), Some(done)) = (self.inner.take(), self.recorder.done.take()) else {
            return;
        };
        let mut recorder = Recorder {
            seen: std::mem::take(&mut self.recorder.seen),
            done: Some(done),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    loop {
                        let item = inner.next().await;
                        if recorder.see(&item) {
                            break;
                        }
                    }
                });
            }
            Err(_) => {
                recorder.see(&None);
            }
        }
    }
}

impl Replay for ModelResponse {
    type Event = ChatEvent;

    fn record(mut self, done: impl FnOnce(Option<Vec<ChatEvent>>) + Send + 'static) -> Self {
        self.events = Box::pin(Recording {
            inner: Some(self.events),
            recorder: Recorder {
                seen: Vec::with_capacity(16),
                done: Some(Box::new(done)),
            },
        });
        self
    }

    fn replay(events: Arc<[ChatEvent]>) -> Self {
        let fresh = Arc::<str>::from(crate::chat::random_id("msg_"));
        let replayed = events
            .iter()
            .map(|event| match event {
                ChatEvent::Start {
                    model,
                    input_tokens,
                    ..
                } => ChatEvent::Start {
                    id: Arc::clone(&fresh),
                    model: Arc::clone(model),
                    input_tokens: *input_tokens,
                },
                other => other.clone(),
            })
            .map(Ok)
            .collect::<Vec<_>>();
        ModelResponse::new(Box::pin(futures_util::stream::iter(replayed)))
    }

    fn weight(event: &ChatEvent) -> usize {
        std::mem::size_of::<ChatEvent>()
            + match event {
                ChatEvent::Start { id, model, .. } => id.len() + model.len(),
                ChatEvent::TextDelta(text)
                | ChatEvent::ThinkingDelta(text)
                | ChatEvent::ThinkingSignature(text)
                | ChatEvent::RedactedThinking(text)
                | ChatEvent::StopSequence(text) => text.len(),
                ChatEvent::ToolCallStart { id, name, .. } => id.len() + name.len(),
                ChatEvent::ToolCallDelta { json, .. } => json.len(),
                ChatEvent::WebSearchCall { id, query } => id.len() + query.len(),
                ChatEvent::WebSearchResult { id, outcome } => {
                    id.len()
                        + outcome.as_ref().as_ref().map_or(0, |hits| {
                            hits.iter()
                                .map(|h| h.title.len() + h.url.len() + h.snippet.len() + 64)
                                .sum()
                        })
                }
                ChatEvent::ToolCallEnd { .. } | ChatEvent::Usage(_) | ChatEvent::Stop(_) => 0,
            }
    }

    /// An answer that calls a tool waits for the tool's result: replaying it would hand a
    /// later client a call it never made, so it is not stored.
    fn storable(events: &[ChatEvent]) -> bool {
        !events
            .iter()
            .any(|e| matches!(e, ChatEvent::ToolCallStart { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Message, Role, StopReason};
    use aiproxy_layers::ClientKey;
    use std::sync::Mutex;

    fn chat(text: &str, client: &str, stream: bool) -> ChatRequest {
        let mut chat = ChatRequest {
            model: "claude-sonnet-4-5".into(),
            messages: vec![Message::text(Role::User, text)],
            stream,
            ..ChatRequest::default()
        };
        chat.metadata.client = ClientKey::from_label(client);
        chat
    }

    #[test]
    fn the_key_ignores_the_stream_flag_and_separates_clients_and_content() {
        let base = key_of(&chat("hi", "key-1", false));
        assert_eq!(base, key_of(&chat("hi", "key-1", true)));
        assert_ne!(base, key_of(&chat("hi", "key-2", false)));
        assert_ne!(base, key_of(&chat("hi!", "key-1", false)));
        let mut hot = chat("hi", "key-1", false);
        hot.sampling.temperature = Some(0.9);
        assert_ne!(base, key_of(&hot));
    }

    fn events(items: Vec<ChatEvent>) -> ChatStream {
        Box::pin(futures_util::stream::iter(items.into_iter().map(Ok)))
    }

    fn start() -> ChatEvent {
        ChatEvent::Start {
            id: Arc::from("msg_1"),
            model: Arc::from("m"),
            input_tokens: 1,
        }
    }

    #[tokio::test]
    async fn a_stream_dropped_early_is_drained_and_recorded() {
        let told = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&told);
        let response = ModelResponse::new(events(vec![
            start(),
            ChatEvent::TextDelta("a".into()),
            ChatEvent::TextDelta("b".into()),
            ChatEvent::Stop(StopReason::EndTurn),
        ]))
        .record(move |events| *sink.lock().unwrap() = Some(events));
        let mut stream = response.events;
        let _ = stream.next().await;
        drop(stream);
        tokio::task::yield_now().await;
        let told = told.lock().unwrap().clone().unwrap().unwrap();
        assert_eq!(told.len(), 4);
    }

    #[tokio::test]
    async fn a_replay_has_a_fresh_id_and_the_same_events() {
        let stored: Arc<[ChatEvent]> = vec![
            start(),
            ChatEvent::TextDelta("a".into()),
            ChatEvent::Stop(StopReason::EndTurn),
        ]
        .into();
        let replayed: Vec<_> = ModelResponse::replay(Arc::clone(&stored))
            .events
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(replayed[1..], stored[1..]);
        assert!(matches!(&replayed[0], ChatEvent::Start { id, .. } if &**id != "msg_1"));
    }
}

//! The answer's limits, applied to the event stream: stop sequences, `max_tokens` and
//! "one tool call at most". When a limit ends the answer, the upstream stream is dropped at
//! once (the HTTP connection to Kiro closes, so the account stops spending) and the client
//! gets usage and a stop reason as if the model had stopped there.
//!
//! - Stop sequences match visible text only (not reasoning or tool input); text before the
//!   first match is passed on, nothing after it. Text that could begin a sequence is held
//!   back until the next piece decides, and released before any non-text event.
//! - `max_tokens` counts text, reasoning and tool-call arguments with the local estimate of
//!   [`crate::token_count`]; text and reasoning are cut at the count. A tool call is never cut
//!   (its arguments would not parse): one that is open when the count runs out finishes,
//!   and the answer ends after it with `max_tokens`.
//! - One tool call at most: the first call passes; the answer ends when it is complete
//!   (further calls are dropped), with `tool_use`.

use super::stop::StopMatcher;
use crate::chat::{ChatError, ChatEvent, ChatStream, StopReason, Usage};
use crate::token_count::TextCounter;
use futures_util::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The limits of one answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Stop sequences (none empty).
    pub stop: Vec<String>,
    /// The most output tokens (local estimate).
    pub max_tokens: Option<u64>,
    /// End the answer after its first tool call.
    pub single_tool_call: bool,
}

impl Limits {
    /// Whether no limit applies (the stream can pass untouched).
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.max_tokens.is_none() && !self.single_tool_call
    }

    /// `events` with these limits applied.
    pub fn apply(self, events: ChatStream) -> ChatStream {
        if self.is_empty() {
            return events;
        }
        Box::pin(Limited {
            inner: Some(events),
            stop: (!self.stop.is_empty()).then(|| StopMatcher::new(self.stop)),
            max_tokens: self.max_tokens,
            single_tool_call: self.single_tool_call,
            out: VecDeque::new(),
            input_tokens: 0,
            usage: None,
            output: TextCounter::default(),
            open_tools: Vec::new(),
            called_a_tool: false,
            ending: None,
        })
    }
}

type Item = Result<ChatEvent, ChatError>;

struct Limited {
    /// `None` once the answer ended (the upstream is dropped then).
    inner: Option<ChatStream>,
    stop: Option<StopMatcher>,
    max_tokens: Option<u64>,
    single_tool_call: bool,
    out: VecDeque<Item>,
    input_tokens: u64,
    usage: Option<Usage>,
    /// Output passed on so far.
    output: TextCounter,
    /// Tool calls passed on and not yet complete.
    open_tools: Vec<u32>,
    /// Whether a tool call was passed on (for `single_tool_call`).
    called_a_tool: bool,
    /// Set when a limit ended the answer while tool calls were still open.
    ending: Option<StopReason>,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Thinking,
}

impl Limited {
    fn on_event(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::Start { input_tokens, .. } => {
                self.input_tokens = input_tokens;
                self.out.push_back(Ok(event));
            }
            ChatEvent::TextDelta(text) => {
                if self.ending.is_some() {
                    return;
                }
                let (text, matched) = match &mut self.stop {
                    Some(stop) => {
                        let released = stop.push(&text);
                        (released.text, released.matched)
                    }
                    None => (text, None),
                };
                if !self.pass(Kind::Text, text) {
                    return self.end(StopReason::MaxTokens);
                }
                if let Some(sequence) = matched {
                    self.out.push_back(Ok(ChatEvent::StopSequence(sequence)));
                    self.end(StopReason::StopSequence);
                }
            }
            ChatEvent::ThinkingDelta(text) => {
                if self.ending.is_some() || !self.flush_text() {
                    return;
                }
                if !self.pass(Kind::Thinking, text) {
                    self.end(StopReason::MaxTokens);
                }
            }
            // Opaque reasoning counts nothing towards max_tokens here (its size is unknown),
            // like a signature.
            ChatEvent::ThinkingSignature(_)
            | ChatEvent::RedactedThinking(_)
            | ChatEvent::WebSearchCall { .. }
            | ChatEvent::WebSearchResult { .. } => {
                if self.ending.is_some() || !self.flush_text() {
                    return;
                }
                self.out.push_back(Ok(event));
            }
            ChatEvent::ToolCallStart { index, .. } => {
                let more_than_one = self.single_tool_call && self.called_a_tool;
                if self.ending.is_some() || more_than_one || !self.flush_text() {
                    return;
                }
                self.called_a_tool = true;
                self.open_tools.push(index);
                self.out.push_back(Ok(event));
            }
            ChatEvent::ToolCallDelta { index, ref json } => {
                if !self.open_tools.contains(&index) {
                    return;
                }
                self.output.add(json);
                if self.over_budget(&self.output) && self.ending.is_none() {
                    self.ending = Some(StopReason::MaxTokens);
                }
                self.out.push_back(Ok(event));
            }
            ChatEvent::ToolCallEnd { index } => {
                let Some(position) = self.open_tools.iter().position(|&i| i == index) else {
                    return;
                };
                self.open_tools.swap_remove(position);
                self.out.push_back(Ok(event));
                if self.single_tool_call && self.ending.is_none() {
                    self.ending = Some(StopReason::ToolUse);
                }
                if let Some(reason) = self.ending {
                    self.end(reason);
                }
            }
            ChatEvent::Usage(usage) => {
                if self.flush_text() {
                    self.usage = Some(usage);
                    self.out.push_back(Ok(event));
                }
            }
            ChatEvent::StopSequence(_) => self.out.push_back(Ok(event)),
            ChatEvent::Stop(reason) => {
                if self.flush_text() {
                    self.inner = None;
                    self.out
                        .push_back(Ok(ChatEvent::Stop(self.ending.unwrap_or(reason))));
                }
            }
        }
    }

    /// Releases held-back text; false when that ran out the budget (the answer ended).
    fn flush_text(&mut self) -> bool {
        let held = match &mut self.stop {
            Some(stop) => stop.flush(),
            None => return true,
        };
        if self.pass(Kind::Text, held) {
            return true;
        }
        self.end(StopReason::MaxTokens);
        false
    }

    /// Passes `text` on, cut to what the budget allows; false when it was cut.
    fn pass(&mut self, kind: Kind, mut text: String) -> bool {
        let mut counted = self.output;
        counted.add(&text);
        let within = !self.over_budget(&counted);
        if within {
            self.output = counted;
        } else {
            let cut = self.fitting_prefix(&text);
            text.truncate(cut);
        }
        if !text.is_empty() {
            self.out.push_back(Ok(match kind {
                Kind::Text => ChatEvent::TextDelta(text),
                Kind::Thinking => ChatEvent::ThinkingDelta(text),
            }));
        }
        within
    }

    fn over_budget(&self, counter: &TextCounter) -> bool {
        self.max_tokens.is_some_and(|max| counter.tokens() > max)
    }

    /// The length of the longest prefix of `text` that fits the budget (counted into
    /// the output).
    fn fitting_prefix(&mut self, text: &str) -> usize {
        let mut end = 0;
        for (at, ch) in text.char_indices() {
            let mut next = self.output;
            next.add(ch.encode_utf8(&mut [0; 4]));
            if self.over_budget(&next) {
                break;
            }
            self.output = next;
            end = at + ch.len_utf8();
        }
        end
    }

    /// A limit ends the answer: now, or when the open tool calls are complete.
    fn end(&mut self, reason: StopReason) {
        self.ending = Some(reason);
        if !self.open_tools.is_empty() {
            return;
        }
        self.inner = None;
        let reported = self.usage.unwrap_or_default();
        self.out.push_back(Ok(ChatEvent::Usage(Usage {
            input: if self.usage.is_some() {
                reported.input
            } else {
                self.input_tokens
            },
            output: self.output.tokens(),
            cache_read: reported.cache_read,
            cache_write: reported.cache_write,
            estimated: true,
            credits: reported.credits,
        })));
        self.out.push_back(Ok(ChatEvent::Stop(reason)));
    }
}

impl Stream for Limited {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(event))) => this.on_event(event),
                Poll::Ready(Some(Err(error))) => {
                    if let Some(stop) = &mut this.stop {
                        let held = stop.flush();
                        if !held.is_empty() {
                            this.out.push_back(Ok(ChatEvent::TextDelta(held)));
                        }
                    }
                    this.inner = None;
                    this.out.push_back(Err(error));
                }
                // The upstream ended without a stop: pass the truncation on as it is.
                Poll::Ready(None) => {
                    this.inner = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn start() -> ChatEvent {
        ChatEvent::Start {
            id: Arc::from("m"),
            model: Arc::from("x"),
            input_tokens: 7,
        }
    }

    fn text(t: &str) -> ChatEvent {
        ChatEvent::TextDelta(t.into())
    }

    /// A stream of `events` that records whether it was dropped before its end.
    fn upstream(events: Vec<ChatEvent>, dropped: Arc<AtomicBool>) -> ChatStream {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped);
        Box::pin(
            futures_util::stream::iter(events.into_iter().map(Ok)).map(move |e| {
                let _keep = &flag;
                e
            }),
        )
    }

    async fn run(limits: Limits, events: Vec<ChatEvent>) -> (Vec<ChatEvent>, bool) {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut stream = limits.apply(upstream(events, Arc::clone(&dropped)));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            out.push(item.unwrap());
            if matches!(out.last(), Some(ChatEvent::Stop(_))) {
                break;
            }
        }
        (out, dropped.load(Ordering::SeqCst))
    }

    fn texts(events: &[ChatEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                ChatEvent::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn stop_of(events: &[ChatEvent]) -> Option<StopReason> {
        match events.last() {
            Some(ChatEvent::Stop(reason)) => Some(*reason),
            _ => None,
        }
    }

    fn end_turn(mut events: Vec<ChatEvent>) -> Vec<ChatEvent> {
        events.insert(0, start());
        events.push(ChatEvent::Usage(Usage {
            input: 9,
            output: 20,
            ..Usage::default()
        }));
        events.push(ChatEvent::Stop(StopReason::EndTurn));
        events
    }

    #[tokio::test]
    async fn a_stop_sequence_split_across_events_ends_the_answer_and_drops_the_upstream() {
        let limits = Limits {
            stop: vec!["END".into()],
            ..Limits::default()
        };
        let (events, dropped) = run(
            limits,
            end_turn(vec![
                text("one "),
                text("two E"),
                text("ND three"),
                text("four"),
            ]),
        )
        .await;
        assert_eq!(texts(&events), "one two ");
        assert_eq!(stop_of(&events), Some(StopReason::StopSequence));
        assert!(events.contains(&ChatEvent::StopSequence("END".into())));
        assert!(dropped, "the upstream is closed at the match");
        let usage = events.iter().find_map(|e| match e {
            ChatEvent::Usage(u) => Some(*u),
            _ => None,
        });
        assert_eq!(
            usage,
            Some(Usage {
                input: 7,
                output: 2,
                estimated: true,
                ..Usage::default()
            }),
            "usage is the local estimate of what was passed on"
        );
    }

    #[tokio::test]
    async fn without_a_match_everything_passes_and_the_held_tail_is_released() {
        let limits = Limits {
            stop: vec!["END".into()],
            ..Limits::default()
        };
        let (events, _) = run(limits, end_turn(vec![text("the E"), text("N")])).await;
        assert_eq!(texts(&events), "the EN");
        assert_eq!(stop_of(&events), Some(StopReason::EndTurn));
        let (events, _) = run(
            Limits {
                stop: vec!["END".into()],
                ..Limits::default()
            },
            vec![
                start(),
                text("a E"),
                ChatEvent::ThinkingDelta("END".into()),
                text("ND"),
                ChatEvent::Stop(StopReason::EndTurn),
            ],
        )
        .await;
        assert_eq!(
            texts(&events),
            "a END",
            "reasoning breaks the text and is never matched"
        );
    }

    #[tokio::test]
    async fn max_tokens_cuts_text_at_the_count_and_says_so() {
        let limits = Limits {
            max_tokens: Some(2),
            ..Limits::default()
        };
        let (events, dropped) = run(limits, end_turn(vec![text("abcd"), text("efghijkl")])).await;
        assert_eq!(texts(&events), "abcdefgh", "2 tokens = 8 ASCII characters");
        assert_eq!(stop_of(&events), Some(StopReason::MaxTokens));
        assert!(dropped);
        let (events, _) = run(
            Limits {
                max_tokens: Some(8),
                ..Limits::default()
            },
            end_turn(vec![text("short")]),
        )
        .await;
        assert_eq!(
            stop_of(&events),
            Some(StopReason::EndTurn),
            "within the budget"
        );
        assert!(events.contains(&ChatEvent::Usage(Usage {
            input: 9,
            output: 20,
            ..Usage::default()
        })));
    }

    fn tool(index: u32, json: &str) -> Vec<ChatEvent> {
        vec![
            ChatEvent::ToolCallStart {
                index,
                id: format!("t{index}"),
                name: "f".into(),
            },
            ChatEvent::ToolCallDelta {
                index,
                json: json.into(),
            },
            ChatEvent::ToolCallEnd { index },
        ]
    }

    #[tokio::test]
    async fn a_tool_call_is_never_cut_and_the_answer_ends_after_it() {
        let mut events = vec![start(), text("ab")];
        events.extend(tool(0, "{\"path\": \"a long argument\"}"));
        events.extend(tool(1, "{}"));
        events.push(ChatEvent::Stop(StopReason::ToolUse));
        let (out, _) = run(
            Limits {
                max_tokens: Some(2),
                ..Limits::default()
            },
            events,
        )
        .await;
        assert!(out.contains(&ChatEvent::ToolCallEnd { index: 0 }));
        assert!(
            !out.iter()
                .any(|e| matches!(e, ChatEvent::ToolCallStart { index: 1, .. })),
            "no second call after the budget ran out"
        );
        assert_eq!(stop_of(&out), Some(StopReason::MaxTokens));
    }

    #[tokio::test]
    async fn a_single_tool_call_ends_the_answer_with_tool_use() {
        let mut events = vec![start()];
        events.extend(tool(0, "{}"));
        events.extend(tool(1, "{}"));
        events.push(ChatEvent::Stop(StopReason::ToolUse));
        let (out, dropped) = run(
            Limits {
                single_tool_call: true,
                ..Limits::default()
            },
            events,
        )
        .await;
        let starts = out
            .iter()
            .filter(|e| matches!(e, ChatEvent::ToolCallStart { .. }))
            .count();
        assert_eq!(starts, 1);
        assert_eq!(stop_of(&out), Some(StopReason::ToolUse));
        assert!(dropped);
    }

    #[tokio::test]
    async fn an_error_releases_held_text_first_and_a_truncation_stays_one() {
        let events: Vec<Item> = vec![
            Ok(start()),
            Ok(text("x E")),
            Err(ChatError::Upstream {
                message: "gone".into(),
            }),
        ];
        let limits = Limits {
            stop: vec!["END".into()],
            ..Limits::default()
        };
        let out: Vec<Item> = limits
            .clone()
            .apply(Box::pin(futures_util::stream::iter(events)))
            .collect()
            .await;
        assert_eq!(out[1], Ok(text("x ")));
        assert_eq!(out[2], Ok(text("E")));
        assert!(out[3].is_err());
        let out: Vec<Item> = limits
            .apply(Box::pin(futures_util::stream::iter(vec![
                Ok(start()),
                Ok(text("a")),
            ])))
            .collect()
            .await;
        assert_eq!(out.len(), 2, "no stop is invented for a cut-off upstream");
    }
}

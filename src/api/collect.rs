//! Drains a chat stream into ordered content blocks: the shared first half of every
//! non-stream response encoder.

use crate::chat::web_search::SearchOutcome;
use crate::chat::{ChatError, ChatEvent, ChatStream, StopReason, Usage};
use futures_util::StreamExt;
use std::sync::Arc;

/// One block of a finished answer, in the order the model produced it.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Visible text.
    Text(String),
    /// Reasoning text, with the upstream's signature (empty when there is none).
    Thinking {
        /// The reasoning.
        text: String,
        /// Its signature (native reasoning), or empty.
        signature: String,
    },
    /// Reasoning the upstream gave encrypted (opaque).
    RedactedThinking(String),
    /// A tool call with its complete JSON arguments.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// JSON text of the arguments object.
        arguments: String,
    },
    /// A web search aiproxy ran (a server tool call).
    WebSearchCall {
        /// The search's id.
        id: String,
        /// What was searched for.
        query: String,
    },
    /// What it found.
    WebSearchResult {
        /// The search's id.
        id: String,
        /// The results, or why there are none.
        outcome: Arc<SearchOutcome>,
    },
}

/// An encoded non-stream answer.
pub struct Completed {
    /// The JSON body.
    pub body: bytes::Bytes,
    /// The answer's usage (estimates are answered with `x-aiproxy-usage: estimated`, credits
    /// with `x-aiproxy-credits`).
    pub usage: Usage,
}

/// A finished answer.
#[derive(Debug, Clone)]
pub struct Collected {
    /// Provider message id.
    pub id: Arc<str>,
    /// Model id to report.
    pub model: Arc<str>,
    /// Content in order.
    pub blocks: Vec<Block>,
    /// Token usage.
    pub usage: Usage,
    /// Why it ended.
    pub stop: StopReason,
    /// The stop sequence that ended it, when one did.
    pub stop_sequence: Option<String>,
}

/// Reads the whole stream; a stream without a stop is a truncation.
pub async fn collect(mut stream: ChatStream, model: &str) -> Result<Collected, ChatError> {
    let mut id: Arc<str> = Arc::from("");
    let mut model: Arc<str> = Arc::from(model);
    let mut blocks: Vec<Block> = Vec::new();
    let mut tool_blocks: Vec<usize> = Vec::new();
    let mut usage = Usage::default();
    let mut stop = None;
    let mut stop_sequence = None;
    while let Some(event) = stream.next().await {
        match event? {
            ChatEvent::Start {
                id: i,
                model: m,
                input_tokens,
            } => {
                id = i;
                model = m;
                usage.input = input_tokens;
                usage.estimated = true;
            }
            ChatEvent::TextDelta(text) => match blocks.last_mut() {
                Some(Block::Text(existing)) => existing.push_str(&text),
                _ => blocks.push(Block::Text(text)),
            },
            ChatEvent::ThinkingDelta(text) => match blocks.last_mut() {
                Some(Block::Thinking {
                    text: existing,
                    signature,
                }) if signature.is_empty() => existing.push_str(&text),
                _ => blocks.push(Block::Thinking {
                    text,
                    signature: String::new(),
                }),
            },
            ChatEvent::ThinkingSignature(signed) => match blocks.last_mut() {
                Some(Block::Thinking { signature, .. }) if signature.is_empty() => {
                    *signature = signed;
                }
                _ => blocks.push(Block::Thinking {
                    text: String::new(),
                    signature: signed,
                }),
            },
            ChatEvent::RedactedThinking(data) => blocks.push(Block::RedactedThinking(data)),
            ChatEvent::ToolCallStart { index, id, name } => {
                let slot = index as usize;
                if tool_blocks.len() <= slot {
                    tool_blocks.resize(slot + 1, usize::MAX);
                }
                tool_blocks[slot] = blocks.len();
                blocks.push(Block::ToolUse {
                    id,
                    name,
                    arguments: String::new(),
                });
            }
            ChatEvent::ToolCallDelta { index, json } => {
                let position = tool_blocks.get(index as usize).copied();
                if let Some(Block::ToolUse { arguments, .. }) =
                    position.and_then(|p| blocks.get_mut(p))
                {
                    arguments.push_str(&json);
                }
            }
            ChatEvent::ToolCallEnd { .. } => {}
            ChatEvent::WebSearchCall { id, query } => {
                blocks.push(Block::WebSearchCall { id, query })
            }
            ChatEvent::WebSearchResult { id, outcome } => {
                blocks.push(Block::WebSearchResult { id, outcome })
            }
            ChatEvent::Usage(u) => usage = u,
            ChatEvent::StopSequence(sequence) => stop_sequence = Some(sequence),
            ChatEvent::Stop(reason) => stop = Some(reason),
        }
    }
    let stop = stop.ok_or_else(ChatError::ended_without_stop)?;
    Ok(Collected {
        id,
        model,
        blocks,
        usage,
        stop,
        stop_sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[tokio::test]
    async fn interleaved_tools_keep_their_own_arguments() {
        let events = vec![
            Ok(ChatEvent::Start {
                id: Arc::from("m1"),
                model: Arc::from("x"),
                input_tokens: 4,
            }),
            Ok(ChatEvent::ThinkingDelta("a".into())),
            Ok(ChatEvent::ThinkingDelta("b".into())),
            Ok(ChatEvent::TextDelta("hi".into())),
            Ok(ChatEvent::ToolCallStart {
                index: 0,
                id: "t0".into(),
                name: "f".into(),
            }),
            Ok(ChatEvent::ToolCallStart {
                index: 1,
                id: "t1".into(),
                name: "g".into(),
            }),
            Ok(ChatEvent::ToolCallDelta {
                index: 1,
                json: "{}".into(),
            }),
            Ok(ChatEvent::ToolCallDelta {
                index: 0,
                json: "{\"a\":1}".into(),
            }),
            Ok(ChatEvent::Stop(StopReason::ToolUse)),
        ];
        let collected = collect(Box::pin(stream::iter(events)), "x").await.unwrap();
        assert_eq!(
            collected.blocks,
            vec![
                Block::Thinking {
                    text: "ab".into(),
                    signature: String::new()
                },
                Block::Text("hi".into()),
                Block::ToolUse {
                    id: "t0".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into()
                },
                Block::ToolUse {
                    id: "t1".into(),
                    name: "g".into(),
                    arguments: "{}".into()
                },
            ]
        );
        assert_eq!(collected.usage.input, 4);
        assert!(
            collected.usage.estimated,
            "no Usage event: the start estimate stands"
        );
    }
}

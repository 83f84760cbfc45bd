//! AWS event-stream framing (docs/kiro-protocol.md §6.1) and Kiro's event payloads (§6.2).
//!
//! [`FrameDecoder`] is incremental: feed it whatever the socket delivered and take out the
//! complete frames; frames split across reads and many frames per read both work. Both
//! CRCs are checked (the prelude CRC as soon as 12 bytes are there, so a corrupt length
//! is caught before we wait for bytes that will never come). Decoding is strict: a corrupt
//! frame is an error, because a stream with a hole in it must not look like a good answer.

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use aws_smithy_types::str_bytes::StrBytes;
use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;

/// Largest frame we accept (a runaway length is corruption, not data).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const PRELUDE_BYTES: usize = 12;
const MIN_FRAME_BYTES: usize = 16;

/// Why a byte stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prelude CRC does not match.
    #[error(
        "event-stream prelude checksum mismatch (expected {expected:#010x}, got {actual:#010x})"
    )]
    PreludeCrc {
        /// Computed.
        expected: u32,
        /// Sent.
        actual: u32,
    },
    /// The frame length is impossible.
    #[error("event-stream frame length {0} is outside 16..={MAX_FRAME_BYTES} bytes")]
    Length(usize),
    /// The frame could not be read (message CRC, header encoding).
    #[error("event-stream frame is corrupt: {0}")]
    Corrupt(String),
}

/// One decoded frame, with the headers Kiro uses pulled out. The strings share the frame's
/// buffer (no copy, no allocation per frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `:message-type` (`event`, `exception`, `error`).
    pub message_type: StrBytes,
    /// `:event-type`, `:exception-type` or `:error-code`, whichever applies.
    pub kind: StrBytes,
    /// The payload (JSON for Kiro).
    pub payload: Bytes,
}

/// Incremental decoder over a growing buffer.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the upstream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Appends a chunk read from the upstream; when nothing is pending and the chunk is not
    /// shared, its buffer is taken over instead of copied, and the frames cut from it share it.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if self.buffer.is_empty() {
            self.buffer = BytesMut::from(bytes);
        } else {
            self.buffer.extend_from_slice(&bytes);
        }
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the next complete frame out of the buffer, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffer.len() < PRELUDE_BYTES {
            return Ok(None);
        }
        let prelude = &self.buffer[..PRELUDE_BYTES];
        let total = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
        let sent_crc = u32::from_be_bytes([prelude[8], prelude[9], prelude[10], prelude[11]]);
        let computed_crc = crc32fast::hash(&prelude[..8]);
        if computed_crc != sent_crc {
            return Err(FrameError::PreludeCrc {
                expected: computed_crc,
                actual: sent_crc,
            });
        }
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&total) {
            return Err(FrameError::Length(total));
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let mut frame_bytes = self.buffer.split_to(total).freeze();
        let message =
            read_message_from(&mut frame_bytes).map_err(|e| FrameError::Corrupt(e.to_string()))?;
        debug_assert_eq!(frame_bytes.remaining(), 0);
        Ok(Some(Frame::from_message(message)))
    }
}

impl Frame {
    fn from_message(message: Message) -> Self {
        let mut message_type = None;
        let mut kind = None;
        for header in message.headers() {
            let Ok(value) = header.value().as_string() else {
                continue;
            };
            match header.name().as_str() {
                ":message-type" => message_type = Some(value.clone()),
                ":event-type" | ":exception-type" | ":error-code" => kind = Some(value.clone()),
                _ => {}
            }
        }
        Self {
            message_type: message_type
                .filter(|t| !t.as_str().is_empty())
                .unwrap_or(StrBytes::from("event")),
            kind: kind.unwrap_or(StrBytes::from("")),
            payload: message.payload().clone(),
        }
    }
}

/// Encodes one frame as Kiro sends it. Used by the fake Kiro and by tests.
pub fn encode_frame(message_type: &str, kind: &str, payload: &[u8]) -> Bytes {
    let kind_header = match message_type {
        "exception" => ":exception-type",
        "error" => ":error-code",
        _ => ":event-type",
    };
    let message = Message::new(Bytes::copy_from_slice(payload))
        .add_header(Header::new(
            kind_header,
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_owned().into()),
        ));
    let mut out = Vec::with_capacity(payload.len() + 128);
    // Writing into a Vec cannot fail for frames we build (names and values are short).
    if write_message_to(&message, &mut out).is_err() {
        out.clear();
    }
    Bytes::from(out)
}

/// Token usage as Kiro reports it in `metadataEvent.tokenUsage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenUsage {
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens not served from cache.
    pub uncached_input_tokens: u64,
    /// Input tokens read from cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to cache.
    pub cache_write_input_tokens: u64,
}

/// A Kiro event, decoded from a frame's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum KiroEvent {
    /// `assistantResponseEvent`: a text delta.
    Text(String),
    /// `toolUseEvent`: a fragment of a tool call (fields are all optional on the wire).
    ToolUse {
        /// Call id (may be missing on continuation fragments).
        tool_use_id: Option<String>,
        /// Tool name (may be missing on continuation fragments).
        name: Option<String>,
        /// A fragment of the JSON arguments text.
        input: Option<String>,
        /// True on the fragment that completes the call.
        stop: bool,
    },
    /// `reasoningContentEvent`: native reasoning text, and the signature that closes it
    /// (on the last event of a reasoning block).
    Reasoning {
        /// Reasoning text (may be empty on the signature's event).
        text: String,
        /// The block's signature.
        signature: Option<String>,
    },
    /// `reasoningContentEvent {redactedContent}`: reasoning the model keeps encrypted; it
    /// is shown as such and replayed as it came.
    RedactedReasoning(String),
    /// `contextUsageEvent`: percentage of the context window used.
    ContextUsage(f64),
    /// `meteringEvent`: credits used.
    Metering(f64),
    /// `metadataEvent` / `messageMetadataEvent`: usage and stop reason.
    Metadata {
        /// Token usage, if reported.
        usage: Option<TokenUsage>,
        /// `END_TURN`, `MAX_TOKENS`, `TOOL_USE`, ...
        stop_reason: Option<String>,
    },
    /// An `exception` frame (e.g. `ContentLengthExceededException`).
    Exception {
        /// `:exception-type`.
        kind: String,
        /// The payload's `message`.
        message: String,
    },
    /// An `error` frame.
    Error {
        /// `:error-code`.
        code: String,
        /// The payload text.
        message: String,
    },
    /// An event type we do not know; ignored but counted.
    Unknown(String),
}

#[derive(Deserialize)]
struct TextPayload {
    #[serde(default)]
    content: String,
    /// Only whether it is there matters: skipped, not built.
    #[serde(default, rename = "followupPrompt")]
    followup_prompt: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUsePayload {
    tool_use_id: Option<String>,
    name: Option<String>,
    input: Option<serde_json::Value>,
    #[serde(default)]
    stop: bool,
}

#[derive(Deserialize)]
struct ReasoningPayload {
    #[serde(default)]
    text: String,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default, rename = "redactedContent")]
    redacted_content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContextUsagePayload {
    context_usage_percentage: f64,
}

#[derive(Deserialize)]
struct MeteringPayload {
    #[serde(default)]
    usage: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataPayload {
    token_usage: Option<TokenUsage>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessagePayload {
    #[serde(default)]
    message: String,
}

/// Why a frame's payload could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{event_type}` payload is not what Kiro sends: {reason}")]
pub struct PayloadError {
    /// The frame's event type.
    pub event_type: String,
    /// The JSON error.
    pub reason: String,
}

impl KiroEvent {
    /// Interprets a decoded frame.
    pub fn from_frame(frame: &Frame) -> Result<Self, PayloadError> {
        let fail = |e: serde_json::Error| PayloadError {
            event_type: frame.kind.as_str().to_owned(),
            reason: e.to_string(),
        };
        let payload = &frame.payload;
        match frame.message_type.as_str() {
            "exception" => {
                let message = serde_json::from_slice::<MessagePayload>(payload)
                    .map(|p| p.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(payload).into_owned());
                return Ok(Self::Exception {
                    kind: frame.kind.as_str().to_owned(),
                    message,
                });
            }
            "error" => {
                return Ok(Self::Error {
                    code: frame.kind.as_str().to_owned(),
                    message: String::from_utf8_lossy(payload).into_owned(),
                })
            }
            _ => {}
        }
        Ok(match frame.kind.as_str() {
            "assistantResponseEvent" => {
                let p: TextPayload = serde_json::from_slice(payload).map_err(fail)?;
                if p.followup_prompt.is_some() && p.content.is_empty() {
                    Self::Unknown("followupPrompt".into())
                } else {
                    Self::Text(p.content)
                }
            }
            "toolUseEvent" => {
                let p: ToolUsePayload = serde_json::from_slice(payload).map_err(fail)?;
                let input = p.input.map(|value| match value {
                    serde_json::Value::String(fragment) => fragment,
                    other => other.to_string(),
                });
                Self::ToolUse {
                    tool_use_id: p.tool_use_id,
                    name: p.name,
                    input,
                    stop: p.stop,
                }
            }
            "reasoningContentEvent" => {
                let p: ReasoningPayload = serde_json::from_slice(payload).map_err(fail)?;
                match p.redacted_content.filter(|r| !r.is_empty()) {
                    Some(data) => Self::RedactedReasoning(data),
                    None => Self::Reasoning {
                        text: p.text,
                        signature: p.signature.filter(|s| !s.is_empty()),
                    },
                }
            }
            "contextUsageEvent" => {
                let p: ContextUsagePayload = serde_json::from_slice(payload).map_err(fail)?;
                Self::ContextUsage(p.context_usage_percentage)
            }
            "meteringEvent" => {
                let p: MeteringPayload = serde_json::from_slice(payload).map_err(fail)?;
                Self::Metering(p.usage)
            }
            "metadataEvent" | "messageMetadataEvent" => {
                let p: MetadataPayload = serde_json::from_slice(payload).map_err(fail)?;
                Self::Metadata {
                    usage: p.token_usage,
                    stop_reason: p.stop_reason,
                }
            }
            other => Self::Unknown(other.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked vector from docs/kiro-protocol.md §6.1.
    const VECTOR_HEX: &str = "0000007c0000005c3bddcf78\
        0b3a6576656e742d7479706507001661737369737461\
        6e74526573706f6e73654576656e74\
        0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e\
        0d3a6d6573736167652d747970650700056576656e74\
        7b22636f6e74656e74223a224869227d\
        b02babdc";

    fn vector() -> Vec<u8> {
        let hex: String = VECTOR_HEX.chars().filter(|c| !c.is_whitespace()).collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_the_documented_vector() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&vector());
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(frame.message_type.as_str(), "event");
        assert_eq!(frame.kind.as_str(), "assistantResponseEvent");
        assert_eq!(
            KiroEvent::from_frame(&frame).unwrap(),
            KiroEvent::Text("Hi".into())
        );
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn encoder_produces_the_documented_vector() {
        // Same headers in the same order as the vector.
        let message = Message::new(Bytes::from_static(br#"{"content":"Hi"}"#))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("assistantResponseEvent".into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        assert_eq!(out, vector());
        assert_eq!(
            encode_frame("event", "assistantResponseEvent", br#"{"content":"Hi"}"#).to_vec(),
            vector()
        );
    }

    #[test]
    fn owned_chunks_cut_at_every_position_decode_the_same() {
        let one = encode_frame("event", "assistantResponseEvent", br#"{"content":"a"}"#);
        let two = encode_frame("event", "assistantResponseEvent", br#"{"content":"b"}"#);
        let all: Bytes = [one.as_ref(), two.as_ref()].concat().into();
        for cut in 0..=all.len() {
            let mut decoder = FrameDecoder::new();
            let mut texts = Vec::new();
            for chunk in [all.slice(..cut), all.slice(cut..)] {
                decoder.push_bytes(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    texts.push(KiroEvent::from_frame(&frame).unwrap());
                }
            }
            let expected = vec![KiroEvent::Text("a".into()), KiroEvent::Text("b".into())];
            assert_eq!(texts, expected, "cut at {cut}");
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn frames_split_byte_by_byte_and_many_per_read() {
        let one = encode_frame("event", "assistantResponseEvent", br#"{"content":"a"}"#);
        let two = encode_frame(
            "event",
            "contextUsageEvent",
            br#"{"contextUsagePercentage":1.5}"#,
        );
        let all: Vec<u8> = [one.as_ref(), two.as_ref(), one.as_ref()].concat();

        let mut decoder = FrameDecoder::new();
        let mut events = Vec::new();
        for byte in &all {
            decoder.push(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                events.push(KiroEvent::from_frame(&frame).unwrap());
            }
        }
        assert_eq!(events.len(), 3);
        assert_eq!(events[1], KiroEvent::ContextUsage(1.5));

        let mut decoder = FrameDecoder::new();
        decoder.push(&all);
        let mut count = 0;
        while decoder.next_frame().unwrap().is_some() {
            count += 1;
        }
        assert_eq!(count, 3);
    }

    #[test]
    fn corrupt_crcs_and_lengths_are_errors() {
        let mut bad_message = vector();
        let last = bad_message.len() - 1;
        bad_message[last] ^= 1;
        let mut decoder = FrameDecoder::new();
        decoder.push(&bad_message);
        assert!(matches!(decoder.next_frame(), Err(FrameError::Corrupt(_))));

        let mut bad_prelude = vector();
        bad_prelude[2] ^= 0x40;
        let mut decoder = FrameDecoder::new();
        decoder.push(&bad_prelude[..12]);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::PreludeCrc { .. })
        ));

        let mut payload_flip = vector();
        payload_flip[110] ^= 1;
        let mut decoder = FrameDecoder::new();
        decoder.push(&payload_flip);
        assert!(decoder.next_frame().is_err());
    }

    #[test]
    fn payload_variants() {
        let frame = |kind: &str, payload: &str| Frame {
            message_type: "event".into(),
            kind: kind.to_owned().into(),
            payload: Bytes::from(payload.to_owned()),
        };
        assert_eq!(
            KiroEvent::from_frame(&frame(
                "toolUseEvent",
                r#"{"name":"f","toolUseId":"t1","input":"{\"a\"","stop":false}"#
            ))
            .unwrap(),
            KiroEvent::ToolUse {
                tool_use_id: Some("t1".into()),
                name: Some("f".into()),
                input: Some("{\"a\"".into()),
                stop: false
            }
        );
        assert_eq!(
            KiroEvent::from_frame(&frame("toolUseEvent", r#"{"input":{"a":1},"stop":true}"#))
                .unwrap(),
            KiroEvent::ToolUse {
                tool_use_id: None,
                name: None,
                input: Some("{\"a\":1}".into()),
                stop: true
            }
        );
        let meta = KiroEvent::from_frame(&frame(
            "metadataEvent",
            r#"{"tokenUsage":{"outputTokens":5,"uncachedInputTokens":7},"stopReason":"END_TURN"}"#,
        ))
        .unwrap();
        assert_eq!(
            meta,
            KiroEvent::Metadata {
                usage: Some(TokenUsage {
                    output_tokens: 5,
                    uncached_input_tokens: 7,
                    ..Default::default()
                }),
                stop_reason: Some("END_TURN".into()),
            }
        );
        assert_eq!(
            KiroEvent::from_frame(&frame("codeEvent", "{}")).unwrap(),
            KiroEvent::Unknown("codeEvent".into())
        );
        let exception = Frame {
            message_type: "exception".into(),
            kind: "ContentLengthExceededException".into(),
            payload: Bytes::from_static(br#"{"message":"too long"}"#),
        };
        assert_eq!(
            KiroEvent::from_frame(&exception).unwrap(),
            KiroEvent::Exception {
                kind: "ContentLengthExceededException".into(),
                message: "too long".into()
            }
        );
        assert!(KiroEvent::from_frame(&frame("contextUsageEvent", "not json")).is_err());
    }
}

//! AWS event-stream framing (docs/kiro-protocol.md §6.1) and Kiro's event payloads (§6.2).
//!
//! [`FrameDecoder`] is incremental: feed it whatever the socket delivered and take out the
//! complete frames; frames split across reads and many frames per read both work. Both
//! CRCs are checked (the prelude CRC as soon as 12 bytes are there, so a corrupt length
//! is caught before we wait for bytes that will never come). Decoding is strict: a corrupt
//! frame is an error, because a stream with a hole in it must not look like a good answer.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::{Bytes, BytesMut};
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

/// One decoded frame, with the headers Kiro uses pulled out. Every part is a slice of the
/// bytes read from the socket (no copy, no allocation per frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `:message-type` (`event`, `exception`, `error`); `event` when absent.
    message_type: Bytes,
    /// `:event-type`, `:exception-type` or `:error-code`, whichever applies; empty when absent.
    kind: Bytes,
    /// The payload (JSON for Kiro).
    pub payload: Bytes,
}

impl Frame {
    /// `:message-type` (`event`, `exception`, `error`); `event` when the frame has none.
    pub fn message_type(&self) -> &str {
        // Checked as UTF-8 when the frame was read.
        std::str::from_utf8(&self.message_type).unwrap_or_default()
    }

    /// `:event-type`, `:exception-type` or `:error-code`, whichever the frame carries.
    pub fn kind(&self) -> &str {
        std::str::from_utf8(&self.kind).unwrap_or_default()
    }
}

/// Incremental decoder. A read that holds whole frames is cut into them in place; only the
/// tail of a frame split across reads is copied, into `partial`, until it is complete.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// The bytes of the last read not yet cut into frames (while `partial` is empty).
    current: Bytes,
    /// A frame begun in an earlier read, with what followed it.
    partial: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the upstream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.push_bytes(Bytes::copy_from_slice(bytes));
    }

    /// Appends a chunk read from the upstream; the frames cut from it share its buffer.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if self.partial.is_empty() && self.current.is_empty() {
            self.current = bytes;
        } else {
            if !self.current.is_empty() {
                self.partial.extend_from_slice(&self.current);
                self.current = Bytes::new();
            }
            self.partial.extend_from_slice(&bytes);
        }
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.current.len() + self.partial.len()
    }

    /// Takes the next complete frame out of the buffer, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let buffered: &[u8] = if self.partial.is_empty() {
            &self.current
        } else {
            &self.partial
        };
        let Some(total) = frame_length(buffered)? else {
            return Ok(None);
        };
        if buffered.len() < total {
            // The frame continues in a later read: keep its start where reads accumulate.
            if self.partial.is_empty() {
                self.partial.extend_from_slice(&self.current);
                self.current = Bytes::new();
            }
            return Ok(None);
        }
        let frame = if self.partial.is_empty() {
            let frame = self.current.split_to(total);
            if self.current.is_empty() {
                // An empty slice still holds the whole read buffer: a stream that waits
                // between events would keep its last read alive for nothing.
                self.current = Bytes::new();
            }
            frame
        } else {
            let frame = self.partial.split_to(total).freeze();
            if self.partial.is_empty() {
                self.partial = BytesMut::new();
            }
            frame
        };
        Frame::read(frame).map(Some)
    }
}

/// The frame length announced by a complete prelude (its CRC checked), or `None` before 12
/// bytes are there.
fn frame_length(buffered: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prelude) = buffered.get(..PRELUDE_BYTES) else {
        return Ok(None);
    };
    let total = be_u32(&prelude[0..4]) as usize;
    let sent_crc = be_u32(&prelude[8..12]);
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
    Ok(Some(total))
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .fold(0, |n, &byte| (n << 8) | u32::from(byte))
}

fn corrupt(what: impl Into<String>) -> FrameError {
    FrameError::Corrupt(what.into())
}

impl Frame {
    /// Reads one whole frame (`bytes` is exactly `total_length` long, its prelude checked).
    fn read(bytes: Bytes) -> Result<Self, FrameError> {
        let total = bytes.len();
        let body_end = total - 4;
        let sent_crc = be_u32(&bytes[body_end..]);
        let computed_crc = crc32fast::hash(&bytes[..body_end]);
        if computed_crc != sent_crc {
            return Err(corrupt(format!(
                "message checksum mismatch (expected {computed_crc:#010x}, got {sent_crc:#010x})"
            )));
        }
        let headers_len = be_u32(&bytes[4..8]) as usize;
        let headers_end = PRELUDE_BYTES
            .checked_add(headers_len)
            .filter(|&end| end <= body_end)
            .ok_or_else(|| {
                corrupt(format!(
                    "header block of {headers_len} bytes is longer than the frame"
                ))
            })?;
        let mut message_type = None;
        let mut kind = None;
        let mut at = PRELUDE_BYTES;
        while at < headers_end {
            let header = read_header(&bytes[..headers_end], at)?;
            at = header.next;
            if let Some(value) = header.string {
                let value = bytes.slice(value);
                match &bytes[header.name] {
                    b":message-type" => message_type = Some(value),
                    b":event-type" | b":exception-type" | b":error-code" => kind = Some(value),
                    _ => {}
                }
            }
        }
        Ok(Self {
            message_type: message_type
                .filter(|t| !t.is_empty())
                .unwrap_or(Bytes::from_static(b"event")),
            kind: kind.unwrap_or_default(),
            payload: bytes.slice(headers_end..body_end),
        })
    }
}

/// Where one header's parts are in the header block.
struct HeaderAt {
    name: std::ops::Range<usize>,
    /// The value, when it is a string (type 7; the only kind Kiro sends), checked as UTF-8.
    string: Option<std::ops::Range<usize>>,
    next: usize,
}

/// Reads the header starting at `at` of `block` (which ends where the header block ends).
fn read_header(block: &[u8], at: usize) -> Result<HeaderAt, FrameError> {
    let take = |from: usize, len: usize| -> Result<std::ops::Range<usize>, FrameError> {
        let end = from
            .checked_add(len)
            .filter(|&end| end <= block.len())
            .ok_or_else(|| corrupt("a header runs past the header block"))?;
        Ok(from..end)
    };
    let name_len = usize::from(block[at]);
    let name = take(at + 1, name_len)?;
    if !is_utf8(&block[name.clone()]) {
        return Err(corrupt("a header name is not UTF-8"));
    }
    let value_type = block[take(name.end, 1)?.start];
    let value_at = name.end + 1;
    // Byte arrays and strings: a u16 length, then the bytes.
    let sized = || -> Result<std::ops::Range<usize>, FrameError> {
        let len = take(value_at, 2)?;
        let n = u16::from_be_bytes([block[len.start], block[len.start + 1]]);
        take(len.end, usize::from(n))
    };
    let (value, string) = match value_type {
        0 | 1 => (value_at..value_at, false),
        2 => (take(value_at, 1)?, false),
        3 => (take(value_at, 2)?, false),
        4 => (take(value_at, 4)?, false),
        5 | 8 => (take(value_at, 8)?, false),
        9 => (take(value_at, 16)?, false),
        6 => (sized()?, false),
        7 => {
            let value = sized()?;
            if !is_utf8(&block[value.clone()]) {
                return Err(corrupt("a string header value is not UTF-8"));
            }
            (value, true)
        }
        other => return Err(corrupt(format!("unknown header value type {other}"))),
    };
    Ok(HeaderAt {
        name,
        next: value.end,
        string: string.then_some(value),
    })
}

/// Whether `bytes` is UTF-8. Header names and values are ASCII in practice, and the ASCII
/// test reads a word at a time where `from_utf8` takes a short string byte by byte (and
/// every frame has three headers).
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
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
            event_type: frame.kind().to_owned(),
            reason: e.to_string(),
        };
        let payload = &frame.payload;
        // Matched as bytes: the names are ASCII, and `message_type()`/`kind()` would check
        // them as UTF-8 again (they were when the frame was read).
        match &frame.message_type[..] {
            b"exception" => {
                let message = serde_json::from_slice::<MessagePayload>(payload)
                    .map(|p| p.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(payload).into_owned());
                return Ok(Self::Exception {
                    kind: frame.kind().to_owned(),
                    message,
                });
            }
            b"error" => {
                return Ok(Self::Error {
                    code: frame.kind().to_owned(),
                    message: String::from_utf8_lossy(payload).into_owned(),
                })
            }
            _ => {}
        }
        Ok(match &frame.kind[..] {
            b"assistantResponseEvent" => {
                let p: TextPayload = serde_json::from_slice(payload).map_err(fail)?;
                if p.followup_prompt.is_some() && p.content.is_empty() {
                    Self::Unknown("followupPrompt".into())
                } else {
                    Self::Text(p.content)
                }
            }
            b"toolUseEvent" => {
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
            b"reasoningContentEvent" => {
                let p: ReasoningPayload = serde_json::from_slice(payload).map_err(fail)?;
                match p.redacted_content.filter(|r| !r.is_empty()) {
                    Some(data) => Self::RedactedReasoning(data),
                    None => Self::Reasoning {
                        text: p.text,
                        signature: p.signature.filter(|s| !s.is_empty()),
                    },
                }
            }
            b"contextUsageEvent" => {
                let p: ContextUsagePayload = serde_json::from_slice(payload).map_err(fail)?;
                Self::ContextUsage(p.context_usage_percentage)
            }
            b"meteringEvent" => {
                let p: MeteringPayload = serde_json::from_slice(payload).map_err(fail)?;
                Self::Metering(p.usage)
            }
            b"metadataEvent" | b"messageMetadataEvent" => {
                let p: MetadataPayload = serde_json::from_slice(payload).map_err(fail)?;
                Self::Metadata {
                    usage: p.token_usage,
                    stop_reason: p.stop_reason,
                }
            }
            _ => Self::Unknown(frame.kind().to_owned()),
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
        assert_eq!(frame.message_type(), "event");
        assert_eq!(frame.kind(), "assistantResponseEvent");
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

    /// A frame with every header value type of the format (only strings are read; the rest
    /// are skipped), written by the AWS SDK's encoder, decodes to what the SDK wrote.
    #[test]
    fn every_header_type_is_skipped_or_read() {
        use aws_smithy_types::DateTime;
        let message = Message::new(Bytes::from_static(b"{\"content\":\"x\"}"))
            .add_header(Header::new("t", HeaderValue::Bool(true)))
            .add_header(Header::new("f", HeaderValue::Bool(false)))
            .add_header(Header::new("b", HeaderValue::Byte(7)))
            .add_header(Header::new("s", HeaderValue::Int16(-2)))
            .add_header(Header::new("i", HeaderValue::Int32(3)))
            .add_header(Header::new("l", HeaderValue::Int64(4)))
            .add_header(Header::new(
                "a",
                HeaderValue::ByteArray(Bytes::from_static(b"\x00\xff")),
            ))
            .add_header(Header::new(
                "d",
                HeaderValue::Timestamp(DateTime::from_secs(5)),
            ))
            .add_header(Header::new("u", HeaderValue::Uuid(u128::MAX)))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("assistantResponseEvent".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ));
        let mut bytes = Vec::new();
        write_message_to(&message, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push_bytes(Bytes::from(bytes));
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(frame.kind(), "assistantResponseEvent");
        assert_eq!(frame.message_type(), "event");
        assert_eq!(&frame.payload[..], b"{\"content\":\"x\"}");
        assert_eq!(decoder.pending(), 0);
    }

    /// Once its frames are taken (and used), the decoder holds nothing of the read they came
    /// from: a stream waiting for its next event keeps no read buffer alive.
    #[test]
    fn consumed_reads_are_released() {
        let mut two = vector();
        two.extend(vector());
        let read = Bytes::from(two);
        let mut decoder = FrameDecoder::new();
        decoder.push_bytes(read.clone());
        let frames = [
            decoder.next_frame().unwrap().unwrap(),
            decoder.next_frame().unwrap().unwrap(),
        ];
        assert!(decoder.next_frame().unwrap().is_none());
        drop(frames);
        assert!(read.is_unique(), "the decoder still holds the read");

        // The same for a frame completed across two reads.
        let frame = vector();
        let (first, second) = frame.split_at(50);
        decoder.push_bytes(Bytes::copy_from_slice(first));
        assert!(decoder.next_frame().unwrap().is_none());
        let last = Bytes::copy_from_slice(second);
        decoder.push_bytes(last.clone());
        drop(decoder.next_frame().unwrap().unwrap());
        assert!(last.is_unique());
        assert_eq!(decoder.pending(), 0);
    }

    /// Header blocks that lie about their contents are corrupt frames, not panics.
    #[test]
    fn broken_header_blocks_are_errors() {
        // (header block, what the error says)
        let cases: [(&[u8], &str); 5] = [
            (b"\x05:a", "runs past"),
            (b"\x01a\x07\x00\x09abc", "runs past"),
            (b"\x01a\x0c", "unknown header value type 12"),
            (b"\x01a\x07\x00\x02\xff\xfe", "not UTF-8"),
            (b"\x02\xc3a\x07\x00\x01a", "name is not UTF-8"),
        ];
        for (headers, says) in cases {
            let total = 16 + headers.len();
            let mut frame = Vec::new();
            frame.extend_from_slice(&(total as u32).to_be_bytes());
            frame.extend_from_slice(&(headers.len() as u32).to_be_bytes());
            let prelude_crc = crc32fast::hash(&frame);
            frame.extend_from_slice(&prelude_crc.to_be_bytes());
            frame.extend_from_slice(headers);
            let crc = crc32fast::hash(&frame);
            frame.extend_from_slice(&crc.to_be_bytes());
            let mut decoder = FrameDecoder::new();
            decoder.push(&frame);
            match decoder.next_frame() {
                Err(FrameError::Corrupt(message)) => {
                    assert!(message.contains(says), "{message} should say {says}")
                }
                other => panic!("{headers:?}: {other:?}"),
            }
        }
    }

    /// Header names and string values that are UTF-8 but not ASCII are read as they are.
    #[test]
    fn non_ascii_header_strings_are_read() {
        let frame = encode_frame("event", "événement", b"{}");
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame);
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(frame.kind(), "événement");
        assert_eq!(
            KiroEvent::from_frame(&frame).unwrap(),
            KiroEvent::Unknown("événement".into())
        );
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

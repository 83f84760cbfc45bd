//! What the in-process benches share.

use aiproxy::config::PipelineLayer;

/// The HTTP tier's switchable layers (what `--disable-layers` can switch off there).
pub const ALL_LAYERS: [PipelineLayer; 6] = [
    PipelineLayer::RequestId,
    PipelineLayer::Trace,
    PipelineLayer::CatchPanic,
    PipelineLayer::Metrics,
    PipelineLayer::Auth,
    PipelineLayer::Route,
];

/// A chat completion body of `words` words (`w0 w1 ...`; the fake echoes them, one event
/// each when streamed).
pub fn chat(words: usize, stream: bool) -> String {
    let content: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": content.join(" ")}],
        "stream": stream
    })
    .to_string()
}

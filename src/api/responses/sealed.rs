//! The `encrypted_content` of reasoning items. Kiro's thinking comes without a signature
//! aiproxy could hand on, so the item carries the thinking text itself, base64 behind a
//! marker: opaque to the client (as the API says it is), and read back when the client
//! returns the item, so the model sees its earlier reasoning again. Not encryption: the
//! client already has the text.

use base64::Engine;

const MARKER: &str = "aiproxy-thinking-v1:";

/// The opaque form of `thinking`.
pub fn seal(thinking: &str) -> String {
    format!(
        "{MARKER}{}",
        base64::engine::general_purpose::STANDARD.encode(thinking)
    )
}

/// The thinking text of a sealed string, if aiproxy made it.
pub fn open(sealed: &str) -> Option<String> {
    let data = sealed.strip_prefix(MARKER)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sealed_thinking_opens_and_foreign_content_does_not() {
        assert_eq!(
            super::open(&super::seal("步骤 one")).as_deref(),
            Some("步骤 one")
        );
        assert_eq!(super::open("gAAAAABo-openai-ciphertext"), None);
    }
}

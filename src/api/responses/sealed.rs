//! The `encrypted_content` of reasoning items: the thinking text itself and, for Kiro's
//! native reasoning, the signature Kiro gave it, base64 behind a marker: opaque to the client
//! (as the API says it is), and read back when the client returns the item, so the model
//! sees its earlier reasoning again (natively, when it is signed). Not encryption: the
//! client already has the text.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Unsigned thinking: the text.
const MARKER: &str = "aiproxy-thinking-v1:";
/// Signed thinking: the signature's length, `:`, the signature, the text.
const SIGNED_MARKER: &str = "aiproxy-thinking-v2:";

/// The opaque form of `thinking` (with its signature, when it has one).
pub fn seal(thinking: &str, signature: &str) -> String {
    if signature.is_empty() {
        return format!("{MARKER}{}", STANDARD.encode(thinking));
    }
    let packed = format!("{}:{signature}{thinking}", signature.len());
    format!("{SIGNED_MARKER}{}", STANDARD.encode(packed))
}

/// The thinking text and signature (empty when unsigned) of a sealed string, if aiproxy
/// made it.
pub fn open(sealed: &str) -> Option<(String, String)> {
    let decode = |data: &str| String::from_utf8(STANDARD.decode(data).ok()?).ok();
    if let Some(data) = sealed.strip_prefix(MARKER) {
        return Some((decode(data)?, String::new()));
    }
    let packed = decode(sealed.strip_prefix(SIGNED_MARKER)?)?;
    let (length, rest) = packed.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let signature = rest.get(..length)?;
    let text = rest.get(length..)?;
    Some((text.to_owned(), signature.to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sealed_thinking_opens_and_foreign_content_does_not() {
        let open = |sealed: &str| super::open(sealed);
        assert_eq!(
            open(&super::seal("步骤 one", "")),
            Some(("步骤 one".into(), String::new()))
        );
        assert_eq!(
            open(&super::seal("think: 3", "sig:with:colons")),
            Some(("think: 3".into(), "sig:with:colons".into()))
        );
        assert_eq!(open("gAAAAABo-openai-ciphertext"), None);
    }
}

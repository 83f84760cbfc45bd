//! Inline images as Kiro takes them (docs/kiro-protocol.md §4.2: `format` png, jpeg, gif or webp
//! plus base64 bytes), checked before anything goes upstream: a media type Kiro does not
//! take, data that is not base64, or bytes that are not the image the media type says, are
//! each a 400 that names the field, instead of an upstream `Improperly formed request`.
//! Remote image URLs are refused (aiproxy does not fetch them: no server-side requests on a
//! client's behalf), with a message that says to send the bytes.

use crate::chat::{ChatError, Part};
use base64::Engine;

/// The media types Kiro takes, with the magic bytes each file starts with.
const KINDS: [(&str, &[u8]); 4] = [
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF8"),
    ("image/webp", b"RIFF"),
];

/// An inline image part from a media type and base64 data; `path` names the field.
pub fn inline(media_type: &str, data: &str, path: &str) -> Result<Part, ChatError> {
    let Some((_, magic)) = KINDS.iter().find(|(kind, _)| *kind == media_type) else {
        return Err(ChatError::invalid(
            path,
            format!(
                "`{path}` has media type `{media_type}`; Kiro takes image/png, image/jpeg, image/gif or image/webp."
            ),
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            ChatError::invalid(
                path,
                format!("`{path}` is not valid base64 ({e}); send the image bytes base64-encoded, without a data: prefix."),
            )
        })?;
    let webp_ok = media_type != "image/webp" || bytes.get(8..12) == Some(b"WEBP");
    if !bytes.starts_with(magic) || !webp_ok {
        let actual = KINDS
            .iter()
            .find(|(_, m)| bytes.starts_with(m))
            .map_or("not an image Kiro takes", |(kind, _)| kind);
        return Err(ChatError::invalid(
            path,
            format!("`{path}` says `{media_type}` but the data is {actual}; send the matching media type."),
        ));
    }
    Ok(Part::Image {
        media_type: media_type.to_owned(),
        data: data.trim().to_owned(),
    })
}

/// The 400 for an image given by URL.
pub fn remote_refused(path: &str) -> ChatError {
    ChatError::invalid(
        path,
        format!(
            "`{path}` is a remote image URL; aiproxy does not fetch images. Download it and send the bytes \
             inline (OpenAI: a data:image/png;base64,... URL; Anthropic: a base64 image source)."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_real_image_passes_and_each_kind_of_lie_is_named() {
        let png = b64(b"\x89PNG\r\n\x1a\n rest");
        assert!(inline("image/png", &png, "p").is_ok());
        let error = inline("image/jpeg", &png, "p").unwrap_err().to_string();
        assert!(error.contains("image/png"), "{error}");
        let error = inline("image/bmp", &png, "p").unwrap_err().to_string();
        assert!(error.contains("image/bmp"), "{error}");
        let error = inline("image/png", "%%%", "p").unwrap_err().to_string();
        assert!(error.contains("not valid base64"), "{error}");
        let riff_not_webp = b64(b"RIFF\0\0\0\0WAVE");
        assert!(inline("image/webp", &riff_not_webp, "p").is_err());
        assert!(inline("image/webp", &b64(b"RIFF\0\0\0\0WEBPVP8 "), "p").is_ok());
    }
}

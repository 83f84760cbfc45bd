//! The model catalog: client-facing ids and the Kiro `modelId` behind each.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The catalog compiled into the binary (`config/models.toml`).
pub const DEFAULT_CATALOG: &str = include_str!("../../config/models.toml");

/// Appending this to any catalog id turns extended thinking on.
pub const THINKING_SUFFIX: &str = "-thinking";

/// One model clients can ask for.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Id clients send as `model`.
    pub id: String,
    /// Id sent to Kiro.
    pub kiro_model_id: String,
    /// Unix time shown on `/v1/models`.
    pub created: u64,
    /// Context window in tokens.
    pub context_window: u64,
    /// The most output tokens the model produces; a larger `max_tokens` is refused. `None`
    /// (a catalog file without the key) leaves `max_tokens` unchecked.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    model: Vec<ModelEntry>,
}

/// Errors while loading a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read model catalog {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("invalid model catalog {origin}: {message}")]
    Parse {
        /// The file, or `built-in`.
        origin: String,
        /// What is wrong, with its location.
        message: String,
    },
}

/// Lookup table of the models this proxy serves, in catalog order.
#[derive(Clone, Debug)]
pub struct Catalog {
    entries: Arc<[ModelEntry]>,
    by_id: Arc<HashMap<String, usize>>,
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(DEFAULT_CATALOG, "built-in")
    }

    /// Loads a catalog file (same format as `config/models.toml`).
    pub fn from_file(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        if file.model.is_empty() {
            return Err(CatalogError::Parse {
                origin: origin.to_owned(),
                message: "it lists no [[model]] entries".into(),
            });
        }
        let mut by_id = HashMap::with_capacity(file.model.len());
        for (position, entry) in file.model.iter().enumerate() {
            if by_id.insert(entry.id.clone(), position).is_some() {
                return Err(CatalogError::Parse {
                    origin: origin.to_owned(),
                    message: format!("model id `{}` is listed twice", entry.id),
                });
            }
        }
        Ok(Self {
            entries: file.model.into(),
            by_id: Arc::new(by_id),
        })
    }

    /// The entry for a client model id.
    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.by_id.get(id).and_then(|&i| self.entries.get(i))
    }

    /// Resolves a requested id: an exact id, or an id with the `-thinking` suffix (which
    /// turns thinking on). Returns the entry and whether the suffix was used.
    pub fn resolve(&self, id: &str) -> Option<(&ModelEntry, bool)> {
        if let Some(entry) = self.get(id) {
            return Some((entry, false));
        }
        let base = id.strip_suffix(THINKING_SUFFIX)?;
        self.get(base).map(|entry| (entry, true))
    }

    /// All entries, in catalog order.
    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_the_seed_ids_and_current_claude_ids() {
        let catalog = Catalog::builtin().unwrap();
        for id in [
            "claude-3-opus-20240229",
            "claude-3-sonnet-20240229",
            "claude-3-haiku-20240307",
        ] {
            assert!(catalog.get(id).is_some(), "{id}");
        }
        assert_eq!(
            catalog.get("claude-sonnet-4-5").unwrap().kiro_model_id,
            "claude-sonnet-4.5"
        );
        assert_eq!(
            catalog.get("claude-opus-4-6").unwrap().kiro_model_id,
            "claude-opus-4.6"
        );
        assert!(catalog.get("gpt-4").is_none());
        let (entry, thinking) = catalog.resolve("claude-sonnet-4-5-thinking").unwrap();
        assert_eq!((entry.id.as_str(), thinking), ("claude-sonnet-4-5", true));
        assert!(!catalog.resolve("claude-sonnet-4-5").unwrap().1);
        assert!(catalog.resolve("nope-thinking").is_none());
    }

    #[test]
    fn duplicates_and_unknown_keys_are_rejected() {
        let dup = "[[model]]\nid='a'\nkiro_model_id='x'\ncreated=1\ncontext_window=1\n\
                   [[model]]\nid='a'\nkiro_model_id='y'\ncreated=1\ncontext_window=1\n";
        let err = Catalog::parse(dup, "test").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let unknown =
            "[[model]]\nid='a'\nkiro_model_id='x'\ncreated=1\ncontext_window=1\ncolour=2\n";
        let err = Catalog::parse(unknown, "test").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }
}

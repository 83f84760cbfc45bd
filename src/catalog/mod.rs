//! The model catalog: the ids clients ask for, the Kiro `modelId` behind each, and what each
//! model can do.
//!
//! Two sources meet here (docs/kiro-protocol.md §13.3): the catalog file (`config/models.toml`,
//! or `--models-file`) with client ids, aliases and fallback targets, and what the accounts
//! serve right now, read from `ListAvailableModels` ([`Catalog::apply`]). Until an account
//! answered, the file alone is the catalog (its [`Snapshot::source`] says so); after that,
//! the merge of [`merge`] is. Readers take the current [`Snapshot`] (an `Arc`, swapped
//! whole on each refresh), so a refresh never blocks a request.

mod listing;
mod merge;

pub use listing::{Capabilities, ListedModel, Listing, PromptCaching, Reasoning};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// The catalog compiled into the binary (`config/models.toml`).
pub const DEFAULT_CATALOG: &str = include_str!("../../config/models.toml");

/// Appending this to any catalog id turns extended thinking on.
pub const THINKING_SUFFIX: &str = "-thinking";

/// Claude Code marks a 1M-token window with this suffix on the model name (§13.3); the id
/// without it is what is looked up.
pub const ONE_MILLION_SUFFIX: &str = "[1m]";

/// One model clients can ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    /// Id clients send as `model`.
    pub id: String,
    /// Id sent to the provider (Kiro's `modelId`; the catalog file's key of the same name).
    pub kiro_model_id: String,
    /// Unix time shown on `/v1/models`.
    pub created: u64,
    /// Context window in tokens.
    pub context_window: u64,
    /// The most output tokens the model produces; a larger `max_tokens` is refused. `None`
    /// (neither the accounts nor the file say) leaves `max_tokens` unchecked.
    pub max_output_tokens: Option<u64>,
    /// A human name (`modelName`, or the file's `display_name`).
    pub display_name: Option<String>,
    /// What the model can do (unknown, i.e. empty, for a model known only from the file).
    pub capabilities: Capabilities,
    /// The listing entry as the provider sent it (Kiro's `ListAvailableModels` entry), when
    /// the accounts listed the model.
    pub listed: Option<Arc<Value>>,
}

/// One `[[model]]` of the catalog file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileModel {
    /// Id clients send as `model`.
    pub id: String,
    /// The Kiro model it maps to.
    pub kiro_model_id: String,
    /// Kiro models to map to instead, in order, when the accounts do not serve
    /// `kiro_model_id` (e.g. a retired model's successor).
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// More client ids for the same model (dated ids, `[1m]` forms, ...).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Unix time shown on `/v1/models`.
    pub created: u64,
    /// Context window in tokens (the accounts' `maxInputTokens` wins when they list it).
    pub context_window: u64,
    /// Output limit (the accounts' `maxOutputTokens` wins when they list it).
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// A human name.
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    model: Vec<FileModel>,
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

/// Where the current catalog comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogSource {
    /// The catalog file alone: no account has listed its models (yet).
    File,
    /// What the accounts' `ListAvailableModels` answers list, merged with the file.
    Accounts,
}

/// The catalog as it stands after the last refresh.
#[derive(Clone, Debug)]
pub struct Snapshot {
    listed: Vec<Arc<ModelEntry>>,
    by_id: HashMap<String, Arc<ModelEntry>>,
    /// File ids whose Kiro models (fallbacks included) no account serves now.
    unserved: HashMap<String, String>,
    /// When each Kiro model was first listed (the `created` of models the file lacks).
    first_seen: HashMap<String, u64>,
    /// Where the catalog comes from.
    pub source: CatalogSource,
    /// When an account last answered `ListAvailableModels`.
    pub refreshed_at: Option<SystemTime>,
    /// Why accounts could not list their models at the last refresh (one line each).
    pub problems: Vec<String>,
    /// The accounts' `defaultModel`.
    pub default_model: Option<String>,
}

impl Snapshot {
    /// The listed entries, in order (the file's first, then models only the accounts know).
    pub fn entries(&self) -> &[Arc<ModelEntry>] {
        &self.listed
    }

    /// The entry for a client model id (listed, or a Kiro id the accounts serve).
    pub fn get(&self, id: &str) -> Option<&Arc<ModelEntry>> {
        self.by_id.get(id)
    }

    /// Resolves a requested id: an exact id, or one with the `-thinking` suffix (which turns
    /// thinking on), either one optionally with Claude Code's `[1m]` marker or a date
    /// (`-20260301`) or `-latest` the catalog does not list. Returns the entry and whether
    /// the suffix was used.
    pub fn resolve(&self, id: &str) -> Option<(&Arc<ModelEntry>, bool)> {
        if let Some(entry) = self.get(id) {
            return Some((entry, false));
        }
        let id = id.strip_suffix(ONE_MILLION_SUFFIX).unwrap_or(id);
        let (base, thinking) = match id.strip_suffix(THINKING_SUFFIX) {
            Some(base) => (base, true),
            None => (id, false),
        };
        self.get(base)
            .or_else(|| self.get(undated(base)?))
            .map(|entry| (entry, thinking))
    }

    /// Why `id` does not resolve, when the file knows it but the accounts do not serve its
    /// model now.
    pub fn unserved(&self, id: &str) -> Option<&str> {
        let id = id.strip_suffix(ONE_MILLION_SUFFIX).unwrap_or(id);
        self.unserved
            .get(id)
            .or_else(|| self.unserved.get(id.strip_suffix(THINKING_SUFFIX)?))
            .map(String::as_str)
    }
}

/// `base` of `base-20260301` or `base-latest`.
fn undated(id: &str) -> Option<&str> {
    if let Some(base) = id.strip_suffix("-latest") {
        return Some(base);
    }
    let (base, date) = id.rsplit_once('-')?;
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

struct Inner {
    origin: String,
    file: Vec<FileModel>,
    current: RwLock<Arc<Snapshot>>,
}

/// The live catalog. Cheap to clone; clones share it, so a refresh is seen everywhere.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("origin", &self.inner.origin)
            .field("source", &self.snapshot().source)
            .finish_non_exhaustive()
    }
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
        let invalid = |message: String| CatalogError::Parse {
            origin: origin.to_owned(),
            message,
        };
        let file: CatalogFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.model.is_empty() {
            return Err(invalid("it lists no [[model]] entries".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for id in file
            .model
            .iter()
            .flat_map(|m| std::iter::once(&m.id).chain(&m.aliases))
        {
            if !seen.insert(id) {
                return Err(invalid(format!("model id `{id}` is listed twice")));
            }
        }
        let snapshot = merge::from_file(&file.model);
        Ok(Self {
            inner: Arc::new(Inner {
                origin: origin.to_owned(),
                file: file.model,
                current: RwLock::new(Arc::new(snapshot)),
            }),
        })
    }

    /// `built-in` or the catalog file's path.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The catalog as it stands now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.inner.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// See [`Snapshot::resolve`].
    pub fn resolve(&self, id: &str) -> Option<(Arc<ModelEntry>, bool)> {
        self.snapshot()
            .resolve(id)
            .map(|(entry, thinking)| (Arc::clone(entry), thinking))
    }

    /// The error for an id that does not resolve (saying so when the file knows it but
    /// no account serves its model now).
    pub fn not_found(&self, id: &str) -> crate::chat::ChatError {
        crate::chat::ChatError::ModelNotFound {
            model: id.to_owned(),
            unserved: self.snapshot().unserved(id).map(str::to_owned),
        }
    }

    /// See [`Snapshot::get`].
    pub fn get(&self, id: &str) -> Option<Arc<ModelEntry>> {
        self.snapshot().get(id).cloned()
    }

    /// Rebuilds the catalog from what each account answered (`Err`: why it could not).
    /// Accounts that answered are merged with the file; when none did, the last merge that
    /// had answers stays (its problems updated), else the file alone.
    pub fn apply(&self, answers: &[(String, Result<Listing, String>)]) {
        let previous = self.snapshot();
        let listings: Vec<&Listing> = answers
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect();
        let problems = answers
            .iter()
            .filter_map(|(account, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("account `{account}`: {e}"))
            })
            .collect();
        let next = if listings.is_empty() {
            merge::keep(&previous, &self.inner.file, problems)
        } else {
            merge::with_listings(&self.inner.file, &listings, &previous, problems)
        };
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

#[cfg(test)]
mod tests;

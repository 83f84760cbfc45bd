//! How the catalog file and the accounts' listings become one [`Snapshot`].
//!
//! - A file entry is listed when the accounts serve its `kiro_model_id` or, failing that,
//!   one of its `fallbacks` (first served wins); its aliases are listed beside it. The
//!   accounts' limits and capabilities win over the file's.
//! - A model the accounts serve that no file entry maps to is listed under its Anthropic-
//!   style id (`claude-opus-5.1` -> `claude-opus-5-1`, `claude-sonnet-4.5-1m` ->
//!   `claude-sonnet-4-5[1m]`; other models under their Kiro id), so new models work the
//!   day Kiro serves them.
//! - Every Kiro id the accounts serve also resolves as itself (not listed twice).
//! - A file entry whose models are not served is not listed; asking for it says why.

use super::listing::{ListedModel, Listing};
use super::{CatalogSource, FileModel, ModelEntry, Snapshot, ONE_MILLION_SUFFIX};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Window assumed for a served model whose entry gives no `maxInputTokens`.
const DEFAULT_CONTEXT_WINDOW: u64 = 200_000;

/// The file alone.
pub(super) fn from_file(file: &[FileModel]) -> Snapshot {
    let mut built = Builder::default();
    for model in file {
        let entry = ModelEntry {
            id: model.id.clone(),
            kiro_model_id: model.kiro_model_id.clone(),
            created: model.created,
            context_window: model.context_window,
            max_output_tokens: model.max_output_tokens,
            display_name: model.display_name.clone(),
            capabilities: Default::default(),
            listed: None,
        };
        built.list_with_aliases(entry, &model.aliases);
    }
    built.finish(CatalogSource::File)
}

/// No account answered: the last merge with answers stays (it is closer to the truth than
/// the file), else the file; either way with the new problems.
pub(super) fn keep(previous: &Snapshot, file: &[FileModel], problems: Vec<String>) -> Snapshot {
    if previous.source == CatalogSource::File {
        return Snapshot {
            problems,
            ..from_file(file)
        };
    }
    Snapshot {
        problems,
        ..previous.clone()
    }
}

/// The file merged with what the accounts serve (see the module docs).
pub(super) fn with_listings(
    file: &[FileModel],
    listings: &[&Listing],
    previous: &Snapshot,
    problems: Vec<String>,
) -> Snapshot {
    let now = SystemTime::now();
    let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // The union of what the accounts serve; the first account's entry describes a model.
    let mut served: Vec<(&ListedModel, Arc<serde_json::Value>)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for model in listings.iter().flat_map(|l| &l.models) {
        if !position.contains_key(model.id.as_str()) {
            position.insert(&model.id, served.len());
            served.push((model, Arc::new(model.raw.clone())));
        }
    }
    let mut first_seen = previous.first_seen.clone();
    for (model, _) in &served {
        first_seen.entry(model.id.clone()).or_insert(now_unix);
    }
    let mut built = Builder::default();
    let mut unserved = HashMap::new();
    for model in file {
        let target = std::iter::once(&model.kiro_model_id)
            .chain(&model.fallbacks)
            .find_map(|id| position.get(id.as_str()).map(|&i| &served[i]));
        let Some((live, raw)) = target else {
            for id in std::iter::once(&model.id).chain(&model.aliases) {
                unserved.insert(id.clone(), model.kiro_model_id.clone());
            }
            continue;
        };
        let entry = ModelEntry {
            id: model.id.clone(),
            kiro_model_id: live.id.clone(),
            created: model.created,
            context_window: live.max_input_tokens.unwrap_or(model.context_window),
            max_output_tokens: live.max_output_tokens.or(model.max_output_tokens),
            display_name: model.display_name.clone().or_else(|| live.name.clone()),
            capabilities: live.capabilities.clone(),
            listed: Some(Arc::clone(raw)),
        };
        built.list_with_aliases(entry, &model.aliases);
    }
    for (live, raw) in &served {
        let from_live = |id: String| ModelEntry {
            id,
            kiro_model_id: live.id.clone(),
            created: first_seen.get(&live.id).copied().unwrap_or(now_unix),
            context_window: live.max_input_tokens.unwrap_or(DEFAULT_CONTEXT_WINDOW),
            max_output_tokens: live.max_output_tokens,
            display_name: live.name.clone(),
            capabilities: live.capabilities.clone(),
            listed: Some(Arc::clone(raw)),
        };
        // The entry under the model's own dashed id describes it best; else the first.
        let listed_as = built
            .by_id
            .get(&client_id(&live.id))
            .filter(|e| e.kiro_model_id == live.id)
            .or_else(|| built.by_kiro.get(&live.id))
            .cloned();
        match listed_as {
            // Mapped by the file: its Kiro id resolves to the same model, unlisted.
            Some(entry) => built.hide(ModelEntry {
                id: live.id.clone(),
                ..(*entry).clone()
            }),
            None => {
                built.list(from_live(client_id(&live.id)));
                built.hide(from_live(live.id.clone()));
            }
        }
    }
    Snapshot {
        unserved,
        first_seen,
        refreshed_at: Some(now),
        problems,
        default_model: listings.iter().find_map(|l| l.default_model.clone()),
        ..built.finish(CatalogSource::Accounts)
    }
}

/// The id a model the file does not know is listed under.
fn client_id(kiro_id: &str) -> String {
    if !kiro_id.starts_with("claude-") {
        return kiro_id.to_owned();
    }
    match kiro_id.strip_suffix("-1m") {
        Some(base) => format!("{}{ONE_MILLION_SUFFIX}", base.replace('.', "-")),
        None => kiro_id.replace('.', "-"),
    }
}

#[derive(Default)]
struct Builder {
    listed: Vec<Arc<ModelEntry>>,
    by_id: HashMap<String, Arc<ModelEntry>>,
    /// The first listed entry of each Kiro model.
    by_kiro: HashMap<String, Arc<ModelEntry>>,
}

impl Builder {
    /// Lists `entry` unless its id is taken (the first claim wins).
    fn list(&mut self, entry: ModelEntry) {
        if let Some(entry) = self.insert(entry) {
            self.by_kiro
                .entry(entry.kiro_model_id.clone())
                .or_insert_with(|| Arc::clone(&entry));
            self.listed.push(entry);
        }
    }

    fn list_with_aliases(&mut self, entry: ModelEntry, aliases: &[String]) {
        let copies: Vec<ModelEntry> = aliases
            .iter()
            .map(|alias| ModelEntry {
                id: alias.clone(),
                ..entry.clone()
            })
            .collect();
        self.list(entry);
        for copy in copies {
            self.list(copy);
        }
    }

    /// Makes `entry` resolvable without listing it (unless its id is taken).
    fn hide(&mut self, entry: ModelEntry) {
        self.insert(entry);
    }

    fn insert(&mut self, entry: ModelEntry) -> Option<Arc<ModelEntry>> {
        if self.by_id.contains_key(&entry.id) {
            return None;
        }
        let entry = Arc::new(entry);
        self.by_id.insert(entry.id.clone(), Arc::clone(&entry));
        Some(entry)
    }

    fn finish(self, source: CatalogSource) -> Snapshot {
        Snapshot {
            listed: self.listed,
            by_id: self.by_id,
            unserved: HashMap::new(),
            first_seen: HashMap::new(),
            source,
            refreshed_at: None,
            problems: Vec::new(),
            default_model: None,
        }
    }
}

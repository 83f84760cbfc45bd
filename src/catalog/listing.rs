//! What an account says it serves: the models its provider listed, with each one's limits
//! and capabilities, in the provider's own terms where the fields are named after them
//! (Kiro's `ListAvailableModels`, docs/kiro-protocol.md §13.3, is the one provider so far).

use serde_json::Value;

/// One model an account serves, as its provider listed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedModel {
    /// `modelId`, what the chat call's `modelId` takes.
    pub id: String,
    /// What the model can do, read from the entry.
    pub capabilities: Capabilities,
    /// `tokenLimits.maxInputTokens`.
    pub max_input_tokens: Option<u64>,
    /// `tokenLimits.maxOutputTokens`.
    pub max_output_tokens: Option<u64>,
    /// `modelName`.
    pub name: Option<String>,
    /// The entry as Kiro sent it (fields we do not read are kept and shown).
    pub raw: Value,
}

/// What a model can do (from its `ListAvailableModels` entry, or unknown for a model known
/// only from the catalog file).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capabilities {
    /// `supportedInputTypes`, lower-cased (`text`, `image`); empty when unknown.
    pub input_types: Vec<String>,
    /// Native reasoning (`additionalModelRequestFieldsSchema`); `None`: none (or unknown).
    pub reasoning: Option<Reasoning>,
    /// `promptCaching`, when the model supports it.
    pub prompt_caching: Option<PromptCaching>,
    /// The model's request-fields schema has a `max_tokens` property: the limit can be
    /// sent to Kiro instead of cut locally.
    pub native_max_tokens: bool,
    /// `rateMultiplier`: what one request costs relative to the base rate.
    pub rate_multiplier: Option<f64>,
    /// `rateUnit` (`Credit`).
    pub rate_unit: Option<String>,
}

impl Capabilities {
    /// Whether the model is known not to take images.
    pub fn refuses_images(&self) -> bool {
        !self.input_types.is_empty() && !self.input_types.iter().any(|t| t == "image")
    }
}

/// The native reasoning a model takes (the `enum`s of its request-fields schema).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reasoning {
    /// `thinking.type` values (`adaptive`, `disabled`, ...).
    pub thinking_types: Vec<String>,
    /// `thinking.display` values (`summarized`, `omitted`).
    pub display: Vec<String>,
    /// `output_config.effort` (or `reasoning.effort`) values, weakest first as listed.
    pub effort_levels: Vec<String>,
    /// Which field takes the effort: `output_config` (Claude models) or `reasoning` (GPT
    /// models).
    pub effort_key: &'static str,
}

/// A model's prompt-caching limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromptCaching {
    /// `maximumCacheCheckpointsPerRequest`.
    pub max_checkpoints: Option<u64>,
    /// `minimumTokensPerCacheCheckpoint`.
    pub min_tokens_per_checkpoint: Option<u64>,
}

/// Everything the account's pages listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    /// The models, in Kiro's order.
    pub models: Vec<ListedModel>,
    /// `defaultModel.modelId` (e.g. `auto`).
    pub default_model: Option<String>,
}

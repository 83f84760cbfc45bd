//! Extended thinking over Kiro (docs/kiro-protocol.md §4.4): a request asks for it with prompt
//! tags, and the model answers with `<thinking>…</thinking>` at the start of its text, which
//! [`ThinkingSplitter`] separates into thinking and text deltas, even when the tags are split
//! across events.

use crate::chat::{Effort, Thinking};
use crate::kiro::accounts::model_list::Reasoning;

/// Default budget when thinking is on without one (`-thinking` model ids).
pub const DEFAULT_BUDGET: u32 = 20_000;
/// Kiro's accepted range of `max_thinking_length` (A2 clamps to this).
pub const BUDGET_RANGE: (u32, u32) = (1_024, 24_576);

const OPEN: &str = "<thinking>";
const CLOSE: &str = "</thinking>";

/// The tags that switch thinking on, placed in front of the first user turn.
pub fn prompt_prefix(thinking: Thinking) -> String {
    match thinking {
        Thinking::Enabled { budget_tokens } => {
            let budget = budget_tokens.clamp(BUDGET_RANGE.0, BUDGET_RANGE.1);
            format!("<thinking_mode>enabled</thinking_mode><max_thinking_length>{budget}</max_thinking_length>")
        }
        Thinking::Adaptive { effort } => format!(
            "<thinking_mode>adaptive</thinking_mode><thinking_effort>{}</thinking_effort>",
            // The tags know three levels; the two above high are high there.
            match effort {
                Effort::Xhigh | Effort::Max => "high",
                other => other.as_str(),
            }
        ),
    }
}

/// The effort a budget asks for, when the model takes an effort level instead of a
/// budget: up to 4 096 tokens low, up to 16 384 medium, more high.
pub fn effort_of_budget(budget_tokens: u32) -> Effort {
    match budget_tokens {
        0..=4_096 => Effort::Low,
        4_097..=16_384 => Effort::Medium,
        _ => Effort::High,
    }
}

/// Kiro's native reasoning switch (`additionalModelRequestFields`, §13.1) for `thinking`
/// on a model whose capabilities are `reasoning`: adaptive thinking, at the requested effort
/// or, when the model does not take that level, the strongest level it takes below it (the
/// weakest it takes when none is below). `None` when the model's schema offers neither
/// adaptive thinking nor effort levels.
pub fn native_fields(thinking: Thinking, reasoning: &Reasoning) -> Option<serde_json::Value> {
    let wanted = match thinking {
        Thinking::Enabled { budget_tokens } => effort_of_budget(budget_tokens),
        Thinking::Adaptive { effort } => effort,
    };
    let adaptive = reasoning.thinking_types.iter().any(|t| t == "adaptive");
    let effort = clamp_effort(wanted, &reasoning.effort_levels);
    if reasoning.effort_key == "reasoning" {
        let effort = effort?;
        return Some(serde_json::json!({ "reasoning": { "effort": effort } }));
    }
    let mut fields = serde_json::Map::new();
    if adaptive {
        fields.insert("thinking".into(), serde_json::json!({ "type": "adaptive" }));
    }
    if let Some(effort) = effort {
        fields.insert(
            "output_config".into(),
            serde_json::json!({ "effort": effort }),
        );
    }
    (!fields.is_empty()).then_some(serde_json::Value::Object(fields))
}

/// `wanted`, or the strongest of `levels` below it, or the weakest of `levels`.
fn clamp_effort(wanted: Effort, levels: &[String]) -> Option<String> {
    let offered = |e: &Effort| levels.iter().any(|l| l == e.as_str());
    Effort::ALL
        .iter()
        .rev()
        .filter(|e| **e <= wanted)
        .find(|e| offered(e))
        .or_else(|| Effort::ALL.iter().find(|e| offered(e)))
        .map(|e| e.as_str().to_owned())
}

/// A piece of split output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Thinking text.
    Thinking(String),
    /// Visible text.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting to see whether the answer opens with `<thinking>`.
    Detect,
    /// Inside the thinking block.
    Thinking,
    /// Just after `</thinking>`: drop the blank line that separates it from the answer.
    AfterThinking,
    /// Plain text from here on.
    Text,
}

/// Splits streamed text into thinking and visible text.
#[derive(Debug)]
pub struct ThinkingSplitter {
    mode: Mode,
    pending: String,
}

impl Default for ThinkingSplitter {
    fn default() -> Self {
        Self {
            mode: Mode::Detect,
            pending: String::new(),
        }
    }
}

impl ThinkingSplitter {
    /// Feeds one text delta; returns what can be emitted now.
    pub fn push(&mut self, delta: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.mode == Mode::Text {
            if !delta.is_empty() {
                out.push(Piece::Text(delta.to_owned()));
            }
            return out;
        }
        self.pending.push_str(delta);
        loop {
            match self.mode {
                Mode::Detect => {
                    let trimmed = self.pending.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.mode = Mode::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return out; // could still become the opening tag
                    } else {
                        self.mode = Mode::Text;
                        push_text(&mut out, std::mem::take(&mut self.pending));
                        return out;
                    }
                }
                Mode::Thinking => match self.pending.find(CLOSE) {
                    Some(at) => {
                        let thinking: String = self.pending[..at].to_owned();
                        self.pending = self.pending[at + CLOSE.len()..].to_owned();
                        push_thinking(&mut out, thinking);
                        self.mode = Mode::AfterThinking;
                    }
                    None => {
                        let keep = partial_suffix(&self.pending, CLOSE);
                        let emit = self.pending.len() - keep;
                        let thinking: String = self.pending.drain(..emit).collect();
                        push_thinking(&mut out, thinking);
                        return out;
                    }
                },
                Mode::AfterThinking => {
                    let trimmed = self.pending.trim_start_matches(['\n', '\r', ' ']);
                    if trimmed.is_empty() {
                        self.pending.clear();
                        return out;
                    }
                    self.mode = Mode::Text;
                    push_text(&mut out, trimmed.to_owned());
                    self.pending.clear();
                    return out;
                }
                Mode::Text => return out,
            }
        }
    }

    /// End of output: whatever is still held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        match self.mode {
            Mode::Thinking => push_thinking(&mut out, rest),
            Mode::Detect | Mode::Text => push_text(&mut out, rest),
            Mode::AfterThinking => {}
        }
        self.mode = Mode::Text;
        out
    }
}

fn push_text(out: &mut Vec<Piece>, text: String) {
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
}

fn push_thinking(out: &mut Vec<Piece>, text: String) {
    if !text.is_empty() {
        out.push(Piece::Thinking(text));
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| {
            text.len() >= n
                && text.is_char_boundary(text.len() - n)
                && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(deltas: &[&str]) -> Vec<Piece> {
        let mut splitter = ThinkingSplitter::default();
        let mut out: Vec<Piece> = deltas.iter().flat_map(|d| splitter.push(d)).collect();
        out.extend(splitter.finish());
        // Merge neighbours of the same kind so assertions do not depend on chunking.
        let mut merged: Vec<Piece> = Vec::new();
        for piece in out {
            match (merged.last_mut(), piece) {
                (Some(Piece::Thinking(a)), Piece::Thinking(b)) => a.push_str(&b),
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, piece) => merged.push(piece),
            }
        }
        merged
    }

    fn expected() -> Vec<Piece> {
        vec![
            Piece::Thinking("Let me think.".into()),
            Piece::Text("Answer.".into()),
        ]
    }

    #[test]
    fn whole_and_split_at_every_position() {
        let full = "<thinking>Let me think.</thinking>\n\nAnswer.";
        assert_eq!(run(&[full]), expected());
        for cut in 1..full.len() {
            assert_eq!(
                run(&[&full[..cut], &full[cut..]]),
                expected(),
                "cut at {cut}"
            );
        }
        let chars: Vec<String> = full.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&refs), expected(), "one character per event");
    }

    #[test]
    fn text_without_thinking_passes_through() {
        assert_eq!(
            run(&["Hello ", "<thinking> is a tag"]),
            vec![Piece::Text("Hello <thinking> is a tag".into())]
        );
        assert_eq!(
            run(&["<thi", "s is not it"]),
            vec![Piece::Text("<this is not it".into())]
        );
    }

    #[test]
    fn unfinished_thinking_is_flushed_as_thinking() {
        assert_eq!(
            run(&["<thinking>still going</thin"]),
            vec![Piece::Thinking("still going</thin".into())]
        );
    }

    #[test]
    fn prefix_tags() {
        assert_eq!(
            prompt_prefix(Thinking::Enabled { budget_tokens: 100 }),
            "<thinking_mode>enabled</thinking_mode><max_thinking_length>1024</max_thinking_length>"
        );
        assert!(prompt_prefix(Thinking::Adaptive {
            effort: crate::chat::Effort::High
        })
        .contains("<thinking_effort>high</thinking_effort>"));
    }
}

#[cfg(test)]
mod native_tests {
    use super::*;

    fn claude(levels: &[&str]) -> Reasoning {
        Reasoning {
            thinking_types: vec!["adaptive".into(), "disabled".into()],
            display: Vec::new(),
            effort_levels: levels.iter().map(|l| (*l).to_owned()).collect(),
            effort_key: "output_config",
        }
    }

    fn adaptive(effort: Effort) -> Thinking {
        Thinking::Adaptive { effort }
    }

    #[test]
    fn the_effort_is_clamped_to_what_the_model_takes() {
        let sonnet = claude(&["low", "medium", "high", "max"]);
        let effort = |t| native_fields(t, &sonnet).unwrap()["output_config"]["effort"].clone();
        assert_eq!(effort(adaptive(Effort::Xhigh)), "high");
        assert_eq!(effort(adaptive(Effort::Max)), "max");
        assert_eq!(
            effort(Thinking::Enabled {
                budget_tokens: 1024
            }),
            "low"
        );
        assert_eq!(
            effort(Thinking::Enabled {
                budget_tokens: 10_000
            }),
            "medium"
        );
        assert_eq!(
            effort(Thinking::Enabled {
                budget_tokens: 64_000
            }),
            "high"
        );
        // Nothing at or below the wish: the weakest level the model takes.
        let strong = claude(&["high", "max"]);
        assert_eq!(
            native_fields(adaptive(Effort::Low), &strong).unwrap()["output_config"]["effort"],
            "high"
        );
        assert_eq!(
            native_fields(adaptive(Effort::High), &sonnet).unwrap()["thinking"],
            serde_json::json!({"type": "adaptive"})
        );
    }

    #[test]
    fn gpt_models_take_reasoning_effort_and_empty_schemas_nothing() {
        let gpt = Reasoning {
            effort_levels: vec!["low".into(), "medium".into(), "high".into()],
            effort_key: "reasoning",
            ..Reasoning::default()
        };
        assert_eq!(
            native_fields(adaptive(Effort::Max), &gpt),
            Some(serde_json::json!({"reasoning": {"effort": "high"}}))
        );
        assert_eq!(
            native_fields(adaptive(Effort::High), &Reasoning::default()),
            None
        );
    }
}

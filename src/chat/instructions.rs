//! The instructions aiproxy itself adds to a conversation's system prompt, where Kiro has no
//! switch for what a client asked (a completion of text, a forced tool, a structured answer,
//! a verbosity). Each site takes its words from here, so the fake Kiro can tell them from the
//! client's own: its echo is the client's text, as a model's answer would be.

/// Legacy `/v1/completions`: continue the prompt's text.
pub const CONTINUE_TEXT: &str = "You continue text. The user's message is the beginning of a text; reply with its continuation only: no repetition of the beginning, no quotes, no commentary.";

/// The Responses API's `text.verbosity: low`.
pub const VERBOSITY_LOW: &str = "Be concise: answer in as few words as the task allows.";

/// The Responses API's `text.verbosity: high`.
pub const VERBOSITY_HIGH: &str = "Be thorough: explain your answer in detail.";

/// A forced choice of any tool.
pub const CALL_ANY_TOOL: &str =
    "Answer this turn by calling one of the tools provided. Do not answer with text alone.";

/// A forced choice of the tool `name`.
pub fn call_tool(name: &str) -> String {
    format!(
        "Answer this turn by calling the tool `{name}`. Do not answer with text alone and do not call another tool first."
    )
}

/// Structured output, answered through the tool `name`.
pub fn answer_with_tool(name: &str) -> String {
    format!(
        "Give your final answer by calling the tool `{name}`: its input is your answer, and it must match the tool's input schema exactly. Do not write the answer as text."
    )
}

/// How each instruction above begins.
const OPENINGS: [&str; 5] = [
    "You continue text. ",
    "Be concise: answer in as few words",
    "Be thorough: explain your answer",
    "Answer this turn by calling ",
    "Give your final answer by calling the tool `",
];

/// `text` without the paragraphs (separated by a blank line, as system parts are joined)
/// that are aiproxy's own instructions.
pub fn without_added(text: &str) -> String {
    text.split("\n\n")
        .filter(|paragraph| {
            !OPENINGS
                .iter()
                .any(|opening| paragraph.trim_start().starts_with(opening))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aiproxys_own_paragraphs_are_dropped() {
        let text = format!(
            "{CONTINUE_TEXT}\n\nBe brief.\n\n{}\n\nOnce upon a time",
            call_tool("f")
        );
        assert_eq!(without_added(&text), "Be brief.\n\nOnce upon a time");
        assert_eq!(without_added("plain"), "plain");
    }
}

//! The request rules Kiro enforces (docs/kiro-protocol.md §4.3). Whether the model is served is
//! the fake's own check (its model list changes at run time).

use crate::kiro::protocol::wire::{HistoryEntry, KiroRequest, KiroTool, UserInputMessage};
use std::collections::HashSet;

/// Kiro's limit on a tool name, in characters (§4.3 rule 7).
pub const TOOL_NAME_LIMIT: usize = 64;
/// Kiro's limit on a tool description, in characters, on the final string (§4.3 rule 8,
/// §13.1).
pub const TOOL_DESCRIPTION_LIMIT: usize = 10_000;

/// The §4.3 rules, as the real service enforces them.
pub fn validate(request: &KiroRequest) -> Result<(), String> {
    let state = &request.conversation_state;
    let current = &state.current_message.user_input_message;
    check_user(current, "currentMessage")?;

    let mut expect_user = true;
    let mut previous_uses: Option<HashSet<&str>> = None;
    let mut used_names: HashSet<String> = HashSet::new();
    let mut traffic = false;
    for (index, entry) in state.history.iter().enumerate() {
        match entry {
            HistoryEntry::UserInputMessage(user) => {
                if !expect_user {
                    return Err(format!("history[{index}]: two user messages in a row"));
                }
                check_user(user, &format!("history[{index}]"))?;
                let results = result_ids(user);
                traffic |= !results.is_empty();
                check_pairing(previous_uses.take(), results, index)?;
            }
            HistoryEntry::AssistantResponseMessage(assistant) => {
                if expect_user {
                    return Err(format!(
                        "history[{index}]: expected a user message (history must start with user and alternate)"
                    ));
                }
                if assistant.content.is_empty() {
                    return Err(format!("history[{index}]: empty assistant content"));
                }
                let mut uses = HashSet::new();
                for tool_use in &assistant.tool_uses {
                    if !uses.insert(tool_use.tool_use_id.as_str()) {
                        return Err(format!(
                            "history[{index}]: duplicate toolUseId {}",
                            tool_use.tool_use_id
                        ));
                    }
                    used_names.insert(tool_use.name.to_ascii_lowercase());
                    traffic = true;
                }
                previous_uses = Some(uses);
            }
        }
        expect_user = !expect_user;
    }
    if !expect_user {
        return Err("history must end with an assistant message".into());
    }
    let current_results = result_ids(current);
    traffic |= !current_results.is_empty();
    check_pairing(previous_uses, current_results, state.history.len())?;

    let tools = current.tools();
    let mut defined = HashSet::new();
    let mut after_tool = false;
    for tool in tools {
        let KiroTool::ToolSpecification(spec) = tool else {
            // A checkpoint caches what comes before it: one first, or two in a row, is stray
            // (docs/kiro-protocol.md §12: a stray `cachePoint` is a 400).
            if let KiroTool::CachePoint(point) = tool {
                if point.kind != "default" {
                    return Err(format!("cachePoint type `{}` (only `default`)", point.kind));
                }
            }
            if !after_tool {
                return Err("a cachePoint must follow a toolSpecification".into());
            }
            after_tool = false;
            continue;
        };
        after_tool = true;
        let name_length = spec.name.chars().count();
        if name_length == 0 || name_length > TOOL_NAME_LIMIT {
            return Err(format!(
                "tool name `{}` must be 1..={TOOL_NAME_LIMIT} characters",
                spec.name
            ));
        }
        if spec.description.is_empty() {
            return Err(format!("tool `{}` has an empty description", spec.name));
        }
        let description_length = spec.description.chars().count();
        if description_length > TOOL_DESCRIPTION_LIMIT {
            return Err(format!(
                "tool `{}` has a description of {description_length} characters (at most {TOOL_DESCRIPTION_LIMIT})",
                spec.name
            ));
        }
        defined.insert(spec.name.to_ascii_lowercase());
    }
    if traffic && defined.is_empty() {
        return Err("tool uses/results present but currentMessage defines no tools".into());
    }
    if let Some(missing) = used_names.iter().find(|name| !defined.contains(*name)) {
        return Err(format!(
            "tool `{missing}` is used in history but not defined"
        ));
    }
    Ok(())
}

fn check_user(message: &UserInputMessage, at: &str) -> Result<(), String> {
    if message.content.is_empty() {
        return Err(format!("{at}: empty content"));
    }
    if message.model_id.is_empty() {
        return Err(format!("{at}: missing modelId"));
    }
    if message.origin.is_empty() {
        return Err(format!("{at}: missing origin"));
    }
    Ok(())
}

fn result_ids(message: &UserInputMessage) -> Vec<&str> {
    message
        .user_input_message_context
        .as_ref()
        .map(|c| {
            c.tool_results
                .iter()
                .map(|r| r.tool_use_id.as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn check_pairing(
    uses: Option<HashSet<&str>>,
    results: Vec<&str>,
    index: usize,
) -> Result<(), String> {
    let uses = uses.unwrap_or_default();
    let mut answered = HashSet::new();
    for id in results {
        if !uses.contains(id) {
            return Err(format!("turn {index}: toolResult {id} answers no tool use"));
        }
        if !answered.insert(id) {
            return Err(format!("turn {index}: duplicate toolResult {id}"));
        }
    }
    if answered.len() != uses.len() {
        return Err(format!(
            "turn {index}: a tool use of the previous turn has no result"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

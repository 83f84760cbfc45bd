//! One fixture per normalisation rule.

use super::*;
use crate::chat::{Metadata, Sampling};
use serde_json::json;

fn request(system: &[&str], messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "claude-sonnet-4-5".into(),
        system: system.iter().map(|s| s.to_string()).collect(),
        messages,
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        single_tool_call: false,
        output: None,
        sampling: Sampling::default(),
        thinking: None,
        stream: false,
        metadata: Metadata::default(),
        cache_marks: Default::default(),
        web_search: None,
    }
}

fn options() -> BuildOptions<'static> {
    BuildOptions {
        kiro_model_id: "claude-sonnet-4.5",
        profile_arn: None,
        conversation_id: "conv-1".into(),
        thinking: None,
        reasoning: None,
        replay_signatures: true,
        native_max_tokens: None,
        prompt_caching: None,
    }
}

fn user(text: &str) -> Message {
    Message::text(Role::User, text)
}

fn assistant(text: &str) -> Message {
    Message::text(Role::Assistant, text)
}

/// History as (role letter, content) pairs, plus the current content.
fn shape(built: &BuiltRequest) -> (Vec<(char, String)>, String) {
    let state = &built.body.conversation_state;
    let history = state
        .history
        .iter()
        .map(|entry| match entry {
            HistoryEntry::UserInputMessage(m) => ('u', m.content.clone()),
            HistoryEntry::AssistantResponseMessage(m) => ('a', m.content.clone()),
        })
        .collect();
    (
        history,
        state.current_message.user_input_message.content.clone(),
    )
}

/// The current (last user) message of a built request.
fn current(built: &BuiltRequest) -> &UserInputMessage {
    &built
        .body
        .conversation_state
        .current_message
        .user_input_message
}

/// Its tools/tool-results context, which the test expects to be there.
fn current_context(built: &BuiltRequest) -> &UserInputMessageContext {
    current(built).user_input_message_context.as_ref().unwrap()
}

fn tool_use(id: &str, name: &str) -> Part {
    Part::ToolUse {
        id: id.into(),
        name: name.into(),
        input: json!({"path": "a.txt"}),
    }
}

fn tool_result(id: &str, content: &str) -> Part {
    Part::ToolResult {
        tool_use_id: id.into(),
        content: content.into(),
        is_error: false,
    }
}

#[test]
fn single_turn_with_system_goes_to_current_message() {
    let built = build(&request(&["Be brief."], vec![user("Hello")]), &options());
    assert_eq!(shape(&built), (vec![], "Be brief.\n\nHello".into()));
    let json = serde_json::to_value(&built.body).unwrap();
    assert!(
        json["conversationState"].get("history").is_none(),
        "empty history is omitted"
    );
    assert_eq!(
        json["conversationState"]["currentMessage"]["userInputMessage"]["modelId"],
        "claude-sonnet-4.5"
    );
    assert_eq!(
        json["conversationState"]["currentMessage"]["userInputMessage"]["origin"],
        "AI_EDITOR"
    );
    assert_eq!(json["conversationState"]["conversationId"], "conv-1");
    assert!(json.get("profileArn").is_none());
}

#[test]
fn multi_turn_system_goes_to_first_history_user() {
    let built = build(
        &request(&["S1", "S2"], vec![user("q1"), assistant("a1"), user("q2")]),
        &options(),
    );
    assert_eq!(
        shape(&built),
        (
            vec![('u', "S1\n\nS2\n\nq1".into()), ('a', "a1".into())],
            "q2".into()
        )
    );
}

#[test]
fn same_role_turns_are_merged() {
    let built = build(
        &request(
            &[],
            vec![
                user("a"),
                user("b"),
                assistant("c"),
                assistant("d"),
                user("e"),
            ],
        ),
        &options(),
    );
    assert_eq!(
        shape(&built),
        (
            vec![('u', "a\n\nb".into()), ('a', "c\n\nd".into())],
            "e".into()
        )
    );
}

#[test]
fn leading_assistant_gets_a_user_in_front() {
    let built = build(&request(&[], vec![assistant("hi"), user("q")]), &options());
    assert_eq!(
        shape(&built),
        (
            vec![('u', "(empty)".into()), ('a', "hi".into())],
            "q".into()
        )
    );
}

#[test]
fn trailing_assistant_prefill_is_answered_with_continue() {
    let built = build(
        &request(&[], vec![user("q"), assistant("partial")]),
        &options(),
    );
    assert_eq!(
        shape(&built),
        (
            vec![('u', "q".into()), ('a', "partial".into())],
            CONTINUE.into()
        )
    );
}

#[test]
fn empty_contents_are_filled() {
    let built = build(
        &request(&[], vec![user(""), assistant("  "), user("")]),
        &options(),
    );
    assert_eq!(
        shape(&built),
        (
            vec![('u', "(empty)".into()), ('a', "(empty)".into())],
            "(empty)".into()
        )
    );
}

#[test]
fn tool_round_trip_is_paired_and_tools_defined() {
    let mut req = request(
        &[],
        vec![
            user("read it"),
            Message {
                role: Role::Assistant,
                parts: vec![tool_use("t1", "read_file")],
            },
            Message {
                role: Role::User,
                parts: vec![tool_result("t1", "contents")],
            },
        ],
    );
    req.tools = vec![Tool {
        name: "read_file".into(),
        description: "Reads a file".into(),
        input_schema: json!({"$schema": "x", "type": "object", "properties": {"path": {"type": "string"}}, "required": []}),
    }];
    let built = build(&req, &options());
    let (history, current_text) = shape(&built);
    assert_eq!(history, vec![('u', "read it".into()), ('a', " ".into())]);
    assert_eq!(current_text, "Tool results provided.");
    let context = current_context(&built);
    assert_eq!(context.tool_results[0].tool_use_id, "t1");
    assert_eq!(context.tool_results[0].status, "success");
    let schema = &context.tools[0].spec().unwrap().input_schema.json;
    assert!(schema.get("$schema").is_none());
    assert!(schema.get("required").is_none());
}

#[test]
fn orphans_and_duplicates_are_repaired() {
    let req = request(
        &[],
        vec![
            user("go"),
            Message {
                role: Role::Assistant,
                parts: vec![
                    tool_use("t1", "a"),
                    tool_use("t2", "b"),
                    tool_use("t1", "a"),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    tool_result("t1", "ok"),
                    tool_result("t1", "dup"),
                    tool_result("zz", "stray"),
                ],
            },
        ],
    );
    let built = build(&req, &options());
    let state = &built.body.conversation_state;
    let HistoryEntry::AssistantResponseMessage(a) = &state.history[1] else {
        panic!()
    };
    let ids: Vec<&str> = a.tool_uses.iter().map(|u| u.tool_use_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["t1"],
        "unanswered t2 and duplicate t1 are dropped"
    );
    let results = &current_context(&built).tool_results;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].content[0].text, "ok");
    assert!(current(&built)
        .content
        .contains("[result of tool call zz]: stray"));
    // Tool `a` was used but the client sent no definitions: a placeholder is added.
    let tools = &current_context(&built).tools;
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].spec().unwrap().name, "a");
}

#[test]
fn long_tool_names_are_shortened_and_restorable() {
    let long = "mcp__some_server_with_a_long_name__and_an_even_longer_tool_name_here";
    assert!(long.len() > 64);
    let mut req = request(&[], vec![user("x")]);
    req.tools = vec![Tool {
        name: long.into(),
        description: String::new(),
        input_schema: json!({}),
    }];
    let built = build(&req, &options());
    let spec = current_context(&built).tools[0].spec().unwrap();
    assert_eq!(spec.name.len(), 64);
    assert_eq!(built.tool_names.restore(&spec.name), long);
    assert_eq!(built.tool_names.restore("short"), "short");
    assert_eq!(spec.description, format!("Tool: {long}"));
    assert_eq!(
        spec.input_schema.json,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(shorten_tool_name(long), shorten_tool_name(long), "stable");
}

fn tool_with_description(description: String) -> Tool {
    Tool {
        name: "t".into(),
        description,
        input_schema: json!({"type":"object"}),
    }
}

#[test]
fn a_description_at_the_cap_is_sent_as_is() {
    let mut req = request(&["sys"], vec![user("x")]);
    req.tools = vec![tool_with_description("d".repeat(MAX_TOOL_DESCRIPTION))];
    let built = build(&req, &options());
    let spec = current_context(&built).tools[0].spec().unwrap();
    assert_eq!(spec.description, "d".repeat(MAX_TOOL_DESCRIPTION));
    assert_eq!(current(&built).content, "sys\n\nx");
}

#[test]
fn long_descriptions_move_whole_into_the_system_prompt() {
    // Multi-byte characters: the cap counts characters, and nothing may be cut.
    let long = format!("Runs a command.\n\n{}", "é-detail ".repeat(2_000));
    let mut req = request(&["sys"], vec![user("x")]);
    req.tools = vec![
        tool_with_description(long.clone()),
        tool_with_description("d".repeat(MAX_TOOL_DESCRIPTION + 1)),
    ];
    req.tools[1].name = "u".into();
    let built = build(&req, &options());
    let tools = &current_context(&built).tools;
    for tool in tools {
        let description = &tool.spec().unwrap().description;
        assert!(description.chars().count() <= MAX_TOOL_DESCRIPTION);
        let heading = format!("Tool documentation: {}", tool.spec().unwrap().name);
        assert!(description.contains(&heading), "{description}");
    }
    assert!(tools[0]
        .spec()
        .unwrap()
        .description
        .starts_with("Runs a command.\n\n(The full description"));
    let prompt = &current(&built).content;
    assert!(prompt.starts_with("sys\n\n"));
    assert!(prompt.contains(&format!("## Tool documentation: t\n\n{}", long.trim())));
    assert!(prompt.contains(&format!(
        "## Tool documentation: u\n\n{}",
        "d".repeat(MAX_TOOL_DESCRIPTION + 1)
    )));
    assert!(prompt.ends_with("\n\nx"));
}

#[test]
fn tool_choice_none_without_traffic_sends_no_tools() {
    let mut req = request(&[], vec![user("x")]);
    req.tools = vec![Tool {
        name: "t".into(),
        description: "d".into(),
        input_schema: json!({}),
    }];
    req.tool_choice = ToolChoice::None;
    let built = build(&req, &options());
    assert!(current(&built).user_input_message_context.is_none());
}

#[test]
fn images_and_thinking_are_mapped() {
    let req = request(
        &[],
        vec![
            Message {
                role: Role::User,
                parts: vec![
                    Part::Text("look".into()),
                    Part::Image {
                        media_type: "image/PNG".into(),
                        data: "AAAA".into(),
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![Part::Thinking("hmm".into()), Part::Text("a cat".into())],
            },
            user("thanks"),
        ],
    );
    let built = build(&req, &options());
    let state = &built.body.conversation_state;
    let HistoryEntry::UserInputMessage(u) = &state.history[0] else {
        panic!()
    };
    assert_eq!(
        u.images,
        vec![KiroImage {
            format: "png".into(),
            source: ImageSource {
                bytes: "AAAA".into()
            }
        }]
    );
    let HistoryEntry::AssistantResponseMessage(a) = &state.history[1] else {
        panic!()
    };
    assert_eq!(a.content, "<thinking>hmm</thinking>\n\na cat");
}

#[test]
fn profile_arn_is_sent_when_known() {
    let built = build(
        &request(&[], vec![user("x")]),
        &BuildOptions {
            profile_arn: Some("arn:aws:codewhisperer:us-east-1:1:profile/P"),
            ..options()
        },
    );
    let json = serde_json::to_value(&built.body).unwrap();
    assert_eq!(
        json["profileArn"],
        "arn:aws:codewhisperer:us-east-1:1:profile/P"
    );
}

#[test]
fn thinking_tags_go_in_front_of_the_first_user_turn() {
    let built = build(
        &request(&["S"], vec![user("q1"), assistant("a1"), user("q2")]),
        &BuildOptions {
            thinking: Some(crate::chat::Thinking::Enabled {
                budget_tokens: 8000,
            }),
            ..options()
        },
    );
    assert_eq!(
        shape(&built).0[0].1,
        "<thinking_mode>enabled</thinking_mode><max_thinking_length>8000</max_thinking_length>\n\nS\n\nq1"
    );
    assert_eq!(shape(&built).1, "q2");
}

#[test]
fn signed_reasoning_is_replayed_natively_only_with_native_reasoning() {
    let reasoning = crate::kiro::accounts::model_list::Reasoning {
        thinking_types: vec!["adaptive".into()],
        effort_levels: vec!["low".into(), "high".into()],
        effort_key: "output_config",
        ..Default::default()
    };
    let signed = Message {
        role: Role::Assistant,
        parts: vec![
            Part::SignedThinking {
                text: "first".into(),
                signature: "sig-1".into(),
            },
            Part::SignedThinking {
                text: "second".into(),
                signature: "sig-2".into(),
            },
            Part::Text("answer".into()),
        ],
    };
    let mut chat = request(&[], vec![user("q"), signed, user("more")]);
    chat.thinking = Some(crate::chat::Thinking::Adaptive {
        effort: crate::chat::Effort::High,
    });
    let native = BuildOptions {
        reasoning: Some(&reasoning),
        thinking: chat.thinking,
        ..options()
    };
    let built = build(&chat, &native);
    assert!(built.native_reasoning);
    let HistoryEntry::AssistantResponseMessage(turn) = &built.body.conversation_state.history[1]
    else {
        panic!("history[1] is the assistant turn");
    };
    assert_eq!(
        turn.reasoning_content,
        Some(ReasoningContent::ReasoningText(ReasoningText {
            text: "first".into(),
            signature: "sig-1".into()
        }))
    );
    // One reasoningContent per turn: the second block goes inline, nothing is lost.
    assert_eq!(turn.content, "<thinking>second</thinking>\n\nanswer");
    assert!(!current(&built).content.contains("<thinking_mode>"));

    // The retry after a refused signature, and models without native reasoning: inline.
    for options in [
        BuildOptions {
            replay_signatures: false,
            ..native.clone()
        },
        BuildOptions {
            reasoning: None,
            thinking: chat.thinking,
            ..options()
        },
    ] {
        let built = build(&chat, &options);
        let HistoryEntry::AssistantResponseMessage(turn) =
            &built.body.conversation_state.history[1]
        else {
            panic!("history[1] is the assistant turn");
        };
        assert_eq!(turn.reasoning_content, None);
        assert_eq!(turn.content, "<thinking>firstsecond</thinking>\n\nanswer");
    }
}

#[test]
fn cache_marks_become_cache_points_among_the_tools_within_the_limit() {
    let tools: Vec<Tool> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| Tool {
            name: (*name).into(),
            description: "d".into(),
            input_schema: serde_json::json!({"type": "object"}),
        })
        .collect();
    let mut chat = request(&["system"], vec![user("q")]);
    chat.tools = tools;
    chat.cache_marks = crate::chat::CacheMarks {
        tools: vec![0, 2],
        prompt: 2,
    };
    let layout = |caching: &crate::kiro::accounts::model_list::PromptCaching| {
        let options = BuildOptions {
            prompt_caching: Some(caching),
            ..options()
        };
        current_context(&build(&chat, &options))
            .tools
            .iter()
            .map(|t| t.spec().map_or("|".to_owned(), |s| s.name.clone()))
            .collect::<Vec<_>>()
            .join("")
    };
    let roomy = crate::kiro::accounts::model_list::PromptCaching {
        max_checkpoints: Some(4),
        min_tokens_per_checkpoint: None,
    };
    assert_eq!(layout(&roomy), "a|bc|d|");
    // Two allowed: the earliest mark goes first.
    let tight = crate::kiro::accounts::model_list::PromptCaching {
        max_checkpoints: Some(2),
        ..roomy.clone()
    };
    assert_eq!(layout(&tight), "abc|d|");
    // A model that does not cache gets none.
    let built = build(&chat, &options());
    assert!(current_context(&built)
        .tools
        .iter()
        .all(|t| t.spec().is_some()));
}

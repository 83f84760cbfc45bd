use super::*;
use crate::kiro::accounts::model_list::{parse_page, Listing};
use serde_json::json;

fn listing(models: serde_json::Value) -> Listing {
    let page = parse_page(
        json!({"models": models, "defaultModel": {"modelId": "auto"}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    Listing {
        models: page.models,
        default_model: page.default_model,
    }
}

fn ids(catalog: &Catalog) -> Vec<String> {
    catalog
        .snapshot()
        .entries()
        .iter()
        .map(|e| e.id.clone())
        .collect()
}

#[test]
fn builtin_has_the_seed_ids_and_current_claude_ids() {
    let catalog = Catalog::builtin().unwrap();
    assert_eq!(
        ids(&catalog)[..3],
        [
            "claude-3-opus-20240229",
            "claude-3-sonnet-20240229",
            "claude-3-haiku-20240307"
        ]
    );
    assert_eq!(catalog.snapshot().source, CatalogSource::File);
    assert_eq!(
        catalog.get("claude-sonnet-4-5").unwrap().kiro_model_id,
        "claude-sonnet-4.5"
    );
    assert_eq!(
        catalog
            .get("claude-sonnet-4-5-20250929")
            .unwrap()
            .kiro_model_id,
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
fn the_1m_marker_dates_and_latest_resolve_to_the_base_model() {
    let catalog = Catalog::builtin().unwrap();
    for (asked, id, thinking) in [
        ("claude-opus-4-8[1m]", "claude-opus-4-8[1m]", false),
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5", false),
        ("claude-opus-4-8-20260101", "claude-opus-4-8", false),
        ("claude-haiku-4-5-latest", "claude-haiku-4-5", false),
        ("claude-opus-4-7-thinking[1m]", "claude-opus-4-7", true),
    ] {
        let (entry, with_thinking) = catalog.resolve(asked).unwrap_or_else(|| panic!("{asked}"));
        assert_eq!(
            (entry.id.as_str(), with_thinking),
            (id, thinking),
            "{asked}"
        );
    }
    assert!(catalog.resolve("claude-opus-4-8-2026").is_none());
}

#[test]
fn duplicates_and_unknown_keys_are_rejected() {
    let dup = "[[model]]\nid='a'\nkiro_model_id='x'\ncreated=1\ncontext_window=1\n\
               [[model]]\nid='b'\naliases=['a']\nkiro_model_id='y'\ncreated=1\ncontext_window=1\n";
    let err = Catalog::parse(dup, "test").unwrap_err().to_string();
    assert!(err.contains("`a` is listed twice"), "{err}");
    let unknown = "[[model]]\nid='a'\nkiro_model_id='x'\ncreated=1\ncontext_window=1\ncolour=2\n";
    let err = Catalog::parse(unknown, "test").unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn the_accounts_listing_decides_what_is_served_and_how() {
    let catalog = Catalog::builtin().unwrap();
    catalog.apply(&[(
        "a".into(),
        Ok(listing(json!([
            {"modelId": "claude-sonnet-4.5", "modelName": "Sonnet 4.5 (Kiro)",
             "tokenLimits": {"maxInputTokens": 400_000, "maxOutputTokens": 32_000},
             "supportedInputTypes": ["TEXT"]},
            {"modelId": "claude-opus-4.8", "tokenLimits": {"maxInputTokens": 1_000_000}},
            {"modelId": "claude-opus-5.1"},
            {"modelId": "claude-sonnet-5-1m"},
            {"modelId": "deepseek-3.2"},
        ]))),
    )]);
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.source, CatalogSource::Accounts);
    assert_eq!(snapshot.default_model.as_deref(), Some("auto"));
    assert!(snapshot.refreshed_at.is_some());
    // The Claude 3 opus id falls back to the newest served opus; sonnet keeps its target.
    assert_eq!(
        ids(&catalog),
        [
            "claude-3-opus-20240229",
            "claude-3-sonnet-20240229",
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-8",
            "claude-opus-4-8[1m]",
            "claude-opus-5-1",
            "claude-sonnet-5[1m]",
            "deepseek-3.2",
        ]
    );
    assert_eq!(
        catalog.get("claude-3-opus-20240229").unwrap().kiro_model_id,
        "claude-opus-4.8"
    );
    // The accounts' limits and capabilities win over the file's.
    let sonnet = catalog.get("claude-sonnet-4-5").unwrap();
    assert_eq!(
        (sonnet.context_window, sonnet.max_output_tokens),
        (400_000, Some(32_000))
    );
    assert_eq!(sonnet.display_name.as_deref(), Some("Claude Sonnet 4.5"));
    assert!(sonnet.capabilities.refuses_images());
    assert_eq!(
        sonnet.listed.as_ref().unwrap()["modelName"],
        "Sonnet 4.5 (Kiro)"
    );
    // What only the accounts serve works, under its listed id and its Kiro id.
    for id in [
        "claude-opus-5-1",
        "claude-opus-5.1",
        "claude-sonnet-5[1m]",
        "claude-sonnet-5-1m",
        "deepseek-3.2",
        "claude-sonnet-4.5",
    ] {
        assert!(catalog.resolve(id).is_some(), "{id}");
    }
    assert_eq!(
        catalog
            .get("claude-sonnet-4.5")
            .unwrap()
            .display_name
            .as_deref(),
        Some("Claude Sonnet 4.5")
    );
    // File ids whose model is not served are gone, and say why.
    assert!(catalog.resolve("claude-haiku-4-5").is_none());
    assert_eq!(
        snapshot.unserved("claude-haiku-4-5-thinking"),
        Some("claude-haiku-4.5")
    );
    assert_eq!(snapshot.unserved("claude-opus-5-1"), None);
}

#[test]
fn a_failed_refresh_keeps_the_last_listing_and_says_why() {
    let catalog = Catalog::builtin().unwrap();
    catalog.apply(&[("a".into(), Err("no profileArn".into()))]);
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.source, CatalogSource::File);
    assert_eq!(snapshot.problems, ["account `a`: no profileArn"]);
    assert!(catalog.resolve("claude-3-opus-20240229").is_some());

    catalog.apply(&[
        (
            "a".into(),
            Ok(listing(json!([{"modelId": "claude-opus-5"}]))),
        ),
        ("b".into(), Err("unreachable".into())),
    ]);
    let first = catalog.get("claude-opus-5").unwrap().created;
    assert_eq!(catalog.snapshot().problems, ["account `b`: unreachable"]);
    catalog.apply(&[("a".into(), Err("timed out".into()))]);
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.source, CatalogSource::Accounts);
    assert_eq!(ids(&catalog), ["claude-opus-5"]);
    assert_eq!(snapshot.problems, ["account `a`: timed out"]);
    // A model keeps the time it was first listed.
    catalog.apply(&[(
        "a".into(),
        Ok(listing(
            json!([{"modelId": "claude-opus-5"}, {"modelId": "auto"}]),
        )),
    )]);
    assert_eq!(catalog.get("claude-opus-5").unwrap().created, first);
    assert_eq!(ids(&catalog), ["claude-opus-5", "auto"]);
}

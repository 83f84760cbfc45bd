//! The code cites the Kiro protocol reference by section (`docs/kiro-protocol.md §13.1`, or a
//! bare `§4.3` in a file that cites it): every section cited anywhere in the sources, the
//! tests, the README or the catalog file exists as a heading of that document, so a citation
//! never points at nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            files(&entry.unwrap().path(), out);
        }
    } else if path
        .extension()
        .is_some_and(|e| e == "rs" || e == "md" || e == "toml" || e == "py")
    {
        out.push(path.to_owned());
    }
}

/// Every `§N` or `§N.M` in `text`.
fn cited(text: &str) -> Vec<String> {
    text.split('§')
        .skip(1)
        .filter_map(|rest| {
            let section: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let section = section.trim_end_matches('.');
            (!section.is_empty()).then(|| section.to_owned())
        })
        .collect()
}

#[test]
fn every_cited_protocol_section_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/kiro-protocol.md")).unwrap();
    let headings: BTreeSet<String> = reference
        .lines()
        .filter_map(|line| line.strip_prefix("## ").or(line.strip_prefix("### ")))
        .filter_map(|heading| heading.split(' ').next())
        .map(|number| number.trim_end_matches('.').to_owned())
        .collect();
    let mut sources = Vec::new();
    for dir in ["src", "layers/src", "tests", "config", "README.md"] {
        files(&root.join(dir), &mut sources);
    }
    let mut citations = 0;
    let mut missing = Vec::new();
    for file in sources {
        let text = std::fs::read_to_string(&file).unwrap();
        for section in cited(&text) {
            citations += 1;
            if !headings.contains(&section) {
                missing.push(format!("{}: §{section}", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited, but docs/kiro-protocol.md has no such section:\n{}",
        missing.join("\n")
    );
    assert!(citations > 50, "only {citations} citations found");
}

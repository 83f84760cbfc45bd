//! The README's configuration table is checked against the one declaration of each key (the
//! section structs of `src/config`, read through clap): every flag has exactly one row;
//! the row's environment variable is the flag's; its default is the one the flag's help
//! line states; a literal default, given explicitly, resolves to [`Config::default`]; and a
//! value other than the default reaches the same setting by the flag, by the variable and by
//! the row's config-file key. So a key added without its row, a default changed in one
//! place only, or a row naming the wrong variable or key fails here, with the row named.
//!
//! One test in its own binary: it sets environment variables, which the whole process sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aiproxy::config::{Cli, Config};
use clap::{ArgAction, CommandFactory, Parser};
use std::collections::BTreeMap;
use std::io::Write;

/// Defaults that are a description, not a value to pass (`none`, `built-in`, a URL pattern).
const DESCRIBED_DEFAULTS: &[&str] = &[
    "--api-key",
    "--cors-allow-origin",
    "--disable-layers",
    "--metrics-port",
    "--admin-key",
    "--kiro-region",
    "--kiro-base-url",
    "--kiro-refresh-url",
    "--kiro-idc-refresh-url",
    "--state-dir",
    "--models-file",
    "--max-client-connections",
    "--provider-pools-file",
    "--rate-limit-rpm",
    "--rate-limit-burst",
    "--rate-limit-tpm",
    "--redis-url",
    // Refused without --redis-url beside them (tested in src/config/redis.rs).
    "--redis-prefix",
    "--redis-failure-mode",
    "--redis-timeout-ms",
];

/// A value other than the default for keys whose default is not a value, or whose value
/// cannot simply be incremented or flipped.
const PROBES: &[(&str, &str)] = &[
    ("--api-key", "probe-key"),
    ("--cors-allow-origin", "https://probe.example"),
    ("--disable-layers", "trace"),
    ("--metrics-port", "9464"),
    ("--admin-key", "probe-admin-key-0123456789"),
    ("--kiro-region", "eu-central-1"),
    ("--kiro-base-url", "http://127.0.0.1:9"),
    ("--kiro-refresh-url", "http://127.0.0.1:9/refreshToken"),
    ("--kiro-idc-refresh-url", "http://127.0.0.1:9/token"),
    ("--kiro-oauth-creds-file", "/nonexistent/probe-creds.json"),
    ("--kiro-oauth-creds-base64", "e30="),
    ("--kiro-api-key", "ksk_probe"),
    ("--state-dir", "/nonexistent/probe-state"),
    ("--models-file", "/nonexistent/probe-models.toml"),
    ("--kiro-ca-file", "/nonexistent/probe-ca.pem"),
    ("--max-client-connections", "100"),
    ("--provider-pools-file", "/nonexistent/probe-pools.json"),
    ("--rate-limit-rpm", "60"),
    ("--rate-limit-tpm", "1000"),
    ("--redis-url", "redis://127.0.0.1:6390/1"),
    ("--host", "0.0.0.0"),
];

/// Keys with no other value to try: the only provider there is; the burst, which needs a
/// per-minute limit beside it; the Redis settings, which need `--redis-url` beside them;
/// `--config`, which names the file itself.
const NO_PROBE: &[&str] = &[
    "--model-provider",
    "--rate-limit-burst",
    "--redis-prefix",
    "--redis-failure-mode",
    "--redis-timeout-ms",
    "--config",
];

struct Row {
    line: String,
    env: String,
    key: Option<(Option<String>, String)>,
    default: String,
}

/// The first `backticked` piece of a cell.
fn code(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let end = start + cell[start..].find('`')?;
    Some(&cell[start..end])
}

fn readme_rows() -> BTreeMap<String, Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line
            .trim_matches('|')
            .splitn(5, '|')
            .map(str::trim)
            .collect();
        assert_eq!(cells.len(), 5, "a row has five cells: {line}");
        let flag = code(cells[0])
            .unwrap()
            .split([' ', '['])
            .next()
            .unwrap()
            .to_owned();
        let key = code(cells[2]).map(|key| match key.strip_prefix('[') {
            Some(rest) => {
                let (section, key) = rest.split_once("] ").unwrap();
                (Some(section.to_owned()), key.to_owned())
            }
            None => (None, key.to_owned()),
        });
        let row = Row {
            line: line.to_owned(),
            env: code(cells[1]).unwrap_or_default().to_owned(),
            key,
            default: cells[3].replace('`', ""),
        };
        assert!(
            rows.insert(flag.clone(), row).is_none(),
            "{flag} has two rows"
        );
    }
    rows
}

/// `[default: ...]` of a help line.
fn stated_default(help: &str) -> String {
    help.split_once("[default: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(default, _)| default.to_owned())
        .unwrap_or_default()
}

fn resolve(args: &[String]) -> Result<Config, String> {
    let cli =
        Cli::try_parse_from(std::iter::once("aiproxy".to_owned()).chain(args.iter().cloned()))
            .map_err(|e| e.to_string())?;
    Config::resolve(&cli).map_err(|e| e.to_string())
}

/// `value` as TOML: a number or a boolean as itself, a list for a repeatable flag, else a string.
fn toml_value(value: &str, repeatable: bool) -> String {
    let quoted = format!("{value:?}");
    if repeatable {
        format!("[{quoted}]")
    } else if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
        value.to_owned()
    } else {
        quoted
    }
}

fn resolve_file(
    section: Option<&str>,
    key: &str,
    value: &str,
    repeatable: bool,
) -> Result<Config, String> {
    let text = match section {
        Some(section) => format!("[{section}]\n{key} = {}\n", toml_value(value, repeatable)),
        None => format!("{key} = {}\n", toml_value(value, repeatable)),
    };
    let path = std::env::temp_dir().join(format!(
        "aiproxy-config-reference-{}.toml",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let resolved = resolve(&["--config".to_owned(), path.display().to_string()]);
    std::fs::remove_file(&path).unwrap();
    resolved
}

fn resolve_env(env: &str, value: &str) -> Result<Config, String> {
    std::env::set_var(env, value);
    let resolved = resolve(&[]);
    std::env::remove_var(env);
    resolved
}

/// A value other than `default`: the other boolean, the next number, another allowed value.
fn probe(flag: &str, default: &str, allowed: &[String]) -> Option<String> {
    if let Some((_, value)) = PROBES.iter().find(|(f, _)| *f == flag) {
        return Some((*value).to_owned());
    }
    match default {
        "true" => return Some("false".into()),
        "false" => return Some("true".into()),
        _ => {}
    }
    if let Ok(n) = default.parse::<u64>() {
        return Some((n + 1).to_string());
    }
    allowed.iter().find(|value| *value != default).cloned()
}

/// What one flag's row says, checked: `Ok((literal default checked, value probed))`.
fn check(
    arg: &clap::Arg,
    flag: &str,
    row: &Row,
    defaults: &Config,
) -> Result<(bool, bool), String> {
    let env = arg
        .get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    if row.env != env {
        return Err(format!(
            "the README names `{}`, the flag reads `{env}`",
            row.env
        ));
    }
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let default = stated_default(&help);
    if row.default != default {
        return Err(format!(
            "the README's default `{}` is not the one its help states: `{default}` ({help})",
            row.default
        ));
    }
    let value = default.split(" (").next().unwrap_or_default().to_owned();
    let literal = !default.is_empty() && !DESCRIBED_DEFAULTS.contains(&flag);
    if literal && resolve(&[format!("{flag}={value}")]).as_ref() != Ok(defaults) {
        return Err(format!(
            "the stated default `{value}` is not the built-in one"
        ));
    }
    if NO_PROBE.contains(&flag) {
        return Ok((literal, false));
    }
    let allowed: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    let probe = probe(flag, &value, &allowed).ok_or("no value to try; add one to PROBES")?;
    let by_flag = resolve(&[format!("{flag}={probe}")])?;
    if &by_flag == defaults {
        return Err(format!("{flag}={probe} changed nothing"));
    }
    if env.is_empty() {
        return Err("no environment variable".into());
    }
    if resolve_env(&env, &probe) != Ok(by_flag.clone()) {
        return Err(format!("{env}={probe} is not {flag}={probe}"));
    }
    let (section, key) = row.key.clone().ok_or("the README names no config key")?;
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let by_file = resolve_file(section.as_deref(), &key, &probe, repeatable);
    if by_file != Ok(by_flag) {
        return Err(format!(
            "the file key `{key}` in [{}] is not the same setting ({:?})",
            section.as_deref().unwrap_or(""),
            by_file.err()
        ));
    }
    Ok((literal, true))
}

#[test]
fn the_readme_configuration_table_matches_the_declared_keys() {
    let rows = readme_rows();
    let defaults = Config::default();
    assert_eq!(resolve(&[]).unwrap(), defaults);
    let (mut seen, mut problems) = (Vec::new(), Vec::new());
    let (mut literal, mut probed) = (0, 0);
    for arg in Cli::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
            continue;
        }
        let flag = format!("--{long}");
        seen.push(flag.clone());
        let Some(row) = rows.get(&flag) else {
            problems.push(format!(
                "{flag}: no row in the README's configuration table"
            ));
            continue;
        };
        match check(arg, &flag, row, &defaults) {
            Ok((l, p)) => {
                literal += usize::from(l);
                probed += usize::from(p);
            }
            Err(problem) => problems.push(format!("{flag}: {problem}\n  {}", row.line)),
        }
    }
    for flag in rows.keys().filter(|flag| !seen.contains(flag)) {
        problems.push(format!(
            "{flag}: a README row for a flag aiproxy does not have"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The table is not allowed to shrink into passing.
    assert!(
        literal >= 35 && probed >= 50,
        "{literal} literal defaults, {probed} keys probed"
    );
}

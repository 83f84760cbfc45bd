//! The profile-guided build (`build/rustc-pgo`, Cargo's rustc wrapper in
//! `.cargo/config.toml`): which compilations get the profile, and that the committed profile
//! is one this compiler reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn llvm_major(rustc: &str) -> String {
    let output = Command::new(rustc).arg("-vV").output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap();
    line.split('.').next().unwrap().to_owned()
}

/// A copy of the wrapper beside a profile of its own, and a stand-in compiler that reports
/// LLVM `llvm` and prints the arguments it was given.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(profile_llvm: &str, compiler_llvm: &str) -> Self {
        let dir = common::temp_dir("pgo");
        std::fs::copy(repository().join("build/rustc-pgo"), dir.join("rustc-pgo")).unwrap();
        std::fs::create_dir(dir.join("pgo")).unwrap();
        std::fs::write(dir.join("pgo/aiproxy.profdata"), b"profile").unwrap();
        std::fs::write(dir.join("pgo/llvm-major"), format!("{profile_llvm}\n")).unwrap();
        let compiler = format!(
            "#!/bin/sh\nif [ \"$1\" = -vV ]; then echo 'rustc 1.0.0'; echo 'LLVM version: {compiler_llvm}.1.2'; exit 0; fi\necho \"$*\"\n"
        );
        std::fs::write(dir.join("rustc"), compiler).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(dir.join("rustc"))
            .status()
            .unwrap();
        Self { dir }
    }

    fn profile(&self) -> PathBuf {
        self.dir.join("pgo/aiproxy.profdata")
    }

    /// The arguments the compiler got when the wrapper was run with `args`.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        self.wrapper(&[self.dir.join("rustc").to_str().unwrap()], args, env)
    }

    /// What the wrapper answers to `query` (`--status`, `--llvm-major`) about the compiler.
    fn query(&self, query: &str, env: &[(&str, &str)]) -> String {
        self.wrapper(&[query, self.dir.join("rustc").to_str().unwrap()], &[], env)
    }

    fn wrapper(&self, first: &[&str], args: &[&str], env: &[(&str, &str)]) -> String {
        let output = Command::new("sh")
            .arg(self.dir.join("rustc-pgo"))
            .args(first)
            .args(args)
            .env_remove("AIPROXY_PGO")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

#[test]
fn optimised_compilations_get_the_profile_and_nothing_else_does() {
    let sandbox = Sandbox::new("22", "22");
    let use_flag = format!("-Cprofile-use={}", sandbox.profile().display());
    let release = sandbox.run(&["--crate-name", "x", "-C", "opt-level=3", "x.rs"], &[]);
    assert_eq!(
        release,
        format!("--crate-name x -C opt-level=3 x.rs {use_flag} -Cllvm-args=-no-pgo-warn-mismatch")
    );
    assert!(sandbox
        .run(&["-Copt-level=3", "x.rs"], &[])
        .contains(&use_flag));
    // Tests and debug builds (the dependencies of the dev profile are at level 1).
    for args in [
        &["-C", "opt-level=1", "x.rs"][..],
        &["-C", "opt-level=0", "x.rs"][..],
        &["x.rs"][..],
    ] {
        assert_eq!(sandbox.run(args, &[]), args.join(" "));
    }
    // An instrumented build (scripts/pgo.sh) or one given its own profile.
    for args in [
        &["-C", "opt-level=3", "-Cprofile-generate=/tmp/raw", "x.rs"][..],
        &["-Cprofile-use=/other.profdata", "-C", "opt-level=3", "x.rs"][..],
    ] {
        assert_eq!(sandbox.run(args, &[]), args.join(" "));
    }
    // Turned off; and with LLVM's warnings about functions the profile no longer matches.
    let args = ["-C", "opt-level=3", "x.rs"];
    assert_eq!(
        sandbox.run(&args, &[("AIPROXY_PGO", "off")]),
        args.join(" ")
    );
    assert_eq!(
        sandbox.run(&args, &[("AIPROXY_PGO", "warn")]),
        format!("-C opt-level=3 x.rs {use_flag}")
    );
}

#[test]
fn a_compiler_of_another_llvm_or_a_missing_profile_builds_without_it() {
    let other = Sandbox::new("22", "21");
    let args = ["-C", "opt-level=3", "x.rs"];
    assert_eq!(other.run(&args, &[]), args.join(" "));
    let missing = Sandbox::new("22", "22");
    std::fs::remove_file(missing.profile()).unwrap();
    assert_eq!(missing.run(&args, &[]), args.join(" "));
}

/// The harness and scripts/pgo.sh ask the wrapper instead of deciding for themselves; its
/// answers follow the same conditions as its decisions above.
#[test]
fn the_wrapper_reports_whether_a_build_gets_the_profile_and_why_not() {
    let same = Sandbox::new("22", "22");
    let on = same.query("--status", &[]);
    assert!(
        on.starts_with("on (build/pgo/aiproxy.profdata, LLVM 22, sha256 "),
        "{on}"
    );
    assert_eq!(
        same.query("--status", &[("AIPROXY_PGO", "off")]),
        "off (AIPROXY_PGO=off)"
    );
    assert_eq!(same.query("--llvm-major", &[]), "22");
    let other = Sandbox::new("22", "21");
    assert_eq!(
        other.query("--status", &[]),
        "off (the profile is of LLVM 22, this compiler's is 21: rerun scripts/pgo.sh)"
    );
    std::fs::remove_file(same.profile()).unwrap();
    assert_eq!(
        same.query("--status", &[]),
        "off (no build/pgo/aiproxy.profdata)"
    );
}

/// The committed profile was written by this compiler's LLVM and this compiler reads it: a
/// release build then gets it (a compiler update needs `bash scripts/pgo.sh`).
#[test]
fn the_committed_profile_is_read_by_this_compiler() {
    let root = repository();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    assert!(root.join("build/pgo/aiproxy.profdata").is_file());
    let recorded = std::fs::read_to_string(root.join("build/pgo/llvm-major")).unwrap();
    assert_eq!(
        recorded.trim(),
        llvm_major(&rustc),
        "build/pgo/aiproxy.profdata was written with another LLVM than this compiler's, so \
         release builds go without it: rerun `bash scripts/pgo.sh`"
    );
    let dir = common::temp_dir("pgo-probe");
    let source = dir.join("probe.rs");
    std::fs::write(
        &source,
        "pub fn probe(x: u64) -> u64 { if x % 3 == 0 { x / 3 } else { 3 * x + 1 } }\n",
    )
    .unwrap();
    let output = Command::new("sh")
        .arg(root.join("build/rustc-pgo"))
        .arg(&rustc)
        .args([
            "--crate-type",
            "lib",
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
        ])
        .arg(&source)
        .arg("--out-dir")
        .arg(&dir)
        .env("AIPROXY_PGO", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // An unreadable profile is only a warning to rustc (the build then goes without it).
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(has_rlib(&dir));
}

fn has_rlib(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "rlib"))
}

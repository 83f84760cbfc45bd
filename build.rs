//! Links the release binary with its functions in the order they first run (start-up, then
//! the request path), listed in `build/symbol-order.txt` by `scripts/symbol-order.sh`.
//!
//! Why: the kernel maps an executable's code 64 KiB at a time around each page the process
//! touches ("fault-around"), so code spread over the whole text segment made most of it
//! resident at idle although the start and the request path run a small part of it. Grouped,
//! they touch fewer 64 KiB blocks: 2.4 MiB of code resident at idle instead of 7.3.
//!
//! Only where the linker is LLD (Rust's default for x86_64-unknown-linux-gnu since 1.90);
//! `AIPROXY_SYMBOL_ORDER=off` links in the compiler's order (to measure, or for a linker
//! chosen where this script does not look, such as `linker` in a `.cargo/config.toml`).
//! Names missing from the binary (a dependency updated since the list was made) are skipped
//! silently: a stale list costs locality, never the build.

use std::path::Path;
use std::process::Command;

fn main() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("build/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=AIPROXY_SYMBOL_ORDER");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let off = std::env::var("AIPROXY_SYMBOL_ORDER").as_deref() == Ok("off");
    if release && !off && list.is_file() && links_with_lld() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the binary is linked by the LLD that ships with Rust: x86_64 Linux (GNU), a
/// compiler of 1.90 or later, and no linker of the builder's own choice in the flags (another
/// linker may not know the ordering option, and the build must not fail for a layout).
fn links_with_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|choice| flags.contains(choice))
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&output.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}

#!/usr/bin/env bash
# The project's test command: formatting, lints, every Rust test (unit, in-process pipeline,
# sockets, embedding, doc tests), then the client-compatibility suite (Python SDKs, the
# legacy openai==0.28 client and the product guide's curls against a started binary).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast --lib --bins --tests
fi
cargo test --workspace --locked --doc
echo "== benches, each once (criterion's test mode: they keep compiling and running)"
cargo test --locked --bench pipeline --bench balance
echo "== client compatibility"
# Uses target/debug/aiproxy as the integration tests just built it (a plain `cargo build`
# would resolve features without dev-dependencies and rebuild half the tree).
bash tests/clients/run.sh

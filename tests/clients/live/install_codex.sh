#!/usr/bin/env bash
# Installs the pinned Codex CLI from npm into .codex-cli/ (once; reused while the pin is
# unchanged) and prints the path of the command to run. Fails, never skips: the client suite
# needs the real CLI. Its native binary comes in the platform package npm picks.
set -euo pipefail
version=0.171.0
root=$(cd "$(dirname "$0")/../../.." && pwd)
dir=$root/.codex-cli
entry=$dir/node_modules/@openai/codex/bin/codex.js
command -v npm >/dev/null || { echo "npm is required for the Codex tests (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -f "$entry" ] || [ "$(cat "$dir/.version" 2>/dev/null)" != "$version" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "@openai/codex@$version" >&2
    echo "$version" >"$dir/.version"
fi
launcher=$dir/codex
cat >"$launcher" <<SH
#!/bin/sh
exec node "$entry" "\$@"
SH
chmod +x "$launcher"
"$launcher" --version >/dev/null || { echo "the Codex CLI does not run" >&2; exit 1; }
echo "$launcher"

#!/usr/bin/env bash
# Installs the pinned Claude Code CLI from npm into .claude-code/ (once; reused while the pin
# is unchanged) and prints the path of the command to run. Fails, never skips: the client
# suite needs the real CLI. Its native binary comes inside the npm package for the platform.
set -euo pipefail
version=2.1.332
root=$(cd "$(dirname "$0")/../../.." && pwd)
dir=$root/.claude-code
wrapper=$dir/node_modules/@anthropic-ai/claude-code/cli-wrapper.cjs
command -v npm >/dev/null || { echo "npm is required for the Claude Code tests (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -f "$wrapper" ] || [ "$(cat "$dir/.version" 2>/dev/null)" != "$version" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$version" >&2
    echo "$version" >"$dir/.version"
fi
# The package's own launcher finds the platform's native binary (its postinstall, which
# would copy that binary into place, may be held back by npm's install-script policy).
launcher=$dir/claude
cat >"$launcher" <<SH
#!/bin/sh
exec node "$wrapper" "\$@"
SH
chmod +x "$launcher"
"$launcher" --version >/dev/null || { echo "the Claude Code CLI does not run" >&2; exit 1; }
echo "$launcher"

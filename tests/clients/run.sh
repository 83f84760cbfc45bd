#!/usr/bin/env bash
# Client compatibility, twice:
# 1. mock mode, started exactly as the product guide's test mode says (port 3000, key
#    your-api-key): the official Python SDKs, the legacy openai==0.28 client, the guide's curls;
# 2. live mode: aiproxy with a real credential file against `aiproxy fake-kiro` (tokens,
#    refresh, the HTTP client, the fake's validation of every upstream body): the same SDK
#    suite again, then the real Claude Code and Codex CLIs (tests/clients/live/);
# 3. the operator console in headless Chromium (tests/clients/console/, its own aiproxy and
#    fake; CONSOLE_SCREENSHOTS=docs/console refreshes the README's screenshots).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${AIPROXY_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/aiproxy}
[ -x "$bin" ] || cargo build --bin aiproxy

make_venv() { # dir requirements
    if [ ! -x "$1/bin/python" ] || ! cmp -s "$2" "$1/.requirements"; then
        rm -rf "$1"
        python3 -m venv "$1"
        "$1/bin/pip" install --quiet --disable-pip-version-check -r "$2"
        cp "$2" "$1/.requirements"
    fi
}
make_venv .venv-clients tests/clients/requirements.txt
make_venv .venv-legacy tests/clients/legacy/requirements.txt
claude_bin=$(bash tests/clients/live/install_claude_code.sh)
codex_bin=$(bash tests/clients/live/install_codex.sh)
# The Vercel AI SDK (pinned in its package.json), for the mock-mode run.
if [ ! -d tests/clients/vercel/node_modules ] || ! cmp -s tests/clients/vercel/package.json tests/clients/vercel/node_modules/.package.json; then
    (cd tests/clients/vercel && npm install --no-audit --no-fund --loglevel=error --no-package-lock >&2)
    cp tests/clients/vercel/package.json tests/clients/vercel/node_modules/.package.json
fi

if (exec 3<>/dev/tcp/127.0.0.1/3000) 2>/dev/null; then
    echo "port 3000 is in use; the guide's examples need it. Stop what listens there." >&2
    exit 1
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_listening() { # log
    for _ in $(seq 100); do
        grep -q "listening on" "$1" && return 0
        sleep 0.1
    done
    cat "$1" >&2
    return 1
}
stop() { # pid what
    kill -TERM "$1"
    wait "$1" || { echo "$2 did not exit cleanly on SIGTERM" >&2; return 1; }
}
pytest_clients() { # extra pytest args...
    (cd tests/clients && AIPROXY_BIN="$bin" "$root/.venv-clients/bin/python" -m pytest -q -p no:cacheprovider . --ignore=legacy --ignore=console "$@")
}

status=0
echo "-- mock mode"
KIRO_MOCK_MODE=true "$bin" --model-provider kiro-api --api-key your-api-key >"$work/mock.log" 2>&1 &
mock=$!
pids+=("$mock")
wait_listening "$work/mock.log"
pytest_clients --ignore=live || status=1
AIPROXY_BASE=http://localhost:3000 AIPROXY_KEY=your-api-key node tests/clients/vercel/vercel.test.mjs || status=1
(cd tests/clients/legacy && "$root/.venv-legacy/bin/python" -m pytest -q -p no:cacheprovider .) || status=1
stop "$mock" aiproxy || status=1

echo "-- live mode (aiproxy -> aiproxy fake-kiro)"
"$bin" fake-kiro --port 0 >"$work/fake.log" 2>&1 &
pids+=("$!")
wait_listening "$work/fake.log"
fake_url=$(sed -n 's/^fake-kiro listening on //p' "$work/fake.log" | head -n 1)
printf '{"refreshToken": "rt-client-suite-%s", "authMethod": "social"}\n' "$RANDOM$RANDOM" >"$work/kiro-creds.json"
"$bin" --model-provider kiro-api --api-key your-api-key \
    --kiro-oauth-creds-file "$work/kiro-creds.json" --state-dir "$work/state" \
    --kiro-base-url "$fake_url" --kiro-refresh-url "$fake_url/refreshToken" \
    --kiro-idc-refresh-url "$fake_url/token" >"$work/live.log" 2>&1 &
live=$!
pids+=("$live")
wait_listening "$work/live.log"
FAKE_KIRO_URL=$fake_url CLAUDE_BIN=$claude_bin CODEX_BIN=$codex_bin pytest_clients || status=1
stop "$live" aiproxy || status=1
[ $status -eq 0 ] || { echo "-- aiproxy live log (tail)"; tail -n 40 "$work/live.log"; }

echo "-- console (headless Chromium)"
chromium=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$chromium" ]; then
    echo "chromium is not installed (Debian: apt-get install chromium); the console's browser tests need it" >&2
    exit 1
fi
(cd tests/clients/console && AIPROXY_BIN="$bin" CHROMIUM="$chromium" "$root/.venv-clients/bin/python" -m pytest -q -p no:cacheprovider .) || status=1
exit $status

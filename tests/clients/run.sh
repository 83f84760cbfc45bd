#!/usr/bin/env bash
# Client compatibility: the official Python SDKs, the legacy openai==0.28 client and the
# product guide's curls, against a started aiproxy binary on mock Kiro, started exactly as
# the guide's test mode says (port 3000, key your-api-key).
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

if (exec 3<>/dev/tcp/127.0.0.1/3000) 2>/dev/null; then
    echo "port 3000 is in use; the guide's examples need it. Stop what listens there." >&2
    exit 1
fi
log=$(mktemp)
KIRO_MOCK_MODE=true "$bin" --model-provider kiro-api --api-key your-api-key >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening on" "$log" && break
    sleep 0.1
done
grep -q "listening on" "$log" || { cat "$log" >&2; exit 1; }

status=0
(cd tests/clients && "$root/.venv-clients/bin/python" -m pytest -q -p no:cacheprovider .  --ignore=legacy) || status=1
(cd tests/clients/legacy && "$root/.venv-legacy/bin/python" -m pytest -q -p no:cacheprovider .) || status=1

kill -TERM $pid
wait $pid || { echo "aiproxy did not exit cleanly on SIGTERM" >&2; status=1; }
trap - EXIT
exit $status

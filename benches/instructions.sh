#!/usr/bin/env bash
# Instructions aiproxy runs per request (user space), counted by callgrind: the same figure on
# a busy machine as on a quiet one (a few hundred instructions apart between runs of one
# binary), where the harness's CPU per request moves by tens of percent with the machine.
# For comparing two builds of a change; the harness stays the measure of time.
#
#   bash benches/instructions.sh                 # the release build, non-stream chat
#   MODE=stream bash benches/instructions.sh     # a 50-word streamed chat
#   BIN=/path/to/aiproxy bash benches/instructions.sh
#
# aiproxy runs under callgrind in live mode against `aiproxy fake-kiro` (not instrumented);
# after a warm-up the counters are zeroed, REQUESTS requests are sent at a fixed rate the
# instrumented process keeps up with, and the total is divided by the answered ones. With a
# build that has line tables (the `profiling` profile), `callgrind_annotate --inclusive=yes
# OUT` says where they went. Needs valgrind (`apt-get install valgrind`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BIN=${BIN:-$root/target/release/aiproxy}
LOAD=${LOAD:-$root/target/release/examples/loadgen}
REQUESTS=${REQUESTS:-500}
RATE=${RATE:-50}
MODE=${MODE:-small}
OUT=${OUT:-$(mktemp -d)/callgrind.out}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release --locked --bin aiproxy --example loadgen
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

(exec "$BIN" fake-kiro --port 0 >"$work/fake.out" 2>"$work/fake.err") &
pids+=($!)
fake=$(wait_listening "$work/fake.out")
live_proxy_args "$fake" "$work" bench-instructions
(exec valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" --port 0 --api-key bench \
    --max-connections 4096 --request-timeout 60 "${live_args[@]}" >"$work/proxy.out" 2>"$work/proxy.err") &
instrumented=$!
pids+=($instrumented)
proxy=$(wait_listening "$work/proxy.out")
if [ "$MODE" = stream ]; then
    openai_body "$(words 50)" 1 >"$work/body.json"
else
    openai_body "hello there" 0 >"$work/body.json"
fi
via=(--url "$proxy/v1/chat/completions" --header "authorization:Bearer bench" --body "$work/body.json")
"$LOAD" rate "${via[@]}" --rps 20 --seconds 3 >/dev/null # warm: token, connections, first-use paths
callgrind_control --zero "$instrumented" >/dev/null
result=$("$LOAD" rate "${via[@]}" --rps "$RATE" --seconds $((REQUESTS / RATE)))
callgrind_control --dump "$instrumented" >/dev/null
sleep 1
dump=$(ls -t "$OUT"* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
python3 - "$result" "$total" "$dump" "$MODE" <<'PY'
import json, sys
result, total, dump, mode = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
answered = result["latency"]["count"]
if answered == 0 or result["failed"]:
    sys.exit(f"{result['failed']} requests failed: {result}")
print(json.dumps({"mode": mode, "requests": answered, "instructions": total,
                  "per_request": round(total / answered), "callgrind_out": dump}))
PY

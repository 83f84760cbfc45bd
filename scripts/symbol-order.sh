#!/usr/bin/env bash
# Writes build/symbol-order.txt: the release binary's functions in the order build.rs has the
# linker lay them out. Run it after a dependency or compiler update (a list whose names are gone
# from the binary is skipped by the linker, so the build never breaks, only the locality goes):
#
#   bash scripts/symbol-order.sh     # needs valgrind and openssl; under a minute after the build
#
# The release binary runs under callgrind in live mode with an account on `aiproxy fake-kiro`
# and one on a second fake over TLS: first its
# start (to idle), then a round of requests through each API, streamed and not, then 80 at
# once (slow streams and plain requests). The list is
# the functions of the start, then those the requests added, each group hottest first. The
# functions nothing here runs (other sub-commands, error paths) stay out, so they end up
# after the list, away from the code that runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl (apt-get install openssl)" >&2; exit 1; }
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
release_and_work_dir "$root"

# Two fakes, one over TLS (HTTP/2 by ALPN, as Kiro), and an account on each: the code of both
# upstream paths is listed (the harness measures both).
test_authority "$work/tls"
"$bin" fake-kiro --port 0 >"$work/fake.out" 2>"$work/fake.err" &
pids+=($!)
"$bin" fake-kiro --port 0 --tls-cert "$work/tls/server.pem" --tls-key "$work/tls/server.key" \
    >"$work/fake-tls.out" 2>"$work/fake-tls.err" &
pids+=($!)
fake=$(wait_listening "$work/fake.out")
fake_tls=$(wait_listening "$work/fake-tls.out")
account() { # name fake-URL -> a pool file entry
    printf '{"refreshToken":"order-%s","authMethod":"social"}' "$1" >"$work/creds-$1.json"
    printf '{"name":"%s","credsFile":"%s","baseUrl":"%s","refreshUrl":"%s/refreshToken"}' \
        "$1" "$work/creds-$1.json" "$2" "$2"
}
printf '{"kiro-api":[%s,%s]}' "$(account plain "$fake")" "$(account tls "$fake_tls")" >"$work/pools.json"
valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$work/cg.%p" "$bin" --port 0 --api-key order \
    --provider-pools-file "$work/pools.json" --kiro-ca-file "$work/tls/ca.pem" --state-dir "$work/state" \
    >"$work/proxy.out" 2>"$work/proxy.err" &
proxy_pid=$!
pids+=($proxy_pid)
# Under callgrind the start takes a while: up to 2 minutes for the listening line, then time
# for the first catalog.
proxy=$(wait_listening "$work/proxy.out" 2400) ||
    { echo "aiproxy did not start under callgrind: $(cat "$work/proxy.err")" >&2; exit 1; }
sleep 3
callgrind_control --dump=start "$proxy_pid" >/dev/null

post() { curl -s -o /dev/null -w '%{http_code}\n' "$proxy$1" -H "authorization: Bearer order" -H "content-type: application/json" -d "$2"; }
for stream in false true; do
    for _ in 1 2; do
        post /v1/chat/completions "{\"model\":\"claude-sonnet-4-5\",\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}"
        post /v1/messages "{\"model\":\"claude-sonnet-4-5\",\"stream\":$stream,\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}"
        post /v1/responses "{\"model\":\"claude-sonnet-4-5\",\"stream\":$stream,\"input\":\"hello there\"}"
    done
done
# Then many at once, as under load: new upstream connections, a fuller pool, timers, streams
# whose events arrive apart (these are most of what runs when 1000 streams are open).
slow='{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"a b c d e f g h\nfake-kiro: {\"event_delay_ms\": 50}"}]}'
clients=()
for _ in $(seq 40); do
    post /v1/chat/completions "$slow" >/dev/null &
    clients+=($!)
    post /v1/chat/completions '{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hello there"}]}' >/dev/null &
    clients+=($!)
done
wait "${clients[@]}"
curl -s -o /dev/null "$proxy/v1/models" -H "authorization: Bearer order"
curl -s -o /dev/null "$proxy/health"
kill -TERM "$proxy_pid"
wait "$proxy_pid" || true

python3 - "$work" "$bin" "$root/build/symbol-order.txt" <<'PY'
import glob, subprocess, sys
work, binary, out = sys.argv[1:4]
ours = set(subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
           .stdout.split()[2::3])
def costs(path):
    """function -> its own instruction count, from one callgrind dump (uncompressed names)."""
    cost, fn, obj, call_line = {}, None, None, False
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            obj = line[3:].strip()
        elif line.startswith("fn="):
            fn = line[3:].strip() if obj and obj.endswith("/aiproxy") else None
        elif line.startswith("calls="):
            call_line = True  # the next cost line is the callee's (inclusive), not fn's own
        elif line[:1].isdigit():
            parts = line.split()
            if fn and not call_line and len(parts) >= 2:
                cost[fn] = cost.get(fn, 0) + int(parts[1])
            call_line = False
    return cost
dumps = sorted(glob.glob(f"{work}/cg.*"), key=lambda p: (p.count("."), p))
start = [p for p in dumps if p.endswith(".1")] or dumps[:1]
rest = [p for p in dumps if p not in start]
order, seen = [], set()
for group in (start, rest):
    merged = {}
    for path in group:
        for fn, c in costs(path).items():
            merged[fn] = merged.get(fn, 0) + c
    for fn, _ in sorted(merged.items(), key=lambda kv: -kv[1]):
        if fn in ours and fn not in seen:
            seen.add(fn)
            order.append(fn)
open(out, "w").write("".join(f + "\n" for f in order))
print(f"{len(order)} functions ({len(start)} start dump(s), {len(rest)} request dump(s)) -> {out}")
PY

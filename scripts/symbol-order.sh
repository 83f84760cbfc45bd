#!/usr/bin/env bash
# Writes build/symbol-order.txt: the release binary's functions in the order build.rs has the
# linker lay them out. Run it after a dependency or compiler update (a list whose names are gone
# from the binary is skipped by the linker, so the build never breaks, only the locality goes):
#
#   bash scripts/symbol-order.sh     # needs valgrind and openssl; about two minutes after the build
#
# The release binary runs under callgrind in live mode, once against `aiproxy fake-kiro` and
# once against a second fake over TLS (HTTP/2, as Kiro): each time first its
# start (to idle), then a round of requests through each API, streamed and not, then 80 at
# once (slow streams and plain requests). The list is the functions of the start, then those
# the requests added; in each, first those both runs ran, then the plain run's own, then the
# TLS run's own, each group hottest first. The
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

# Two fakes, one over TLS (HTTP/2 by ALPN, as Kiro). aiproxy runs twice under callgrind, in
# live mode against each: the plain path is the harness's, the TLS one production's.
test_authority "$work/tls"
"$bin" fake-kiro --port 0 >"$work/fake.out" 2>"$work/fake.err" &
pids+=($!)
"$bin" fake-kiro --port 0 --tls-cert "$work/tls/server.pem" --tls-key "$work/tls/server.key" \
    >"$work/fake-tls.out" 2>"$work/fake-tls.err" &
pids+=($!)
fake=$(wait_listening "$work/fake.out")
fake_tls=$(wait_listening "$work/fake-tls.out")

profile() { # name fake-URL extra-flags... -> callgrind dumps $work/NAME/cg.PID.N
    local name=$1 url=$2 proxy proxy_pid
    shift 2
    mkdir -p "$work/$name"
    live_proxy_args "$url" "$work/$name" "order-$name"
    valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
        --callgrind-out-file="$work/$name/cg.%p" "$bin" --port 0 --api-key order "${live_args[@]}" "$@" \
        >"$work/$name/proxy.out" 2>"$work/$name/proxy.err" &
    proxy_pid=$!
    pids+=($proxy_pid)
    # Under callgrind the start takes a while: up to 2 minutes for the listening line, then
    # time for the first catalog.
    proxy=$(wait_listening "$work/$name/proxy.out" 2400) ||
        { echo "aiproxy did not start under callgrind: $(cat "$work/$name/proxy.err")" >&2; exit 1; }
    sleep 3
    callgrind_control --dump=start "$proxy_pid" >/dev/null

    post() { curl -s -o /dev/null -w '%{http_code}\n' "$proxy$1" -H "authorization: Bearer order" -H "content-type: application/json" -d "$2"; }
    api_round
    # Then many at once, as under load: new upstream connections, a fuller pool, timers,
    # streams whose events arrive apart (most of what runs when 1000 streams are open).
    local slow='{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"a b c d e f g h\nfake-kiro: {\"event_delay_ms\": 50}"}]}'
    local clients=()
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
}
profile plain "$fake"
profile tls "$fake_tls" --kiro-ca-file "$work/tls/ca.pem"

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
def merged(paths):
    total = {}
    for path in paths:
        for fn, c in costs(path).items():
            total[fn] = total.get(fn, 0) + c
    return total
def phases(name):
    """(start, requests): function -> cost, from the run's start dump and the others."""
    dumps = sorted(glob.glob(f"{work}/{name}/cg.*"), key=lambda p: (p.count("."), p))
    start = [p for p in dumps if p.endswith(".1")] or dumps[:1]
    return merged(start), merged([p for p in dumps if p not in start])
plain, tls = phases("plain"), phases("tls")
order, seen = [], set()
def add(by_cost):
    for fn, _ in sorted(by_cost.items(), key=lambda kv: -kv[1]):
        if fn in ours and fn not in seen:
            seen.add(fn)
            order.append(fn)
# Each phase: what both paths run, then what only the plain one does, then only TLS: each
# process then touches one stretch of its phase, not one spread over the other path's code.
for (p, t) in zip(plain, tls):
    add({fn: p[fn] + t[fn] for fn in p.keys() & t.keys()})
    add({fn: c for fn, c in p.items() if fn not in t})
    add({fn: c for fn, c in t.items() if fn not in p})
open(out, "w").write("".join(f + "\n" for f in order))
print(f"{len(order)} functions -> {out}")
PY

#!/usr/bin/env bash
# Where aiproxy's CPU goes at saturation: a sampled profile of the release build (with
# symbols: the `profiling` profile) under the load harness's saturation run, pinned as the
# harness pins it (fake-kiro and the load generator on core 0, aiproxy on core 1).
#
#   bash benches/profile.sh            # writes benches/profile/{layers.md,top.txt,flame.svg}
#
# layers.md (the per-layer table BENCHMARKS.md includes) gives each part's share of the
# samples and, from the CPU per request of an unprofiled run of the same load, its time per
# request.
#
# Needs `perf` (software clock: no hardware counters required). The flame graph needs
# `inferno` (`cargo install inferno`); without it the folded stacks and the table are written.
# Knobs: SECONDS_LOAD (10), CONNECTIONS (64), FREQ (sampling Hz, 1999), MODE (saturate | stream).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
SECONDS_LOAD=${SECONDS_LOAD:-10}
CONNECTIONS=${CONNECTIONS:-64}
FREQ=${FREQ:-1999}
MODE=${MODE:-saturate}
out=$root/benches/profile
mkdir -p "$out"
# Frame pointers make perf's call graphs cheap and complete; a target dir of its own keeps
# these flags from rebuilding the normal one. RUSTFLAGS replaces .cargo/config.toml's flags,
# so its cfg is repeated here (it keeps a directory built before the profile-guided build from
# keeping dependencies compiled without the profile).
export CARGO_TARGET_DIR=${PROFILE_TARGET_DIR:-$root/target/profiling-fp}
RUSTFLAGS="-C force-frame-pointers=yes --cfg aiproxy_pgo_build" cargo build --profile profiling --locked --bin aiproxy --example loadgen
bin=$CARGO_TARGET_DIR/profiling/aiproxy
load=$CARGO_TARGET_DIR/profiling/examples/loadgen
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

(exec taskset -c 0 "$bin" fake-kiro --port 0 >"$work/fake.out" 2>"$work/fake.err") &
pids+=($!)
fake=$(wait_listening "$work/fake.out")
live_proxy_args "$fake" "$work" bench-proxy
(exec taskset -c 1 "$bin" --port 0 --api-key bench --max-connections 4096 --request-timeout 60 \
    "${live_args[@]}" >"$work/proxy.out" 2>"$work/proxy.err") &
proxy_pid=$!
pids+=($proxy_pid)
proxy=$(wait_listening "$work/proxy.out")

if [ "$MODE" = stream ]; then
    openai_body "$(words 50)
fake-kiro: {\"event_delay_ms\": 1}" 1 >"$work/body.json"
else
    openai_body "hello there" 0 >"$work/body.json"
fi
via=(--url "$proxy/v1/chat/completions" --header "authorization:Bearer bench" --body "$work/body.json")
load_run() {
    if [ "$MODE" = stream ]; then
        taskset -c 0 "$load" stream "${via[@]}" --requests $((SECONDS_LOAD * 100)) --concurrency "$CONNECTIONS"
    else
        taskset -c 0 "$load" saturate "${via[@]}" --connections "$CONNECTIONS" --seconds "$SECONDS_LOAD"
    fi
}
taskset -c 0 "$load" saturate "${via[@]}" --connections 4 --seconds 1 >/dev/null # warm

# CPU per request without the profiler (its sampling costs time of its own): aiproxy's user +
# system ticks over an unprofiled run of the same load.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy_pid/stat"; }
before=$(cpu_ticks)
plain=$(load_run)
after=$(cpu_ticks)
cpu_us=$(python3 -c 'import json,os,sys; r=json.loads(sys.argv[3]); print(round((int(sys.argv[2])-int(sys.argv[1])) * 1e6 / os.sysconf("SC_CLK_TCK") / r["ok"], 1))' "$before" "$after" "$plain")
echo "unprofiled: $plain; aiproxy CPU per request: $cpu_us us" >&2

perf record -F "$FREQ" -g -p "$proxy_pid" -o "$work/perf.data" -- sleep "$SECONDS_LOAD" 2>"$work/perf.err" &
perf_pid=$!
result=$(load_run)
wait $perf_pid
echo "load: $result" >&2

script_out=${PERF_SCRIPT:-$work/perf.script}
perf script -i "$work/perf.data" 2>/dev/null >"$script_out"
python3 "$root/benches/profile_fold.py" "$script_out" "$out/folded.txt" "$out/top.txt" "$result" "$cpu_us" "$MODE" >"$out/layers.md"
if command -v inferno-flamegraph >/dev/null; then
    inferno-flamegraph --title "aiproxy at saturation ($MODE)" <"$out/folded.txt" >"$out/flame.svg"
    echo "flame graph: $out/flame.svg" >&2
fi
rm -f "$out/folded.txt.gz"; gzip -f "$out/folded.txt"
cat "$out/layers.md"

#!/usr/bin/env bash
# Writes build/pgo/aiproxy.profdata, the profile every optimised build is compiled with
# (build/rustc-pgo, set as Cargo's rustc wrapper in .cargo/config.toml). Rerun it after a
# change to the request path, a dependency update or a compiler update (a profile older than
# the code only loses the gain in what changed; one from another LLVM is not used at all):
#
#   bash scripts/pgo.sh     # about 10 minutes on 2 cores; needs openssl and the llvm-tools
#                           # component (rustup component add llvm-tools)
#
# Then rebuild (`cargo build --release`) and rerun scripts/symbol-order.sh: the profile changes
# what the compiler inlines, so the function names the layout list orders change with it.
#
# The training run: an instrumented release build (-Cprofile-generate) serves in live mode,
# pinned as the harness pins it, once against `aiproxy fake-kiro` over plain HTTP/1 and once
# against a fake over TLS (HTTP/2, as Kiro): a round of requests through each API, streamed
# and not, then the load generator's saturation (chat, then messages) and 50-event streams.
# Only aiproxy's own counts are kept (the fakes and the load generator are the same
# instrumented build; their counts go elsewhere). The profile is sparse: a function the
# training never ran has no entry, so it is compiled as without a profile, not as cold code.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v openssl >/dev/null || { echo "needs openssl (apt-get install openssl)" >&2; exit 1; }
profdata=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata
[ -x "$profdata" ] || { echo "needs llvm-profdata: rustup component add llvm-tools" >&2; exit 1; }
llvm=$(sh build/rustc-pgo --llvm-major rustc)
SECS=${SECS:-5}

target=$root/target/pgo-generate
raw=$target/raw
rm -rf "$raw"
mkdir -p "$raw/aiproxy" "$raw/others"
# Two builds, as in the harness: with the example in the same one, the dev-dependencies'
# features (tokio's test-util, ...) would be in the binary's dependencies too, and their
# functions would not be the ones a release build compiles (the profile would miss them).
export CARGO_TARGET_DIR=$target RUSTFLAGS="-Cprofile-generate=$raw/others"
cargo build --release --locked --bin aiproxy
cargo build --release --locked --example loadgen
unset CARGO_TARGET_DIR RUSTFLAGS
bin=$target/release/aiproxy
load=$target/release/examples/loadgen
work=$(mktemp -d)
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
export LLVM_PROFILE_FILE=$raw/others/%p.profraw

test_authority "$work/tls"
(exec taskset -c 0 "$bin" fake-kiro --port 0 >"$work/fake.out" 2>"$work/fake.err") &
pids+=($!)
(exec taskset -c 0 "$bin" fake-kiro --port 0 --tls-cert "$work/tls/server.pem" \
    --tls-key "$work/tls/server.key" >"$work/fake-tls.out" 2>"$work/fake-tls.err") &
pids+=($!)
fake=$(wait_listening "$work/fake.out")
fake_tls=$(wait_listening "$work/fake-tls.out")

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
chat = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello there"}]}
words = " ".join(f"w{i}" for i in range(50))
bodies = {
    "chat": dict(chat, stream=False),
    "messages": dict(chat, stream=False, max_tokens=64),
    "stream": dict(chat, stream=True, messages=[{"role": "user", "content": words + '\nfake-kiro: {"event_delay_ms": 1}'}]),
}
for name, body in bodies.items():
    json.dump(body, open(f"{work}/{name}.json", "w"))
PY

train() { # name fake-URL extra-flags...
    local name=$1 url=$2 proxy proxy_pid
    shift 2
    mkdir -p "$work/$name"
    live_proxy_args "$url" "$work/$name" "pgo-$name"
    (exec env LLVM_PROFILE_FILE="$raw/aiproxy/$name-%p.profraw" taskset -c 1 "$bin" --port 0 \
        --api-key pgo --max-connections 4096 --request-timeout 60 "${live_args[@]}" "$@" \
        >"$work/$name/proxy.out" 2>"$work/$name/proxy.err") &
    proxy_pid=$!
    pids+=($proxy_pid)
    proxy=$(wait_listening "$work/$name/proxy.out")
    post() {
        local code
        code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy$1" -H "authorization: Bearer pgo" \
            -H "content-type: application/json" -d "$2")
        [ "$code" = 200 ] || { echo "$1 answered $code in the training run" >&2; exit 1; }
    }
    api_round
    local via=(--header "authorization:Bearer pgo")
    taskset -c 0 "$load" saturate --url "$proxy/v1/chat/completions" "${via[@]}" \
        --body "$work/chat.json" --connections 64 --seconds "$SECS" >"$work/$name/chat.json"
    taskset -c 0 "$load" saturate --url "$proxy/v1/messages" "${via[@]}" \
        --body "$work/messages.json" --connections 64 --seconds 2 >"$work/$name/messages.json"
    taskset -c 0 "$load" stream --url "$proxy/v1/chat/completions" "${via[@]}" \
        --body "$work/stream.json" --requests 300 --concurrency 64 >"$work/$name/stream.json"
    for run in chat messages stream; do
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit("%s: %d failed" % (sys.argv[2], r["failed"]) if r["failed"] else 0)' \
            "$work/$name/$run.json" "$name $run"
    done
    # The counts are written when the process exits.
    kill -TERM "$proxy_pid"
    wait "$proxy_pid" || true
}
train plain "$fake"
train tls "$fake_tls" --kiro-ca-file "$work/tls/ca.pem"

mkdir -p "$root/build/pgo"
"$profdata" merge --sparse -o "$root/build/pgo/aiproxy.profdata.tmp" "$raw"/aiproxy/*.profraw
mv "$root/build/pgo/aiproxy.profdata.tmp" "$root/build/pgo/aiproxy.profdata"
echo "$llvm" >"$root/build/pgo/llvm-major"
echo "wrote build/pgo/aiproxy.profdata (LLVM $llvm); now cargo build --release, then bash scripts/symbol-order.sh" >&2

#!/usr/bin/env bash
# The soak run (issue "Hardening"): aiproxy in live mode (release build) against
# `aiproxy fake-kiro`, loopback only, for SOAK_SECONDS (600) with SOAK_WORKERS (16) clients of
# mixed traffic (scripts/soak.py says which); RSS and open descriptors sampled every 5 s.
# Exits non-zero on any unexpected status (a 5xx included) or memory/descriptor growth.
#
#   bash scripts/soak.sh                  # 10 minutes
#   SOAK_SECONDS=60 bash scripts/soak.sh  # a short smoke run
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_WORKERS=${SOAK_WORKERS:-16}
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
release_and_work_dir "$root"
("$bin" fake-kiro --port 0 --event-delay-ms 2 >"$work/fake.out" 2>"$work/fake.err") &
pids+=($!)
fake=$(wait_listening "$work/fake.out")
live_proxy_args "$fake" "$work" soak
(exec "$bin" --port 0 --api-key soak-key --max-body-bytes 65536 "${live_args[@]}" \
    >"$work/proxy.out" 2>"$work/proxy.err") &
proxy_pid=$!
pids+=($proxy_pid)
proxy=$(wait_listening "$work/proxy.out")
echo "soak: ${SOAK_SECONDS}s, ${SOAK_WORKERS} clients, aiproxy pid $proxy_pid at $proxy" >&2
status=0
python3 scripts/soak.py "$proxy" "$fake" "$proxy_pid" "$SOAK_SECONDS" "$SOAK_WORKERS" || status=$?
if grep -q "panicked" "$work/proxy.err"; then echo "aiproxy panicked:" >&2; grep -m3 panicked "$work/proxy.err" >&2; status=1; fi
exit $status

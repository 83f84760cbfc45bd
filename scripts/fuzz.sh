#!/usr/bin/env bash
# The property tests of tests/fuzz.rs, run longer than CI runs them, with the rate.
#   bash scripts/fuzz.sh            # 20000 cases per property (the test profile, as CI builds it)
#   CASES=200000 bash scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${CASES:-20000}
properties=$(grep -c '^    fn ' tests/fuzz.rs)
cargo test --test fuzz --no-run -q 2>/dev/null || cargo test --test fuzz --no-run
start=$(date +%s.%N)
PROPTEST_CASES=$cases cargo test -q --test fuzz -- --test-threads 2
end=$(date +%s.%N)
python3 - "$start" "$end" "$cases" "$properties" <<'PY'
import sys
start, end, cases, properties = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
total = cases * properties
print(f"{properties} properties x {cases} cases = {total} cases in {end - start:.1f} s: {total / (end - start):.0f} cases/s")
PY

#!/usr/bin/env bash
# The product guide's "API 使用示例" curls, verbatim (with the key from its test-mode start).
# Each command's output goes to its own file for test_seed_examples.py to check.
set -euo pipefail
out=${1:?output directory}

curl http://localhost:3000/v1/models \
  -H "Authorization: Bearer your-api-key" \
  -H "X-Model-Provider: kiro-api" > "$out/models.json"

curl -X POST http://localhost:3000/v1/chat/completions \
  -H "Authorization: Bearer your-api-key" \
  -H "X-Model-Provider: kiro-api" \
  -H "Content-Type: application/json" \
  -d '{
    "model": "claude-3-sonnet-20240229",
    "messages": [
      {"role": "user", "content": "Hello, Claude!"}
    ],
    "max_tokens": 100
  }' > "$out/chat.json"

curl -X POST http://localhost:3000/v1/chat/completions \
  -H "Authorization: Bearer your-api-key" \
  -H "X-Model-Provider: kiro-api" \
  -H "Content-Type: application/json" \
  -d '{
    "model": "claude-3-sonnet-20240229",
    "messages": [
      {"role": "user", "content": "Count from 1 to 5"}
    ],
    "stream": true
  }' > "$out/stream.txt"

curl http://localhost:3000/health > "$out/health.json"

# The guide's "监控" commands, verbatim (after the traffic above, so there is something to show).
curl http://localhost:3000/metrics | grep kiro > "$out/metrics_kiro.txt"
curl http://localhost:3000/metrics > "$out/metrics.txt"
curl http://localhost:3000/loadbalancer/instances | jq '.[] | select(.provider == "kiro-api")' > "$out/instances.json"

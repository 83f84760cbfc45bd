# Shell helpers shared by the harness scripts (sourced, not run).

# Waits for a server's "listening on URL" line in `file` (10 s, or `tries` x 50 ms) and prints
# the URL.
wait_listening() { # file [tries] -> prints URL
    for _ in $(seq "${2:-200}"); do
        if grep -q "listening on" "$1" 2>/dev/null; then sed -n 's/.*listening on //p' "$1" | head -1; return; fi
        sleep 0.05
    done
    echo "did not start: $(cat "$1")" >&2; exit 1
}

# N words (`w0 w1 ...`): the content of the benches' streamed chats (one event per word).
words() { python3 -c "print(' '.join('w%d' % i for i in range($1)))"; }

# The OpenAI chat body the benches send: CONTENT, streamed when STREAM is 1.
openai_body() { # content stream -> OpenAI body
    python3 -c 'import json,sys; print(json.dumps({"model":"claude-sonnet-4-5","stream":sys.argv[2]=="1","messages":[{"role":"user","content":sys.argv[1]}]}))' "$1" "$2"
}

# Writes a credential file for the fake and sets `live_args`: the flags that run aiproxy in
# live mode against `aiproxy fake-kiro` at URL (token refresh at the fake, state in WORK).
live_proxy_args() { # fake-URL work-dir refresh-token
    printf '{"refreshToken":"%s","authMethod":"social"}' "$3" >"$2/creds.json"
    live_args=(--kiro-oauth-creds-file "$2/creds.json" --kiro-base-url "$1"
        --kiro-refresh-url "$1/refreshToken" --state-dir "$2/state")
}

# Writes a throwaway certificate authority (DIR/ca.pem) and a certificate it signed for
# localhost and 127.0.0.1 (DIR/server.pem, DIR/server.key), valid two days: for
# `aiproxy fake-kiro --tls-cert` and aiproxy's `--kiro-ca-file`. Needs openssl.
test_authority() { # dir
    mkdir -p "$1"
    (cd "$1"
     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
         -subj "/CN=aiproxy test authority" -keyout ca.key -out ca.pem \
         -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
     openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
         -keyout server.key -out server.csr
     printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext
     openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile ext -out server.pem) >/dev/null 2>&1
}

# Two requests through each API (chat completions, messages, responses), streamed and not,
# each sent with `post PATH BODY`, a function the caller defines: the round the layout list
# (symbol-order.sh) and the build's profile (pgo.sh) are made from.
api_round() {
    local stream
    for stream in false true; do
        for _ in 1 2; do
            post /v1/chat/completions "{\"model\":\"claude-sonnet-4-5\",\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}"
            post /v1/messages "{\"model\":\"claude-sonnet-4-5\",\"stream\":$stream,\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}"
            post /v1/responses "{\"model\":\"claude-sonnet-4-5\",\"stream\":$stream,\"input\":\"hello there\"}"
        done
    done
}

# Builds the release binary and sets `bin` to it, `work` to a fresh directory and `pids` to an
# empty list; on exit the processes in `pids` are stopped and `work` is removed.
release_and_work_dir() { # repository-root
    cargo build --release --locked --bin aiproxy
    bin=${CARGO_TARGET_DIR:-$1/target}/release/aiproxy
    work=$(mktemp -d)
    pids=()
    trap stop_and_clean EXIT
}
stop_and_clean() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}

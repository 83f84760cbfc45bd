# Shell helpers shared by the harness scripts (sourced, not run).

# Waits for a server's "listening on URL" line in `file` and prints the URL.
wait_listening() { # file -> prints URL
    for _ in $(seq 200); do
        if grep -q "listening on" "$1" 2>/dev/null; then sed -n 's/.*listening on //p' "$1" | head -1; return; fi
        sleep 0.05
    done
    echo "did not start: $(cat "$1")" >&2; exit 1
}

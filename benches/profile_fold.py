"""Folds `perf script` output into flame-graph stacks and a table of where the time goes.

    python3 benches/profile_fold.py perf.script folded.txt top.txt LOAD_JSON CPU_US MODE > layers.md

Writes the folded stacks, the top self-time symbols (top.txt) and prints the per-layer table
in Markdown (each part's share of the samples, times CPU_US, the CPU per request measured
without the profiler).
"""
import collections
import json
import re
import sys

script, folded_path, top_path, load, cpu_us, mode = sys.argv[1:7]
cpu_us = float(cpu_us)


def samples(path):
    stack = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if stack:
                    yield stack
                stack = []
            elif line.startswith((" ", "\t")):
                parts = line.strip().split(" ", 1)
                sym = parts[1] if len(parts) > 1 else "?"
                sym = sym.rsplit(" (", 1)[0]
                sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
                stack.append(sym)
            else:
                stack = []
    if stack:
        yield stack


# Innermost match wins, so the order below does not matter; a sample whose frames name none
# of these parts is "other". Allocator and memcpy frames are charged to their caller's part.
PARTS = [
    ("kernel: socket writes (loopback runs the peer's receive here)", r"^(__GI___writev|__GI___libc_write|__libc_write|__send|__GI___send)$"),
    ("kernel: socket reads", r"^(__libc_recvfrom|__GI___recvfrom|__recv|__GI___libc_read|__libc_read|recv|__libc_recv)$"),
    ("kernel: epoll, futex, sleeps", r"^(epoll_wait|__GI_epoll_wait|__epoll_wait|syscall|__GI___futex.*|futex_wait|__futex_abstimed_wait.*|clock_nanosleep@GLIBC_2.2.5)$"),
    ("log line (tracing-subscriber fmt, batched writer)", r"^(tracing_subscriber::fmt|<tracing_subscriber::fmt|aiproxy::telemetry::batched|<aiproxy::telemetry::batched)"),
    ("spans (tracing registry, tower-http Trace)", r"tracing_subscriber::registry|tracing_core|tower_http::trace|aiproxy::pipeline::.*Span"),
    ("metrics (OpenTelemetry instruments)", r"opentelemetry"),
    ("event-stream frames (decode, CRC)", r"kiro::protocol::eventstream|crc32fast"),
    ("Kiro events to chat events", r"kiro::protocol::(stream|translate|thinking|wire)"),
    ("Kiro request body", r"kiro::protocol::request|kiro::transport"),
    ("Kiro service (token, attempt)", r"aiproxy::kiro::(service|auth|accounts)"),
    ("model tier (resolve, emulate, cache, pool, retry)", r"aiproxy::model::|aiproxy_layers::model::|aiproxy_layers::cache|aiproxy_layers::rate_limit"),
    ("OpenAI request parse and response encode", r"aiproxy::api::openai|aiproxy::chat::"),
    ("API adapter", r"aiproxy::api::"),
    ("JSON (serde_json)", r"serde_json"),
    ("HTTP tier layers (auth, route, metrics, request id, toggles)", r"aiproxy_layers::|tower_http::|aiproxy::pipeline"),
    ("HTTP client (hyper-util pool, h1 client)", r"hyper_util::client|role::Client|hyper::client"),
    ("HTTP server (hyper h1 server, connection tracking)", r"role::Server|hyper::server|aiproxy::server|hyper_util::server|hyper_util::service"),
    ("hyper h1 (shared by client and server)", r"hyper::"),
    ("tokio (scheduler, I/O driver, timers, channels)", r"tokio::"),
]
PART_RES = [(name, re.compile(pat)) for name, pat in PARTS]


def part_of(stack):
    for frame in stack:
        for name, pat in PART_RES:
            if pat.search(frame):
                return name
    return "other"


def per_part(stacks):
    counts = collections.Counter(part_of(s) for s in stacks)
    n = max(len(stacks), 1)
    return [(name, c / n * 100) for name, c in counts.most_common()]


folded = collections.Counter()
stacks = []
for stack in samples(script):
    stacks.append(stack)
    folded[";".join(reversed(stack))] += 1
with open(folded_path, "w") as f:
    for k, v in sorted(folded.items()):
        f.write(f"{k} {v}\n")
total = len(stacks)
self_time = collections.Counter(s[0] for s in stacks)
with open(top_path, "w") as f:
    f.write(f"samples {total}; load: {load}\n\nself time, top 60:\n")
    for sym, n in self_time.most_common(60):
        f.write(f"{n / total * 100:6.2f} %  {sym[:160]}\n")
    f.write("\nper layer (each sample goes to the innermost frame that names a part):\n")
    for name, share in per_part(stacks):
        f.write(f"{share:6.2f} %  {name}\n")
print(f"{total} samples", file=sys.stderr)
rps = json.loads(load).get("rps", 0)
print(f"Profile of the release build at saturation ({mode}, 64 connections; `bash benches/profile.sh`): "
      f"{total} samples at {rps:.0f} req/s under the profiler; **{cpu_us:.1f} µs of aiproxy CPU per "
      "request** without it (user + system, one core). Each sample is charged to the innermost "
      "frame that names a part; the allocator and memcpy are charged to their caller.\n")
print("| part | share | µs per request |")
print("|---|---:|---:|")
for name, share in per_part(stacks):
    print(f"| {name} | {share:.1f} % | {share * cpu_us / 100:.1f} |")

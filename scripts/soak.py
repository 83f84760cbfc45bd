"""The soak driver (stdlib only): mixed traffic against aiproxy for a bounded time, loopback
only, while the resident memory and open descriptors of the aiproxy process are sampled.

Traffic, from WORKERS concurrent clients: non-stream and stream chats in both API shapes,
bad inputs (broken JSON, unknown model, no key, an oversized body), slow readers, clients
that go away mid-stream, and headers trickled in; the fake Kiro's tokens are expired every
minute (aiproxy must refresh and carry on). Every answer's status is checked against what
that kind of request must get; a 5xx is a failure (the fake is not scripted to fail).

Usage: soak.py PROXY_URL FAKE_URL AIPROXY_PID SECONDS WORKERS
"""

import asyncio
import json
import os
import random
import sys
import time

PROXY, FAKE, PID, SECONDS, WORKERS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
assert PROXY.startswith("http://127.0.0.1") and FAKE.startswith("http://127.0.0.1"), "loopback only"
HOST, PORT = PROXY[len("http://"):].split(":")
KEY = "soak-key"


def host_port(url):
    host, port = url[len("http://"):].split(":")
    return host, int(port)


async def exchange(url, method, path, body=b"", headers=(), read=None, trickle=False):
    """One request on its own connection; returns (status, body bytes)."""
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        if trickle:  # headers a few bytes at a time, well within the header timeout
            data = head.encode()
            for i in range(0, len(data), 16):
                writer.write(data[i:i + 16])
                await writer.drain()
                await asyncio.sleep(0.01)
        else:
            writer.write(head.encode())
        writer.write(body)
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        if read is not None:
            return status, await read(reader)
        return status, await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def chat(stream, content):
    return json.dumps({"model": "claude-sonnet-4-5", "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()


def messages(stream, content):
    return json.dumps({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 256,
                       "messages": [{"role": "user", "content": content}]}).encode()


JSON = [("content-type", "application/json"), ("authorization", f"Bearer {KEY}")]
ANTHROPIC = [("content-type", "application/json"), ("x-api-key", KEY), ("anthropic-version", "2023-06-01")]


async def slow_read(reader):
    chunks = []
    while chunk := await reader.read(64):
        chunks.append(chunk)
        await asyncio.sleep(0.05)
    return b"".join(chunks)


async def leave_early(reader):
    return await reader.read(256)  # the first bytes of the stream, then the client goes away


def kinds():
    """(name, weight, request coroutine factory, allowed statuses)."""
    words = lambda: " ".join(random.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(random.randint(3, 40)))
    return [
        ("chat", 30, lambda: exchange(PROXY, "POST", "/v1/chat/completions", chat(False, words()), JSON), {200}),
        ("chat_stream", 20, lambda: exchange(PROXY, "POST", "/v1/chat/completions", chat(True, words()), JSON), {200}),
        ("messages", 10, lambda: exchange(PROXY, "POST", "/v1/messages", messages(False, words()), ANTHROPIC), {200}),
        ("messages_stream", 10, lambda: exchange(PROXY, "POST", "/v1/messages", messages(True, words()), ANTHROPIC), {200}),
        ("slow_reader", 5, lambda: exchange(PROXY, "POST", "/v1/chat/completions", chat(True, words()), JSON, read=slow_read), {200}),
        ("disconnect", 8, lambda: exchange(PROXY, "POST", "/v1/messages", messages(True, words()), ANTHROPIC, read=leave_early), {200}),
        ("trickled_headers", 3, lambda: exchange(PROXY, "POST", "/v1/chat/completions", chat(False, "hi"), JSON, trickle=True), {200}),
        ("bad_json", 4, lambda: exchange(PROXY, "POST", "/v1/chat/completions", b"{not json", JSON), {400}),
        ("unknown_model", 4, lambda: exchange(PROXY, "POST", "/v1/chat/completions", json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(), JSON), {404}),
        ("no_key", 3, lambda: exchange(PROXY, "POST", "/v1/chat/completions", chat(False, "x"), [("content-type", "application/json")]), {401}),
        ("oversized", 3, lambda: exchange(PROXY, "POST", "/v1/chat/completions", b"x" * 70_000, JSON), {413}),
    ]


def sample():
    with open(f"/proc/{PID}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return rss, len(os.listdir(f"/proc/{PID}/fd"))


async def main():
    table = kinds()
    weights = [k[1] for k in table]
    counts = {k[0]: {} for k in table}
    failures = []
    deadline = time.monotonic() + SECONDS
    samples = []
    expiries = 0

    async def worker():
        while time.monotonic() < deadline:
            name, _, make, allowed = random.choices(table, weights)[0]
            try:
                status, body = await make()
            except (ConnectionError, OSError, IndexError, ValueError) as error:
                status, body = f"error:{type(error).__name__}", b""
            counts[name][status] = counts[name].get(status, 0) + 1
            if status not in allowed:
                failures.append((name, status, body[:300].decode(errors="replace")))

    async def monitor():
        nonlocal expiries
        last_expiry = time.monotonic()
        while time.monotonic() < deadline:
            samples.append((round(time.monotonic() - start, 1), *sample()))
            if time.monotonic() - last_expiry >= 60:
                status, _ = await exchange(FAKE, "POST", "/__fake/expire-tokens")
                assert status == 200
                expiries += 1
                last_expiry = time.monotonic()
            await asyncio.sleep(5)

    start = time.monotonic()
    await asyncio.gather(monitor(), *(worker() for _ in range(WORKERS)))
    await asyncio.sleep(2)  # streams of clients that left are drained by now
    samples.append((round(time.monotonic() - start, 1), *sample()))
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    total = sum(sum(c.values()) for c in counts.values())
    five_xx = sum(n for c in counts.values() for s, n in c.items() if isinstance(s, int) and s >= 500)
    # Flat: after the first minute's warm-up, the last third of the run holds no more memory
    # than the middle third (plus 10 %), and no descriptor is left behind.
    third = max(1, len(rss) // 3)
    middle, last = max(rss[third:2 * third] or rss), max(rss[-third:])
    flat_rss = last <= middle * 1.10
    flat_fds = fds[-1] <= fds[0] + 8
    report = {
        "seconds": SECONDS, "workers": WORKERS, "requests": total, "token_expiries": expiries,
        "by_kind": counts, "unexpected": len(failures), "five_xx": five_xx,
        "rss_kib": {"start": rss[0], "peak": max(rss), "end": rss[-1], "middle_third_peak": middle, "last_third_peak": last},
        "fds": {"start": fds[0], "peak": max(fds), "end": fds[-1]},
        "flat": {"rss": flat_rss, "fds": flat_fds},
    }
    print(json.dumps(report, indent=2, default=str))
    for failure in failures[:10]:
        print("unexpected:", failure, file=sys.stderr)
    sys.exit(0 if not failures and flat_rss and flat_fds else 1)


asyncio.run(main())

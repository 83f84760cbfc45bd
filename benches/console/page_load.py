"""How fast the console's pages load with 50 accounts in the pool and a full request log
(500 entries): the server's answer times (median of 20 over a kept-alive connection) and
the time headless Chromium takes from navigation to a drawn tab. Prints a table; asserts
nothing (numbers go to BENCHMARKS.md).

    AIPROXY_BIN=target/release/aiproxy .venv-clients/bin/python benches/console/page_load.py
"""
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time
import uuid

import httpx
from playwright.sync_api import sync_playwright

BIN = os.environ.get("AIPROXY_BIN", "target/release/aiproxy")
ADMIN = "admin-key-of-the-page-load-bench"
ACCOUNTS = 50


def start(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIPROXY_", "KIRO_", "OTEL_"))}
    env["RUST_LOG"] = "warn"
    process = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = process.stdout.readline()
    assert "listening on " in line, line
    return process, line.split("listening on ")[1].strip()


def main():
    work = pathlib.Path(tempfile.mkdtemp(prefix="console-bench-"))
    fake, fake_url = start(["fake-kiro", "--port", "0"])
    entries = []
    for i in range(ACCOUNTS):
        name = f"acct-{i:02}"
        (work / f"{name}.json").write_text(json.dumps({"refreshToken": f"rt-{uuid.uuid4()}", "authMethod": "social"}))
        entries.append({"name": name, "credsFile": f"{name}.json"})
    pool = work / "pool.json"
    pool.write_text(json.dumps({"kiro-api": entries}))
    proxy, base = start(["--port", "0", "--admin-key", ADMIN, "--provider-pools-file", str(pool),
                         "--state-dir", str(work / "state"), "--kiro-base-url", fake_url,
                         "--kiro-refresh-url", f"{fake_url}/refreshToken", "--kiro-idc-refresh-url", f"{fake_url}/token"])
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(600):
                client.post("/v1/chat/completions", json={"model": "claude-sonnet-4", "messages": [{"role": "user", "content": f"fill the log {i}"}]})
            client.post("/console/login", data={"key": ADMIN})
            cookie = client.cookies.get("aiproxy_console")
            print(f"{ACCOUNTS} accounts, request log full; median of 20 answers (ms):")
            for path in ("/console", "/console/app.js", "/console/api/overview", "/console/api/accounts", "/console/api/keys", "/console/api/requests"):
                times, size = [], 0
                for _ in range(20):
                    started = time.perf_counter()
                    answer = client.get(path, cookies={"aiproxy_console": cookie})
                    times.append((time.perf_counter() - started) * 1000)
                    size = len(answer.content)
                    assert answer.status_code == 200, (path, answer.status_code)
                print(f"  {path:28} {statistics.median(times):6.2f}  ({size} bytes)")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()
            page.goto(f"{base}/console")
            page.fill("#key", ADMIN)
            page.click("#login button[type=submit]")
            page.wait_for_selector("body[data-loaded=overview]")
            print("headless Chromium, from navigation: the page ready (DOMContentLoaded) and the tab drawn, median of 10 (ms):")
            for tab in ("overview", "accounts", "keys", "requests"):
                ready, drawn = [], []
                for _ in range(10):
                    page.goto("about:blank")
                    page.goto(f"{base}/console#{tab}")
                    page.wait_for_selector(f"body[data-loaded={tab}]", state="attached")
                    timing = page.evaluate("""() => {
                        const nav = performance.getEntriesByType('navigation')[0];
                        return [nav.domContentLoadedEventEnd, Number(document.body.dataset.drawnAt)];
                    }""")
                    ready.append(timing[0])
                    drawn.append(timing[1])
                print(f"  {tab:10} ready {statistics.median(ready):6.1f}   drawn {statistics.median(drawn):6.1f}")
            browser.close()
    finally:
        for process in (proxy, fake):
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()

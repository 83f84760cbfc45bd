"""The operator console in headless Chromium (Debian's, driven by Playwright), against an
aiproxy of this module's own with two accounts on `aiproxy fake-kiro`: sign-in, the overview,
an account resting after a scripted 429, disable and enable with the pool following, adding
accounts by the device flow and by the pasted social address, a CSRF-less action refused,
and no secret in any page or answer. Screenshots go to $CONSOLE_SCREENSHOTS (the README's
come from here) or a temp dir."""
import json
import os
import pathlib
import re
import subprocess
import tempfile
import uuid

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

BIN = os.environ["AIPROXY_BIN"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ADMIN = "admin-key-of-the-browser-tests"
CLIENT = "client-key-of-the-browser-tests"
SHOTS = pathlib.Path(os.environ.get("CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-"))


def start(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIPROXY_", "KIRO_", "OTEL_"))}
    env["RUST_LOG"] = "warn"
    process = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = process.stdout.readline()
    assert "listening on " in line, line
    return process, line.split("listening on ")[1].strip()


@pytest.fixture(scope="module")
def stack():
    """fake-kiro, and aiproxy with a pool file of two accounts and the console on."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="console-browser-"))
    fake, fake_url = start(["fake-kiro", "--port", "0"])
    for name in ("a1", "a2"):
        (work / f"{name}.json").write_text(json.dumps({"refreshToken": f"rt-{name}-{uuid.uuid4()}", "authMethod": "social"}))
    pool = work / "provider_pools.json"
    pool.write_text(json.dumps({"kiro-api": [{"name": "a1", "credsFile": "a1.json"}, {"name": "a2", "credsFile": "a2.json"}]}))
    proxy, base = start([
        "--port", "0", "--api-key", CLIENT, "--admin-key", ADMIN,
        "--provider-pools-file", str(pool), "--state-dir", str(work / "state"),
        "--kiro-base-url", fake_url, "--kiro-refresh-url", f"{fake_url}/refreshToken",
        "--kiro-idc-refresh-url", f"{fake_url}/token",
    ])
    yield {"base": base, "fake": fake_url, "work": work, "pool": pool}
    for process in (proxy, fake):
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def sign_in(page, base, key=ADMIN):
    page.goto(f"{base}/console")
    page.fill("#key", key)
    page.click("#login button[type=submit]")


def open_tab(page, base, tab):
    page.goto(f"{base}/console#{tab}")
    expect(page.locator("body")).to_have_attribute("data-loaded", tab)


def chat(stack, text):
    answer = httpx.post(f"{stack['base']}/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT}"},
                        json={"model": "claude-sonnet-4", "messages": [{"role": "user", "content": text}]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def fake_control(stack, path, body):
    assert httpx.post(f"{stack['fake']}{path}", json=body).status_code == 200


def row(page, name):
    return page.locator(f'#accounts-table tr[data-account="{name}"]')


def test_sign_in_refuses_a_wrong_key_then_shows_the_overview(stack, page):
    base = stack["base"]
    sign_in(page, base, "not-the-admin-key")
    expect(page.locator("#message")).to_have_text("That is not the admin key.")
    sign_in(page, base, CLIENT)
    expect(page.locator("#message")).to_have_text("That is not the admin key.")
    for text in ("one", "two", "three"):
        chat(stack, text)
    sign_in(page, base)
    expect(page.locator("body")).to_have_attribute("data-loaded", "overview")
    cards = page.locator("#overview-cards")
    expect(cards).to_contain_text("Requests (hour)")
    expect(cards).to_contain_text("2 of 2")
    expect(cards.locator(".card").first.locator("strong")).to_have_text("3")
    assert page.locator("#chart-requests rect").count() >= 1, "the chart has a bar for this minute"
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)


def test_an_account_resting_after_a_429_shows_its_class_and_time_left(stack, page):
    base = stack["base"]
    sign_in(page, base)
    fake_control(stack, "/__fake/script", {"status": 429, "retry_after": 40})
    chat(stack, "meets a 429")
    open_tab(page, base, "accounts")
    resting = page.locator('#accounts-table tr[data-state="cooldown"]')
    expect(resting).to_have_count(1)
    expect(resting.locator("td.state .word")).to_contain_text(re.compile(r"resting \(rate_limited\) \d+ s left"))
    page.screenshot(path=str(SHOTS / "accounts.png"), full_page=True)
    resting.locator('button[data-action="reset"]').click()
    expect(page.locator("#notice")).to_contain_text("breaker reset")
    expect(page.locator('#accounts-table tr[data-state="cooldown"]')).to_have_count(0)


def test_disable_then_enable_and_the_pool_follows(stack, page):
    base = stack["base"]
    sign_in(page, base)
    open_tab(page, base, "accounts")
    row(page, "a1").locator('button[data-action="disable"]').click()
    expect(page.locator("#notice")).to_contain_text("a1 disabled")
    expect(row(page, "a1").locator("td.state .word")).to_contain_text("disabled (disabled_in_pool_file)")
    assert json.loads(stack["pool"].read_text())["kiro-api"][0]["enabled"] is False
    for text in ("x", "y", "z"):
        assert chat(stack, text).headers["x-aiproxy-account"] == "a2"
    row(page, "a1").locator('button[data-action="enable"]').click()
    expect(page.locator("#notice")).to_contain_text("a1 enabled")
    expect(row(page, "a1").locator("td.state .word")).to_have_text("serving")
    # Back in the pool (in slow start, so it gets its share gradually: at first about one
    # request in twenty, so 60 requests missed it about one run in twenty; 400 miss it about
    # once in 10^9).
    served = set()
    for i in range(400):
        served.add(chat(stack, f"round {i}").headers["x-aiproxy-account"])
        if served == {"a1", "a2"}:
            break
    assert served == {"a1", "a2"}


def test_add_an_account_by_the_device_flow(stack, page):
    base = stack["base"]
    fake_control(stack, "/__fake/device", {"answers": ["pending"], "interval": 1})
    sign_in(page, base)
    open_tab(page, base, "accounts")
    form = page.locator("#add-device")
    form.locator('input[name="name"]').fill("builder-1")
    form.locator('button[type="submit"]').click()
    expect(page.locator("#device-flow .user-code")).to_have_text(re.compile(r"^[A-Z]{4}-[A-Z]{4}$"))
    expect(page.locator("#device-flow a")).to_have_attribute("href", re.compile(r"/device\?user_code="))
    page.screenshot(path=str(SHOTS / "device-code.png"), full_page=True)
    expect(page.locator("#device-flow .done")).to_contain_text("builder-1 signed in (BuilderId (us-east-1)) and added", timeout=20000)
    expect(row(page, "builder-1").locator("td.state .word")).to_have_text("serving")


def test_add_an_account_by_the_pasted_social_address(stack, page):
    base = stack["base"]
    sign_in(page, base)
    open_tab(page, base, "accounts")
    form = page.locator("#add-social")
    form.locator('input[name="name"]').fill("google-1")
    form.locator('button[type="submit"]').click()
    link = page.locator("#social-flow a.signin-link").get_attribute("href")
    # The sign-in happens in another browser; it ends on a localhost address that does not load.
    location = httpx.get(link, follow_redirects=False).headers["location"]
    assert location.startswith("http://localhost:3128/oauth/callback?code=")
    page.locator("#social-flow input.callback").fill(location)
    page.locator("#social-flow button.finish").click()
    expect(page.locator("#social-flow .done")).to_contain_text("google-1 signed in (social (Google/GitHub)) and added")
    expect(row(page, "google-1").locator("td.state .word")).to_have_text("serving")


def test_an_action_without_the_csrf_token_is_refused(stack, page):
    base = stack["base"]
    sign_in(page, base)
    open_tab(page, base, "accounts")
    # The page's own cookies, but not its token.
    refused = page.request.post(f"{base}/console/api/accounts/a2/disable")
    assert refused.status == 403
    assert "CSRF" in refused.json()["error"]["message"]
    forged = page.request.post(f"{base}/console/api/accounts/a2/disable", headers={"x-csrf-token": "forged"})
    assert forged.status == 403
    expect(row(page, "a2").locator("td.state .word")).to_have_text("serving")
    assert "enabled" not in json.loads(stack["pool"].read_text())["kiro-api"][1]


def test_no_secret_in_any_page_or_answer(stack, page):
    base = stack["base"]
    sign_in(page, base)
    seen = []
    for tab in ("overview", "accounts", "keys", "requests"):
        open_tab(page, base, tab)
        seen.append(page.content())
        if tab in ("keys", "requests"):
            page.screenshot(path=str(SHOTS / f"{tab}.png"), full_page=True)
        seen.append(page.request.get(f"{base}/console/api/{tab}").text())
    for path in ("/loadbalancer/instances", "/health", "/metrics"):
        seen.append(page.request.get(f"{base}{path}").text())
    secrets = [ADMIN, CLIENT]
    for file in stack["work"].glob("*.json"):
        credential = json.loads(file.read_text())
        secrets += [credential[k] for k in ("accessToken", "refreshToken", "clientSecret") if isinstance(credential.get(k), str)]
    assert len(secrets) >= 8, secrets  # the two seeds' rotated tokens, and both sign-ins'
    text = "\n".join(seen)
    for secret in secrets:
        assert secret not in text, "a secret was shown"
    assert "refresh token: set" in text.replace("_", " ")

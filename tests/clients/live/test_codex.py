"""The real Codex CLI (pinned, installed from npm by install_codex.sh) driving aiproxy's
Responses API in live mode against `aiproxy fake-kiro`, with a custom provider in a temporary
CODEX_HOME (`wire_api = "responses"`). Every upstream request it causes must pass the fake's
validation: the fake's `rejected_requests` counter must not move.

Run by tests/clients/run.sh, which sets CODEX_BIN and FAKE_KIRO_URL; without them these tests
fail rather than skip."""

import json
import os
import subprocess
import urllib.request

import pytest

CODEX = os.environ.get("CODEX_BIN")
FAKE = os.environ.get("FAKE_KIRO_URL")
MODEL = "claude-sonnet-4-5"


def fake(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(FAKE + path, data=data), timeout=10) as answer:
        return json.load(answer) if body is None else None


@pytest.fixture(autouse=True)
def upstream_requests_stay_valid():
    assert CODEX and FAKE, "run through tests/clients/run.sh: CODEX_BIN and FAKE_KIRO_URL are required"
    before = fake("/__fake/stats")
    yield before
    after = fake("/__fake/stats")
    assert after["rejected_requests"] == before["rejected_requests"], after["last_violation"]


def codex(tmp_path, base, key, prompt, extra_config=""):
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f"""
model = "{MODEL}"
model_provider = "aiproxy"
{extra_config}

[model_providers.aiproxy]
name = "aiproxy"
base_url = "{base}/v1"
env_key = "AIPROXY_TEST_KEY"
wire_api = "responses"
""")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "AIPROXY_TEST_KEY": key}
    return subprocess.run(
        [CODEX, "exec", "--skip-git-repo-check", prompt],
        cwd=work, env=env, capture_output=True, text=True, timeout=180,
    ), work


def test_exec_answers_a_plain_prompt(tmp_path, base, key, upstream_requests_stay_valid):
    fake("/__fake/script", [{"text": "Hello from the fake Kiro"}])
    done, _ = codex(tmp_path, base, key, "Say hello")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hello from the fake Kiro" in done.stdout
    assert fake("/__fake/stats")["generate_calls"] > upstream_requests_stay_valid["generate_calls"]


def test_agent_loop_runs_the_shell_tool_and_finishes(tmp_path, base, key):
    # First answer: Codex's shell tool; second: the default echo of the tool results it got.
    call = {"name": "exec_command", "input": {"cmd": "cat note.txt"}, "id": "call_shell"}
    fake("/__fake/script", [{"text": "Reading the note.", "tool_calls": [call]}])
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "note.txt").write_text("codex-agent-loop-ok\n")
    done, _ = codex(tmp_path, base, key, "Read note.txt")
    assert done.returncode == 0, done.stdout + done.stderr
    # Codex ran the command and sent its output back; the fake's answer quotes the result.
    assert "Received tool results: call_shell=" in done.stdout, done.stdout + done.stderr
    assert "codex-agent-loop-ok" in done.stdout


def test_web_search_runs_through_kiros_search(tmp_path, base, key, upstream_requests_stay_valid):
    # With live web search on, Codex offers the hosted `web_search` tool; the model (the
    # fake, scripted) searches, aiproxy runs the search with the fake's MCP endpoint and
    # hands the results to the model, whose answer (the fake's echo of them) Codex prints.
    fake("/__fake/script", [{"tool_calls": [{"name": "web_search", "input": {"query": "codex through kiro"}}]}])
    done, _ = codex(tmp_path, base, key, "Search the web for codex through kiro", 'web_search = "live"')
    assert done.returncode == 0, done.stdout + done.stderr
    stats = fake("/__fake/stats")
    assert stats["search_calls"] > upstream_requests_stay_valid["search_calls"], stats
    assert stats["last_search_query"] == "codex through kiro"
    assert "Fake result 1 for codex through kiro" in done.stdout, done.stdout + done.stderr

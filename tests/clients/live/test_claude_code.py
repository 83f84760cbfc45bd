"""The real Claude Code CLI (pinned, installed from npm by install_claude_code.sh) driving
aiproxy in live mode against `aiproxy fake-kiro`. Every upstream request it causes must pass
the fake's validation of Kiro's rules: the fake's `rejected_requests` counter must not move.

Run by tests/clients/run.sh, which sets CLAUDE_BIN and FAKE_KIRO_URL; without them these
tests fail rather than skip."""

import json
import os
import subprocess
import urllib.request

import pytest

CLAUDE = os.environ.get("CLAUDE_BIN")
FAKE = os.environ.get("FAKE_KIRO_URL")
# Most tests pin a model with --model, as users do; one runs with Claude Code's own default
# (claude-opus-5-5), which aiproxy serves because the fake's ListAvailableModels lists
# claude-opus-5.5 (the live catalog, docs/kiro-protocol.md §13.3).
MODEL = "claude-sonnet-4-6"


def fake_stats():
    with urllib.request.urlopen(FAKE + "/__fake/stats", timeout=10) as answer:
        return json.load(answer)


@pytest.fixture(autouse=True)
def upstream_requests_stay_valid():
    assert CLAUDE and FAKE, "run through tests/clients/run.sh: CLAUDE_BIN and FAKE_KIRO_URL are required"
    before = fake_stats()
    yield before
    after = fake_stats()
    assert after["rejected_requests"] == before["rejected_requests"], after["last_violation"]


def claude(tmp_path, base, key, prompt, *args, stdin="", model=MODEL):
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_API_KEY": key,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    return subprocess.run(
        [CLAUDE, "-p", prompt, *(["--model", model] if model else []), *args],
        cwd=work,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_claude_codes_default_model_is_served_from_the_live_catalog(
    tmp_path, base, key, upstream_requests_stay_valid
):
    done = claude(tmp_path, base, key, directive({"text": "Default model works"}), model=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "Default model works"
    assert fake_stats()["last_model_id"] == "claude-opus-5.5"


def directive(step):
    return "fake-kiro: " + json.dumps(step)


def test_print_mode_answers(tmp_path, base, key, upstream_requests_stay_valid):
    done = claude(tmp_path, base, key, directive({"text": "Hello from the fake Kiro"}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "Hello from the fake Kiro"
    assert fake_stats()["generate_calls"] > upstream_requests_stay_valid["generate_calls"]


def test_agent_loop_runs_a_bash_tool_and_finishes(tmp_path, base, key):
    call = {
        "name": "Bash",
        "input": {
            "command": "echo agent-loop > marker.txt; echo bash-ran-ok",
            "description": "Write a marker file",
        },
    }
    done = claude(tmp_path, base, key, directive({"tool_calls": [call]}), "--allowedTools", "Bash")
    assert done.returncode == 0, done.stdout + done.stderr
    # Claude Code ran the command ...
    assert (tmp_path / "work" / "marker.txt").read_text().strip() == "agent-loop"
    # ... sent its output back as a tool result, and printed the final answer, which the
    # fake makes out of the results it received.
    assert "Received tool results: tooluse_0=bash-ran-ok" in done.stdout
    assert "(success)" in done.stdout


def test_a_conversation_over_the_context_limit_is_an_overflow_claude_code_knows(
    tmp_path, base, key, upstream_requests_stay_valid
):
    # 1 MB of text: about 270 000 tokens, over the model's 200 000-token window.
    big = "lorem ipsum dolor sit amet " * 40_000
    done = claude(tmp_path, base, key, "Summarise the text", stdin=big)
    # Claude Code recognises Anthropic's "prompt is too long: N tokens > M maximum" (it
    # compacts on it in a session) and says so; any other wording is a generic API error.
    assert "Prompt is too long" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "API Error" not in done.stdout + done.stderr
    # The local guard predicted it: no upstream call was spent.
    assert fake_stats()["generate_calls"] == upstream_requests_stay_valid["generate_calls"]


def test_web_search_runs_through_kiros_search(tmp_path, base, key, upstream_requests_stay_valid):
    # The model (the fake, told by the directive) calls Claude Code's WebSearch tool; Claude
    # Code sends its own search request (the server tool web_search_20250305) through
    # aiproxy, which searches with the fake's MCP endpoint and lets the model answer over
    # the results; Claude Code hands them back as the tool's result, and the final answer
    # (the fake's echo of the tool results) quotes them.
    call = {"name": "WebSearch", "input": {"query": "aiproxy kiro web search"}}
    done = claude(tmp_path, base, key, directive({"tool_calls": [call]}), "--allowedTools", "WebSearch")
    assert done.returncode == 0, done.stdout + done.stderr
    stats = fake_stats()
    assert stats["search_calls"] > upstream_requests_stay_valid["search_calls"], stats
    assert stats["last_search_query"] == "aiproxy kiro web search"
    assert "Fake result 1 for aiproxy kiro web search" in done.stdout, done.stdout + done.stderr

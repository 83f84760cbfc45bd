"""Rate limits as the official SDKs see them: an aiproxy of this test's own (mock Kiro, one
request per key at once) refuses the second request with a 429 that the openai and anthropic
SDKs raise as their RateLimitError, with Retry-After and OpenAI's x-ratelimit-* headers."""
import os
import subprocess

import anthropic
import openai
import pytest

BIN = os.environ["AIPROXY_BIN"]


@pytest.fixture
def limited():
    """aiproxy on a free port: 60 requests a minute per key, one at once."""
    process = subprocess.Popen(
        [BIN, "--kiro-mock-mode", "--port", "0", "--api-key", "rl-key",
         "--rate-limit-rpm", "60", "--rate-limit-burst", "1", "--rate-limit-tpm", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AIPROXY_", "KIRO_", "OTEL_"))},
    )
    line = process.stdout.readline()
    assert line.startswith("aiproxy listening on "), line
    yield line.split("listening on ")[1].strip()
    process.terminate()
    process.wait(timeout=10)


def test_openai_sdk_sees_the_limits_and_the_429(limited):
    client = openai.OpenAI(base_url=f"{limited}/v1", api_key="rl-key", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-ratelimit-limit-requests"] == "60"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    remaining_tokens = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 0 < remaining_tokens < 100000
    assert raw.parse().choices[0].message.content == "hi"
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "again"}])
    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert "`key-1` may send 60 requests per minute" in refused.value.message
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_anthropic_sdk_raises_its_rate_limit_error(limited):
    client = anthropic.Anthropic(base_url=limited, api_key="rl-key", max_retries=0)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=32,
                           messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=32,
                               messages=[{"role": "user", "content": "again"}])
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert refused.value.response.headers["retry-after"] == "1"


def test_the_sdk_retry_waits_out_the_429(limited):
    """With its default retries, the openai SDK honours Retry-After and gets through."""
    client = openai.OpenAI(base_url=f"{limited}/v1", api_key="rl-key", max_retries=2)
    for text in ("one", "two"):
        answer = client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": text}])
        assert answer.choices[0].message.content == text

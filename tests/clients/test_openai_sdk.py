"""The current official openai SDK against a started aiproxy (mock Kiro)."""
import httpx
import openai
import pytest

from schemas import validate

HEADERS = {"X-Model-Provider": "kiro-api"}


@pytest.fixture
def client(base, key):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, default_headers=HEADERS)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "claude-3-sonnet-20240229" in ids


def test_non_stream(client):
    completion = client.chat.completions.create(
        model="claude-3-sonnet-20240229",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        max_tokens=100,
    )
    assert completion.choices[0].message.content == "Be brief.\n\nHello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "Count from 1 to 5"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Count from 1 to 5"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_multi_turn(client):
    completion = client.chat.completions.create(
        model="claude-haiku-4-5",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ],
    )
    assert completion.choices[0].message.content == "second"


def test_errors_are_typed(base, key):
    bad_key = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", default_headers=HEADERS)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="claude-sonnet-4-5", messages=[])


def test_raw_responses_validate_against_the_official_schemas(base, key):
    headers = {"Authorization": f"Bearer {key}", **HEADERS}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        validate(http.get("/v1/models").json(), "ListModelsResponse")
        body = {"model": "claude-3-opus-20240229", "messages": [{"role": "user", "content": "hi there"}]}
        validate(http.post("/v1/chat/completions", json=body).json(), "CreateChatCompletionResponse")
        body.update(stream=True, stream_options={"include_usage": True})
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [l[6:] for l in response.iter_lines() if l.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        import json
        for line in lines[:-1]:
            validate(json.loads(line), "CreateChatCompletionStreamResponse")
        for response in (
            http.get("/v1/models", headers={"Authorization": "Bearer nope"}),
            http.post("/v1/chat/completions", json={"model": "claude-sonnet-4-5"}),
            http.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            http.get("/v1/models", headers={"X-Model-Provider": "nope"}),
        ):
            assert response.status_code >= 400
            validate(response.json(), "ErrorResponse")

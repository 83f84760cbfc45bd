"""The official anthropic SDK against a started aiproxy (mock Kiro)."""
import json

import anthropic
import httpx
import pytest

MODEL = "claude-sonnet-4-6"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def directive(step):
    return "fake-kiro: " + json.dumps(step)


@pytest.fixture
def client(base, key):
    return anthropic.Anthropic(base_url=base, api_key=key)


def test_non_stream(client):
    message = client.messages.create(
        model=MODEL, max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "Hello, Claude"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Be brief.\n\nHello, Claude"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_stream_helper(client):
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Count from 1 to 5"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Count from 1 to 5"
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == text
    assert final.usage.input_tokens > 0


def test_raw_stream_event_order(client):
    events = list(client.messages.create(
        model=MODEL, max_tokens=100, stream=True, messages=[{"role": "user", "content": "a b c"}]
    ))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and events[0].message.usage.input_tokens > 0
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert events[-2].usage.output_tokens > 0
    starts = [e.index for e in events if e.type == "content_block_start"]
    assert starts == list(range(len(starts)))


def test_thinking(client):
    with client.messages.stream(
        model=MODEL, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Why is the sky blue"}],
    ) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds == ["thinking", "text"]
    assert final.content[0].thinking == "Thinking about: Why is the sky blue"
    assert final.content[1].text == "Why is the sky blue"
    suffix = client.messages.create(
        model=MODEL + "-thinking", max_tokens=100, messages=[{"role": "user", "content": "hm"}]
    )
    assert [b.type for b in suffix.content] == ["thinking", "text"]


def test_tool_use_round_trip(client):
    question = "Weather in Paris?\n" + directive(
        {"text": "Let me check.", "tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}, "id": "toolu_01"}]}
    )
    first = client.messages.create(
        model=MODEL, max_tokens=200, tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": question}],
    )
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert (call.id, call.name, call.input) == ("toolu_01", "get_weather", {"city": "Paris"})

    second = client.messages.create(
        model=MODEL, max_tokens=200, tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "Received tool results: toolu_01=18C and sunny (success)"


def test_streamed_tool_use(client):
    with client.messages.stream(
        model=MODEL, max_tokens=200, tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": directive({"tool_calls": [
            {"name": "get_weather", "input": {"city": "Rome"}}, {"name": "get_weather", "input": {"city": "Oslo"}}
        ], "interleave_tools": True})}],
    ) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.input for c in calls] == [{"city": "Rome"}, {"city": "Oslo"}]
    assert final.stop_reason == "tool_use"


def test_count_tokens(client):
    small = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello, world"}])
    large = client.messages.count_tokens(
        model=MODEL, system="You are a helpful assistant.", tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Hello, world " * 100}],
    )
    assert 0 < small.input_tokens < large.input_tokens


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "claude-3-haiku-20240307" in ids


def test_errors(base, key):
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=base, api_key="wrong").messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[
            {"role": "user", "content": directive({"status": 429, "retry_after": 1})}])
    with httpx.Client(base_url=base, headers={"x-api-key": key}) as http:
        body = http.post("/v1/messages", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}).json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_mid_stream_error_is_an_error_event(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=MODEL, max_tokens=10, messages=[
            {"role": "user", "content": "one two three\n" + directive({"truncate_after": 1})}
        ]) as stream:
            for _ in stream:
                pass
    assert "cut off" in str(info.value)


SENTENCE = "alpha beta gamma delta epsilon zeta eta theta"


def test_stop_sequences_and_max_tokens(client):
    with client.messages.stream(model=MODEL, max_tokens=200, stop_sequences=["ta gam"], messages=[
        {"role": "user", "content": directive({"text": SENTENCE})}
    ]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "alpha be"
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "ta gam"
    message = client.messages.create(model=MODEL, max_tokens=3, messages=[
        {"role": "user", "content": directive({"text": SENTENCE})}])
    assert message.content[0].text == "alpha beta g"
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=64_001, stream=True, messages=[{"role": "user", "content": "x"}])
    assert "64000" in str(info.value)

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


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


def test_web_search_alone_is_searched_and_answered(client):
    # Claude Code's WebSearch shape: the search tool only, forced, and the query in words.
    message = client.messages.create(
        model=MODEL, max_tokens=400, tools=[WEB_SEARCH], tool_choice={"type": "tool", "name": "web_search"},
        messages=[{"role": "user", "content": "Perform a web search for the query: tower layers"}],
    )
    kinds = [block.type for block in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"], kinds
    call, result, answer = message.content
    assert call.name == "web_search" and call.input == {"query": "tower layers"}
    assert call.id.startswith("srvtoolu_") and result.tool_use_id == call.id
    assert [r.title for r in result.content][0] == "Fake result 1 for tower layers"
    assert all(r.url.startswith("https://") and r.page_age and r.encrypted_content for r in result.content)
    assert "Fake result 1 for tower layers" in answer.text
    assert message.usage.server_tool_use.web_search_requests == 1


def mixed_turn():
    # The model searches and calls the client's tool in one answer.
    return directive({"text": "Looking.", "tool_calls": [
        {"name": "web_search", "input": {"query": "paris weather news"}},
        {"name": "get_weather", "input": {"city": "Paris"}},
    ]})


def test_web_search_beside_a_client_tool(client):
    message = client.messages.create(
        model=MODEL, max_tokens=400, tools=[WEATHER_TOOL, WEB_SEARCH],
        messages=[{"role": "user", "content": mixed_turn()}],
    )
    kinds = [block.type for block in message.content]
    assert kinds == ["text", "tool_use", "server_tool_use", "web_search_tool_result"], kinds
    assert message.stop_reason == "tool_use"
    assert message.content[1].name == "get_weather" and message.content[1].input == {"city": "Paris"}
    assert message.content[2].input == {"query": "paris weather news"}
    assert len(message.content[3].content) == 3
    # The client answers its tool; the search blocks go back in the history and the model
    # reads them (the fake echoes the tool result it got).
    follow = client.messages.create(
        model=MODEL, max_tokens=400, tools=[WEATHER_TOOL, WEB_SEARCH],
        messages=[
            {"role": "user", "content": mixed_turn()},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": message.content[1].id, "content": "18C"}]},
        ],
    )
    assert follow.stop_reason == "end_turn"
    assert "=18C (success)" in follow.content[0].text


def test_web_search_beside_a_client_tool_streamed(client):
    with client.messages.stream(
        model=MODEL, max_tokens=400, tools=[WEATHER_TOOL, WEB_SEARCH],
        messages=[{"role": "user", "content": mixed_turn()}],
    ) as stream:
        final = stream.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds == ["text", "tool_use", "server_tool_use", "web_search_tool_result"], kinds
    assert final.content[2].input == {"query": "paris weather news"}
    assert final.content[3].content[0].title == "Fake result 1 for paris weather news"
    assert final.usage.server_tool_use.web_search_requests == 1


def test_web_search_domain_filter_and_max_uses(client):
    searches = [{"name": "web_search", "input": {"query": "one"}}, {"name": "web_search", "input": {"query": "two"}}]
    message = client.messages.create(
        model=MODEL, max_tokens=600,
        tools=[{**WEB_SEARCH, "max_uses": 1, "allowed_domains": ["example.org"]}],
        messages=[{"role": "user", "content": directive({"tool_calls": searches})}],
    )
    results = [b for b in message.content if b.type == "web_search_tool_result"]
    assert [r.url for r in results[0].content] == ["https://docs.example.org/one/2"]
    assert results[1].content.type == "web_search_tool_result_error"
    assert results[1].content.error_code == "max_uses_exceeded"
    assert message.content[-1].type == "text"

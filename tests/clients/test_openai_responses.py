"""The openai SDK's Responses API (`client.responses.*`) against aiproxy; every answer and
stream event is validated against the official Responses schemas."""
import json

import httpx
import openai
import pydantic
import pytest

from schemas import validate_responses

MODEL = "claude-sonnet-4-5"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def directive(step):
    return "fake-kiro: " + json.dumps(step)


@pytest.fixture
def client(base, key):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key)


@pytest.fixture
def http(base, key):
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as h:
        yield h


def test_create_non_stream(client, http):
    response = client.responses.create(model=MODEL, instructions="Be brief.", input="Hello!")
    assert response.status == "completed"
    assert response.output_text == "Be brief.\n\nHello!"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "hi"}).json()
    validate_responses(raw, "Response")


def test_stream_events_are_ordered_and_valid(client, http):
    with client.responses.stream(model=MODEL, input="Count from 1 to 5") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "Count from 1 to 5"
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    for wanted in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                   "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
        assert wanted in types
    with http.stream("POST", "/v1/responses", json={"model": MODEL, "input": "a b c", "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate_responses(event, "ResponseStreamEvent")


def test_function_call_round_trip_with_previous_response_id(client):
    first = client.responses.create(
        model=MODEL, tools=[WEATHER],
        input="Weather?\n" + directive({"tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}, "id": "call_a"}]}))
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments), c.call_id) for c in calls] == [("get_weather", {"city": "Paris"}, "call_a")]
    second = client.responses.create(
        model=MODEL, tools=[WEATHER], previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_a", "output": "sunny"}])
    assert second.output_text == "Received tool results: call_a=sunny (success)"
    assert client.responses.retrieve(second.id).id == second.id
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, previous_response_id=second.id, input="more")
    assert "previous_response_id" in str(info.value)


def test_streamed_function_call(client, http):
    content = directive({"text": "Checking.", "tool_calls": [{"name": "get_weather", "input": {"city": "Rome"}}]})
    with client.responses.stream(model=MODEL, tools=[WEATHER], input=content) as stream:
        final = stream.get_final_response()
    call = [i for i in final.output if i.type == "function_call"][0]
    assert json.loads(call.arguments) == {"city": "Rome"}
    assert final.output_text == "Checking."
    with http.stream("POST", "/v1/responses", json={"model": MODEL, "tools": [WEATHER], "input": content, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    for event in events:
        validate_responses(event, "ResponseStreamEvent")
    assert "response.function_call_arguments.done" in [e["type"] for e in events]


def test_parse_with_pydantic(client):
    class Person(pydantic.BaseModel):
        name: str
        age: int

    content = "Who?\n" + directive({"tool_calls": [{"name": "Person", "input": {"name": "Ada", "age": 36}}]})
    response = client.responses.parse(model=MODEL, input=content, text_format=Person)
    assert response.output_parsed == Person(name="Ada", age=36)


def test_store_false_keeps_nothing_and_hosted_tools_are_dropped(client, http):
    response = client.responses.create(model=MODEL, input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    raw = http.post("/v1/responses", json={"model": MODEL, "input": "x",
                                           "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}, WEATHER]})
    assert raw.status_code == 200
    assert raw.headers["x-aiproxy-dropped-tools"] == "code_interpreter"
    count = http.post("/v1/responses/input_tokens", json={"model": MODEL, "input": "Hello, world"}).json()
    assert count["object"] == "response.input_tokens" and count["input_tokens"] > 0


MIXED = directive({"text": "Looking.", "tool_calls": [
    {"name": "web_search", "input": {"query": "rome weather news"}},
    {"name": "get_weather", "input": {"city": "Rome"}, "id": "call_w"},
]})


def test_web_search_beside_a_function_tool(client, http):
    response = client.responses.create(
        model=MODEL, tools=[WEATHER, {"type": "web_search"}], include=["web_search_call.action.sources"], input=MIXED)
    kinds = [item.type for item in response.output]
    assert kinds == ["message", "function_call", "web_search_call"], kinds
    search = response.output[2]
    assert search.status == "completed" and search.action.query == "rome weather news"
    assert search.action.sources[0].url == "https://example.com/rome-weather-news/1"
    raw = http.post("/v1/responses", json={"model": MODEL, "tools": [WEATHER, {"type": "web_search_preview"}],
                                           "input": MIXED}).json()
    validate_responses(raw, "Response")
    assert "sources" not in raw["output"][2]["action"], "sources only when included"


def test_web_search_streamed_with_its_events(client, http):
    content = directive({"tool_calls": [{"name": "web_search", "input": {"query": "streamed search"}}]})
    with client.responses.stream(model=MODEL, tools=[{"type": "web_search"}], input=content) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["web_search_call", "message"]
    assert "Fake result 1 for streamed search" in final.output_text
    with http.stream("POST", "/v1/responses", json={"model": MODEL, "tools": [WEATHER, {"type": "web_search"}],
                                                    "input": MIXED, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    for event in events:
        validate_responses(event, "ResponseStreamEvent")
    types = [e["type"] for e in events]
    for wanted in ["response.web_search_call.in_progress", "response.web_search_call.searching",
                   "response.web_search_call.completed", "response.function_call_arguments.done"]:
        assert wanted in types, types

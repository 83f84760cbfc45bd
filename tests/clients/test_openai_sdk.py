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


def _directive(step):
    import json
    return "fake-kiro: " + json.dumps(step)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tool_calls_round_trip(client):
    question = "Weather?\n" + _directive({"tool_calls": [
        {"name": "get_weather", "input": {"city": "Paris"}, "id": "call_a"},
        {"name": "get_weather", "input": {"city": "Rome"}, "id": "call_b"}]})
    first = client.chat.completions.create(
        model="claude-sonnet-4-5", tools=[WEATHER], messages=[{"role": "user", "content": question}])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.id for c in choice.message.tool_calls] == ["call_a", "call_b"]
    assert choice.message.tool_calls[1].function.name == "get_weather"
    import json
    assert json.loads(choice.message.tool_calls[1].function.arguments) == {"city": "Rome"}

    second = client.chat.completions.create(
        model="claude-sonnet-4-5", tools=[WEATHER],
        messages=[
            {"role": "user", "content": question},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
        ])
    assert second.choices[0].message.content == "Received tool results: call_a=sunny (success); call_b=rain (success)"


def test_streamed_tool_calls_are_indexed_per_call(client):
    stream = client.chat.completions.create(
        model="claude-sonnet-4-5", tools=[WEATHER], stream=True,
        messages=[{"role": "user", "content": _directive({"text": "Checking.", "interleave_tools": True, "tool_calls": [
            {"name": "get_weather", "input": {"city": "Paris"}}, {"name": "get_weather", "input": {"city": "Rome"}}]})}])
    args = {}
    finish = None
    content = ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            args[call.index] = args.get(call.index, "") + (call.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    import json
    assert content == "Checking."
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"city": "Paris"}, 1: {"city": "Rome"}}
    assert finish == "tool_calls"


def test_reasoning_content_from_thinking_models(base, key):
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        body = http.post("/v1/chat/completions", json={
            "model": "claude-sonnet-4-5-thinking", "messages": [{"role": "user", "content": "hmm"}]}).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking about: hmm"
    assert message["content"] == "hmm"


SENTENCE = "alpha beta gamma delta epsilon zeta eta theta"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_end_the_answer(client, stream):
    content = _directive({"text": SENTENCE})
    answer = client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": content}],
        stop=["ta gam", "never"], stream=stream)
    if stream:
        chunks = list(answer)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        text, finish = answer.choices[0].message.content, [answer.choices[0].finish_reason]
    assert text == "alpha be"
    assert finish == ["stop"]


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_cuts_the_answer(client, stream):
    content = _directive({"text": SENTENCE})
    answer = client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": content}],
        max_tokens=2, stream=stream, **({"stream_options": {"include_usage": True}} if stream else {}))
    if stream:
        chunks = list(answer)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        text, finish, usage = answer.choices[0].message.content, [answer.choices[0].finish_reason], answer.usage
    assert text == "alpha be"
    assert finish == ["length"]
    assert usage.completion_tokens == 2
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}], max_tokens=1_000_000)
    assert "64000" in str(info.value)


def test_required_tool_choice_and_a_single_call(client):
    content = "Weather?\n" + _directive({"tool_calls": [
        {"name": "get_weather", "input": {"city": "Paris"}}, {"name": "get_weather", "input": {"city": "Rome"}}]})
    answer = client.chat.completions.create(
        model="claude-sonnet-4-5", tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
        messages=[{"role": "user", "content": content}])
    calls = answer.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    assert answer.choices[0].finish_reason == "tool_calls"


def test_structured_output_parse_with_pydantic(client):
    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: int

    content = "Who?\n" + _directive({"tool_calls": [{"name": "Person", "input": {"name": "Ada", "age": 36}}]})
    completion = client.chat.completions.parse(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": content}], response_format=Person)
    parsed = completion.choices[0].message.parsed
    assert parsed == Person(name="Ada", age=36)
    assert completion.choices[0].finish_reason == "stop"


def test_json_object_mode(client):
    import json
    content = _directive({"tool_calls": [{"name": "json_answer", "input": {"colour": "blue"}}]})
    completion = client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": content}],
        response_format={"type": "json_object"})
    assert json.loads(completion.choices[0].message.content) == {"colour": "blue"}


def test_legacy_completions(client):
    content = _directive({"text": SENTENCE})
    completion = client.completions.create(model="claude-sonnet-4-5", prompt="Once upon a time\n" + content,
                                           max_tokens=100, stop=["ta gam"])
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "alpha be"
    assert completion.choices[0].finish_reason == "stop"
    cut = client.completions.create(model="claude-sonnet-4-5", prompt=content, max_tokens=2, echo=False)
    assert cut.choices[0].text == "alpha be" and cut.choices[0].finish_reason == "length"
    stream = client.completions.create(model="claude-sonnet-4-5", prompt=content, max_tokens=3, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "alpha beta g"
    assert chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="claude-sonnet-4-5", prompt="x", suffix="y")
    assert "suffix" in str(info.value)
    # Mock mode echoes the user's text, not the instruction aiproxy adds to continue it.
    plain = client.completions.create(model="claude-sonnet-4-5", prompt="Once upon a time", max_tokens=50)
    assert plain.choices[0].text == "Once upon a time"


def test_embeddings_say_what_to_use_instead(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert "no embeddings" in str(info.value)

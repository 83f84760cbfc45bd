"""LangChain's ChatOpenAI against aiproxy: `stop=` and `with_structured_output` (a Pydantic
model through `response_format: json_schema`)."""
import json

import pydantic
from langchain_openai import ChatOpenAI

SENTENCE = "alpha beta gamma delta epsilon zeta eta theta"


def directive(step):
    return "fake-kiro: " + json.dumps(step)


def llm(base, key):
    return ChatOpenAI(base_url=f"{base}/v1", api_key=key, model="claude-sonnet-4-5", max_retries=0)


def test_stop_sequences(base, key):
    answer = llm(base, key).invoke(directive({"text": SENTENCE}), stop=["ta gam"])
    assert answer.content == "alpha be"
    assert answer.response_metadata["finish_reason"] == "stop"


def test_with_structured_output(base, key):
    class Person(pydantic.BaseModel):
        name: str
        age: int

    structured = llm(base, key).with_structured_output(Person)
    person = structured.invoke("Who?\n" + directive({"tool_calls": [{"name": "Person", "input": {"name": "Ada", "age": 36}}]}))
    assert person == Person(name="Ada", age=36)

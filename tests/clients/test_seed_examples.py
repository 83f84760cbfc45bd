"""The guide's curl examples, run verbatim by seed_curl.sh, produce the documented shapes."""
import json
import pathlib
import subprocess

from schemas import validate

HERE = pathlib.Path(__file__).parent
SEED_IDS = {"claude-3-opus-20240229", "claude-3-sonnet-20240229", "claude-3-haiku-20240307"}


def test_seed_curls(tmp_path):
    subprocess.run(["bash", str(HERE / "seed_curl.sh"), str(tmp_path)], check=True, timeout=60)

    models = json.loads((tmp_path / "models.json").read_text())
    validate(models, "ListModelsResponse")
    assert models["object"] == "list"
    assert SEED_IDS <= {m["id"] for m in models["data"]}
    assert all(m["owned_by"] == "kiro" for m in models["data"])

    chat = json.loads((tmp_path / "chat.json").read_text())
    validate(chat, "CreateChatCompletionResponse")
    assert chat["choices"][0]["message"]["content"] == "Hello, Claude!"

    events = [line[len("data: "):] for line in (tmp_path / "stream.txt").read_text().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Count from 1 to 5"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    health = json.loads((tmp_path / "health.json").read_text())
    assert health["status"] == "ok"

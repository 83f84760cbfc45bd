"""The guide's curl examples, run verbatim by seed_curl.sh, produce the documented shapes."""
import json
import pathlib
import subprocess

from prometheus_client.parser import text_string_to_metric_families
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

    kiro_lines = (tmp_path / "metrics_kiro.txt").read_text().splitlines()
    assert kiro_lines and all("kiro" in line for line in kiro_lines)
    # The whole exposition parses as Prometheus text, and carries the traffic above.
    families = {f.name: f for f in text_string_to_metric_families((tmp_path / "metrics.txt").read_text())}
    requests = families["aiproxy_http_server_request_duration_seconds"]
    chat_counts = [s.value for s in requests.samples
                   if s.name.endswith("_count") and s.labels.get("route") == "/v1/chat/completions"
                   and s.labels.get("provider") == "kiro-api" and s.labels.get("status_class") == "2xx"]
    assert sum(chat_counts) >= 2
    tokens = families["aiproxy_gen_ai_client_token_usage"]
    assert any(s.name.endswith("_sum") and s.labels.get("gen_ai_token_type") == "output" and s.value > 0
               for s in tokens.samples)
    for name in ["aiproxy_gen_ai_client_operation_duration_seconds", "aiproxy_gen_ai_server_time_to_first_token_seconds",
                 "aiproxy_overhead_seconds", "aiproxy_upstream_requests", "aiproxy_account_state"]:
        assert name in families, sorted(families)

    instance = json.loads((tmp_path / "instances.json").read_text())
    assert instance["provider"] == "kiro-api" and instance["healthy"] is True


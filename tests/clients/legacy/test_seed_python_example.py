"""The product guide's Python example (step 4), run verbatim with the legacy openai==0.28 client."""
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent


def test_seed_python_example_runs_as_written():
    result = subprocess.run(
        [sys.executable, str(HERE / "seed_example.py")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The fake Kiro echoes the user message.
    assert result.stdout == "Hello!\n"


def test_legacy_client_stream_and_errors():
    import openai
    openai.api_base = "http://localhost:3000/v1"
    openai.api_key = "your-api-key"
    chunks = list(openai.ChatCompletion.create(
        model="claude-3-haiku-20240307",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        headers={"X-Model-Provider": "kiro-api"},
    ))
    text = "".join(c.choices[0].delta.get("content", "") for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"

    openai.api_key = "wrong"
    try:
        openai.ChatCompletion.create(model="claude-3-haiku-20240307", messages=[{"role": "user", "content": "x"}])
    except openai.error.AuthenticationError as error:
        assert "Invalid API key" in str(error)
    else:
        raise AssertionError("a wrong key must be rejected")

import os

import pytest

BASE = os.environ.get("AIPROXY_BASE", "http://localhost:3000")
KEY = os.environ.get("AIPROXY_KEY", "your-api-key")


@pytest.fixture
def base():
    return BASE


@pytest.fixture
def key():
    return KEY

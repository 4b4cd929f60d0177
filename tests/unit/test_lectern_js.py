"""The browser client library's own unit tests (tests/js, Node's test runner): the pure core
(cursor order, SSE parsing, dedup, tails, reset holding), the connection state machine input
by input, and the whole client with a fake WebSocket and fetch (exactly-once delivery across
reconnects, fallbacks, commands). Skipped where there is no Node.js; the browser suite
(tests/browser) covers the same library end to end in Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1] / "js"


def test_lectern_js_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (apt-get install -y nodejs)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 18:
        pytest.skip(f"Node.js {version.stdout.strip()} is too old for node --test")
    result = subprocess.run(
        [node, "--test", str(TESTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

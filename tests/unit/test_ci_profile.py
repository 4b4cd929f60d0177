"""The hypothesis profile CI runs with (tests/conftest.py), in whichever process runs the tests:
under pytest-xdist (``make test``) that is a worker, which loads it on its own."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings


def test_ci_replays_the_same_examples() -> None:
    assert settings.get_profile("ci").derandomize
    if not os.environ.get("CI"):
        pytest.skip("CI is not set: this run explores new examples")
    assert settings.default.derandomize

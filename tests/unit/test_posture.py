"""Production posture: no process starts with a guessable JWT secret outside dev mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import (
    DEV_JWT_SECRET,
    SettingsError,
    load_settings,
    require_production_posture,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("secret", "problem"),
    [(DEV_JWT_SECRET, "shipped development default"), ("x" * 31, "shorter than 32 bytes")],
)
def test_guessable_secret_is_refused_naming_the_setting(secret: str, problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        require_production_posture(load_settings({"LECTERN_JWT_SECRET": secret}))
    assert "LECTERN_JWT_SECRET" in str(err.value) and problem in str(err.value)


def test_dev_mode_a_strong_secret_or_eddsa_are_accepted() -> None:
    require_production_posture(load_settings({"LECTERN_DEV_MODE": "1"}))
    require_production_posture(load_settings({"LECTERN_JWT_SECRET": "k" * 32}))
    require_production_posture(load_settings({}, jwt_public_key="-----BEGIN PUBLIC KEY-----"))


@pytest.mark.parametrize("module", ["gateway", "api", "workers"])
def test_every_process_refuses_to_start_with_the_default_secret(module: str) -> None:
    """``python -m <process>`` exits at once with an error naming the setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env |= {"LECTERN_LOG_LEVEL": "INFO", "REDIS_URL": "redis://127.0.0.1:1", "DATABASE_URL": ""}
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "LECTERN_JWT_SECRET" in done.stdout + done.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"LECTERN_WS_ECHO": "1", "LECTERN_JWT_SECRET": "k" * 32},
        {"LECTERN_WS_ECHO": "1", "LECTERN_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----"},
    ],
)
def test_the_echo_endpoint_is_refused_outside_dev_mode(env: dict[str, str]) -> None:
    """/ws-echo takes no token: a strong secret or EdDSA keys do not make it acceptable."""
    with pytest.raises(SettingsError) as err:
        require_production_posture(load_settings(env))
    assert "LECTERN_WS_ECHO" in str(err.value) and "DEV_MODE" in str(err.value)
    require_production_posture(load_settings(env | {"LECTERN_DEV_MODE": "1"}))


def test_the_gateway_refuses_to_start_with_the_echo_endpoint() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env |= {
        "LECTERN_WS_ECHO": "1",
        "LECTERN_JWT_SECRET": "k" * 32,
        "LECTERN_LOG_LEVEL": "INFO",
        "REDIS_URL": "redis://127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "LECTERN_WS_ECHO" in done.stdout + done.stderr


def test_presence_lease_grace_must_exceed_its_interval() -> None:
    """A grace at or under the refresh interval would reap live gateways: refused at start-up."""
    with pytest.raises(SettingsError, match="PRESENCE_LEASE_GRACE_S"):
        load_settings(
            {"LECTERN_PRESENCE_LEASE_GRACE_S": "3", "LECTERN_PRESENCE_LEASE_INTERVAL_S": "3"}
        )
    assert load_settings({"LECTERN_PRESENCE_LEASE_GRACE_S": "4"}).presence_lease_grace_s == 4.0

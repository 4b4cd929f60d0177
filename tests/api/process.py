"""``python -m api serve`` as deployed, in its own process, for tests that need a real socket
(slow clients) or a second core (the fuzzer: generating cases and serving them then run in
parallel instead of sharing one interpreter lock)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from config.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiProcess:
    """Start with ``LECTERN_*`` variables for ``settings``; ``stop()`` ends it by PID."""

    def __init__(self, redis_url: str, database_url: str, **settings: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
        env.update(
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            LECTERN_DEV_MODE="1",
            LECTERN_LOG_LEVEL="WARNING",
            # No fixed ports: another stack on this machine may hold the defaults.
            LECTERN_API_METRICS_PORT="0",
        )
        env.update({f"LECTERN_{k.upper()}": str(v) for k, v in settings.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--port", str(self.port)], cwd=ROOT, env=env
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"api exited with {self.proc.returncode}"
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "api did not start within 30 s"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

""".ci/audit.py's verdict on pip-audit's JSON: vulnerabilities fail, an unreachable service
(every package skipped) is a loud skip instead of pip-audit's silent "No known
vulnerabilities found", and a partial gap fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ci_audit", ROOT / ".ci" / "audit.py")
assert _spec is not None and _spec.loader is not None
audit: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)

OK = {"name": "aiohttp", "version": "3.14.5", "vulns": []}
SKIP = {"name": "yarl", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_clean_report_passes() -> None:
    status, message = audit.verdict({"dependencies": [OK, {**OK, "name": "yarl"}]})
    assert status == 0 and "2 packages audited" in message


def test_a_vulnerability_fails_naming_it() -> None:
    vuln = {"id": "GHSA-xxxx", "fix_versions": ["3.14.6"]}
    status, message = audit.verdict({"dependencies": [{**OK, "vulns": [vuln]}, SKIP]})
    assert status == 1 and "aiohttp 3.14.5: GHSA-xxxx (fixed in 3.14.6)" in message


def test_everything_skipped_is_a_loud_skip() -> None:
    status, message = audit.verdict({"dependencies": [SKIP, {**SKIP, "name": "uvloop"}]})
    assert status == 0 and message.startswith("pip-audit: SKIPPED") and "none of the 2" in message


def test_a_partial_gap_fails() -> None:
    status, message = audit.verdict({"dependencies": [OK, SKIP]})
    assert status == 1 and "1 of 2 packages not audited: yarl" in message

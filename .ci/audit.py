"""``make lint``'s known-vulnerability check: pip-audit over requirements.lock, honest about
whether it could look anything up.

pip-audit asks a vulnerability service (PyPI's JSON API by default) about every pinned package.
Where that service cannot be reached, or answers "not found" for everything (a registry
mirror without the per-version JSON API), pip-audit reports each package as *skipped* and
still prints "No known vulnerabilities found" with exit status 0: a silent pass. This script
reads pip-audit's JSON instead and decides:

* any known vulnerability: fail, listing package, version and advisory;
* every package skipped, or a network error: pass with a loud ``SKIPPED`` line naming the
  reason (the check could not run here; CI with network access runs it for real);
* some packages skipped, others audited: fail (a real gap, not an unreachable service);
* otherwise: pass, with the number of packages audited.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_NETWORK = re.compile(
    r"ConnectionError|NameResolutionError|Max retries exceeded|timed out|Temporary failure"
)


def verdict(report: dict[str, Any]) -> tuple[int, str]:
    """(exit status, message) for pip-audit's JSON report."""
    deps = report.get("dependencies", [])
    found = [
        f"{d['name']} {d.get('version', '?')}: {v.get('id', '?')} (fixed in "
        f"{', '.join(v.get('fix_versions', [])) or 'no release yet'})"
        for d in deps
        for v in d.get("vulns", [])
    ]
    if found:
        return 1, "pip-audit: known vulnerabilities:\n  " + "\n  ".join(found)
    skipped = [d for d in deps if "skip_reason" in d]
    if deps and len(skipped) == len(deps):
        return 0, (
            f"pip-audit: SKIPPED: the vulnerability service answered for none of the {len(deps)}"
            f" packages, so nothing was checked here ({skipped[0]['skip_reason']})"
        )
    if skipped:
        names = ", ".join(f"{d['name']} ({d['skip_reason']})" for d in skipped)
        return 1, f"pip-audit: {len(skipped)} of {len(deps)} packages not audited: {names}"
    return 0, f"pip-audit: {len(deps)} packages audited, no known vulnerabilities"


def main() -> int:
    cmd = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(ROOT / "requirements.lock"),
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--timeout",
        "10",
        "--format",
        "json",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if run.returncode not in (0, 1) or not run.stdout.strip():
        network = _NETWORK.search(run.stderr)
        if network:
            print(f"pip-audit: SKIPPED: the vulnerability service is unreachable ({network[0]})")
            return 0
        print(run.stderr[-3000:], file=sys.stderr)
        print(f"pip-audit failed with exit status {run.returncode}", file=sys.stderr)
        return 1
    status, message = verdict(json.loads(run.stdout))
    print(message, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())

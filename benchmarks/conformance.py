"""``python -m benchmarks.conformance``: RFC 6455 conformance of Lectern's WebSocket framing.

Runs the Autobahn TestSuite case files (the ``kosoku`` runner, fuzzingclient mode: it is the
client and drives the server) against two echo servers in the same run:

* ``lectern``: ``python -m gateway`` with ``LECTERN_WS_ECHO=1`` (dev mode), route ``/ws-echo``,
  which is the gateway's own connection core and adapter with messages echoed
  (gateway/wsecho.py), under the shipped per-connection limits;
* ``aiohttp``: the plain aiohttp peer's ``/echo`` (benchmarks/peers/plain_aiohttp.py).

By default the cases 9.* (performance: messages up to 16 MiB, 1,000-message bursts) and
12.*/13.* (permessage-deflate) are left out; ``--all`` runs them too, with Lectern's message,
fragment, rate and buffer limits raised to what 9.* sends. ``--case`` picks cases (globs).

Each server's cases run in a child process (``--drive``) under ``--timeout-s``; everything
started is stopped by PID before the command returns. Writes
``benchmarks/results/conformance-latest.json``; with ``--json`` the last stdout line is one
JSON object: Lectern's ``cases``, ``passed``, ``failed``, ``non_strict``, ``unimplemented``,
``informational`` and ``failed_cases``, and the same per server under ``servers``. As in
Autobahn's reports, ``passed`` counts the cases whose verdicts are all acceptable (OK,
NON-STRICT, INFORMATIONAL); ``non_strict`` and ``informational`` count those among them;
``unimplemented`` cases (a feature not offered, e.g. compression) are neither passed nor failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.gateway import LecternStack, stop_group
from benchmarks.loadclient import wait_for_port
from config.servers import die_with_parent, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "conformance-latest.json"
#: Left out unless ``--all``: performance (9.*) and compression (12.*, 13.*).
SLOW_GROUPS = ("9.*", "12.*", "13.*")
#: With ``--all``: the 9.* cases send single messages of up to 16 MiB, 4 MiB ones in fragments
#: of 64 bytes (65,536 fragments), and bursts of 1,000 messages; the echoes of such messages
#: pass the shipped outgoing-buffer limit. Lectern's limits are raised to let them through
#: (the default run keeps the shipped limits, which every other case fits).
SUITE_LIMITS = {
    "LECTERN_MAX_FRAME_BYTES": str(16 * 2**20),
    "LECTERN_MAX_FRAGMENTS": str(2**20),
    "LECTERN_CMD_RATE_PER_S": "1000000",
    "LECTERN_CMD_BURST": "1000000",
    "LECTERN_OUT_BUFFER_LIMIT_BYTES": str(64 * 2**20),
}
_ACCEPTABLE = ("OK", "NON-STRICT", "INFORMATIONAL")


# -- the driver (a child process per server) ---------------------------------------------------


def _case_row(result: Any) -> dict[str, Any]:
    return {
        "id": result.case_id,
        "behavior": result.behavior.value,
        "close": result.behavior_close.value,
        "result": result.result,
        "result_close": result.result_close,
        "remote_close_code": result.remote_close_code,
        "duration_ms": result.duration,
    }


async def _drive(
    url: str, cases: list[str] | None, exclude: list[str], parallelism: int
) -> list[Any]:
    from kosoku import FailureError, run_fuzzingclient

    try:
        return await run_fuzzingclient(url, cases, exclude, concurrency=parallelism)
    except FailureError as failure:  # some cases failed: their results are all there still
        return failure.results


def drive(
    url: str, cases: list[str] | None, exclude: list[str], parallelism: int, out: Path
) -> None:
    """Run the cases against ``url`` and write one row per case to ``out`` (JSON)."""
    results = asyncio.run(_drive(url, cases, exclude, parallelism))
    out.write_text(json.dumps([_case_row(r) for r in results]))


# -- verdicts ----------------------------------------------------------------------------------


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The counts of one server's run (see the module docstring for what each one means)."""
    passed = failed = non_strict = informational = unimplemented = 0
    failed_cases: list[str] = []
    for row in rows:
        behavior, close = row["behavior"], row["close"]
        if behavior == "UNIMPLEMENTED":
            unimplemented += 1
        elif behavior in _ACCEPTABLE and close in _ACCEPTABLE:
            passed += 1
            non_strict += behavior == "NON-STRICT"
            informational += behavior == "INFORMATIONAL"
        else:
            failed += 1
            failed_cases.append(row["id"])
    return {
        "cases": len(rows),
        "passed": passed,
        "failed": failed,
        "non_strict": non_strict,
        "informational": informational,
        "unimplemented": unimplemented,
        "failed_cases": failed_cases,
    }


# -- the run -----------------------------------------------------------------------------------


async def _run_driver(
    url: str,
    cases: list[str] | None,
    exclude: list[str],
    parallelism: int,
    timeout_s: float,
) -> tuple[list[dict[str, Any]], str]:
    """One server's cases in a child process: the rows, and an error ("" when it finished)."""
    with tempfile.TemporaryDirectory(prefix="lectern-conformance-") as tmp:
        out = Path(tmp) / "rows.json"
        argv = [sys.executable, "-m", "benchmarks.conformance", "--drive", url, "--out", str(out)]
        argv += ["--parallelism", str(parallelism)]
        for case in cases or ():
            argv += ["--case", case]
        for case in exclude:
            argv += ["--exclude", case]
        proc = subprocess.Popen(  # nosec B603  # our own module, fixed argv
            argv, start_new_session=True, preexec_fn=die_with_parent
        )
        try:
            rc = await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            await asyncio.to_thread(stop_group, proc, 5.0)
        if not out.exists():
            why = f"timed out after {timeout_s:.0f} s" if rc is None else f"driver exited {rc}"
            return [], why
        # The rows are written before the runner's teardown: an exit after it does not matter.
        return json.loads(out.read_text()), ""


def _verdict(rows: list[dict[str, Any]], error: str, url: str, seconds: float) -> dict[str, Any]:
    summary = summarize(rows)
    summary["url"] = url
    summary["duration_s"] = round(seconds, 1)
    if error:
        summary["error"] = error
    summary["not_ok"] = [r for r in rows if (r["behavior"], r["close"]) != ("OK", "OK")]
    summary["verdicts"] = {r["id"]: [r["behavior"], r["close"]] for r in rows}
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    exclude = [] if args.all else list(SLOW_GROUPS)
    cases = args.case or None
    env = {"LECTERN_WS_ECHO": "1", **(SUITE_LIMITS if args.all else {})}
    servers: dict[str, dict[str, Any]] = {}
    peer: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    async with LecternStack(processes=1, env=env) as stack:
        try:
            port = free_port()
            peer = subprocess.Popen(  # nosec B603  # our own module, fixed argv
                [sys.executable, "-m", "benchmarks.peers.plain_aiohttp", "--port", str(port)],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
            await wait_for_port("127.0.0.1", port)
            urls = {
                "lectern": f"ws://127.0.0.1:{stack.port}/ws-echo",
                "aiohttp": f"ws://127.0.0.1:{port}/echo",
            }
            for name, url in urls.items():
                t0 = time.monotonic()
                rows, error = await _run_driver(
                    url, cases, exclude, args.parallelism, args.timeout_s
                )
                servers[name] = _verdict(rows, error, url, time.monotonic() - t0)
        finally:
            if peer is not None:
                await asyncio.to_thread(stop_group, peer, 5.0)
    headline = {k: servers["lectern"][k] for k in summarize([])}
    return {
        "benchmark": "conformance",
        "server": "lectern",
        **headline,
        "runner": f"kosoku {importlib.metadata.version('kosoku')}",
        "cases_run": cases or ["*"],
        "cases_excluded": exclude,
        "lectern_limits": "raised for 9.* (SUITE_LIMITS)" if args.all else "shipped defaults",
        "duration_s": round(time.monotonic() - started, 1),
        "servers": servers,
    }


def _brief(name: str, s: dict[str, Any]) -> str:
    line = (
        f"{name:8} {s['passed']}/{s['cases']} passed, {s['failed']} failed, "
        f"{s['non_strict']} non-strict, {s['informational']} informational, "
        f"{s['unimplemented']} unimplemented ({s['duration_s']} s)"
    )
    if s["failed_cases"]:
        line += " failed: " + ", ".join(s["failed_cases"])
    if s.get("error"):
        line += f" ERROR: {s['error']}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.conformance", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON line last"
    )
    parser.add_argument("--all", action="store_true", help="also run 9.*, 12.* and 13.*")
    parser.add_argument("--case", action="append", help="case id or glob to run (repeatable)")
    parser.add_argument("--parallelism", type=int, default=1, help="cases run at once per server")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="limit per server")
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--exclude", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive, args.case, args.exclude, args.parallelism, args.out)
        return 0
    result = asyncio.run(run(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for name, s in result["servers"].items():
        print(_brief(name, s))
    print(f"wrote {RESULTS}")
    if args.json:
        compact = {k: v for k, v in result.items() if k != "servers"}
        compact["servers"] = {
            name: {k: s[k] for k in (*summarize([]), "duration_s")}
            for name, s in result["servers"].items()
        }
        print(json.dumps(compact))
    failed = result["servers"]["lectern"]
    return 1 if failed["failed"] or failed.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())

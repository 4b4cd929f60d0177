"""``python -m loadtest`` (``make loadtest``): prepare a classroom and run a locust scenario
headless against the stack `make run` is running (or the URLs given).

    python -m loadtest --scenario live --users 300 --spawn-rate 8 --run-time 60s
    python -m loadtest --scenario spikes --classes MassReconnect --users 500 --spawn-rate 500

The gateway admits 10 new connections per second per client IP by default; for spawn rates
above that (the start-minute spike), start the stack with a higher limit, e.g.
``LECTERN_CONN_RATE_PER_IP_PER_S=1000 LECTERN_CONN_BURST_PER_IP=1000 make run``.

Locust runs as a master and ``--processes`` workers (default: one per core this process may
use). A run whose generator was CPU-bound is marked INVALID (summary, report name, exit 3);
exit 1 means failures; expected domain answers (``already_voted``, ``poll_closed``, ...) are
outcomes with their own rows (``cmd qa.upvote -> already_voted``), not failures. See
docs/loadtests.md and loadtest/verdict.py.

Scenarios: dashboard, live, instructors, spikes (loadtest/<scenario>.py). Results (CSV and
HTML) land in ``loadtest/results/<scenario>-<timestamp>[-INVALID]*``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from config.devstack import read_stack_file
from loadtest.fixture import create_sync
from loadtest.runner import run_locust, summary
from loadtest.verdict import EXIT_NO_STACK

SCENARIOS = ("dashboard", "live", "instructors", "spikes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="live")
    parser.add_argument("--classes", nargs="*", default=[], help="user classes to run")
    parser.add_argument("--users", type=int, default=100)
    # The gateway admits 10 new connections per second per IP by default.
    parser.add_argument("--spawn-rate", type=float, default=8)
    parser.add_argument("--run-time", default="30s")
    parser.add_argument(
        "--command-rate",
        type=float,
        default=0,
        help="live scenario: total commands/s the students send (default: one per 1-4 s each)",
    )
    parser.add_argument("--students", type=int, default=0, help="accounts (default: --users)")
    parser.add_argument(
        "--processes",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="locust worker processes (default: every core this process may use)",
    )
    parser.add_argument("--data-dir", default=os.environ.get("LECTERN_DATA_DIR", ".lectern"))
    args = parser.parse_args(argv)
    stack = read_stack_file(args.data_dir)
    if stack is None:
        print("no running stack found: start `make run` first", file=sys.stderr)
        return EXIT_NO_STACK
    fixture = create_sync(
        stack["database_url"],
        stack["api_url"],
        stack["gateway_url"],
        students=args.students or args.users,
        # About one user in 21 is an instructor (live scenario weights); the gateway allows 20
        # connections per account, so 2,000 users need more than the 2 default accounts.
        instructors=max(2, -(-args.users // 100)),
        redis_url=stack["redis_url"],
    )
    fixture.save(args.data_dir)
    results = Path("loadtest/results")
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    env = {**os.environ, "REDIS_URL": stack["redis_url"], "LECTERN_DATA_DIR": args.data_dir}
    if args.command_rate > 0:
        env["LOADTEST_USER_RATE"] = str(args.command_rate / max(args.users, 1))
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        f"loadtest/{args.scenario}.py",
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        args.run_time,
        "--host",
        stack["api_url"],
        "--csv",
        str(stem),
        "--html",
        f"{stem}.html",
        "--only-summary",
        # Locust's own exit status is replaced by the verdict (loadtest/verdict.py).
        *(["--processes", str(args.processes)] if args.processes > 1 else []),
        *args.classes,
    ]
    print(" ".join(cmd), flush=True)
    result = run_locust(cmd, env, str(stem))
    print(summary(result), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""Pure rules of a load-test run: which command answers are expected domain outcomes, how a
raw WebSocket frame is classified cheaply, and whether a run measured Lectern or its own
generator. No I/O: tested in tests/unit/test_loadtest_verdict.py.

Exit codes of ``python -m loadtest`` (also in docs/loadtests.md):

==  ===============================================================================
0   valid run, no failures
1   valid run with failures (errors, timeouts, unexpected error codes)
2   no running stack / bad arguments
3   INVALID run: the generator was CPU-bound (locust's CPU warning, or a locust
    process over 90 % of a core during the measured window); its figures are the
    generator's, not Lectern's. Takes precedence over 1.
==  ===============================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_NO_STACK = 2
EXIT_INVALID = 3

#: A locust process busier than this (percent of one core) during the measured window makes
#: the run invalid: its timings include its own queueing.
CPU_LIMIT_PERCENT = 90.0

#: Answers a scenario provokes on purpose (a second upvote, a vote on a poll just closed, an
#: instructor opening a poll while another is open, chat over its rate limit): the system
#: working as specified, reported as outcomes, never as failures.
EXPECTED_CODES = frozenset(
    {"already_voted", "not_voted", "poll_closed", "poll_already_open", "rate_limited"}
)

#: locust's own warning when its process is CPU-bound.
LOCUST_CPU_WARNING = "CPU usage above 90%"


def is_outcome(code: str) -> bool:
    """True when an error code is an expected domain answer, not a failure."""
    return code in EXPECTED_CODES


class FrameHead(msgspec.Struct, gc=False):
    """The few fields a scenario needs from a frame; msgspec skips the rest (the event's
    ``data``) without building Python objects for it."""

    type: str = ""
    ref: str | None = None
    topic: str | None = None
    id: str = ""
    event: str = ""
    ok: bool = True


_head = msgspec.json.Decoder(FrameHead)


def frame_head(raw: str | bytes) -> FrameHead:
    """Decode only the envelope of a server frame (type, ref, topic, id, event, ok)."""
    return _head.decode(raw)


def error_code(raw: str | bytes) -> str:
    """The ``error.code`` of a failed reply, found by a byte search (no full decode)."""
    data = raw.encode() if isinstance(raw, str) else raw
    at = data.find(b'"code"')
    if at < 0:
        return "unknown"
    start = data.find(b'"', data.find(b":", at) + 1)
    end = data.find(b'"', start + 1)
    if start < 0 or end < 0:
        return "unknown"
    return data[start + 1 : end].decode()


def cpu_bound(samples: Mapping[int, Iterable[float]], limit: float = CPU_LIMIT_PERCENT) -> bool:
    """True when any process (pid -> percent-of-a-core samples over the measured window)
    averaged above ``limit``; short peaks are ignored, a saturated window is not."""
    for values in samples.values():
        vals = list(values)
        if vals and sum(vals) / len(vals) > limit:
            return True
    return False


def verdict(*, locust_warned: bool, over_cpu: bool, failures: int) -> int:
    """The run's exit code: invalid (generator-bound) first, then failures, else ok."""
    if locust_warned or over_cpu:
        return EXIT_INVALID
    if failures:
        return EXIT_FAILURES
    return EXIT_OK


def report_stem(stem: str, exit_code: int) -> str:
    """The report name carries the verdict, so an invalid run cannot be mistaken later."""
    return f"{stem}-INVALID" if exit_code == EXIT_INVALID else stem

"""The load test's pure rules: cheap frame classification, outcome vs failure, and when a run
is invalid because the generator, not Lectern, was the bottleneck. No sockets, no servers."""

from __future__ import annotations

import msgspec
import pytest

from gateway.protocol import Error, Event, Reply
from loadtest.verdict import (
    CPU_LIMIT_PERCENT,
    EXIT_FAILURES,
    EXIT_INVALID,
    EXIT_NO_STACK,
    EXIT_OK,
    cpu_bound,
    error_code,
    frame_head,
    is_outcome,
    report_stem,
    verdict,
)


def test_event_envelope_is_read_without_the_data() -> None:
    raw = (
        b'{"type":"event","topic":"live:1:2","id":"1700-3","event":"chat.message",'
        b'"data":{"body":"hi \\"ref\\": \\"9\\"","nested":[1,2,{"type":"reply"}]}}'
    )
    head = frame_head(raw)
    assert (head.type, head.topic, head.id, head.event) == (
        "event",
        "live:1:2",
        "1700-3",
        "chat.message",
    )
    assert head.ref is None


def test_reply_envelope_carries_ref_and_ok() -> None:
    ok = frame_head('{"type":"reply","ref":"17","ok":true,"data":{"question_id":4}}')
    assert (ok.type, ok.ref, ok.ok) == ("reply", "17", True)
    bad = frame_head(
        b'{"type":"reply","ref":"18","ok":false,"error":{"code":"already_voted","message":"x"}}'
    )
    assert (bad.ref, bad.ok) == ("18", False)
    assert error_code(
        b'{"type":"reply","ref":"18","ok":false,"error":{"code": "poll_closed"}}'
    ) == ("poll_closed")
    assert error_code('{"type":"reply","ok":false}') == "unknown"


def test_frames_the_gateway_encodes_classify() -> None:
    """The heads decode the gateway's own encodings (protocol structs), whatever extra fields
    they carry now or later (unknown fields are ignored)."""
    enc = msgspec.json.Encoder()
    event = frame_head(
        enc.encode(Event(topic="t", id="1-0", event="qa.updated", ts=1, data=msgspec.Raw(b"{}")))
    )
    assert (event.type, event.event, event.id) == ("event", "qa.updated", "1-0")
    error = frame_head(enc.encode(Error(code="rate_limited", message="slow down")))
    assert error.type == "error"
    reply = frame_head(enc.encode(Reply(ref="5", ok=True)))
    assert (reply.type, reply.ref, reply.ok) == ("reply", "5", True)


@pytest.mark.parametrize("code", ["already_voted", "poll_closed", "poll_already_open", "not_voted"])
def test_expected_domain_answers_are_outcomes(code: str) -> None:
    assert is_outcome(code)


@pytest.mark.parametrize("code", ["invalid", "forbidden", "timeout", "unavailable", "unknown"])
def test_other_errors_are_failures(code: str) -> None:
    assert not is_outcome(code)


def test_cpu_bound_uses_the_window_mean_of_each_process() -> None:
    assert not cpu_bound({})
    assert not cpu_bound({1: [40, 60, 50], 2: [99, 20, 30]})  # a peak is not a saturated window
    assert cpu_bound({1: [40, 50], 2: [95, 96, 97]})
    assert not cpu_bound({1: [CPU_LIMIT_PERCENT] * 3})
    assert cpu_bound({1: [], 2: [CPU_LIMIT_PERCENT + 1]})


def test_verdict_puts_invalid_before_failures() -> None:
    assert verdict(locust_warned=False, over_cpu=False, failures=0) == EXIT_OK
    assert verdict(locust_warned=False, over_cpu=False, failures=3) == EXIT_FAILURES
    assert verdict(locust_warned=True, over_cpu=False, failures=0) == EXIT_INVALID
    assert verdict(locust_warned=False, over_cpu=True, failures=3) == EXIT_INVALID
    assert len({EXIT_OK, EXIT_FAILURES, EXIT_NO_STACK, EXIT_INVALID}) == 4


def test_invalid_runs_carry_it_in_the_report_name() -> None:
    assert report_stem("results/live-1", EXIT_INVALID) == "results/live-1-INVALID"
    assert report_stem("results/live-1", EXIT_FAILURES) == "results/live-1"
    assert report_stem("results/live-1", EXIT_OK) == "results/live-1"

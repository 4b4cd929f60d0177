"""How benchmarks.chaos judges each client's stream against what was published."""

from __future__ import annotations

from benchmarks.chaos import Published, Seen, judge

IDS = ["1-0", "2-0", "3-0", "4-0"]


def _seen(ids: list[str], at: float = 10.0) -> Seen:
    seen = Seen("ws", "0-0")
    for event_id in ids:
        seen.ids.append(event_id)
        seen.at.setdefault(event_id, at)
    return seen


def test_a_complete_stream_is_clean() -> None:
    published = Published(list(IDS), [1.0, 2.0, 3.0, 4.0])
    result = judge(published, [_seen(IDS), _seen(IDS)], fault_at=None)
    assert result["expected"] == result["delivered"] == 8
    assert (result["lost"], result["duplicated"], result["out_of_order"]) == (0, 0, 0)


def test_gaps_repeats_and_reordering_are_each_counted() -> None:
    published = Published(list(IDS), [1.0, 2.0, 3.0, 4.0])
    gap = _seen(["1-0", "2-0", "4-0"])
    repeat = _seen(["1-0", "2-0", "2-0", "3-0", "4-0"])
    swapped = _seen(["1-0", "3-0", "2-0", "4-0"])
    result = judge(published, [gap, repeat, swapped], fault_at=None)
    assert result["lost"] == 1
    assert result["duplicated"] == 1
    assert result["out_of_order"] == 1
    assert result["delivered"] == 3 + 4 + 4


def test_recovery_is_until_every_client_has_the_first_event_after_the_fault() -> None:
    published = Published(list(IDS), [1.0, 2.0, 3.0, 4.0])
    early, late = _seen(IDS, at=3.5), _seen(IDS, at=3.5)
    late.at["3-0"] = 7.0
    result = judge(published, [early, late], fault_at=2.5)
    assert result["recovery_s"] == 4.5
    # A client that never got it: no recovery time, and the event counts as lost.
    missing = _seen(["1-0", "2-0", "4-0"])
    assert judge(published, [early, missing], fault_at=2.5)["recovery_s"] is None

"""Poll settings, choices, tallies and who sees results (workers.poll_rules)."""

from __future__ import annotations

import pytest

from workers.live_rules import Invalid
from workers.poll_rules import PollSettings, choices, may_reveal, settings, students_see, tally


def test_settings_default_to_the_old_behaviour_and_validate_every_field() -> None:
    assert settings({}) == PollSettings("single", True, "on_reveal", None)
    assert settings(
        {"kind": "multiple", "anonymous": False, "results": "live", "duration_s": 60}
    ) == PollSettings("multiple", False, "live", 60)
    assert settings({"kind": None, "anonymous": None, "duration_s": None}) == PollSettings()
    for bad in (
        {"kind": "ranked"},
        {"kind": 1},
        {"results": "sometimes"},
        {"anonymous": "no"},
        {"anonymous": 0},
        {"duration_s": 4},
        {"duration_s": 3601},
        {"duration_s": 10.5},
        {"duration_s": "60"},
        {"duration_s": True},
    ):
        with pytest.raises(Invalid):
            settings(bad)


def test_choices_single_and_multiple() -> None:
    assert choices({"option": 2}, 3, "single") == (2,)
    assert choices({"option": 1}, 3, "multiple") == (1,)
    assert choices({"options": [2, 0]}, 3, "multiple") == (0, 2)
    for data, kind in (
        ({"options": [0]}, "single"),
        ({"options": []}, "multiple"),
        ({"options": [0, 0]}, "multiple"),
        ({"options": [0, 3]}, "multiple"),
        ({"options": [0, 1, 2, 0]}, "multiple"),
        ({"options": "0"}, "multiple"),
        ({"options": [True]}, "multiple"),
        ({"option": -1}, "single"),
        ({}, "single"),
    ):
        with pytest.raises(Invalid):
            choices(data, 3, kind)


def test_tallies_count_voters_and_percentages_per_kind() -> None:
    single = tally({0: 1, 1: 2}, 3, 3, "single")
    assert single.counts == (1, 2, 0) and single.total == 3
    assert single.percentages == (33, 67, 0) and sum(single.percentages) == 100
    # 4 voters: 3 ticked a, 2 ticked b, 1 ticked c -> shares of voters, may pass 100 together.
    multi = tally({0: 3, 1: 2, 2: 1}, 4, 3, "multiple")
    assert multi.total == 4 and multi.percentages == (75, 50, 25)
    assert tally({0: 1}, 3, 2, "multiple").percentages == (33, 0)  # 33.3 rounds down
    assert tally({0: 2}, 3, 2, "multiple").percentages == (67, 0)  # 66.7 rounds up
    assert tally({}, 0, 2, "multiple").percentages == (0, 0)
    assert tally({5: 1}, 1, 2, "single").ignored == 1


def test_who_sees_results_when() -> None:
    table = {
        "live": (True, True, True),
        "after_close": (False, True, True),
        "on_reveal": (False, False, True),
        "never": (False, False, False),
    }
    for results, expected in table.items():
        got = tuple(students_see(results, s) for s in ("open", "closed", "revealed"))
        assert got == expected, results
    assert not may_reveal("never") and may_reveal("on_reveal") and may_reveal("live")

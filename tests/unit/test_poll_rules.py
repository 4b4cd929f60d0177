"""Poll choices, tallies and who sees results (workers.poll_rules)."""

from __future__ import annotations

import pytest

from workers.live_rules import Invalid
from workers.poll_rules import choices, may_reveal, students_see, tally


def test_choices_single_and_multiple() -> None:
    assert choices(2, None, 3, "single") == (2,)
    assert choices(1, None, 3, "multiple") == (1,)
    assert choices(None, [2, 0], 3, "multiple") == (0, 2)
    for option, options, kind in (
        (None, [0], "single"),
        (None, [], "multiple"),
        (None, [0, 0], "multiple"),
        (None, [0, 3], "multiple"),
        (None, [0, 1, 2, 0], "multiple"),
        (None, "0", "multiple"),
        (None, [True], "multiple"),
        (-1, None, "single"),
        (3, None, "single"),
        (None, None, "single"),
    ):
        with pytest.raises(Invalid):
            choices(option, options, 3, kind)


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

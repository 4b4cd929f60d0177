"""The live flusher's alarm clock: the next due time of this process's own work."""

from __future__ import annotations

from workers.due_alarm import DueAlarm


async def test_the_earliest_due_time_after_now_and_a_wake_only_for_a_nearer_one() -> None:
    alarm = DueAlarm()
    assert alarm.next_due(0) is None
    alarm.add(500)
    assert alarm.changed.is_set()
    alarm.changed.clear()
    alarm.add(900)  # later than the one already waited for: no need to wake
    assert not alarm.changed.is_set()
    alarm.add(200)
    assert alarm.changed.is_set()
    assert alarm.next_due(100) == 200
    # Due times at or before the pop just made are behind us.
    assert alarm.next_due(500) == 900
    assert alarm.next_due(900) is None

"""Struggling-student rules (workers.struggling): each rule, its reason, and the edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.struggling import StudentStats, alerts

NOW = datetime(2030, 3, 1, 12, tzinfo=UTC)


def student(uid: int, avg: float | None, idle_days: float, completed: int) -> StudentStats:
    return StudentStats(uid, f"S{uid}", avg, NOW - timedelta(days=idle_days), completed)


def test_each_rule_with_its_reason() -> None:
    found = alerts(
        [
            student(1, 80.0, 0, 8),
            student(2, 49.4, 1, 8),  # low average only
            student(3, None, 7, 8),  # inactive for exactly 7 days
            student(4, 90.0, 0, 3),  # 30 % vs median 80 %: 50 points behind
            student(5, 60.0, 6.9, 6),  # 20 points behind, 6 days idle: nothing
        ],
        10,
        NOW,
    )
    assert [(a.user_id, a.rule, a.reason) for a in found] == [
        (2, "low_quiz_average", "quiz average 49% (under 50%)"),
        (3, "inactive", "no activity for 7 days"),
        (4, "behind", "3 of 10 lessons done, 50 points behind the cohort's median (80%)"),
    ]


def test_one_student_can_break_several_rules_and_order_is_stable() -> None:
    found = alerts([student(9, 10.0, 30, 0), student(2, 100.0, 0, 4)], 4, NOW)
    assert [(a.user_id, a.rule) for a in found] == [
        (9, "low_quiz_average"),
        (9, "inactive"),
        (9, "behind"),
    ]


def test_no_alerts_without_members_lessons_or_a_moving_median() -> None:
    assert alerts([], 5, NOW) == []
    # Nobody has done a lesson: the median is 0, so nobody is "behind" it.
    assert alerts([student(1, None, 0, 0), student(2, None, 0, 0)], 5, NOW) == []
    # A cohort without lessons: nobody is behind; no grade yet: no average rule.
    assert alerts([student(1, None, 0, 0)], 0, NOW) == []

"""Struggling-student rules: pure, no I/O. Which members of a cohort need an instructor's
attention, and why, in words an instructor reads.

Rules (each gives its own alert, with its reason):

* ``low_quiz_average``: the average of the student's graded submissions is under
  :data:`LOW_AVERAGE` percent;
* ``inactive``: no lesson completed and no quiz submitted for :data:`INACTIVE_DAYS` days (counted
  from enrollment for someone who never did anything);
* ``behind``: the share of lessons done is :data:`BEHIND_POINTS` percentage points or more under
  the cohort's median share (only once the median has moved off zero).

Guarantees: deterministic (the clock is a parameter), every alert names one student and one
rule, alerts are sorted by student then rule, and a cohort without members gives none.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

Rule = Literal["low_quiz_average", "inactive", "behind"]
RULES: tuple[Rule, ...] = ("low_quiz_average", "inactive", "behind")
LOW_AVERAGE = 50.0
INACTIVE_DAYS = 7
BEHIND_POINTS = 25.0


@dataclass(frozen=True, slots=True)
class StudentStats:
    user_id: int
    name: str
    quiz_average: float | None
    last_active: datetime
    completed: int


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    user_id: int
    name: str
    rule: Rule
    reason: str


def _share(completed: int, total: int) -> float:
    return 100.0 * completed / total if total > 0 else 0.0


def alerts(students: Sequence[StudentStats], total_lessons: int, now: datetime) -> list[Alert]:
    """The alerts of one cohort's members (see the module docstring)."""
    out: list[Alert] = []
    median = (
        statistics.median(_share(s.completed, total_lessons) for s in students) if students else 0
    )
    for s in sorted(students, key=lambda s: s.user_id):
        if s.quiz_average is not None and s.quiz_average < LOW_AVERAGE:
            out.append(
                Alert(
                    user_id=s.user_id,
                    name=s.name,
                    rule="low_quiz_average",
                    reason=f"quiz average {s.quiz_average:.0f}% (under {LOW_AVERAGE:.0f}%)",
                )
            )
        idle_days = (now - s.last_active).days
        if idle_days >= INACTIVE_DAYS:
            out.append(
                Alert(
                    user_id=s.user_id,
                    name=s.name,
                    rule="inactive",
                    reason=f"no activity for {idle_days} days",
                )
            )
        share = _share(s.completed, total_lessons)
        if median > 0 and median - share >= BEHIND_POINTS:
            out.append(
                Alert(
                    user_id=s.user_id,
                    name=s.name,
                    rule="behind",
                    reason=(
                        f"{s.completed} of {total_lessons} lessons done, {median - share:.0f}"
                        f" points behind the cohort's median ({median:.0f}%)"
                    ),
                )
            )
    return out

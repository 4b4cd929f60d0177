"""Live quiz rules: time limits, scoring with a speed bonus, the per-question distribution and
the leaderboard order. Pure functions, no I/O (the handlers are in :mod:`workers.live_quiz`).

**Score.** An answer to a question worth ``points``, graded to ``fraction`` of them (1 right,
0 wrong, in between for partial credit: :func:`workers.grading.grade`), given ``elapsed_ms``
after the question went out with a limit of ``limit_ms``, scores::

    round(points * fraction * (BASE + SPEED_BONUS * max(0, 1 - elapsed_ms / limit_ms)))

so a right answer is worth 1000 points per question point when given at once and 500 at the
deadline, and a wrong one 0. Only the time the server saw matters (the answer's arrival under
the room lock), never a client clock.

**Leaderboard.** Totals over the quiz, highest first; equal totals share a rank (1, 2, 2, 4)
and are listed by name, then user id, so the order never depends on the database's mood.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from workers import grading

#: Bounds of a question's time limit (seconds) and the default when ``quiz.start`` sets none.
LIMIT_MIN_S = 1
LIMIT_MAX_S = 600
LIMIT_DEFAULT_S = 20

BASE = 500
SPEED_BONUS = 500

#: Rows in a ``quiz.leaderboard`` event and in the room state (the event goes to every member
#: of the room: a 2,000-member room must not get 2,000 rows each).
LEADERBOARD_TOP = 10

#: Outcomes counted per question in ``quiz.results``.
OUTCOMES = ("correct", "partial", "incorrect")


def time_limits(
    count: int, default_s: int | None, per_question_s: Sequence[int] | None
) -> list[int]:
    """The time limit of each of ``count`` questions: ``per_question_s`` (one per question) or
    ``default_s`` (or :data:`LIMIT_DEFAULT_S`) for all. Raises ValueError when the list does
    not match the quiz."""
    if per_question_s is not None:
        if len(per_question_s) != count:
            raise ValueError(
                f"time_limits_s has {len(per_question_s)} entries; the quiz has {count} questions"
            )
        return list(per_question_s)
    return [default_s or LIMIT_DEFAULT_S] * count


def score(points: float, fraction: float, elapsed_ms: int, limit_ms: int) -> int:
    """The score of one answer (see the module docstring)."""
    if fraction <= 0 or points <= 0:
        return 0
    speed = max(0.0, 1.0 - max(elapsed_ms, 0) / max(limit_ms, 1))
    return round(points * min(fraction, 1.0) * (BASE + SPEED_BONUS * speed))


def graded(question: grading.Question, answer: object) -> grading.QuestionResult:
    """``answer`` graded against ``question`` (``outcome`` ``invalid`` when it does not fit)."""
    return grading.grade([question], {question.id: answer}).results[0]


def fraction(result: grading.QuestionResult) -> float:
    return result.points_awarded / result.max_points if result.max_points > 0 else 0.0


def public(question: grading.Question) -> dict[str, Any]:
    """What students see of a question: no answer key (:func:`grading.public_questions`)."""
    view = grading.public_questions([question])[0]
    out: dict[str, Any] = {
        "type": view.type,
        "id": view.id,
        "prompt": view.prompt,
        "points": view.points,
    }
    if view.options:
        out["options"] = list(view.options)
    return out


def correct_options(question: grading.Question) -> list[int] | None:
    """The right option indices of a choice question (revealed with its results), else None."""
    match question:
        case grading.SingleChoice():
            return [question.correct]
        case grading.MultipleChoice():
            return sorted(question.correct)
    return None


def distribution(
    question: grading.Question, answers: Iterable[tuple[object, str]]
) -> dict[str, Any]:
    """``quiz.results``' figures for one question from its ``(answer, outcome)`` pairs: how
    many answered, how many per outcome, and for choice questions how many picked each option
    (a multiple-choice answer counts once for every option it ticks)."""
    return counted_distribution(question, ((a, o, 1) for a, o in answers))


def counted_distribution(
    question: grading.Question, answers: Iterable[tuple[object, str, int]]
) -> dict[str, Any]:
    """:func:`distribution` from ``(answer, outcome, how many gave it)`` triples, so the
    database can group equal answers (a room of 2,000 sends a few rows, not 2,000)."""
    outcomes = dict.fromkeys(OUTCOMES, 0)
    options: tuple[str, ...] = ()
    if isinstance(question, grading.SingleChoice | grading.MultipleChoice):
        options = question.options
    counts = [0] * len(options)
    answered = 0
    for answer, outcome, n in answers:
        answered += n
        if outcome in outcomes:
            outcomes[outcome] += n
        picked = answer if isinstance(answer, list) else [answer]
        for index in {p for p in picked if isinstance(p, int) and not isinstance(p, bool)}:
            if 0 <= index < len(counts):
                counts[index] += n
    out: dict[str, Any] = {"answered": answered, "outcomes": outcomes}
    if options:
        out["counts"] = counts
    return out


def ranked(
    totals: Mapping[int, tuple[str, int]], top: int = LEADERBOARD_TOP
) -> list[dict[str, Any]]:
    """The first ``top`` rows of the leaderboard of ``{user_id: (name, total)}``."""
    order = sorted(totals.items(), key=lambda item: (-item[1][1], item[1][0], item[0]))
    rows: list[dict[str, Any]] = []
    rank, previous = 0, None
    for position, (user_id, (name, total)) in enumerate(order, start=1):
        if total != previous:
            rank, previous = position, total
        if position > top:
            break
        rows.append({"rank": rank, "user_id": user_id, "name": name, "score": total})
    return rows


def rank_of(totals: Mapping[int, tuple[str, int]], user_id: int) -> int | None:
    """``user_id``'s rank (1 + how many have a higher total), None when they have no score."""
    mine = totals.get(user_id)
    if mine is None:
        return None
    return 1 + sum(1 for _, total in totals.values() if total > mine[1])

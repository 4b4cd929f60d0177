"""Hand grading on top of the automatic grade: pure functions, no I/O.

The automatic :class:`workers.grading.GradeResult` of a submission is never rewritten. Staff
add to it (``POST /api/v1/submissions/{id}/feedback``):

* **question points**: the points awarded for some questions, replacing the automatic ones;
  each between 0 and the question's points. Later hand grades of a question replace earlier
  ones.
* **a score override**: the submission's total, between 0 and its maximum. Giving question
  points without a score clears an earlier override (the total follows the questions again).

Guarantees:

* :func:`apply_review` is the one definition of a submission's effective grade: the stored
  ``score`` column, the student's view and the ``feedback.posted`` event all come from it.
* :func:`waiting_questions` names the answers a human should look at: short-text answers that
  were given (not blank, not malformed) but matched none of the accepted answers, because a
  typo or a synonym may still deserve the points.
* :func:`point_problems` lists every reason a set of question points is refused, so the API
  can answer with all of them at once; nothing here raises for client input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from workers.grading import (
    GradeResult,
    Outcome,
    Question,
    QuestionResult,
    ShortText,
    summary_feedback,
)

#: The feedback line of a question graded by hand.
BY_HAND = "Graded by your instructor."


def waiting_questions(questions: Sequence[Question], result: GradeResult) -> list[str]:
    """Ids of the short-text questions whose given answer the matcher did not accept."""
    short = {q.id for q in questions if isinstance(q, ShortText)}
    return [
        r.question_id for r in result.results if r.question_id in short and r.outcome == "incorrect"
    ]


def point_problems(questions: Sequence[Question], points: Mapping[str, float]) -> list[str]:
    """Why ``points`` cannot be applied to a submission of ``questions`` (empty: it can)."""
    maxima = {q.id: q.points for q in questions}
    problems: list[str] = []
    for qid, value in points.items():
        if qid not in maxima:
            problems.append(f"{qid!r} is not a question of this quiz")
        elif not math.isfinite(value) or not 0 <= value <= maxima[qid]:
            problems.append(f"{qid!r}: points must be between 0 and {maxima[qid]:g}")
    return problems


def _hand_graded(r: QuestionResult, awarded: float) -> QuestionResult:
    awarded = round(awarded, 2)
    outcome: Outcome
    if awarded >= r.max_points:
        outcome = "correct"
    elif awarded > 0:
        outcome = "partial"
    else:
        outcome = "incorrect"
    return QuestionResult(
        question_id=r.question_id,
        outcome=outcome,
        correct=outcome == "correct",
        points_awarded=awarded,
        max_points=r.max_points,
        feedback=BY_HAND,
    )


def apply_review(
    result: GradeResult, manual: Mapping[str, float], override: float | None
) -> GradeResult:
    """The effective grade: ``manual`` points replace the automatic ones of their questions,
    and ``override`` (when not None) replaces the total. Ids in ``manual`` that match no
    result are ignored (the API refuses them before they are stored)."""
    results = tuple(
        _hand_graded(r, manual[r.question_id]) if r.question_id in manual else r
        for r in result.results
    )
    if override is not None:
        score = round(min(max(override, 0.0), result.max_score), 2)
    else:
        score = round(sum(r.points_awarded for r in results), 2)
    percentage = round(100.0 * score / result.max_score, 2) if result.max_score > 0 else 0.0
    return GradeResult(
        results=results,
        score=score,
        max_score=result.max_score,
        percentage=percentage,
        feedback=summary_feedback(percentage),
        unknown_ids=result.unknown_ids,
    )


def resolves(waiting: Sequence[str], points: Mapping[str, float], override: float | None) -> bool:
    """Whether feedback with ``points`` and ``override`` takes a submission out of the
    grading queue: it must grade every waiting question, or set the total."""
    return override is not None or all(qid in points for qid in waiting)

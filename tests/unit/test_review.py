"""Hand grading rules (workers.review): which answers wait for a human, which points are
refused, and the effective grade after hand grades and overrides."""

from __future__ import annotations

import math

from workers.grading import Numeric, ShortText, SingleChoice, grade
from workers.review import BY_HAND, apply_review, point_problems, resolves, waiting_questions

QUESTIONS = (
    SingleChoice(id="q1", prompt="2 + 2?", options=("3", "4"), correct=1, points=1),
    ShortText(id="q2", prompt="Capital of France?", accepted=("Paris",), points=2),
    ShortText(id="q3", prompt="Explain streams", accepted=("log",), points=3),
    Numeric(id="q4", prompt="pi?", answer=3.14, tolerance=0.01, points=1),
)


def test_only_given_short_text_answers_that_matched_nothing_wait() -> None:
    result = grade(QUESTIONS, {"q1": 0, "q2": "Pariss", "q3": "  log ", "q4": 9})
    # q1 and q4 are wrong but machine-decidable; q3 matched; q2 is a typo a human may accept.
    assert waiting_questions(QUESTIONS, result) == ["q2"]
    blank = grade(QUESTIONS, {"q2": "   ", "q3": 42})  # blank = missing, 42 = invalid
    assert waiting_questions(QUESTIONS, blank) == []


def test_point_problems_lists_every_bad_entry() -> None:
    assert point_problems(QUESTIONS, {"q2": 2, "q3": 0}) == []
    problems = point_problems(
        QUESTIONS, {"nope": 1, "q2": 2.5, "q3": -1, "q4": math.nan, "q1": math.inf}
    )
    assert len(problems) == 5
    assert "'nope' is not a question of this quiz" in problems
    assert "'q2': points must be between 0 and 2" in problems


def test_hand_points_replace_the_automatic_ones_and_set_the_outcome() -> None:
    auto = grade(QUESTIONS, {"q1": 1, "q2": "Pariss", "q3": "log", "q4": 3.14})
    assert auto.score == 5.0 and auto.max_score == 7.0
    full = apply_review(auto, {"q2": 2}, None)
    assert full.score == 7.0 and full.percentage == 100.0
    assert full.feedback == "Excellent work!"
    q2 = full.results[1]
    assert (q2.outcome, q2.correct, q2.points_awarded, q2.feedback) == ("correct", True, 2, BY_HAND)
    half = apply_review(auto, {"q2": 1, "q3": 0}, None)
    assert [r.outcome for r in half.results] == ["correct", "partial", "incorrect", "correct"]
    assert half.score == 3.0 and half.percentage == 42.86
    # The automatic grade is untouched (frozen structs, a new result is returned).
    assert auto.results[1].outcome == "incorrect" and auto.score == 5.0


def test_an_override_sets_the_total_within_bounds() -> None:
    auto = grade(QUESTIONS, {"q1": 1})
    assert apply_review(auto, {}, 6.5).score == 6.5
    assert apply_review(auto, {"q2": 2}, 0.0).score == 0.0  # override beats question points
    assert apply_review(auto, {}, 99).score == 7.0  # clamped: the API refuses it earlier
    assert apply_review(auto, {}, None).score == auto.score
    assert apply_review(auto, {"ghost": 5}, None).score == auto.score  # unknown ids ignored


def test_feedback_resolves_the_queue_only_when_every_waiting_answer_is_graded() -> None:
    assert resolves(["q2", "q3"], {"q2": 1, "q3": 0}, None)
    assert not resolves(["q2", "q3"], {"q2": 1}, None)
    assert resolves(["q2", "q3"], {}, 4.0)
    assert resolves([], {}, None)

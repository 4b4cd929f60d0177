"""Live quiz rules without servers: the speed-bonus score, time limits, the per-question
distribution, the leaderboard order, and that what students see carries no answer key."""

from __future__ import annotations

import json

import msgspec
import pytest

from workers import grading
from workers import live_commands as lc
from workers import live_quiz_rules as rules

SINGLE = grading.SingleChoice(id="q1", prompt="2 + 2?", options=("3", "4"), correct=1)
MULTI = grading.MultipleChoice(
    id="q2", prompt="Primes?", options=("2", "4", "5"), correct=(0, 2), partial_credit=True
)
TEXT = grading.ShortText(id="q3", prompt="Capital?", accepted=("Paris",))


def test_score_rewards_right_and_fast_answers() -> None:
    assert rules.score(1.0, 1.0, 0, 20_000) == 1000  # at once
    assert rules.score(1.0, 1.0, 10_000, 20_000) == 750
    assert rules.score(1.0, 1.0, 20_000, 20_000) == 500  # at the deadline
    assert rules.score(1.0, 1.0, 99_000, 20_000) == 500  # never below the base
    assert rules.score(1.0, 0.0, 0, 20_000) == 0  # wrong
    assert rules.score(2.0, 0.5, 0, 20_000) == 1000  # half of two points
    assert rules.score(0.0, 1.0, 0, 20_000) == 0
    assert rules.score(1.0, 1.0, -5, 20_000) == 1000


def test_time_limits() -> None:
    assert rules.time_limits(3, None, None) == [rules.LIMIT_DEFAULT_S] * 3
    assert rules.time_limits(2, 7, None) == [7, 7]
    assert rules.time_limits(2, 7, [5, 9]) == [5, 9]
    with pytest.raises(ValueError, match="2 entries; the quiz has 3"):
        rules.time_limits(3, None, [5, 9])


def test_distribution_counts_options_and_outcomes() -> None:
    pairs = [(1, "correct"), (0, "incorrect"), (1, "correct")]
    assert rules.distribution(SINGLE, pairs) == {
        "answered": 3,
        "outcomes": {"correct": 2, "partial": 0, "incorrect": 1},
        "counts": [1, 2],
    }
    multi = rules.distribution(MULTI, [([0, 2], "correct"), ([0], "partial"), ([1], "incorrect")])
    assert multi["counts"] == [2, 1, 1] and multi["outcomes"]["partial"] == 1
    text = rules.distribution(TEXT, [("Paris", "correct")])
    assert "counts" not in text and text["answered"] == 1
    assert rules.distribution(SINGLE, [])["counts"] == [0, 0]


def test_graded_and_fraction() -> None:
    assert rules.graded(SINGLE, 1).outcome == "correct"
    assert rules.graded(SINGLE, 5).outcome == "invalid"
    assert rules.graded(TEXT, "   ").outcome == "missing"
    partial = rules.graded(MULTI, [0])
    assert partial.outcome == "partial" and rules.fraction(partial) == 0.5


def test_leaderboard_shares_ranks_and_is_stable() -> None:
    totals = {5: ("Eve", 900), 3: ("Bob", 1200), 4: ("Ann", 900), 9: ("Zed", 100)}
    rows = rules.ranked(totals)
    assert [(r["rank"], r["name"], r["score"]) for r in rows] == [
        (1, "Bob", 1200),
        (2, "Ann", 900),
        (2, "Eve", 900),
        (4, "Zed", 100),
    ]
    assert len(rules.ranked(totals, top=2)) == 2
    assert rules.rank_of(totals, 5) == 2 and rules.rank_of(totals, 9) == 4
    assert rules.rank_of(totals, 1) is None


def test_public_view_has_no_answer_key() -> None:
    for question in (SINGLE, MULTI, TEXT):
        view = json.dumps(rules.public(question))
        assert "correct" not in view and "accepted" not in view and "Paris" not in view
    assert rules.correct_options(SINGLE) == [1]
    assert rules.correct_options(MULTI) == [0, 2]
    assert rules.correct_options(TEXT) is None


@pytest.mark.parametrize(
    "data",
    [
        {"live_quiz_id": 1, "question": 0},
        {"live_quiz_id": 0, "question": 0, "answer": 1},
        {"live_quiz_id": 1, "question": 200, "answer": 1},
        {"live_quiz_id": 1, "question": 0, "answer": False},
        {"live_quiz_id": 1, "question": 0, "answer": None},
        {"live_quiz_id": 1, "question": 0, "answer": "x" * 1001},
        {"live_quiz_id": 1, "question": 0, "answer": [0] * 21},
        {"live_quiz_id": 1, "question": 0, "answer": [0.5]},
    ],
)
def test_malformed_answers_do_not_decode(data: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**data, "cmd": "quiz.answer"}, lc.LiveCommand)


def test_start_defaults_to_revealing() -> None:
    start = msgspec.convert({"cmd": "quiz.start", "quiz_id": 3}, lc.LiveCommand)
    assert isinstance(start, lc.QuizStart) and start.reveal is True
    hidden = msgspec.convert({"cmd": "quiz.start", "quiz_id": 3, "reveal": False}, lc.LiveCommand)
    assert isinstance(hidden, lc.QuizStart) and hidden.reveal is False

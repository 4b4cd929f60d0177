"""Quiz grading: scoring rules, hostile answers, definition checks, public view."""

from __future__ import annotations

import msgspec
import pytest

from workers.grading import (
    MultipleChoice,
    Numeric,
    PublicQuestion,
    Question,
    QuizDefinitionError,
    ShortText,
    SingleChoice,
    grade,
    normalize_text,
    public_questions,
    questions_from_json,
    questions_from_obj,
    questions_to_json,
    validate_questions,
)

SINGLE = SingleChoice(id="q1", prompt="2 + 2?", points=2, options=("3", "4", "5"), correct=1)
MULTI = MultipleChoice(
    id="q2", prompt="Primes?", points=3, options=("2", "3", "4", "5"), correct=(0, 1, 3)
)
PARTIAL = MultipleChoice(
    id="q2p",
    prompt="Primes?",
    points=3,
    options=("2", "3", "4", "5"),
    correct=(0, 1, 3),
    partial_credit=True,
)
NUMERIC = Numeric(id="q3", prompt="pi to 2 places", points=1, answer=3.14, tolerance=0.01)
TEXT = ShortText(id="q4", prompt="Capital of France", points=1, accepted=("Paris",))
QUIZ: tuple[Question, ...] = (SINGLE, MULTI, NUMERIC, TEXT)


def result_of(question: Question, answer: object) -> tuple[str, float]:
    outcome = grade([question], {question.id: answer}).results[0]
    return outcome.outcome, outcome.points_awarded


def test_all_correct_scores_full_marks() -> None:
    """A perfect submission gets every point, 100 % and the top feedback band."""
    result = grade(QUIZ, {"q1": 1, "q2": [3, 0, 1], "q3": 3.14, "q4": "paris"})
    assert [r.correct for r in result.results] == [True, True, True, True]
    assert result.score == result.max_score == 7
    assert result.percentage == 100.0
    assert result.feedback == "Excellent work!"
    assert result.unknown_ids == ()


def test_results_follow_question_order_and_totals_add_up() -> None:
    """Per-question results come in quiz order; score is their sum, percentage is rounded."""
    result = grade(QUIZ, {"q4": "Paris", "q1": 0})
    assert [r.question_id for r in result.results] == ["q1", "q2", "q3", "q4"]
    assert result.score == 1
    assert result.max_score == 7
    assert result.percentage == 14.29


def test_missing_answers_score_zero_with_feedback() -> None:
    """No answer (or null) is 'missing', worth 0, and says so."""
    result = grade(QUIZ, {"q1": None})
    assert {r.outcome for r in result.results} == {"missing"}
    assert all(r.points_awarded == 0 and r.feedback == "No answer given." for r in result.results)
    assert result.score == 0


@pytest.mark.parametrize("answers", [None, [], "q1", 42, [("q1", 1)]])
def test_answers_that_are_not_a_mapping_never_raise(answers: object) -> None:
    """A body that is not an object grades as all missing instead of raising."""
    result = grade(QUIZ, answers)
    assert result.score == 0
    assert all(r.outcome == "missing" for r in result.results)


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        (SINGLE, "1"),
        (SINGLE, True),
        (SINGLE, 1.0),
        (SINGLE, [1]),
        (SINGLE, {"x": 1}),
        (MULTI, 0),
        (MULTI, "0,1,3"),
        (MULTI, [0, "1", 3]),
        (MULTI, [True, 1, 3]),
        (NUMERIC, [3.14]),
        (NUMERIC, True),
        (NUMERIC, "three"),
        (NUMERIC, "nan"),
        (NUMERIC, "inf"),
        (NUMERIC, "1e999999999"),
        (NUMERIC, 10**400),
        (NUMERIC, "3," + "1" * 100),
        (TEXT, 5),
        (TEXT, ["Paris"]),
        (TEXT, "Paris" * 1000),
    ],
)
def test_wrong_types_are_invalid_not_errors(question: Question, answer: object) -> None:
    """Mistyped or absurd answers score 0 as 'invalid'; bools are not option numbers."""
    outcome, points = result_of(question, answer)
    assert (outcome, points) == ("invalid", 0)


@pytest.mark.parametrize("answer", [-1, 3, 10**30])
def test_single_choice_out_of_range(answer: int) -> None:
    """An option index that does not exist is invalid, with the index in the feedback."""
    result = grade([SINGLE], {"q1": answer}).results[0]
    assert result.outcome == "invalid"
    assert str(answer) in result.feedback


def test_multiple_choice_is_all_or_nothing_by_default() -> None:
    """Without partial credit, a subset or superset of the right options scores 0."""
    assert result_of(MULTI, [0, 1]) == ("incorrect", 0)
    assert result_of(MULTI, [0, 1, 2, 3]) == ("incorrect", 0)
    assert result_of(MULTI, []) == ("incorrect", 0)
    assert result_of(MULTI, [1, 1, 0, 3, 3]) == ("correct", 3)
    assert result_of(MULTI, (3, 1, 0)) == ("correct", 3)


def test_multiple_choice_out_of_range_option_is_invalid() -> None:
    """Any picked index outside the options voids the answer."""
    assert result_of(MULTI, [0, 1, 3, 4]) == ("invalid", 0)


def test_partial_credit_rule() -> None:
    """Partial credit is points * (right - wrong) / len(correct), never negative or all-boxes."""
    assert result_of(PARTIAL, [0, 1]) == ("partial", 2)
    assert result_of(PARTIAL, [0]) == ("partial", 1)
    assert result_of(PARTIAL, [0, 1, 2]) == ("partial", 1)
    assert result_of(PARTIAL, [0, 2]) == ("incorrect", 0)
    assert result_of(PARTIAL, [2]) == ("incorrect", 0)
    # Ticking every box: 3 right, 1 wrong -> 2/3 of the points, not full marks.
    assert result_of(PARTIAL, [0, 1, 2, 3]) == ("partial", 2)
    partial = grade([PARTIAL], {"q2p": [0, 1]}).results[0]
    assert not partial.correct
    assert "2 of 3" in partial.feedback


def test_partial_credit_rounds_to_cents() -> None:
    """Thirds of a point are rounded to 2 decimals, matching numeric(10, 2)."""
    question = msgspec.structs.replace(PARTIAL, points=1)
    assert result_of(question, [0]) == ("partial", 0.33)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (3.14, "correct"),
        (3.15, "correct"),
        (3.13, "correct"),
        ("3.15", "correct"),
        (" 3.13 ", "correct"),
        (3.1500001, "incorrect"),
        (3.1299999, "incorrect"),
        (3, "incorrect"),
        ("3.16", "incorrect"),
    ],
)
def test_numeric_tolerance_boundaries_are_inclusive(answer: object, outcome: str) -> None:
    """|given - answer| <= tolerance counts, exactly at the boundary despite binary floats."""
    assert result_of(NUMERIC, answer)[0] == outcome


def test_numeric_zero_tolerance_and_ints() -> None:
    """With no tolerance the value must match; ints and floats compare as numbers."""
    exact = Numeric(id="n", prompt="0.1 + 0.2", answer=0.3)
    assert result_of(exact, 0.3)[0] == "correct"
    assert result_of(exact, "0.30")[0] == "correct"
    assert result_of(exact, 0.1 + 0.2)[0] == "incorrect"  # 0.30000000000000004 is not 0.3
    whole = Numeric(id="w", prompt="6 * 7", answer=42)
    assert result_of(whole, 42)[0] == "correct"
    assert result_of(whole, 42.0)[0] == "correct"
    assert result_of(whole, -42)[0] == "incorrect"


@pytest.mark.parametrize(
    "answer",
    [
        "paris",
        "  PARIS ",
        "Paris\n",
        "\u00a0Paris\u2003",  # no-break space, em space
        "Pa\u200bris",  # zero-width space inside
        "\uff30\uff41\uff52\uff49\uff53",  # full-width letters
    ],
)
def test_short_text_normalises_case_and_unicode_whitespace(answer: str) -> None:
    """Case, surrounding and exotic whitespace, invisible characters, full-width forms: ignored."""
    assert result_of(TEXT, answer) == ("correct", 1)


def test_short_text_inner_whitespace_collapses_but_letters_count() -> None:
    """Runs of whitespace inside an answer equal one space; different words stay different."""
    question = ShortText(id="t", prompt="Who?", accepted=("Ada Lovelace", "Lovelace"))
    assert result_of(question, "ada\t\u3000  lovelace")[0] == "correct"
    assert result_of(question, "lovelace")[0] == "correct"
    assert result_of(question, "adalovelace")[0] == "incorrect"
    assert result_of(question, "Ada")[0] == "incorrect"


def test_blank_short_text_is_missing() -> None:
    """An answer made only of whitespace is treated as no answer."""
    assert result_of(TEXT, " \u00a0\t")[0] == "missing"


def test_normalize_text_examples() -> None:
    """normalize_text is the documented canonical form."""
    assert normalize_text("  Straße\u00a0 NUMBER\u200d ") == "strasse number"
    assert normalize_text("") == ""


def test_unknown_question_ids_are_ignored_and_listed() -> None:
    """Answers to ids that are not in the quiz earn nothing and are reported, sorted."""
    result = grade(QUIZ, {"zz": 1, "q1": 1, "aa": "x"})
    assert result.unknown_ids == ("aa", "zz")
    assert result.score == 2


def test_grading_is_deterministic_and_serialisable() -> None:
    """The same input gives byte-identical JSON (what quiz_submissions.feedback stores)."""
    answers = {"q1": 1, "q2": [0], "q3": "3.2", "q4": "Lyon"}
    first = msgspec.json.encode(grade(QUIZ, answers))
    second = msgspec.json.encode(grade(QUIZ, dict(reversed(list(answers.items())))))
    assert first == second


def test_feedback_does_not_reveal_the_answer_key() -> None:
    """Feedback for a wrong answer never contains the accepted answer or the correct option."""
    results = grade(QUIZ, {"q1": 0, "q3": 1, "q4": "Lyon"}).results
    text = " ".join(r.feedback for r in results)
    assert "Paris" not in text and "3.14" not in text and "4" not in text


def test_zero_point_question_is_gradable() -> None:
    """A 0-point warm-up question is correct or not but adds nothing."""
    warmup = SingleChoice(id="w", prompt="Ready?", points=0, options=("yes", "no"), correct=0)
    result = grade([warmup, SINGLE], {"w": 0, "q1": 1})
    assert result.results[0].correct
    assert result.score == result.max_score == 2


def test_empty_quiz_grades_without_dividing_by_zero() -> None:
    """grade() on an (unvalidated) empty quiz returns 0 % instead of raising."""
    result = grade([], {"q1": 1})
    assert (result.score, result.max_score, result.percentage) == (0, 0, 0.0)


# -- definitions --------------------------------------------------------------------------


def problems_of(questions: list[Question]) -> str:
    with pytest.raises(QuizDefinitionError) as info:
        validate_questions(questions)
    assert isinstance(info.value, ValueError)
    return " | ".join(info.value.problems)


def test_valid_quiz_passes() -> None:
    """The sample quiz is valid."""
    validate_questions(QUIZ)


@pytest.mark.parametrize(
    ("questions", "expected"),
    [
        ([], "at least one question"),
        ([SINGLE, msgspec.structs.replace(TEXT, id="q1")], "duplicate id"),
        ([msgspec.structs.replace(SINGLE, id=" ")], "id must be"),
        ([msgspec.structs.replace(SINGLE, prompt="")], "empty prompt"),
        ([SINGLE, msgspec.structs.replace(TEXT, points=-1)], "points must be"),
        ([msgspec.structs.replace(SINGLE, points=float("nan"))], "points must be"),
        ([msgspec.structs.replace(SINGLE, points=0)], "positive total"),
        ([msgspec.structs.replace(SINGLE, options=(), correct=0)], "needs 2 to 20 options"),
        ([msgspec.structs.replace(SINGLE, options=("a",), correct=0)], "needs 2 to 20 options"),
        ([msgspec.structs.replace(SINGLE, options=("a", " a "))], "distinct"),
        ([msgspec.structs.replace(SINGLE, options=("a", "b", ""))], "must not be empty"),
        ([msgspec.structs.replace(SINGLE, correct=3)], "correct option 3 is out of range"),
        ([msgspec.structs.replace(SINGLE, correct=-1)], "out of range"),
        ([msgspec.structs.replace(MULTI, correct=())], "at least one correct"),
        ([msgspec.structs.replace(MULTI, correct=(0, 0))], "repeated"),
        ([msgspec.structs.replace(MULTI, correct=(0, 9))], "correct option 9"),
        ([msgspec.structs.replace(NUMERIC, tolerance=-0.1)], "tolerance"),
        ([msgspec.structs.replace(NUMERIC, answer=float("inf"))], "finite"),
        ([msgspec.structs.replace(TEXT, accepted=())], "accepted answer"),
        ([msgspec.structs.replace(TEXT, accepted=(" ", "\u200b"))], "accepted answer"),
    ],
)
def test_bad_definitions_are_rejected(questions: list[Question], expected: str) -> None:
    """Each kind of broken definition raises QuizDefinitionError naming the problem."""
    assert expected in problems_of(questions)


def test_every_problem_is_reported_at_once() -> None:
    """One error lists all problems, each prefixed with the question it concerns."""
    problems = problems_of(
        [
            msgspec.structs.replace(SINGLE, correct=7),
            msgspec.structs.replace(TEXT, id="q1", points=-2),
        ]
    )
    assert "question 1 ('q1'): correct option 7" in problems
    assert "question 2 ('q1'): duplicate id" in problems
    assert "question 2 ('q1'): points must be" in problems


def test_json_round_trip_keeps_answer_keys() -> None:
    """questions_to_json / questions_from_json round-trip the stored form."""
    raw = questions_to_json(QUIZ)
    assert questions_from_json(raw) == QUIZ
    assert questions_from_json(raw.decode()) == QUIZ


def test_loading_accepts_int_points_and_applies_defaults() -> None:
    """Authors may write integer points; omitted points and tolerance take their defaults."""
    loaded = questions_from_obj(
        [
            {"type": "numeric", "id": "n", "prompt": "6 * 7", "answer": 42},
            {"type": "short_text", "id": "t", "prompt": "Hi", "accepted": ["hello"], "points": 2},
        ]
    )
    assert loaded == (
        Numeric(id="n", prompt="6 * 7", answer=42.0, points=1.0, tolerance=0.0),
        ShortText(id="t", prompt="Hi", accepted=("hello",), points=2.0),
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        b'[{"type": "essay", "id": "e", "prompt": "Discuss"}]',
        b'[{"type": "single_choice", "id": "s", "prompt": "p", "options": ["a", "b"]}]',
        b'[{"type": "single_choice", "id": "s", "prompt": "p", "options": ["a"], "correct": "0"}]',
    ],
)
def test_malformed_definitions_raise_the_definition_error(raw: bytes) -> None:
    """Bad JSON, unknown types and missing or mistyped fields all raise QuizDefinitionError."""
    with pytest.raises(QuizDefinitionError):
        questions_from_json(raw)
    with pytest.raises(QuizDefinitionError):
        questions_from_obj(msgspec.json.decode(raw) if raw != b"not json" else "nope")


def test_public_questions_strip_answer_keys() -> None:
    """Students get type, id, prompt, points and options: nothing that gives the answer away."""
    public = public_questions(QUIZ)
    assert public[0] == PublicQuestion(
        type="single_choice", id="q1", prompt="2 + 2?", points=2, options=("3", "4", "5")
    )
    assert [p.type for p in public] == ["single_choice", "multiple_choice", "numeric", "short_text"]
    encoded = msgspec.json.decode(msgspec.json.encode(public))
    for item in encoded:
        assert not {"correct", "answer", "tolerance", "accepted", "partial_credit"} & set(item)
    assert "options" not in encoded[2]
    assert "Paris" not in msgspec.json.encode(public).decode()

"""Quiz definitions and grading: pure functions, no I/O.

A quiz is a sequence of questions, a msgspec tagged union on the ``type`` field:

* ``single_choice``: ``options`` and the ``correct`` option index; the answer is an int.
* ``multiple_choice``: ``options`` and the ``correct`` indices; the answer is a list of ints
  (order and repeats do not matter). All or nothing by default; with ``partial_credit`` the
  award is ``points * max(0, right_picks - wrong_picks) / len(correct)``, so ticking every box
  never pays.
* ``numeric``: ``answer`` and an absolute ``tolerance``; the answer is a number (or a string
  holding one). Correct when ``|given - answer| <= tolerance``, compared in decimal on the
  numbers as written, so ``3.15`` against ``3.14 ± 0.01`` counts as correct despite binary
  floating point.
* ``short_text``: ``accepted`` answers; the answer is a string. Compared after
  :func:`normalize_text` (Unicode NFKC, case folding, whitespace collapsed, invisible format
  characters dropped).

Guarantees:

* :func:`validate_questions` (and the ``questions_from_*`` loaders, which call it) reject a bad
  definition with one :class:`QuizDefinitionError` listing every problem.
* :func:`grade` never raises for anything a student sends: a missing, mistyped or out-of-range
  answer scores 0 with feedback saying why, and answers to unknown question ids are ignored
  (and listed). The result depends only on its arguments.
* Feedback never reveals the answer key, since a quiz may allow several attempts.
* :func:`public_questions` strips every answer key; it is what students may see.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

import msgspec

# -- definitions ------------------------------------------------------------------------------


class _QuestionBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    prompt: str
    points: float = 1.0


class SingleChoice(_QuestionBase, frozen=True, kw_only=True, tag="single_choice"):
    options: tuple[str, ...]
    correct: int


class MultipleChoice(_QuestionBase, frozen=True, kw_only=True, tag="multiple_choice"):
    options: tuple[str, ...]
    correct: tuple[int, ...]
    partial_credit: bool = False


class Numeric(_QuestionBase, frozen=True, kw_only=True, tag="numeric"):
    answer: float
    tolerance: float = 0.0


class ShortText(_QuestionBase, frozen=True, kw_only=True, tag="short_text"):
    accepted: tuple[str, ...]


Question = SingleChoice | MultipleChoice | Numeric | ShortText


class PublicQuestion(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a student sees of a question: the same ``type`` tag, no answer key."""

    type: str
    id: str
    prompt: str
    points: float
    options: tuple[str, ...] = ()


class QuizDefinitionError(ValueError):
    """A quiz definition is invalid; ``problems`` lists every reason, one per entry."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid quiz: " + "; ".join(self.problems))


MAX_QUESTIONS = 200
MAX_OPTIONS = 20
MAX_ID_LENGTH = 64


def validate_questions(questions: Sequence[Question]) -> None:
    """Raise :class:`QuizDefinitionError` unless ``questions`` is a gradable quiz.

    Checked: at least one question and at most :data:`MAX_QUESTIONS`; unique, non-empty ids;
    non-empty prompts; finite, non-negative points with a positive total; 2 to
    :data:`MAX_OPTIONS` distinct, non-empty options; correct indices in range (and, for
    multiple choice, at least one and no repeats); a finite numeric answer and a finite,
    non-negative tolerance; at least one accepted text that is not empty once normalised.
    """
    problems: list[str] = []
    if not questions:
        problems.append("a quiz needs at least one question")
    if len(questions) > MAX_QUESTIONS:
        problems.append(f"a quiz has at most {MAX_QUESTIONS} questions")
    seen: set[str] = set()
    total = 0.0
    for number, q in enumerate(questions, start=1):
        where = f"question {number} ({q.id!r})"
        if not q.id.strip() or len(q.id) > MAX_ID_LENGTH:
            problems.append(f"{where}: id must be 1 to {MAX_ID_LENGTH} characters")
        if q.id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(q.id)
        if not q.prompt.strip():
            problems.append(f"{where}: empty prompt")
        if not math.isfinite(q.points) or q.points < 0:
            problems.append(f"{where}: points must be a finite number >= 0")
        else:
            total += q.points
        problems.extend(f"{where}: {p}" for p in _type_problems(q))
    if questions and total <= 0:
        problems.append("a quiz needs a positive total of points")
    if problems:
        raise QuizDefinitionError(problems)


def _type_problems(q: Question) -> list[str]:
    problems: list[str] = []
    match q:
        case SingleChoice() | MultipleChoice():
            if not 2 <= len(q.options) <= MAX_OPTIONS:
                problems.append(f"needs 2 to {MAX_OPTIONS} options")
            labels = [o.strip() for o in q.options]
            if any(not label for label in labels):
                problems.append("options must not be empty")
            if len(set(labels)) != len(labels):
                problems.append("options must be distinct")
            correct = (q.correct,) if isinstance(q, SingleChoice) else q.correct
            if not correct:
                problems.append("needs at least one correct option")
            if len(set(correct)) != len(correct):
                problems.append("correct options are repeated")
            for index in correct:
                if not 0 <= index < len(q.options):
                    problems.append(f"correct option {index} is out of range")
        case Numeric():
            if not math.isfinite(q.answer):
                problems.append("answer must be a finite number")
            if not math.isfinite(q.tolerance) or q.tolerance < 0:
                problems.append("tolerance must be a finite number >= 0")
        case ShortText():
            if not any(normalize_text(a) for a in q.accepted):
                problems.append("needs at least one non-empty accepted answer")
    return problems


_DECODER = msgspec.json.Decoder(tuple[Question, ...])
_ENCODER = msgspec.json.Encoder()


def questions_from_json(raw: bytes | str) -> tuple[Question, ...]:
    """Decode and validate a JSON array of questions (an API body, the ``quizzes`` column).

    Raises :class:`QuizDefinitionError` for malformed JSON, a wrong shape or a bad definition.
    """
    try:
        questions = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise QuizDefinitionError([str(exc)]) from exc
    validate_questions(questions)
    return questions


def questions_from_obj(obj: object) -> tuple[Question, ...]:
    """Like :func:`questions_from_json`, from already-decoded Python objects."""
    try:
        questions = msgspec.convert(obj, tuple[Question, ...])
    except msgspec.ValidationError as exc:
        raise QuizDefinitionError([str(exc)]) from exc
    validate_questions(questions)
    return questions


def questions_to_json(questions: Sequence[Question]) -> bytes:
    """The JSON stored in ``quizzes.questions``, answer keys included."""
    return _ENCODER.encode(questions)


def public_questions(questions: Sequence[Question]) -> tuple[PublicQuestion, ...]:
    """The questions without answer keys, in the same order: safe to send to students."""
    public: list[PublicQuestion] = []
    for q in questions:
        options = q.options if isinstance(q, SingleChoice | MultipleChoice) else ()
        tag = str(q.__struct_config__.tag)
        public.append(
            PublicQuestion(type=tag, id=q.id, prompt=q.prompt, points=q.points, options=options)
        )
    return tuple(public)


# -- grading ----------------------------------------------------------------------------------

Outcome = Literal["correct", "partial", "incorrect", "missing", "invalid"]


class QuestionResult(msgspec.Struct, frozen=True, kw_only=True):
    """How one question was graded. ``correct`` is true only for full marks."""

    question_id: str
    outcome: Outcome
    correct: bool
    points_awarded: float
    max_points: float
    feedback: str


class GradeResult(msgspec.Struct, frozen=True, kw_only=True):
    """A graded submission: stored in ``quiz_submissions.feedback`` and sent to the student.

    ``score`` and ``max_score`` are rounded to 2 decimals (the column is ``numeric(10, 2)``),
    ``percentage`` too. ``unknown_ids`` lists answered ids that match no question.
    """

    results: tuple[QuestionResult, ...]
    score: float
    max_score: float
    percentage: float
    feedback: str
    unknown_ids: tuple[str, ...] = ()


def grade(questions: Sequence[Question], answers: object) -> GradeResult:
    """Grade ``answers`` (normally a dict from question id to answer, decoded from JSON).

    Never raises for the content of ``answers``: anything that is not a mapping grades as
    "every answer missing". ``questions`` is trusted (validated when the quiz was saved).
    """
    given: Mapping[object, object] = answers if isinstance(answers, Mapping) else {}
    results = tuple(_grade_one(q, given.get(q.id)) for q in questions)
    score = round(sum(r.points_awarded for r in results), 2)
    max_score = round(sum(q.points for q in questions), 2)
    percentage = round(100.0 * score / max_score, 2) if max_score > 0 else 0.0
    known = {q.id for q in questions}
    unknown = sorted(str(key) for key in given if key not in known)
    return GradeResult(
        results=results,
        score=score,
        max_score=max_score,
        percentage=percentage,
        feedback=summary_feedback(percentage),
        unknown_ids=tuple(unknown),
    )


def summary_feedback(percentage: float) -> str:
    """One line for the whole quiz, by score band."""
    if percentage >= 90:
        return "Excellent work!"
    if percentage >= 70:
        return "Good job."
    if percentage >= 40:
        return "Keep practising: review the questions you missed."
    return "Review the lessons and try again."


def _result(q: Question, outcome: Outcome, awarded: float, feedback: str) -> QuestionResult:
    return QuestionResult(
        question_id=q.id,
        outcome=outcome,
        correct=outcome == "correct",
        points_awarded=round(awarded, 2),
        max_points=q.points,
        feedback=feedback,
    )


def _grade_one(q: Question, answer: object) -> QuestionResult:
    if answer is None:
        return _result(q, "missing", 0.0, "No answer given.")
    match q:
        case SingleChoice():
            return _grade_single(q, answer)
        case MultipleChoice():
            return _grade_multiple(q, answer)
        case Numeric():
            return _grade_numeric(q, answer)
        case ShortText():
            return _grade_text(q, answer)


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `true` is not an option number.
    return isinstance(value, int) and not isinstance(value, bool)


def _grade_single(q: SingleChoice, answer: object) -> QuestionResult:
    if not _is_int(answer):
        return _result(q, "invalid", 0.0, "Expected the number of one option.")
    assert isinstance(answer, int)
    if not 0 <= answer < len(q.options):
        return _result(q, "invalid", 0.0, f"Option {answer} does not exist.")
    if answer == q.correct:
        return _result(q, "correct", q.points, "Correct.")
    return _result(q, "incorrect", 0.0, "Incorrect.")


def _grade_multiple(q: MultipleChoice, answer: object) -> QuestionResult:
    if not isinstance(answer, list | tuple) or not all(_is_int(a) for a in answer):
        return _result(q, "invalid", 0.0, "Expected a list of option numbers.")
    picked = {a for a in answer if isinstance(a, int)}
    bad = sorted(a for a in picked if not 0 <= a < len(q.options))
    if bad:
        return _result(q, "invalid", 0.0, f"Option {bad[0]} does not exist.")
    correct = set(q.correct)
    if picked == correct:
        return _result(q, "correct", q.points, "Correct.")
    right = len(picked & correct)
    wrong = len(picked - correct)
    if q.partial_credit and right > wrong:
        awarded = q.points * (right - wrong) / len(correct)
        return _result(
            q,
            "partial",
            awarded,
            f"Partly correct: {right} of {len(correct)} right options chosen, {wrong} wrong.",
        )
    return _result(q, "incorrect", 0.0, "Incorrect.")


def _to_decimal(value: object) -> Decimal | None:
    """A finite number from a JSON number or a numeric string; None otherwise.

    Goes through float so that absurd inputs ("1e999999999", huge ints) become inf and are
    refused, instead of overflowing the decimal arithmetic later.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str) and len(value) > 64:
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    # repr() is the shortest decimal that round-trips: the number as it was written.
    return Decimal(repr(number))


def _grade_numeric(q: Numeric, answer: object) -> QuestionResult:
    given = _to_decimal(answer)
    if given is None:
        return _result(q, "invalid", 0.0, "Expected a number.")
    if abs(given - Decimal(repr(q.answer))) <= Decimal(repr(q.tolerance)):
        return _result(q, "correct", q.points, "Correct.")
    return _result(q, "incorrect", 0.0, "Incorrect.")


def normalize_text(text: str) -> str:
    """Canonical form for comparing short answers.

    NFKC (full-width letters, ligatures and non-breaking spaces become plain ones), case folding,
    format characters such as zero-width spaces dropped, any run of Unicode whitespace collapsed
    to one space, ends trimmed.
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.casefold().split())


MAX_TEXT_ANSWER = 1000


def _grade_text(q: ShortText, answer: object) -> QuestionResult:
    if not isinstance(answer, str):
        return _result(q, "invalid", 0.0, "Expected a text answer.")
    if len(answer) > MAX_TEXT_ANSWER:
        return _result(q, "invalid", 0.0, "Answer is too long.")
    given = normalize_text(answer)
    if not given:
        return _result(q, "missing", 0.0, "No answer given.")
    if any(given == normalize_text(a) for a in q.accepted):
        return _result(q, "correct", q.points, "Correct.")
    return _result(q, "incorrect", 0.0, "Incorrect.")

"""Instructor feedback on quiz submissions, and the hand-grading queue.

* ``POST /api/v1/submissions/{id}/feedback`` (staff of the quiz's cohort, and admins): a
  comment, hand-graded question points and/or a score override (rules in
  :mod:`workers.review`). In one transaction: the feedback row, the submission's effective
  grade (``score``), its queue state, ``feedback.posted`` on the student's ``user:{id}`` and,
  when the submission leaves the queue, ``grading.resolved`` on ``staff:{cohort}``. After the
  commit the ``feedback`` job (:mod:`workers.feedback`) notifies the student (in-app always,
  email per their preference for ``feedback.posted``) and moves the leaderboard.

  Refusals: 404 for a submission the caller cannot see (a student never learns whether someone
  else's id exists), 403 ``forbidden`` for its own student, 409 ``not_graded`` before the
  automatic grade exists, 400 ``empty_feedback`` with nothing to say, 400 ``invalid_points``
  listing every bad question id or value, 413 over :data:`MAX_FEEDBACK_BODY`. A retry carrying
  the same ``client_key`` returns the stored feedback (200) instead of adding a second one.
* ``GET /api/v1/submissions/{id}/feedback``: the feedback history of a submission, for its
  student and the cohort's staff.
* ``GET /api/v1/cohorts/{id}/feedback``: the newest feedback in a cohort: a student's own, or
  everyone's for staff (the student dashboard's "Feedback" card).
* ``GET /api/v1/cohorts/{id}/grading-queue`` (staff): graded submissions with short-text
  answers waiting for a human, oldest first, each with the waiting answers, their prompts,
  the accepted answers and the points at stake.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from api import errors
from api.deps import body as read_body
from api.deps import current_user, is_staff, path_int, require_member, require_staff, user_id
from api.openapi import Routes
from api.responses import json_response
from api.state import DB, REDIS
from config import redisconn
from config.topics import staff_topic, user_topic
from workers import activity, events, review
from workers import feedback as feedback_job
from workers.events import FeedbackOut, FeedbackPosted
from workers.grading import GradeResult, ShortText, questions_from_json
from workers.jobs import enqueue
from workers.live_rules import Invalid, clean_text
from workers.outbox_write import emit_many

log = logging.getLogger("lectern.api.feedback")

MAX_FEEDBACK_BODY = 64 * 1024
COMMENT_MAX = 5000
#: Question points one feedback may carry (a quiz has at most 200 questions).
POINTS_MAX = 200
QUEUE_LIMIT = 200
LIST_LIMIT = 100

QuestionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Points = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
ClientKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class FeedbackIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """At least one of ``comment``, ``question_points`` and ``score``.

    ``question_points`` maps question ids to the points awarded by hand; ``score`` overrides
    the total (0 to the quiz's maximum); question points without a ``score`` clear an earlier
    override. ``client_key`` makes a retry idempotent."""

    comment: Annotated[str, msgspec.Meta(max_length=COMMENT_MAX)] = ""
    question_points: Annotated[dict[QuestionId, Points], msgspec.Meta(max_length=POINTS_MAX)] = (
        msgspec.field(default_factory=dict)
    )
    score: Points | None = None
    client_key: ClientKey | None = None


class WaitingAnswer(msgspec.Struct, kw_only=True):
    question_id: str
    prompt: str
    answer: Any
    accepted: tuple[str, ...]
    max_points: float
    points_awarded: float


class QueueItem(msgspec.Struct, kw_only=True):
    submission_id: int
    quiz_id: int
    quiz_title: str
    user_id: int
    student_name: str
    attempt: int
    submitted_at: datetime
    score: float
    max_score: float
    waiting: list[WaitingAnswer]


_grade_decoder = msgspec.json.Decoder(GradeResult)
_points_decoder = msgspec.json.Decoder(dict[str, float])
_answers_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

_LOAD = """
SELECT s.id, s.quiz_id, s.user_id, s.status, s.feedback::text AS feedback,
       s.manual_points::text AS manual_points, s.score_override::float8 AS score_override,
       s.review, q.cohort_id, q.title, q.questions::text AS questions
FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
WHERE s.id = $1
"""

_FEEDBACK = """
SELECT f.id, f.submission_id, s.quiz_id, q.title AS quiz_title, q.cohort_id, s.user_id,
       f.author_id, u.display_name AS author_name, f.comment,
       f.question_points::text AS question_points, f.score_override::float8 AS score_override,
       f.score::float8 AS score, f.max_score::float8 AS max_score, s.review, f.created_at
FROM submission_feedback f
JOIN quiz_submissions s ON s.id = f.submission_id
JOIN quizzes q ON q.id = s.quiz_id
LEFT JOIN users u ON u.id = f.author_id
"""


def _feedback_out(row: asyncpg.Record) -> FeedbackOut:
    max_score = row["max_score"]
    return FeedbackOut(
        id=row["id"],
        submission_id=row["submission_id"],
        quiz_id=row["quiz_id"],
        quiz_title=row["quiz_title"],
        cohort_id=row["cohort_id"],
        user_id=row["user_id"],
        author_id=row["author_id"],
        author_name=row["author_name"],
        comment=row["comment"],
        question_points=_points_decoder.decode(row["question_points"]),
        score_override=row["score_override"],
        score=row["score"],
        max_score=max_score,
        percentage=round(100.0 * row["score"] / max_score, 2) if max_score > 0 else 0.0,
        review=row["review"],
        created_at=row["created_at"],
    )


async def _visible_submission(conn: Any, request: web.Request, lock: bool) -> asyncpg.Record:
    """The submission named in the path, if the caller is its student or staff of its
    cohort; 404 otherwise (never 403: ids do not leak existence)."""
    claims = await current_user(request)
    submission_id = path_int(request)
    row = await conn.fetchrow(_LOAD + (" FOR UPDATE OF s" if lock else ""), submission_id)
    if row is None or (
        row["user_id"] != user_id(claims) and not is_staff(claims, row["cohort_id"])
    ):
        raise errors.not_found(f"submission {submission_id} does not exist")
    return row


def _comment(raw: str) -> str:
    try:
        return clean_text(raw, "comment", COMMENT_MAX, required=False) or ""
    except Invalid as exc:
        raise errors.bad_request(str(exc), {"field": "comment"}, "invalid_field") from None


async def _require_grader(request: web.Request, conn: Any, lock: bool) -> asyncpg.Record:
    """The submission, if the caller is staff of its cohort (404 / 403 otherwise)."""
    claims = await current_user(request)
    sub = await _visible_submission(conn, request, lock=lock)
    if not is_staff(claims, sub["cohort_id"]):
        raise errors.forbidden("only staff of this cohort give feedback")
    return sub


def _review(sub: Any, data: FeedbackIn) -> tuple[dict[str, float], float | None, GradeResult, str]:
    """The submission's points after ``data``: (manual points, score override, effective
    result, review state); 400 when the points do not fit the quiz."""
    questions = questions_from_json(sub["questions"])
    auto = _grade_decoder.decode(sub["feedback"])
    problems = review.point_problems(questions, data.question_points)
    if data.score is not None and data.score > auto.max_score:
        problems.append(f"score must be between 0 and {auto.max_score:g}")
    if problems:
        raise errors.bad_request(
            "the points cannot be applied",
            {"field": "question_points", "problems": problems},
            "invalid_points",
        )
    manual = {**_points_decoder.decode(sub["manual_points"]), **data.question_points}
    override = sub["score_override"]
    if data.score is not None:
        override = data.score
    elif data.question_points:
        override = None
    effective = review.apply_review(auto, manual, override)
    state = sub["review"]
    waiting = review.waiting_questions(questions, auto)
    if state == "waiting" and review.resolves(waiting, manual, override):
        state = "done"
    return manual, override, effective, state


async def _announce(
    conn: asyncpg.Connection,
    sub: Any,
    out: FeedbackOut,
    effective: GradeResult,
    state: str,
    by: int,
) -> None:
    """Tell the learner (``feedback.posted``, a pass in the activity feed) and the staff
    (``grading.resolved`` when this feedback resolved a waiting review), in one insert."""
    posted = FeedbackPosted(feedback=out, results=effective.results)
    addressed = [events.to(user_topic(sub["user_id"]), posted)]
    if effective.percentage >= activity.PASS_PERCENTAGE:
        await activity.record(
            conn, sub["cohort_id"], sub["user_id"], "quiz.passed", sub["quiz_id"], sub["title"]
        )
    if state != sub["review"]:
        resolved = events.GradingResolved(submission_id=sub["id"], quiz_id=sub["quiz_id"], by=by)
        addressed.append(events.to(staff_topic(sub["cohort_id"]), resolved))
    await emit_many(conn, addressed)


async def post_feedback(request: web.Request) -> web.Response:
    claims = await current_user(request)
    # Rights first: whoever may not give feedback learns that, whatever the body holds.
    await _require_grader(request, request.app[DB], lock=False)
    data = await read_body(request, FeedbackIn, MAX_FEEDBACK_BODY)
    comment = _comment(data.comment)
    if not comment and not data.question_points and data.score is None:
        raise errors.bad_request(
            "feedback needs a comment, question points or a score", {"field": ""}, "empty_feedback"
        )
    async with request.app[DB].acquire() as conn, conn.transaction():
        sub = await _require_grader(request, conn, lock=True)
        if data.client_key is not None:
            done = await conn.fetchrow(
                f"{_FEEDBACK} WHERE f.submission_id = $1 AND f.client_key = $2",
                sub["id"],
                data.client_key,
            )
            if done is not None:
                return json_response(_feedback_out(done), 200)
        if sub["status"] != "graded":
            raise errors.conflict(
                "the submission is not graded yet; give feedback once it is",
                {"status": sub["status"]},
                "not_graded",
            )
        manual, override, effective, state = _review(sub, data)
        await conn.execute(
            "UPDATE quiz_submissions SET manual_points = $2::jsonb, score_override = $3,"
            " score = $4, review = $5 WHERE id = $1",
            sub["id"],
            _encoder.encode(manual).decode(),
            override,
            effective.score,
            state,
        )
        fid = await conn.fetchval(
            "INSERT INTO submission_feedback (submission_id, author_id, comment,"
            " question_points, score_override, score, max_score, client_key)"
            " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8) RETURNING id",
            sub["id"],
            user_id(claims),
            comment,
            _encoder.encode(data.question_points).decode(),
            data.score,
            effective.score,
            effective.max_score,
            data.client_key,
        )
        out = _feedback_out(await conn.fetchrow(f"{_FEEDBACK} WHERE f.id = $1", fid))
        await _announce(conn, sub, out, effective, state, user_id(claims))
    await _after_commit(request, out)
    return json_response(out, 201)


async def _after_commit(request: web.Request, out: FeedbackOut) -> None:
    """Queue the notification job (the events are in the outbox; the relay, woken by the
    commit, publishes them)."""
    try:
        await enqueue(request.app[REDIS], feedback_job.QUEUE, {"feedback_id": out.id})
    except redisconn.ERRORS as exc:
        # Stored, and the event is in the outbox: the scheduler's sweep notifies later.
        log.warning(
            "feedback job not enqueued; the sweep will pick it up",
            extra={"feedback_id": out.id, "error": repr(exc)},
        )


async def list_submission_feedback(request: web.Request) -> web.Response:
    pool = request.app[DB]
    sub = await _visible_submission(pool, request, lock=False)
    rows = await pool.fetch(
        f"{_FEEDBACK} WHERE f.submission_id = $1 ORDER BY f.id LIMIT {LIST_LIMIT}", sub["id"]
    )
    return json_response([_feedback_out(r) for r in rows])


async def list_cohort_feedback(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    target = None if is_staff(claims, cohort_id) else user_id(claims)
    rows = await request.app[DB].fetch(
        f"{_FEEDBACK} WHERE q.cohort_id = $1 AND ($2::bigint IS NULL OR s.user_id = $2)"
        f" ORDER BY f.id DESC LIMIT {LIST_LIMIT}",
        cohort_id,
        target,
    )
    return json_response([_feedback_out(r) for r in rows])


async def grading_queue(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    rows = await request.app[DB].fetch(
        "SELECT s.id, s.quiz_id, q.title, s.user_id, u.display_name, s.attempt, s.submitted_at,"
        " s.answers::text AS answers, s.feedback::text AS feedback,"
        " s.manual_points::text AS manual_points, s.score_override::float8 AS score_override,"
        " q.questions::text AS questions"  # nosec B608  # constant SQL text
        " FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id"
        " JOIN users u ON u.id = s.user_id"
        " WHERE q.cohort_id = $1 AND s.review = 'waiting'"
        f" ORDER BY s.submitted_at, s.id LIMIT {QUEUE_LIMIT}",
        cohort_id,
    )
    items = []
    for row in rows:
        questions = questions_from_json(row["questions"])
        by_id = {q.id: q for q in questions}
        auto = _grade_decoder.decode(row["feedback"])
        manual = _points_decoder.decode(row["manual_points"])
        answers = _answers_decoder.decode(row["answers"])
        effective = review.apply_review(auto, manual, row["score_override"])
        awarded = {r.question_id: r.points_awarded for r in effective.results}
        waiting = [
            WaitingAnswer(
                question_id=qid,
                prompt=q.prompt,
                answer=answers.get(qid),
                accepted=q.accepted,
                max_points=q.points,
                points_awarded=awarded[qid],
            )
            for qid in review.waiting_questions(questions, auto)
            if qid not in manual and isinstance(q := by_id[qid], ShortText)
        ]
        items.append(
            QueueItem(
                submission_id=row["id"],
                quiz_id=row["quiz_id"],
                quiz_title=row["title"],
                user_id=row["user_id"],
                student_name=row["display_name"],
                attempt=row["attempt"],
                submitted_at=row["submitted_at"],
                score=effective.score,
                max_score=effective.max_score,
                waiting=waiting,
            )
        )
    return json_response(items)


def setup(app: web.Application) -> None:
    r = Routes(app, "feedback")
    r.post(
        "/api/v1/submissions/{id}/feedback",
        post_feedback,
        summary="Comment on a submission, grade answers by hand or override its score",
        auth="staff",
        request=FeedbackIn,
        response=FeedbackOut,
        status=201,
    )
    r.get(
        "/api/v1/submissions/{id}/feedback",
        list_submission_feedback,
        summary="The feedback on a submission (its student and the cohort's staff)",
        auth="user",
        response=list[FeedbackOut],
    )
    r.get(
        "/api/v1/cohorts/{id}/feedback",
        list_cohort_feedback,
        summary="Newest feedback in a cohort: the caller's own, or everyone's for staff",
        auth="member",
        response=list[FeedbackOut],
    )
    r.get(
        "/api/v1/cohorts/{id}/grading-queue",
        grading_queue,
        summary="Submissions with short-text answers waiting to be graded by hand",
        auth="staff",
        response=list[QueueItem],
    )

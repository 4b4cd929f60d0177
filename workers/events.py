"""Every event Lectern publishes to clients: its type, the topics it goes to, its data as a Struct.

An event is ``(topic, type, data)`` (gateway/publish.py). Publishers never write ``type`` or
build ``data`` as a dict: they build the event's Struct and address it with :func:`to`, which
looks the type up here, and hand the triple to the outbox (``workers.outbox_write.emit``), to a
live room (``Ctx.to_room``) or to the publisher::

    await emit(conn, events.to(cohort_topic(c), LessonChanged(lesson_id=1, version=2, op="new")))
    s.to_room(events.QaRanked(order=board.order()))

:data:`EVENTS` is the list of record: tests/unit/test_events.py fails when an event here has
no row in docs/api.md's event table, or a row names an event or a field that is not here.

Wire rules (clients read these as JSON or MessagePack maps): a field's name is its wire name,
in declaration order (the order the dicts these replace had). A field that is only present
sometimes has the default :data:`msgspec.UNSET`, which leaves it out of the map; no event uses
``omit_defaults``, so a field with any other default is always sent. Nested entities that the
API's state routes also return are typed ``dict[str, Any]`` and built by their one view
function (``workers.live_rules.question_view`` ...). Evolution: new fields get defaults; fields
are never removed, renamed or retyped (docs/protocol.md).

This module sits in ``workers/``, the shared classroom domain that the API imports too, so that
event data can reuse the domain's Structs (grades, activity, leaderboards, notifications).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.online import Online
from workers.grading import QuestionResult
from workers.outbox_write import Addressed
from workers.struggling import Alert

#: What an ``activity`` entry reports.
ActivityKind = Literal["member.joined", "lesson.completed", "quiz.passed"]


class Event(msgspec.Struct, kw_only=True, gc=False):
    """Base of the Structs that are only event data (others are also API bodies)."""


# -- user:{id} --------------------------------------------------------------------------------


class ProgressUpdate(Event):
    lesson_id: int
    cohort_id: int
    completed: bool
    completed_count: int
    total: int
    percentage: float


class CertificateProgress(Event):
    cohort_id: int
    percentage: float
    milestone: int


class QuizGraded(Event):
    """The grading worker committed a grade (the automatic one)."""

    submission_id: int
    quiz_id: int
    attempt: int
    score: float
    max_score: float
    percentage: float
    feedback: str
    results: tuple[QuestionResult, ...]


class FeedbackOut(msgspec.Struct, kw_only=True):
    """A piece of feedback (also ``feedback.posted``'s ``feedback``). ``score``,
    ``max_score`` and ``percentage`` are the submission's effective grade right after it."""

    id: int
    submission_id: int
    quiz_id: int
    quiz_title: str
    cohort_id: int
    user_id: int
    author_id: int | None
    author_name: str | None
    comment: str
    question_points: dict[str, float]
    score_override: float | None
    score: float
    max_score: float
    percentage: float
    review: str
    created_at: datetime


class FeedbackPosted(Event):
    """The feedback and the per-question results of the effective grade."""

    feedback: FeedbackOut
    results: tuple[QuestionResult, ...]


class NotificationOut(msgspec.Struct, kw_only=True):
    """A notification as the API lists it and as ``notification.new`` carries it."""

    id: int
    kind: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: datetime
    read: bool = False
    read_at: datetime | None = None


class NotificationRead(Event):
    ids: list[int]
    all: bool
    unread_count: int


class ImportProgress(Event):
    """``rows`` (the batch's ``csv_import.RowResult`` maps) while running; ``counts`` once
    the import finished, and ``error`` when it failed."""

    import_id: int
    cohort_id: int
    uploaded_by: int | None
    processed: int
    total: int
    status: str
    rows: list[Any] | UnsetType = UNSET
    counts: dict[str, int] | UnsetType = UNSET
    error: str | UnsetType = UNSET


class EnrollmentChanged(Event, kw_only=True):
    """``kind`` (member or staff) is absent for a CSV import's enrollments."""

    cohort_id: int
    kind: str | UnsetType = UNSET
    enrolled: bool


# -- cohort:{id} ------------------------------------------------------------------------------


class ActivityOut(msgspec.Struct, kw_only=True):
    """One entry of the feed (also the data of ``activity``)."""

    id: int
    cohort_id: int
    kind: ActivityKind
    actor: str
    subject_id: int | None
    subject_title: str | None
    created_at: datetime


class ActivitySettings(Event):
    cohort_id: int
    privacy: str


class Entry(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    display_name: str
    score: float


class Board(msgspec.Struct, kw_only=True):
    """A leaderboard page (also the data of ``leaderboard.update``): ``rank`` is competition
    ranking (equal scores share a rank, the next rank skips), ties listed by user id."""

    cohort_id: int
    entries: list[Entry]
    total: int


class LessonChanged(Event):
    lesson_id: int
    version: int
    op: str


class AnnouncementOut(msgspec.Struct, kw_only=True):
    """An announcement (the API's body, and the data of ``announcement.new``)."""

    id: int
    cohort_id: int
    author_id: int | None
    author_name: str | None
    title: str
    body: str
    created_at: datetime


class QuizPublished(Event):
    quiz_id: int
    cohort_id: int
    title: str


class CohortDeleted(Event):
    cohort_id: int


class SessionState(Event):
    """The session as ``GET /sessions/{id}`` shows it (``live_rules.session_view``)."""

    session: dict[str, Any]


# -- staff:{cohort} ---------------------------------------------------------------------------


class LessonCount(msgspec.Struct):
    lesson_id: int
    title: str
    completed_count: int


class StaffProgress(msgspec.Struct):
    """Data of ``staff.progress`` (positional, like the API's detail that extends it)."""

    cohort_id: int
    total: int
    students: int
    average_percentage: float
    lessons: list[LessonCount]


class Dashboard(msgspec.Struct, kw_only=True):
    """Data of ``dashboard.update`` on ``staff:{cohort}``, and the snapshot route's body."""

    cohort_id: int
    members: int
    submissions_24h: int
    #: Submissions not graded yet, plus those waiting in the hand-grading queue.
    pending_grading: int
    average_percentage: float | None
    lessons_completed_24h: int
    struggling: list[int]
    active_24h: int = 0
    active_7d: int = 0
    #: Who may need help and why (every rule of :mod:`workers.struggling`).
    alerts: list[Alert] = msgspec.field(default_factory=list)


class GradingWaiting(Event):
    submission_id: int
    quiz_id: int
    user_id: int
    question_ids: list[str]


class GradingResolved(Event):
    submission_id: int
    quiz_id: int
    by: int


class PollTally(Event):
    """``voters`` (names per option) only for a named poll."""

    session_id: int
    poll_id: int
    state: str
    counts: list[int]
    total: int
    percentages: list[int]
    voters: list[list[str]] | UnsetType = UNSET


class QuizAnswered(Event):
    session_id: int
    live_quiz_id: int
    index: int
    answered: int


class Presence(Event):
    session_id: int
    users: list[str]
    count: int


# -- live:{cohort}:{session} ------------------------------------------------------------------


class QaUpdated(Event):
    """The whole question as ``live_rules.question_view`` shows it."""

    question: dict[str, Any]


class QaRanked(Event):
    order: list[int]


class QaCleared(Event):
    question_ids: list[int]
    by: str
    at: str


class PollOpened(Event):
    poll: dict[str, Any]


class PollVotes(Event):
    """``tally`` only when the poll's ``results`` let students see the counts now."""

    poll_id: int
    total: int
    tally: dict[str, Any] | UnsetType = UNSET


class PollClosed(Event):
    poll: dict[str, Any]
    tally: dict[str, Any] | UnsetType = UNSET


class PollRevealed(Event):
    poll: dict[str, Any]
    tally: dict[str, Any]


class ChatMessage(Event):
    message: dict[str, Any]


class ChatDeleted(Event):
    message_id: int
    deleted_by: str


class Reactions(Event):
    counts: dict[str, int]
    window_ms: int


class Broadcast(Event):
    text: str
    by: str
    at: str


class BroadcastCleared(Event):
    by: str
    at: str


class RecordingStatus(Event):
    state: str
    url: str | None
    by: str
    at: str


class ScreenshareSignal(Event, rename={"sender": "from"}):
    kind: str
    payload: Any
    sender: str


class QuizQuestion(Event):
    """The current question without its answer key, and the server's deadline."""

    live_quiz_id: int
    quiz_id: int
    title: str
    index: int
    count: int
    question: dict[str, Any]
    time_limit_s: int
    started_at: str
    deadline: str


class QuizResults(Event):
    """``counts`` for choice questions; ``correct`` when the quiz reveals the answers."""

    live_quiz_id: int
    index: int
    question_id: str
    answered: int
    outcomes: dict[str, int]
    counts: list[int] | UnsetType = UNSET
    correct: list[int] | UnsetType = UNSET


class QuizLeaderboard(Event):
    live_quiz_id: int
    after: int
    final: bool
    players: int
    top: list[dict[str, Any]]


class QuizEnded(Event):
    live_quiz_id: int
    by: str


class PresenceCount(Event):
    session_id: int
    count: int


# -- the registry -----------------------------------------------------------------------------

USER, COHORT, STAFF, LIVE = "user", "cohort", "staff", "live"

#: Every event type: its Struct and the kinds of topic it goes to.
EVENTS: dict[str, tuple[type[msgspec.Struct], tuple[str, ...]]] = {
    "progress.update": (ProgressUpdate, (USER,)),
    "certificate.progress": (CertificateProgress, (USER,)),
    "quiz.graded": (QuizGraded, (USER,)),
    "feedback.posted": (FeedbackPosted, (USER,)),
    "notification.new": (NotificationOut, (USER,)),
    "notification.read": (NotificationRead, (USER,)),
    "import.progress": (ImportProgress, (STAFF,)),
    "enrollment.changed": (EnrollmentChanged, (USER,)),
    "activity": (ActivityOut, (COHORT,)),
    "activity.settings": (ActivitySettings, (COHORT,)),
    "leaderboard.update": (Board, (COHORT,)),
    "lesson.changed": (LessonChanged, (COHORT,)),
    "announcement.new": (AnnouncementOut, (COHORT,)),
    "quiz.published": (QuizPublished, (COHORT,)),
    "cohort.deleted": (CohortDeleted, (COHORT,)),
    "session.state": (SessionState, (LIVE, COHORT)),
    "staff.progress": (StaffProgress, (STAFF,)),
    "grading.waiting": (GradingWaiting, (STAFF,)),
    "grading.resolved": (GradingResolved, (STAFF,)),
    "poll.tally": (PollTally, (STAFF,)),
    "quiz.answered": (QuizAnswered, (STAFF,)),
    "presence": (Presence, (STAFF,)),
    "dashboard.update": (Dashboard, (STAFF,)),
    "online": (Online, (STAFF,)),
    "qa.updated": (QaUpdated, (LIVE,)),
    "qa.ranked": (QaRanked, (LIVE,)),
    "qa.cleared": (QaCleared, (LIVE,)),
    "poll.opened": (PollOpened, (LIVE,)),
    "poll.votes": (PollVotes, (LIVE,)),
    "poll.closed": (PollClosed, (LIVE,)),
    "poll.revealed": (PollRevealed, (LIVE,)),
    "chat.message": (ChatMessage, (LIVE,)),
    "chat.deleted": (ChatDeleted, (LIVE,)),
    "reactions": (Reactions, (LIVE,)),
    "broadcast": (Broadcast, (LIVE,)),
    "broadcast.cleared": (BroadcastCleared, (LIVE,)),
    "recording.status": (RecordingStatus, (LIVE,)),
    "screenshare.signal": (ScreenshareSignal, (LIVE,)),
    "quiz.question": (QuizQuestion, (LIVE,)),
    "quiz.results": (QuizResults, (LIVE,)),
    "quiz.leaderboard": (QuizLeaderboard, (LIVE,)),
    "quiz.ended": (QuizEnded, (LIVE,)),
    "presence.count": (PresenceCount, (LIVE,)),
}

#: The event type of each Struct (each Struct is the data of exactly one event type).
TYPE_OF: dict[type[msgspec.Struct], str] = {cls: name for name, (cls, _) in EVENTS.items()}


def to(topic: str, event: msgspec.Struct) -> Addressed:
    """``event`` addressed to ``topic``, with its type from the registry (``KeyError`` for a
    Struct that is not an event: add it to :data:`EVENTS` and to docs/api.md)."""
    return Addressed(topic, TYPE_OF[type(event)], event)

"""Live-room commands as msgspec Structs: what each command's ``data`` holds, and who may send it.

Each command is a Struct tagged with its name (the frame's ``name``; the tag is never read from
``data``), and :data:`LiveCommand` is their tagged union. :func:`decode` checks the sender's
``audience`` first (so a student gets ``forbidden`` for a staff command whatever its data),
then decodes ``data`` with one typed conversion: types and bounds are msgspec constraints, text
is normalised (stripped, plain text) in ``__post_init__``. Any failure is ``invalid`` with a
message naming the field. :func:`workers.live.dispatch` then ``match``-es on the Struct.

No I/O here: what needs the database (a poll's option count, whether an id exists in the
room) is checked by the handler.

Adding a command: a Struct here, tagged with its name, with its ``audience``; add it to
:data:`LiveCommand`; add its ``case`` to :func:`workers.live.dispatch`; document it in
``docs/api.md``. New fields of an existing command get defaults (old clients keep working).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from config.streams import Command
from workers import grading, poll_rules
from workers import live_quiz_rules as quiz_rules
from workers import live_rules as rules
from workers.command_consumer import CommandError
from workers.tallies import canonical_reaction

#: A row id: a positive bigint (JSON booleans, strings and floats are refused).
EntityId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]

ANYONE = "anyone"
STAFF = "staff"
STUDENTS = "students"


class _Live(msgspec.Struct, kw_only=True, tag_field="cmd", forbid_unknown_fields=False):
    #: Who may send it: :data:`ANYONE` in the room, :data:`STAFF` only, :data:`STUDENTS` only.
    audience: ClassVar[str] = ANYONE


def _text(value: str, name: str, max_len: int) -> str:
    cleaned = rules.clean_text(value, name, max_len)
    assert cleaned is not None
    return cleaned


# -- Q&A --------------------------------------------------------------------------------------


class QaAsk(_Live, tag="qa.ask"):
    """``anonymous: true`` hides the asker from the room (absent or null: false; anything but
    a JSON boolean is refused, since ``"false"`` or ``0`` could read as intent either way)."""

    body: str
    anonymous: bool | None = None

    def __post_init__(self) -> None:
        self.body = _text(self.body, "body", rules.QUESTION_MAX)
        self.anonymous = bool(self.anonymous)


class QaSimilar(_Live, tag="qa.similar"):
    """Read-only: the questions on the board that look like ``body``."""

    body: str

    def __post_init__(self) -> None:
        self.body = _text(self.body, "body", rules.QUESTION_MAX)


class QaUpvote(_Live, tag="qa.upvote"):
    question_id: EntityId


class QaUnvote(_Live, tag="qa.unvote"):
    question_id: EntityId


class QaAnswer(_Live, tag="qa.answer"):
    """``answer`` is optional (answered out loud); blank means none."""

    audience = STAFF
    question_id: EntityId
    answer: str | None = None

    def __post_init__(self) -> None:
        self.answer = rules.clean_text(self.answer, "answer", rules.ANSWER_MAX, required=False)


class QaPin(_Live, tag="qa.pin"):
    audience = STAFF
    question_id: EntityId


class QaUnpin(_Live, tag="qa.unpin"):
    audience = STAFF
    question_id: EntityId


class QaDismiss(_Live, tag="qa.dismiss"):
    audience = STAFF
    question_id: EntityId


class QaClearAnswered(_Live, tag="qa.clear_answered"):
    audience = STAFF


# -- polls ------------------------------------------------------------------------------------


_OPTION_COUNT = msgspec.Meta(min_length=rules.POLL_OPTIONS_MIN, max_length=rules.POLL_OPTIONS_MAX)


class PollOpen(_Live, tag="poll.open"):
    """The settings (``kind``, ``anonymous``, ``results``, ``duration_s``) are explained in
    :mod:`workers.poll_rules`; left out (or null), a poll behaves as polls always did."""

    audience = STAFF
    question: str
    options: Annotated[list[str], _OPTION_COUNT]
    kind: poll_rules.Kind = "single"
    anonymous: bool | None = None
    results: poll_rules.Results = "on_reveal"
    duration_s: (
        Annotated[int, msgspec.Meta(ge=poll_rules.DURATION_MIN_S, le=poll_rules.DURATION_MAX_S)]
        | None
    ) = None

    def __post_init__(self) -> None:
        self.question = _text(self.question, "question", rules.POLL_QUESTION_MAX)
        self.options = [
            _text(label, f"options[{i}]", rules.POLL_OPTION_MAX)
            for i, label in enumerate(self.options)
        ]
        self.anonymous = self.anonymous is not False


class PollVote(_Live, tag="poll.vote"):
    """``option`` (an index), or ``options`` (indices, multiple-choice polls only); their upper
    bound, repeats and the poll's kind are the handler's (:func:`poll_rules.choices`)."""

    audience = STUDENTS
    poll_id: EntityId
    option: Annotated[int, msgspec.Meta(ge=0)] | None = None
    options: (
        Annotated[
            list[Annotated[int, msgspec.Meta(ge=0)]],
            msgspec.Meta(min_length=1, max_length=rules.POLL_OPTIONS_MAX),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if (self.option is None) == (self.options is None):
            raise rules.Invalid("send option (an index) or options (a list), not both")


class PollClose(_Live, tag="poll.close"):
    audience = STAFF
    poll_id: EntityId


class PollReveal(_Live, tag="poll.reveal"):
    audience = STAFF
    poll_id: EntityId


# -- chat and reactions -----------------------------------------------------------------------


class ChatSend(_Live, tag="chat.send"):
    body: str

    def __post_init__(self) -> None:
        self.body = _text(self.body, "body", rules.CHAT_MAX)


class ChatDelete(_Live, tag="chat.delete"):
    """By its author or staff (checked against the row by the handler)."""

    message_id: EntityId


class React(_Live, tag="react"):
    """``emoji`` becomes its allow-listed spelling."""

    emoji: Annotated[str, msgspec.Meta(max_length=16)]

    def __post_init__(self) -> None:
        reaction = canonical_reaction(self.emoji)
        if reaction is None:
            raise rules.Invalid("emoji must be one of the allowed reactions")
        self.emoji = reaction


# -- instructor controls ----------------------------------------------------------------------


class Broadcast(_Live, tag="broadcast"):
    audience = STAFF
    text: str

    def __post_init__(self) -> None:
        self.text = _text(self.text, "text", rules.BROADCAST_MAX)


class BroadcastClear(_Live, tag="broadcast.clear"):
    audience = STAFF


class RecordingSet(_Live, tag="recording.set"):
    """``url`` (where to watch) only with ``stopped``; see :func:`rules.check_recording_url`."""

    audience = STAFF
    state: Literal["started", "stopped"]
    url: str | None = None

    def __post_init__(self) -> None:
        rules.check_recording_url(self.url, self.state)


class ScreenshareSignal(_Live, tag="screenshare.signal"):
    audience = STAFF
    kind: Annotated[str, msgspec.Meta(pattern=rules.SIGNAL_KIND)]
    payload: Any

    def __post_init__(self) -> None:
        rules.check_signal_payload(self.payload)


# -- live quiz ---------------------------------------------------------------------------------

_LIMIT_S = Annotated[int, msgspec.Meta(ge=quiz_rules.LIMIT_MIN_S, le=quiz_rules.LIMIT_MAX_S)]


class QuizStart(_Live, tag="quiz.start"):
    """Run quiz ``quiz_id`` of the room's cohort. Time limits: ``time_limits_s`` (one per
    question; its length is the handler's check), else ``time_limit_s`` for every question.
    ``reveal`` (default true) puts the right options in ``quiz.results``; false keeps the
    answer key hidden (a quiz students will also submit for a grade)."""

    audience = STAFF
    quiz_id: EntityId
    time_limit_s: _LIMIT_S | None = None
    time_limits_s: (
        Annotated[list[_LIMIT_S], msgspec.Meta(min_length=1, max_length=grading.MAX_QUESTIONS)]
        | None
    ) = None
    reveal: bool | None = None

    def __post_init__(self) -> None:
        self.reveal = self.reveal is not False


class QuizNext(_Live, tag="quiz.next"):
    """Close the current question (its results go out now if its deadline had not passed)
    and show the next one."""

    audience = STAFF
    live_quiz_id: EntityId


class QuizEnd(_Live, tag="quiz.end"):
    audience = STAFF
    live_quiz_id: EntityId


#: An answer as JSON allows it: an option index, a list of them, a number, or a short text
#: (whether it fits the question is the handler's check, with :func:`workers.grading.grade`).
QuizAnswerValue = (
    int
    | float
    | Annotated[str, msgspec.Meta(max_length=grading.MAX_TEXT_ANSWER)]
    | Annotated[list[int], msgspec.Meta(max_length=grading.MAX_OPTIONS)]
)


class QuizAnswer(_Live, tag="quiz.answer"):
    """One answer per student and question; ``question`` is the index the student saw, so an
    answer meant for a question that has since closed is refused, never filed under the next."""

    audience = STUDENTS
    live_quiz_id: EntityId
    question: Annotated[int, msgspec.Meta(ge=0, lt=grading.MAX_QUESTIONS)]
    answer: QuizAnswerValue


LiveCommand = (
    QaAsk
    | QaSimilar
    | QaUpvote
    | QaUnvote
    | QaAnswer
    | QaPin
    | QaUnpin
    | QaDismiss
    | QaClearAnswered
    | PollOpen
    | PollVote
    | PollClose
    | PollReveal
    | ChatSend
    | ChatDelete
    | React
    | Broadcast
    | BroadcastClear
    | RecordingSet
    | ScreenshareSignal
    | QuizStart
    | QuizNext
    | QuizEnd
    | QuizAnswer
)

#: Command name -> its Struct.
BY_NAME: dict[str, type[_Live]] = {str(t.__struct_config__.tag): t for t in LiveCommand.__args__}


def decode(cmd: Command) -> LiveCommand:
    """The typed arguments of a live-room command, after checking who sent it.

    Raises :class:`CommandError`: ``forbidden`` for the wrong audience, ``invalid`` for data
    that does not fit the command's Struct.
    """
    kind = BY_NAME[cmd.name]
    if kind.audience == STAFF and not cmd.staff:
        raise CommandError("forbidden", f"{cmd.name} is for the instructors of this cohort")
    if kind.audience == STUDENTS and cmd.staff:
        raise CommandError("forbidden", f"{cmd.name} is for the students of this cohort")
    try:
        return msgspec.convert({**cmd.data, "cmd": cmd.name}, LiveCommand)
    except msgspec.ValidationError as exc:
        raise CommandError("invalid", str(exc)) from None

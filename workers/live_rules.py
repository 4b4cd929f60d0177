"""Live-room rules with no I/O: limits, input validation, event payloads, board diffs, credit.

Everything the live-room handlers (:mod:`workers.live`), the throttled flusher
(:mod:`workers.live_state`), the attendance service (:mod:`workers.attendance`) and the API's
late-joiner snapshot (:mod:`api.routes_room_state`) must agree on lives here, so it is tested
without Redis or PostgreSQL.

Wire conventions of every live event: entity ids (questions, polls, messages, sessions) are
integers; user ids are strings, as in the JWT ``sub`` claim and the presence stream; times are
ISO 8601 strings in UTC.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from config.topics import live_topic
from workers.ranking import QaItem
from workers.tallies import PollTally, largest_remainder

# -- limits -----------------------------------------------------------------------------------

QUESTION_MAX = 1000
ANSWER_MAX = 2000
CHAT_MAX = 500
POLL_QUESTION_MAX = 500
POLL_OPTION_MAX = 200
POLL_OPTIONS_MIN = 2
POLL_OPTIONS_MAX = 20
BROADCAST_MAX = 1000
SIGNAL_PAYLOAD_MAX = 16 * 1024
SIGNAL_KIND = r"^[a-z][a-z0-9_.-]{0,31}$"
RECORDING_STATES = ("started", "stopped")
RECORDING_URL_MAX = 2048

#: Chat: at most CHAT_RATE messages per user and room in each CHAT_WINDOW_S window.
CHAT_RATE = 10
CHAT_WINDOW_S = 10
#: Reactions: at most REACT_RATE per user and room in each one-second window.
REACT_RATE = 10

#: Newest questions of a room compared by ``qa.similar``.
SIMILAR_SCAN = 500

#: Chat messages in the late-joiner snapshot.
SNAPSHOT_CHAT = 50


@dataclass(frozen=True, slots=True)
class LiveTimings:
    """Timers of the live rooms (milliseconds). Tests shorten them; production uses defaults.

    * ``tally_interval_ms``: at most one poll tally per poll per interval (leading + trailing).
    * ``reaction_window_ms``: reactions are summed over aligned windows of this length.
    * ``presence_grace_ms``: a leave followed by a join within this is one continuous stay.
    * ``presence_coalesce_ms``: presence changes are published at most this often per room.
    * ``checkpoint_ms``: open stays are credited to ``attendance`` at least this often.
    """

    tally_interval_ms: int = 250
    reaction_window_ms: int = 500
    presence_grace_ms: int = 10_000
    presence_coalesce_ms: int = 500
    checkpoint_ms: int = 15_000


DEFAULT_TIMINGS = LiveTimings()


class Invalid(ValueError):
    """A command argument that fails validation; the message is safe to show the client."""


# -- validation -------------------------------------------------------------------------------
# The commands' argument Structs (workers/live_commands.py) and the API use these checks.

_ALLOWED_CONTROLS = frozenset("\n\t")


def clean_text(value: Any, name: str, max_len: int, *, required: bool = True) -> str | None:
    """``value`` as plain text: a string, stripped, 1..``max_len`` characters, with no control
    characters other than newline and tab (NUL can never reach PostgreSQL).

    Returns None when the value is None or blank and ``required`` is False. ``name`` is for
    the messages.
    """
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    value = value.strip()
    if not value:
        if not required:
            return None
        raise Invalid(f"{name} must not be empty")
    if len(value) > max_len:
        raise Invalid(f"{name} must be at most {max_len} characters")
    for ch in value:
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs"):
            raise Invalid(f"{name} must be plain text")
    return value


_encoder = msgspec.json.Encoder()


def check_signal_payload(payload: Any) -> None:
    """A screen-share signal's ``payload``: any JSON value up to 16 KiB encoded."""
    if len(_encoder.encode(payload)) > SIGNAL_PAYLOAD_MAX:
        raise Invalid(f"payload must be at most {SIGNAL_PAYLOAD_MAX} bytes of JSON")


def check_recording_url(url: str | None, state: str) -> None:
    """The optional ``url`` of a stopped recording: an absolute ``https`` URL with a host, no
    credentials, no whitespace or control characters, at most ``RECORDING_URL_MAX`` characters.

    Every client renders it as a link, so anything else (``javascript:``, ``http:``, relative
    paths) is refused rather than left to each page to check. A url while starting is refused:
    there is nothing to watch yet.
    """
    if url is None:
        return
    if state != "stopped":
        raise Invalid("url only comes with state 'stopped'")
    if not url or len(url) > RECORDING_URL_MAX:
        raise Invalid(f"url must be a string of 1-{RECORDING_URL_MAX} characters")
    if any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in url):
        raise Invalid("url must not contain whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise Invalid("url is not a valid URL") from None
    if parts.scheme.lower() != "https" or not host:
        raise Invalid("url must be an absolute https URL")
    if "@" in parts.netloc:
        raise Invalid("url must not carry credentials")


# -- row ids ----------------------------------------------------------------------------------


def db_id(part: str) -> int | None:
    """A topic part as a bigint row id, or None when it cannot name a row."""
    if not part.isascii() or not part.isdigit() or len(part) > 19:
        return None
    value = int(part)
    return value if 0 < value < 2**63 else None


# -- views: rows to event payloads ------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC)) or ""


def _user(value: Any) -> str | None:
    return None if value is None else str(value)


def question_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A question as the whole room sees it. ``name`` is the asker's display name; an
    anonymous question carries neither ``user`` nor ``name`` (see docs/api.md, "Who sees whom
    in a live room"). ``answered_by_name`` names the instructor who answered."""
    anonymous = bool(row.get("anonymous", False))
    return {
        "id": row["id"],
        "session_id": row["session_id"],
        "user": None if anonymous else _user(row["user_id"]),
        "name": None if anonymous else row.get("name"),
        "anonymous": anonymous,
        "body": row["body"],
        "created_at": iso(row["created_at"]),
        "votes": row["votes"],
        "pinned": row["pinned"],
        "dismissed": row["dismissed"],
        "answered": row["answered_at"] is not None,
        "answer": row["answer"],
        "answered_by": _user(row["answered_by"]),
        "answered_by_name": row.get("answered_by_name"),
        "answered_at": iso(row["answered_at"]),
    }


def qa_item(row: Mapping[str, Any]) -> QaItem:
    return QaItem(
        id=row["id"],
        votes=row["votes"],
        created_at=row["created_at"],
        pinned=row["pinned"],
        answered=row["answered_at"] is not None,
        dismissed=row["dismissed"],
    )


def json_dumps(value: Any) -> str:
    """JSON text for a ``$n::text::jsonb`` parameter."""
    return _encoder.encode(value).decode()


def json_list(value: Any) -> list[Any]:
    """A jsonb column as a list, whether the pool decodes jsonb or hands back its text."""
    if isinstance(value, str):
        value = json.loads(value)
    return list(value)


def poll_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A poll as everyone sees it: its settings (:mod:`workers.poll_rules`), never counts."""
    return {
        "id": row["id"],
        "session_id": row["session_id"],
        "question": row["question"],
        "options": json_list(row["options"]),
        "state": row["state"],
        "kind": row.get("kind", "single"),
        "anonymous": row.get("anonymous", True),
        "results": row.get("results", "on_reveal"),
        "opened_at": iso(row["opened_at"]),
        "closes_at": iso(row.get("closes_at")),
        "closed_at": iso(row["closed_at"]),
        "closed_by": row.get("closed_by"),
    }


def poll_tally(counts_by_option: Mapping[int, int], option_count: int) -> PollTally:
    """The tally from per-option vote counts (``SELECT option, count(*) ... GROUP BY``)."""
    counts = [0] * option_count
    ignored = 0
    for option, n in counts_by_option.items():
        if 0 <= option < option_count:
            counts[option] += n
        else:
            ignored += n
    return PollTally(
        counts=tuple(counts),
        total=sum(counts),
        percentages=tuple(largest_remainder(counts)),
        ignored=ignored,
    )


def tally_view(t: PollTally) -> dict[str, Any]:
    return {"counts": list(t.counts), "total": t.total, "percentages": list(t.percentages)}


def message_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "session_id": row["session_id"],
        "user": _user(row["user_id"]),
        "name": row.get("name"),
        "body": row["body"],
        "created_at": iso(row["created_at"]),
    }


def session_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "cohort_id": row["cohort_id"],
        "title": row["title"],
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "state": row["state"],
        "topic": live_topic(row["cohort_id"], row["id"]),
    }


# -- session state machine --------------------------------------------------------------------

TRANSITIONS: dict[str, tuple[str, str]] = {
    # action: (required state, new state)
    "start": ("scheduled", "live"),
    "end": ("live", "ended"),
}


def transition(state: str, action: str) -> str | None:
    """The state after ``action`` from ``state``, or None when the transition is illegal."""
    required, new = TRANSITIONS[action]
    return new if state == required else None


# -- attendance credit ------------------------------------------------------------------------


def credit(since_ms: int, until_ms: int) -> tuple[int, int]:
    """Whole seconds to credit for a stay from ``since_ms`` to ``until_ms``, and the new
    ``since`` (the remainder under a second carries over to the next credit, so repeated
    checkpoints never lose or invent time). A clock that went backwards credits nothing."""
    if until_ms <= since_ms:
        return 0, since_ms
    seconds = (until_ms - since_ms) // 1000
    return seconds, since_ms + seconds * 1000

"""Topic names: the one place that builds, parses and authorizes them.

A topic is ``kind:part[:part]`` (DESIGN.md section 2):

- ``user:{user}``: one user's own events;
- ``cohort:{cohort}``: everything a cohort's members see;
- ``staff:{cohort}``: what only the cohort's staff see;
- ``live:{cohort}:{session}``: one live session of a cohort.

Parts are 1+ characters of ``[A-Za-z0-9_.-]`` and a topic is at most :data:`MAX_TOPIC_LEN`
characters, so a topic is safe inside a Redis key, a cursor (``,``-joined) and a log line.
Every process (api, workers, gateway, load clients) builds topics with the functions here and
nothing else formats them.

Authorization (:func:`authorize`) is a pure function of the token's claims: it returns
``None`` or a :class:`Denial` whose ``code`` is the wire error code.
"""

from __future__ import annotations

import enum
from collections.abc import Set
from typing import Protocol

import msgspec

KINDS = ("user", "cohort", "staff", "live")
#: Every ``live:`` topic starts with this (the gateway's presence records test it per subscribe).
LIVE_PREFIX = "live:"
MAX_TOPIC_LEN = 200
_PART_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class Topic(msgspec.Struct, frozen=True, gc=False):
    """A parsed topic. ``owner`` is the user for ``user:``, else the cohort."""

    kind: str
    owner: str
    session: str = ""

    @property
    def cohort(self) -> str:
        """The cohort a topic belongs to; empty for ``user:`` topics."""
        return "" if self.kind == "user" else self.owner


# -- builders ---------------------------------------------------------------------------------


def user_topic(user: int | str) -> str:
    return f"user:{user}"


def cohort_topic(cohort: int | str) -> str:
    return f"cohort:{cohort}"


def staff_topic(cohort: int | str) -> str:
    return f"staff:{cohort}"


def live_topic(cohort: int | str, session: int | str) -> str:
    return f"live:{cohort}:{session}"


# -- parsing ----------------------------------------------------------------------------------


def parse(topic: str) -> Topic | None:
    """The parts of a well-formed topic, or ``None``."""
    if not topic or len(topic) > MAX_TOPIC_LEN:
        return None
    parts = topic.split(":")
    kind = parts[0]
    expected = 3 if kind == "live" else 2
    if kind not in KINDS or len(parts) != expected:
        return None
    for part in parts[1:]:
        if not part or not _PART_CHARS.issuperset(part):
            return None
    return Topic(kind, parts[1], parts[2] if expected == 3 else "")


def parse_live(topic: str) -> Topic | None:
    """A well-formed ``live:{cohort}:{session}`` topic, else ``None``."""
    parsed = parse(topic)
    return parsed if parsed is not None and parsed.kind == "live" else None


# -- authorization ----------------------------------------------------------------------------


class Principal(Protocol):
    """What authorization reads from a token's claims (gateway.auth.Claims)."""

    @property
    def sub(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def cohorts(self) -> Set[str]: ...
    @property
    def staff(self) -> Set[str]: ...


class Denial(enum.Enum):
    """Why a subscription or command on a topic is refused: ``code`` goes on the wire."""

    MALFORMED = ("bad_topic", "malformed topic")
    NOT_YOUR_USER = ("forbidden", "not your user topic")
    STAFF_ONLY = ("forbidden", "staff only")
    NOT_A_MEMBER = ("forbidden", "not a member of this cohort")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


def authorize(claims: Principal, topic: str) -> Denial | None:
    """``None`` when ``claims`` may subscribe to (or act on) ``topic``, else the denial.

    Admins may use every well-formed topic; ``user:`` topics belong to their user;
    ``staff:`` topics to the cohort's staff; ``cohort:`` and ``live:`` topics to its members
    and staff.
    """
    parsed = parse(topic)
    if parsed is None:
        return Denial.MALFORMED
    if claims.role == "admin":
        return None
    if parsed.kind == "user":
        return None if parsed.owner == claims.sub else Denial.NOT_YOUR_USER
    cohort = parsed.owner
    if parsed.kind == "staff":
        return None if cohort in claims.staff else Denial.STAFF_ONLY
    if cohort in claims.cohorts or cohort in claims.staff:
        return None
    return Denial.NOT_A_MEMBER

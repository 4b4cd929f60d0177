"""The cohort activity feed: "A. L. completed lesson Streams", "passed quiz Warm-up", "joined".

Entries are recorded by :func:`record`, inside the transaction of the change that causes them
(a first lesson completion in :mod:`workers.progress`, a first passing grade in
:mod:`workers.grade` or by hand in :mod:`api.routes_feedback`, a new member enrollment in
:mod:`api.routes_cohorts` and :mod:`api.routes_auth`), and published as ``activity`` on
``cohort:{id}`` through the outbox. Bulk CSV imports post nothing: a term's roster arriving at
once is not news, and it would flood the feed.

Privacy is the cohort's ``activity_privacy`` switch (staff set it):

* ``off``: nothing is recorded and the feed is empty;
* ``initials`` (the default): the actor shows as initials ("Ada Lovelace" -> "A. L.");
* ``names``: the actor shows as their display name.

Rows store the user id, never the rendered name, and every read renders with the cohort's
current setting (:func:`actor`), so switching from names to initials (or off) applies to the
history too. Staff see the same feed as students. Recording is idempotent: one entry per
person, kind and lesson/quiz.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

import asyncpg

from config.topics import cohort_topic
from workers import events
from workers.events import ActivityKind, ActivityOut
from workers.outbox_write import emit

Privacy = Literal["off", "initials", "names"]
Kind = ActivityKind
PRIVACY: tuple[Privacy, ...] = ("off", "initials", "names")
#: A quiz counts as passed from this percentage of its points.
PASS_PERCENTAGE = 60.0


def initials(name: str) -> str:
    """ "Ada King Lovelace" -> "A. K. L."; at most three words; "?" when nothing is left."""
    words = [w for w in unicodedata.normalize("NFKC", name).split() if w[0].isalnum()]
    letters = [w[0].upper() + "." for w in words[:3]]
    return " ".join(letters) or "?"


def actor(name: str, privacy: str) -> str:
    """How the person shows in the feed under ``privacy`` (never called for ``off``)."""
    return name if privacy == "names" else initials(name)


def entry(row: Any, privacy: str) -> ActivityOut:
    """An entry from a ``cohort_activity`` row joined with the actor's ``display_name``."""
    subject = row["subject_id"]
    return ActivityOut(
        id=row["id"],
        cohort_id=row["cohort_id"],
        kind=row["kind"],
        actor=actor(str(row["display_name"]), privacy),
        subject_id=subject if subject else None,
        subject_title=(row["subject_title"] or None) if subject else None,
        created_at=row["created_at"],
    )


async def record(
    conn: asyncpg.Connection,
    cohort_id: int,
    user_id: int,
    kind: Kind,
    subject_id: int = 0,
    subject_title: str = "",
) -> ActivityOut | None:
    """Record and announce one entry, unless the cohort's feed is off or it exists already.
    Must run inside the transaction of the change it reports."""
    privacy = await conn.fetchval("SELECT activity_privacy FROM cohorts WHERE id = $1", cohort_id)
    if privacy is None or privacy == "off":
        return None
    row = await conn.fetchrow(
        "INSERT INTO cohort_activity (cohort_id, user_id, kind, subject_id, subject_title)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
        " RETURNING id, cohort_id, kind, subject_id, subject_title, created_at,"
        " (SELECT display_name FROM users WHERE id = $2) AS display_name",
        cohort_id,
        user_id,
        kind,
        subject_id,
        subject_title,
    )
    if row is None:
        return None
    out = entry(row, privacy)
    await emit(conn, events.to(cohort_topic(cohort_id), out))
    return out

"""Redeeming an invite (``POST /api/v1/auth/register``): whether it is valid for an email, and
the account and enrollment it yields. Runs in the caller's connection and transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from api import errors
from config.topics import user_topic
from workers import activity, events
from workers.outbox_write import emit


async def valid_invite(conn: Any, token_hash: bytes, email: str, lock: bool) -> Any:
    """The invite row when it may register ``email`` now; 403 otherwise."""
    invite = await conn.fetchrow(
        "SELECT id, email, role, cohort_id, kind, expires_at, used_at FROM invites"
        " WHERE token_hash = $1" + (" FOR UPDATE" if lock else ""),  # nosec B608  # constant SQL text
        token_hash,
    )
    if invite is None or invite["used_at"] is not None:
        raise errors.forbidden("the invitation is not valid", "invalid_invite")
    if invite["expires_at"] <= datetime.now(UTC):
        raise errors.forbidden("the invitation has expired", "invite_expired")
    if invite["email"] is not None and invite["email"] != email:
        raise errors.forbidden("the invitation is for another email", "invalid_invite")
    return invite


def refuse_taken(existing: Any, invite: Any) -> None:
    """409 unless the email is free or names a passwordless account this invite may claim.

    Only an invite addressed to this email may claim an existing (passwordless) account: an
    open invite would hand anyone that account's tokens. The answer is the same as for an
    account with a password, so it reveals nothing more."""
    if existing is not None and (existing["password_hash"] is not None or invite["email"] is None):
        raise errors.conflict("a user with this email exists", {"field": "email"}, "email_taken")


async def upsert_user(
    conn: asyncpg.Connection,
    existing: asyncpg.Record | None,
    invite: asyncpg.Record,
    email: str,
    display_name: str,
    password_hash: str,
) -> int:
    """Set the password of the passwordless account ``existing``, or create the account."""
    if existing is not None:
        uid = existing["id"]
        await conn.execute(
            "UPDATE users SET password_hash = $1, display_name = $2 WHERE id = $3",
            password_hash,
            display_name.strip(),
            uid,
        )
    else:
        uid = await conn.fetchval(
            "INSERT INTO users (email, display_name, role, password_hash)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            email,
            display_name.strip(),
            invite["role"],
            password_hash,
        )
    return int(uid)


async def enroll_invited(conn: asyncpg.Connection, invite: asyncpg.Record, uid: int) -> None:
    """Enroll ``uid`` in the invite's cohort, if it names one (announced when new)."""
    if invite["cohort_id"] is not None:
        added = await conn.fetchval(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            invite["cohort_id"],
            uid,
            invite["kind"],
        )
        if added is not None:
            changed = events.EnrollmentChanged(
                cohort_id=invite["cohort_id"], kind=invite["kind"], enrolled=True
            )
            await emit(conn, events.to(user_topic(uid), changed))
            if invite["kind"] == "member":
                await activity.record(conn, invite["cohort_id"], uid, "member.joined")

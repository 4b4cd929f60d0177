"""Every Redis key and stream name Lectern uses, in one place.

Redis Cluster (``LECTERN_REDIS_CLUSTER``, docs/cluster.md) refuses a script, a ``MULTI`` block
or a multi-key command whose keys hash to different slots. Keys used together therefore share
a hash tag (the part in braces), which fixes their slot:

* ``{bN}``: bus shard N, the history streams and trim floors of its topics (the publish
  script), and what each gateway reads in the same ``XREAD`` as that shard: its reply stream
  (on the shard its id hashes to) and, on shard 0, the revocation and rights streams and the
  revoked-session and lost-rights keys (one node answers the gateway's start-up scan).
* ``{jobs}``: every job queue, its delayed set and dead letters (the retry mover, the
  dead-letter move, and one ``XREADGROUP`` over all queues a runner serves).
* ``{c:<kind>:<ident>}``: one cached resource's version and entries.
* ``{login}``: the failed-login counters and trusted addresses (api.login_limits).
* ``{cmd}``, ``{presence}``: the command and presence streams; ``{presence}`` also tags the
  gateways' presence leases and the leases being reaped (moved between them by one script).
* ``{pl:<lease>}``: one gateway lease's open live-room subscriptions (used alone).
* ``{o:<cohort>}``: a cohort's online leases and their version (gateway/online.py).

Every other key is used alone by single-key commands, so any slot serves it.
"""

from __future__ import annotations

import zlib

#: Prefix of everything Lectern writes, so a shared Redis can be inspected or flushed safely.
ROOT = "rt"

# -- events (DESIGN.md section 3) -------------------------------------------------------------


def shard_of(topic: str, shards: int) -> int:
    """The bus shard a topic is announced on: stable across processes and restarts."""
    return zlib.crc32(topic.encode()) % shards


def shard_tag(shard: int) -> str:
    return f"{{b{shard}}}"


def bus_key(shard: int) -> str:
    """Bus shard stream: compact records (topic, id, encoded body) read by every gateway."""
    return f"{ROOT}:{shard_tag(shard)}:bus"


def history_key(topic: str, shards: int) -> str:
    """History stream of one topic; its entry IDs are the event IDs clients resume from."""
    return f"{ROOT}:{shard_tag(shard_of(topic, shards))}:h:{topic}"


def floor_key(topic: str, shards: int) -> str:
    """ID of the newest event trimmed from a topic's history: older cursors must reset."""
    return f"{ROOT}:{shard_tag(shard_of(topic, shards))}:f:{topic}"


def published_once_key(topic: str, shards: int, token: str) -> str:
    """The event ID a publish with idempotency token ``token`` got (e.g. ``outbox:42``): a
    second publish with the token returns it instead of appending again."""
    return f"{ROOT}:{shard_tag(shard_of(topic, shards))}:once:{token}"


# -- commands (DESIGN.md section 4) -----------------------------------------------------------

#: Client commands appended by the gateways, consumed by the workers' group.
CMD_STREAM = f"{ROOT}:{{cmd}}"


def reply_key(gateway_id: str, shards: int) -> str:
    """Replies to commands, one stream per gateway process, read in the same ``XREAD`` as the
    bus shard its id hashes to (hence that shard's tag)."""
    return f"{ROOT}:{shard_tag(shard_of(gateway_id, shards))}:reply:{gateway_id}"


# -- sessions and revocation ------------------------------------------------------------------

#: Revocations announced to every gateway (field ``sid``), read with bus shard 0, whose tag it
#: carries. The revoked-session keys carry it too, so one node holds them all.
REVOKE_STREAM = f"{ROOT}:{shard_tag(0)}:revoke"

#: Removals of a user's rights in a cohort announced to every gateway (fields ``user``,
#: ``cohort``, ``at``: see gateway/rights.py), read with bus shard 0 like revocations.
RIGHTS_STREAM = f"{ROOT}:{shard_tag(0)}:rights"


REVOKED_PREFIX = f"{ROOT}:{shard_tag(0)}:revoked:"


def revoked_key(sid: str) -> str:
    """Present while a login session is revoked (expires with the longest access token)."""
    return f"{REVOKED_PREFIX}{sid}"


LOST_RIGHTS_PREFIX = f"{ROOT}:{shard_tag(0)}:lost:"


def lost_rights_key(user: str) -> str:
    """Hash ``{cohort: when (ms)}``: the user's memberships and staff grants removed while
    access tokens claiming them may still be alive (gateway/rights.py)."""
    return f"{LOST_RIGHTS_PREFIX}{user}"


def live_session_key(cohort: str, session: str) -> str:
    """A live session's state while its ``live:`` topic may be subscribed (gateway/sessions.py)."""
    return f"{ROOT}:session:{cohort}:{session}"


def connect_ticket_key(ticket: str) -> str:
    """One-time connect ticket (gateway.ticket): the claims it stands for, for a few seconds."""
    return f"{ROOT}:ticket:{ticket}"


# -- jobs (DESIGN.md section 5) ---------------------------------------------------------------


# Every queue's stream, dead letters and delayed set share the tag ``{jobs}``: the retry mover
# and the dead-letter move touch one queue's keys together in one script or transaction, and a
# runner reads all of its queues in one XREADGROUP. Jobs are few next to events, so one slot
# carries them.
JOBS_TAG = "{jobs}"


def job_stream(queue: str) -> str:
    return f"{ROOT}:{JOBS_TAG}:{queue}:jobs"


def dead_letter_stream(queue: str) -> str:
    return f"{ROOT}:{JOBS_TAG}:{queue}:dead"


def job_delayed_key(queue: str) -> str:
    """Sorted set of jobs waiting for a retry, scored by the time they are due (ms)."""
    return f"{ROOT}:{JOBS_TAG}:{queue}:delayed"


def tick_lock_key(job: str, tick: int) -> str:
    """Held by the one worker process that runs a scheduled job for a tick."""
    return f"{ROOT}:tick:{job}:{tick}"


WORKER_GROUP = "workers"
CMD_GROUP = "cmd-workers"

# -- API caches and limits --------------------------------------------------------------------


def cache_key(kind: str, ident: str, version: int | str) -> str:
    """A cached resource at one version; same slot as its version key."""
    return f"{ROOT}:{{c:{kind}:{ident}}}:v{version}"


def cache_version_key(kind: str, ident: str) -> str:
    """The current version of a cached resource (``current``, so ``v*`` matches entries only)."""
    return f"{ROOT}:{{c:{kind}:{ident}}}:current"


def leaderboard_key(cohort: str) -> str:
    return f"{ROOT}:lb:{cohort}"


def ratelimit_key(scope: str, ident: str) -> str:
    return f"{ROOT}:rl:{scope}:{ident}"


# Login limits (api.login_limits) count one failure in three windows and clear one window while
# trusting the address in ``MULTI`` blocks, so they share the tag ``{login}``.


def login_limit_key(scope: str, ident: str) -> str:
    """Failed-login counter of one window (``scope``: ip, account-ip, account)."""
    return f"{ROOT}:{{login}}:fail:{scope}:{ident}"


def login_trusted_key(email: str, ip: str) -> str:
    """Present while ``ip`` counts as a usual address of the account (api.login_limits)."""
    return f"{ROOT}:{{login}}:trusted:{ip}|{email}"


def debounce_key(kind: str, ident: str) -> str:
    return f"{ROOT}:debounce:{kind}:{ident}"


#: Delayed live-room work (trailing poll tallies, reaction windows), scored by due time (ms).
ROOM_DUE = f"{ROOT}:room:due"


def room_key(kind: str, cohort: str, session: str) -> str:
    """Live-room state kept in Redis (reaction windows, poll tallies being throttled)."""
    return f"{ROOT}:room:{kind}:{cohort}:{session}"


def presence_key(part: str, cohort: str, session: str) -> str:
    """A live room's attendance state (workers/attendance.py); its parts share the hash tag
    ``{p:cohort:session}`` because one script touches them together."""
    return f"{ROOT}:{{p:{cohort}:{session}}}:presence:{part}"


def online_key(cohort: str) -> str:
    """Who is online in a cohort: leases ``<user>@<gateway>`` scored by their end (ms)
    (gateway/online.py); shares the hash tag ``{o:cohort}`` with its version."""
    return f"{ROOT}:{{o:{cohort}}}:online"


def online_count_key(cohort: str) -> str:
    """User -> how many unexpired leases they hold in the cohort (one per gateway)."""
    return f"{ROOT}:{{o:{cohort}}}:online:n"


def online_version_key(cohort: str) -> str:
    """Incremented whenever the set of users online in the cohort changes."""
    return f"{ROOT}:{{o:{cohort}}}:online:v"


#: The cohorts that had someone online, swept by every gateway's lease renewal.
ONLINE_INDEX = f"{ROOT}:online:cohorts"


#: Joins and leaves of live-room topics, appended by the gateways for the attendance worker.
#: Fields: ``op`` (join|leave), ``user``, ``topic``, ``conn``, ``ts`` (ms).
PRESENCE_STREAM = f"{ROOT}:{{presence}}"
PRESENCE_GROUP = "presence-workers"


#: Gateway presence leases (sorted set): lease id -> when its gateway last refreshed it (ms).
#: A lease not refreshed for ``presence_lease_grace_s`` is moved to :data:`PRESENCE_REAPING`
#: and its subscriptions leave (workers/presence_leases.py).
PRESENCE_LEASES = f"{ROOT}:{{presence}}:leases"
#: Lapsed leases whose subscriptions are being closed: lease id -> its last refresh (ms).
PRESENCE_REAPING = f"{ROOT}:{{presence}}:reaping"


def presence_subs_key(lease: str) -> str:
    """The open live-room subscriptions of one gateway lease (hash): subscription id ->
    :class:`config.streams.LeasedSub`. Written by that gateway next to its presence records."""
    return f"{ROOT}:{{pl:{lease}}}:subs"

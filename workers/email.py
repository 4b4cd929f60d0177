"""Email for notifications: the ``email`` job queue, payload ``{"notification_id": int}``.

Guarantees:

* **One email per notification**, however often the job is delivered. The message's row in
  ``email_deliveries`` (unique ``idempotency_key`` ``notification:{id}``, unique
  ``notification_id``) is locked (``FOR UPDATE``) while the message is handed to the SMTP
  server, and marked ``sent`` in the same transaction once the server accepted it; a concurrent
  or later delivery of the job waits for that lock, sees ``sent`` and does nothing. The one
  window left, a process dying between the server's acceptance and the commit, sends the message
  again with the same ``Message-ID`` (derived from the key), which mail systems de-duplicate.
* **Retries.** A refusal of the message with a 4xx code is retried by the job framework with
  backoff; each try increments ``attempts``. After ``job_max_attempts`` tries, or at once on a
  5xx refusal, the row becomes ``failed`` with the last error and the job ends.
* **Outages lose nothing.** A server that cannot be reached (refused or dropped connection,
  timeout, ``421``) is the server's problem, not the message's: the job waits and tries again
  (``jobs.Unavailable``, backoff growing with the process's consecutive failures up to a
  minute) without using up ``attempts``, for up to ``email_give_up_after_s`` after the
  notification was queued; then the row becomes ``failed``.
* **Preferences.** Nothing is sent when the recipient turned email off for the notification's
  kind (``notification_prefs``; no row means on).
* **Quiet hours delay, never drop.** A job that runs inside the recipient's quiet hours
  (``notification_settings``, :mod:`workers.quiet_hours`) is put back on the job scheduler
  (``jobs.schedule``) for the end of the window and sends then; repeats of the job while it
  waits coalesce into that one scheduled entry (its key is ``quiet:<idempotency key>``).
* **Connections are reused**: a small pool per process (:data:`POOL_SIZE`), each connection
  opened on first use and dropped (then reopened) after any error.

``settings.smtp_url``: ``smtp://[user:password@]host[:port][?from=addr&starttls=0|1]``, or
``smtps://`` for TLS from the start.

**Credentials never travel in clear.** With a user name in the URL, ``smtp://`` *requires*
STARTTLS (``starttls=0`` is refused when the URL is parsed): a server, or a man in the middle,
that does not offer it gets no ``AUTH`` and the send fails with :class:`SmtpTlsRequired`.
Without credentials STARTTLS stays opportunistic (used when offered), as a local relay or a
development catcher needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import asyncpg
import msgspec

from workers import metrics
from workers.context import WorkerContext
from workers.jobs import PermanentError, Unavailable, job, job_payload, schedule
from workers.notify import KIND_LABELS
from workers.quiet_hours import quiet_until

log = logging.getLogger("lectern.workers.email")

POOL_SIZE = 4
#: Longest wait between two tries of a job whose SMTP server is unreachable.
OUTAGE_MAX_WAIT_MS = 60_000
SMTP_TIMEOUT_S = 10.0
DEFAULT_SENDER = "Lectern <no-reply@lectern.local>"


class SmtpTlsRequired(aiosmtplib.SMTPException):
    """The server did not offer STARTTLS, so the configured credentials were not sent."""


class SmtpConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    sender: str = DEFAULT_SENDER
    use_tls: bool = False
    start_tls: bool | None = None  # None: use STARTTLS when offered (only without credentials)


def parse_smtp_url(url: str) -> SmtpConfig:
    """``smtp://user:pass@host:port?from=...&starttls=0|1`` (``smtps://`` for implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"not an smtp:// or smtps:// URL: {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    tls = parts.scheme == "smtps"
    start_tls: bool | None = None
    if "starttls" in query:
        start_tls = query["starttls"].lower() in ("1", "true", "yes")
    if parts.username and not tls:
        if start_tls is False:
            raise ValueError(
                "smtp_url has credentials and starttls=0: credentials need TLS"
                " (use smtps:// or drop starttls=0)"
            )
        start_tls = True  # required: opportunistic STARTTLS can be stripped by a downgrade
    return SmtpConfig(
        host=parts.hostname,
        port=parts.port or (465 if tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sender=query.get("from", DEFAULT_SENDER),
        use_tls=tls,
        start_tls=False if tls else start_tls,
    )


class _Connection:
    """One SMTP connection, opened lazily and bound to the loop that opened it."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.client: aiosmtplib.SMTP | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def send(self, message: EmailMessage) -> None:
        """Send on the open connection, reconnecting once when it turns out to be stale."""
        for attempt in (1, 2):
            fresh = await self._ensure()
            try:
                assert self.client is not None
                await self.client.send_message(message)
                return
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                await self.drop()
                if fresh or attempt == 2:
                    raise
                log.debug("smtp connection was stale, reconnecting: %s", exc)
            except BaseException:
                await self.drop()
                raise

    async def _ensure(self) -> bool:
        loop = asyncio.get_running_loop()
        if self.client is not None and self.loop is loop and self.client.is_connected:
            return False
        if self.loop is not loop:
            self.client = None  # opened on another loop (tests): abandon, do not touch it
        await self.drop()
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            timeout=SMTP_TIMEOUT_S,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPException:
            # aiosmtplib refuses STARTTLS that was not offered before any AUTH; say why.
            if c.start_tls and c.username and not client.supports_extension("starttls"):
                client.close()
                raise SmtpTlsRequired(
                    f"refusing to send SMTP credentials in clear: {c.host}:{c.port}"
                    " did not offer STARTTLS"
                ) from None
            raise
        self.client, self.loop = client, loop
        return True

    async def drop(self) -> None:
        client, self.client = self.client, None
        if client is not None and self.loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                client.close()


class MailerPool:
    """Up to ``size`` SMTP connections shared by one process's email jobs."""

    def __init__(self, config: SmtpConfig, size: int = POOL_SIZE) -> None:
        self.config = config
        self._free: asyncio.Queue[_Connection] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._size = size
        #: Consecutive sends that found the server unreachable (0 once one gets through).
        self.outage = 0

    def wait_ms(self, base_ms: int) -> int:
        """How long a job waits for an unreachable server: doubling with the outage, up to a
        minute, with jitter so that waiting jobs do not come back all at once."""
        delay = min(OUTAGE_MAX_WAIT_MS, base_ms * 2 ** min(self.outage, 20))
        return int(delay * random.uniform(0.8, 1.2))  # jitter, not a secret

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        loop = asyncio.get_running_loop()
        if self._free is None or self._loop is not loop:
            self._free, self._loop = asyncio.Queue(), loop
            for _ in range(self._size):
                self._free.put_nowait(_Connection(self.config))
        queue = self._free
        conn = await queue.get()
        try:
            yield conn
        finally:
            queue.put_nowait(conn)

    async def close(self) -> None:
        if self._free is None or self._loop is not asyncio.get_running_loop():
            return
        while not self._free.empty():
            await self._free.get_nowait().drop()
        self._free = None


_pools: dict[str, MailerPool] = {}


def mailer_for(smtp_url: str) -> MailerPool:
    pool = _pools.get(smtp_url)
    if pool is None:
        pool = _pools[smtp_url] = MailerPool(parse_smtp_url(smtp_url))
    return pool


# -- content ----------------------------------------------------------------------------------


class Rendered(msgspec.Struct, frozen=True):
    subject: str
    text: str
    html: str


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render(kind: str, title: str, body: str, display_name: str) -> Rendered:
    """The email of a notification: subject, plain-text and HTML bodies (same content)."""
    subject = _one_line(title)
    footer = (
        "You receive this email because email notifications are on for "
        f"\u201c{KIND_LABELS.get(kind, kind)}\u201d; you can turn them off in your "
        "notification settings."
    )
    text = f"Hi {display_name},\n\n{title}\n\n{body}\n\n-- \n{footer}\n"
    paragraphs = "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in body.split("\n\n") if p.strip()
    )
    html_body = (
        '<!doctype html><html><body style="font-family: sans-serif">'
        f"<p>Hi {html.escape(display_name)},</p>"
        f"<h2>{html.escape(title)}</h2>{paragraphs}"
        f'<hr><p style="color: #666; font-size: small">{html.escape(footer)}</p>'
        "</body></html>"
    )
    return Rendered(subject=subject, text=text, html=html_body)


def message_id(key: str, sender: str) -> str:
    """A stable ``Message-ID`` for an idempotency key: a resend is recognisably the same."""
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "lectern.local"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def build_message(
    *,
    sender: str,
    to_addr: str,
    to_name: str,
    content: Rendered,
    key: str,
    notification_id: int | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = formataddr((_one_line(to_name, 100), to_addr))
    msg["Subject"] = content.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(key, sender)
    if notification_id is not None:
        msg["X-Lectern-Notification"] = str(notification_id)
    msg.set_content(content.text)
    msg.add_alternative(content.html, subtype="html")
    return msg


# -- the job ----------------------------------------------------------------------------------


class _EmailJob(msgspec.Struct):
    notification_id: int


_LOAD = """
SELECT n.id, n.kind, n.title, n.body, u.email, u.display_name,
       coalesce(p.email, true) AS wants_email,
       s.quiet_start, s.quiet_end, coalesce(s.time_zone, 'UTC') AS time_zone
FROM notifications n
JOIN users u ON u.id = n.user_id
LEFT JOIN notification_prefs p ON p.user_id = n.user_id AND p.kind = n.kind
LEFT JOIN notification_settings s ON s.user_id = n.user_id
WHERE n.id = $1
"""


def _unreachable(exc: BaseException) -> bool:
    """The server could not be reached or hung up, as opposed to refusing this message."""
    if isinstance(exc, SmtpTlsRequired):
        return False
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == 421  # "service not available, closing transmission channel"
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | aiosmtplib.SMTPConnectError
        | aiosmtplib.SMTPConnectTimeoutError
        | aiosmtplib.SMTPServerDisconnected
        | aiosmtplib.SMTPTimeoutError,
    )


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(transient?, description) of a send failure."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        transient = any(400 <= code < 500 for code in codes)
        return transient, f"recipients refused: {codes}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return not 500 <= exc.code < 600, f"{exc.code} {exc.message}"[:500]
    return True, f"{type(exc).__name__}: {exc}"[:500]


class _SendFailed(Exception):
    pass


@job("email", timeout_s=120)
async def send_notification_email(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Send the email of one notification, at most once (see the module docstring)."""
    task = job_payload(payload, _EmailJob)
    if not ctx.settings.smtp_url:
        raise PermanentError("no smtp_url configured")
    assert ctx.db is not None
    note = await ctx.db.fetchrow(_LOAD, task.notification_id)
    if note is None or not note["wants_email"]:
        return
    key = f"notification:{note['id']}"
    if await defer_if_quiet(ctx, "email", payload, key, note):
        return
    content = render(note["kind"], note["title"], note["body"], note["display_name"])
    await deliver(
        ctx,
        key=key,
        to_addr=note["email"],
        to_name=note["display_name"],
        content=content,
        notification_id=note["id"],
    )


async def defer_if_quiet(
    ctx: WorkerContext, queue: str, payload: dict[str, Any], key: str, row: Any
) -> bool:
    """Put the job back on the scheduler for the end of the recipient's quiet hours when now is
    inside them (``row`` has ``quiet_start``, ``quiet_end``, ``time_zone``); returns whether
    it did, i.e. whether the caller must stop here."""
    now = datetime.now(UTC)
    until = quiet_until(now, row["quiet_start"], row["quiet_end"], row["time_zone"])
    if until is None:
        return False
    delay_ms = int((until - now).total_seconds() * 1000) + 1
    await schedule(ctx.redis, queue, payload, delay_ms=delay_ms, key=f"quiet:{key}")
    metrics.emails.labels("quiet").inc()
    log.info("recipient in quiet hours, email waits", extra={"key": key, "until": until})
    return True


async def deliver(
    ctx: WorkerContext,
    *,
    key: str,
    to_addr: str,
    to_name: str,
    content: Rendered,
    notification_id: int | None = None,
    user_id: int | None = None,
) -> None:
    """Send one message at most once per idempotency ``key`` (its ``email_deliveries`` row),
    with the retry and outage rules of the module docstring."""
    assert ctx.db is not None
    pool = mailer_for(ctx.settings.smtp_url)
    await ctx.db.execute(
        "INSERT INTO email_deliveries"
        " (notification_id, user_id, idempotency_key, to_addr, subject, body)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        notification_id,
        user_id,
        key,
        to_addr,
        content.subject,
        content.text,
    )
    msg = build_message(
        sender=pool.config.sender,
        to_addr=to_addr,
        to_name=to_name,
        content=content,
        key=key,
        notification_id=notification_id,
    )
    # Take an SMTP connection before a database connection, so that jobs waiting for SMTP
    # never hold database connections.
    async with pool.connection() as smtp:
        outcome, error = await _send_once(ctx, smtp, key, msg)
    if outcome == "wait":
        pool.outage += 1
        raise Unavailable(error, pool.wait_ms(ctx.settings.job_retry_base_ms))
    pool.outage = 0
    if outcome == "retry":
        raise _SendFailed(error)


async def _send_once(
    ctx: WorkerContext, smtp: _Connection, key: str, msg: EmailMessage
) -> tuple[str, str]:
    """Send under the delivery row's lock; returns ("done" | "retry" | "wait", error)."""
    assert ctx.db is not None
    conn: asyncpg.Connection
    async with ctx.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, status, attempts, extract(epoch FROM now() - created_at) AS age_s "
            "FROM email_deliveries WHERE idempotency_key = $1 FOR UPDATE",
            key,
        )
        if row is None or row["status"] != "queued":
            return "done", ""
        attempts = row["attempts"] + 1
        try:
            await smtp.send(msg)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            transient, error = _classify(exc)
            if _unreachable(exc) and row["age_s"] < ctx.settings.email_give_up_after_s:
                await conn.execute(
                    "UPDATE email_deliveries SET last_error = $2 WHERE id = $1", row["id"], error
                )
                metrics.emails.labels("deferred").inc()
                log.info("smtp server unreachable, email waits", extra={"key": key})
                return "wait", error
            if transient and attempts < ctx.settings.job_max_attempts:
                await conn.execute(
                    "UPDATE email_deliveries SET attempts = $2, last_error = $3 WHERE id = $1",
                    row["id"],
                    attempts,
                    error,
                )
                metrics.emails.labels("retried").inc()
                log.info("email will be retried", extra={"key": key, "error": error})
                return "retry", error
            await conn.execute(
                "UPDATE email_deliveries SET status = 'failed', attempts = $2, last_error = $3 "
                "WHERE id = $1",
                row["id"],
                attempts,
                error,
            )
            metrics.emails.labels("failed").inc()
            log.error("email failed permanently", extra={"key": key, "error": error})
            return "done", ""
        await conn.execute(
            "UPDATE email_deliveries SET status = 'sent', sent_at = now(), attempts = $2, "
            "last_error = NULL WHERE id = $1",
            row["id"],
            attempts,
        )
    metrics.emails.labels("sent").inc()
    return "done", ""

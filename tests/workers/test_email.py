"""Notification emails through a real SMTP server (aiosmtpd): content, exactly one message per
notification through retries and redeliveries, preferences, permanent failure."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from config.servers import SmtpCatcher, free_port
from config.settings import Settings
from tests.workers.helpers import (
    Workers,
    eventually,
    make_user,
    parts,
    received_by,
    steady,
    user_email,
)
from workers import job_runner, jobs, metrics
from workers.context import WorkerContext
from workers.email import SmtpTlsRequired, _Connection, message_id, parse_smtp_url, render
from workers.notify import create_notifications


async def notify(
    ctx: WorkerContext, user: int, title: str, body: str, kind: str = "quiz.graded"
) -> int:
    assert ctx.db is not None
    async with ctx.db.acquire() as conn, conn.transaction():
        ids = await create_notifications(
            conn, [user], kind=kind, dedupe_key=uuid.uuid4().hex, title=title, body=body
        )
    return ids[0]


async def delivery(ctx: WorkerContext, notification: int) -> dict[str, Any] | None:
    assert ctx.db is not None
    row = await ctx.db.fetchrow(
        "SELECT status, attempts, last_error, idempotency_key FROM email_deliveries"
        " WHERE notification_id = $1",
        notification,
    )
    return dict(row) if row else None


async def sent(ctx: WorkerContext, notification: int) -> bool:
    row = await delivery(ctx, notification)
    return row is not None and row["status"] == "sent"


def email_runner(ctx: WorkerContext) -> Any:
    return job_runner.run_jobs(ctx, queues=["email"])


async def test_email_content_reaches_the_smtp_server(
    wsettings: Settings, smtp: SmtpCatcher
) -> None:
    """Subject, recipient, a stable Message-ID, and plain-text and HTML parts saying the same
    thing (HTML escaped)."""
    async with Workers(wsettings, email_runner) as w:
        assert w.ctx.db is not None
        user = await make_user(w.ctx.db, name="Grace <Hopper>")
        address = await user_email(w.ctx.db, user)
        nid = await notify(w.ctx, user, "Quiz graded: Loops", "You scored 9 of 10 & more.")
        await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
        await eventually(lambda: received_by(smtp, address))
        (msg,) = received_by(smtp, address)
        assert msg["Subject"] == "Quiz graded: Loops"
        assert address in msg["To"]
        assert msg["Message-ID"] == message_id(f"notification:{nid}", msg["From"])
        assert msg.get_content_type() == "multipart/alternative"
        body = parts(msg)
        assert "Hi Grace <Hopper>," in body["text/plain"]
        assert "You scored 9 of 10 & more." in body["text/plain"]
        assert "Grace &lt;Hopper&gt;" in body["text/html"]
        assert "You scored 9 of 10 &amp; more." in body["text/html"]
        row = await eventually(lambda: delivery(w.ctx, nid))
        assert row["status"] == "sent" and row["attempts"] == 1


async def test_refused_twice_then_sent_exactly_once(wsettings: Settings, smtp: SmtpCatcher) -> None:
    """The server answers 451 twice: the job retries and the third try delivers; one message."""
    async with Workers(wsettings, email_runner) as w:
        assert w.ctx.db is not None
        user = await make_user(w.ctx.db)
        address = await user_email(w.ctx.db, user)
        nid = await notify(w.ctx, user, "Retry me", "Body")
        smtp.fail_next(2)
        await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
        await eventually(lambda: sent(w.ctx, nid))
        await steady(lambda: len(received_by(smtp, address)), 1)
        row = await delivery(w.ctx, nid)
        assert row is not None and row["attempts"] == 3 and row["last_error"] is None


async def test_job_delivered_many_times_sends_one_email(
    wsettings: Settings, smtp: SmtpCatcher
) -> None:
    """Five copies of the job, run concurrently by two processes: one message."""
    async with (
        Workers(wsettings, email_runner, consumer="mail-a") as a,
        Workers(wsettings, email_runner, consumer="mail-b"),
    ):
        assert a.ctx.db is not None
        user = await make_user(a.ctx.db)
        address = await user_email(a.ctx.db, user)
        nid = await notify(a.ctx, user, "Once", "Only once")
        for _ in range(5):
            await jobs.enqueue(a.ctx.redis, "email", {"notification_id": nid})
        await eventually(lambda: sent(a.ctx, nid))
        await steady(lambda: len(received_by(smtp, address)), 1, 0.6)


async def test_no_email_when_the_user_turned_it_off(wsettings: Settings, smtp: SmtpCatcher) -> None:
    async with Workers(wsettings, email_runner) as w:
        assert w.ctx.db is not None
        user = await make_user(w.ctx.db)
        address = await user_email(w.ctx.db, user)
        await w.ctx.db.execute(
            "INSERT INTO notification_prefs (user_id, kind, email)"
            " VALUES ($1, 'quiz.graded', false)",
            user,
        )
        quiet = await notify(w.ctx, user, "Quiet", "No email for this kind")
        loud = await notify(w.ctx, user, "Loud", "Announcements still mail", kind="announcement")
        for nid in (quiet, loud):
            await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
        await eventually(lambda: sent(w.ctx, loud))
        await steady(lambda: [m["Subject"] for m in received_by(smtp, address)], ["Loud"])
        assert await delivery(w.ctx, quiet) is None


async def test_failure_recorded_after_max_attempts(wsettings: Settings, smtp: SmtpCatcher) -> None:
    """Refused on every try (job_max_attempts = 3): the delivery ends failed, nothing sent."""
    async with Workers(wsettings, email_runner) as w:
        assert w.ctx.db is not None
        user = await make_user(w.ctx.db)
        address = await user_email(w.ctx.db, user)
        nid = await notify(w.ctx, user, "Doomed", "Never delivered")
        smtp.fail_next(3)
        await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
        row = await eventually(
            lambda: _when(delivery(w.ctx, nid), lambda r: r and r["status"] == "failed")
        )
        assert row["attempts"] == 3 and "451" in row["last_error"]
        smtp.fail_next(0)
        await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})  # a late redelivery
        await asyncio.sleep(0.3)
        assert received_by(smtp, address) == []


async def _when(value: Any, ok: Any) -> Any:
    row = await value
    return row if ok(row) else None


async def test_smtp_server_down_then_up(wsettings: Settings) -> None:
    """No server listening: the job keeps retrying; once a server starts, one message."""
    port = free_port()
    settings = msgspec.structs.replace(
        wsettings, smtp_url=f"smtp://127.0.0.1:{port}", job_max_attempts=8, job_retry_base_ms=50
    )
    late = SmtpCatcher(port=port)
    try:
        async with Workers(settings, email_runner) as w:
            assert w.ctx.db is not None
            user = await make_user(w.ctx.db)
            nid = await notify(w.ctx, user, "Patience", "The server was down")
            await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
            await eventually(lambda: _when(delivery(w.ctx, nid), lambda r: r and r["last_error"]))
            late.start()
            await eventually(lambda: sent(w.ctx, nid))
            assert len(late.received()) == 1
    finally:
        late.stop()


async def test_an_outage_longer_than_the_retry_budget_loses_no_email(wsettings: Settings) -> None:
    """The server stays down through many more tries than job_max_attempts (2) allows: the
    email waits without using up attempts and goes out once, when the server is back."""
    port = free_port()
    settings = msgspec.structs.replace(
        wsettings, smtp_url=f"smtp://127.0.0.1:{port}", job_max_attempts=2, job_retry_base_ms=20
    )
    late = SmtpCatcher(port=port)
    try:
        async with Workers(settings, email_runner) as w:
            assert w.ctx.db is not None
            user = await make_user(w.ctx.db)
            nid = await notify(w.ctx, user, "Outage", "The server was down a long time")
            before = _deferred()
            await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
            waits = await eventually(lambda: _deferrals_at_least(before, 5))
            row = await delivery(w.ctx, nid)
            assert row is not None and row["status"] == "queued" and row["attempts"] == 0
            late.start()
            await eventually(lambda: sent(w.ctx, nid))
            assert len(late.received()) == 1
            assert waits >= 5
    finally:
        late.stop()


def _deferred() -> float:
    return float(metrics.emails.labels("deferred")._value.get())


async def _deferrals_at_least(before: float, count: int) -> float | None:
    value = _deferred() - before
    return value if value >= count else None


async def test_an_outage_longer_than_give_up_after_fails_the_email(wsettings: Settings) -> None:
    port = free_port()
    settings = msgspec.structs.replace(
        wsettings,
        smtp_url=f"smtp://127.0.0.1:{port}",
        job_retry_base_ms=20,
        email_give_up_after_s=0,
    )
    async with Workers(settings, email_runner) as w:
        assert w.ctx.db is not None
        user = await make_user(w.ctx.db)
        nid = await notify(w.ctx, user, "Lost cause", "Nobody listens")
        await jobs.enqueue(w.ctx.redis, "email", {"notification_id": nid})
        row = await eventually(
            lambda: _when(delivery(w.ctx, nid), lambda r: r and r["status"] == "failed")
        )
        assert "Connect" in row["last_error"] or "refused" in row["last_error"].lower()


def test_smtp_url_parsing() -> None:
    cfg = parse_smtp_url("smtp://bob:s%40cret@mail.example:2525?from=Class%20<c@example.org>")
    assert (cfg.host, cfg.port, cfg.username, cfg.password) == (
        "mail.example",
        2525,
        "bob",
        "s@cret",
    )
    assert cfg.sender == "Class <c@example.org>" and not cfg.use_tls
    assert parse_smtp_url("smtps://mail.example").port == 465
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example")


def test_credentials_require_tls_in_the_url() -> None:
    """With a user name, smtp:// means STARTTLS required (never merely opportunistic), and
    turning it off is a configuration error; smtps:// and anonymous relays are unchanged."""
    assert cfg_tls("smtp://bob:pw@mail.example") == (False, True)
    assert cfg_tls("smtp://bob:pw@mail.example?starttls=1") == (False, True)
    assert cfg_tls("smtps://bob:pw@mail.example") == (True, False)
    assert cfg_tls("smtp://mail.example") == (False, None)
    assert cfg_tls("smtp://mail.example?starttls=0") == (False, False)
    with pytest.raises(ValueError, match="credentials need TLS"):
        parse_smtp_url("smtp://bob:pw@mail.example?starttls=0")


def cfg_tls(url: str) -> tuple[bool, bool | None]:
    cfg = parse_smtp_url(url)
    return cfg.use_tls, cfg.start_tls


class PlainAuthServer:
    """A real SMTP server (aiosmtpd) that offers AUTH over plain text and no STARTTLS: what a
    downgrading man in the middle looks like. It records every credential it is sent."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.credentials: list[Any] = []
        self.messages: list[bytes] = []
        server = self

        def authenticator(*args: Any) -> AuthResult:
            server.credentials.append(args[-1])
            return AuthResult(success=True)

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                server.messages.append(envelope.content)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
        )


@pytest.fixture
def plain_auth_server() -> Any:
    server = PlainAuthServer()
    server.controller.start()
    yield server
    server.controller.stop()


def _message() -> Any:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.test", "b@example.test", "hi"
    msg.set_content("hello")
    return msg


async def test_credentials_are_never_sent_without_tls(plain_auth_server: Any) -> None:
    """Against a server that does not offer STARTTLS: with credentials the send fails with
    SmtpTlsRequired and the server saw no AUTH; without credentials the mail goes through."""
    port = plain_auth_server.port
    with_credentials = _Connection(parse_smtp_url(f"smtp://bob:s3cret@127.0.0.1:{port}"))
    with pytest.raises(SmtpTlsRequired, match="did not offer STARTTLS"):
        await with_credentials.send(_message())
    assert plain_auth_server.credentials == [] and plain_auth_server.messages == []
    anonymous = _Connection(parse_smtp_url(f"smtp://127.0.0.1:{port}"))
    await anonymous.send(_message())
    await anonymous.drop()
    assert len(plain_auth_server.messages) == 1


def test_render_keeps_text_and_escapes_html() -> None:
    out = render("announcement", "Title\nwith newline", "<b>hi</b>\n\nsecond", "Al")
    assert out.subject == "Title with newline"
    assert "<b>hi</b>" in out.text
    assert "&lt;b&gt;hi&lt;/b&gt;" in out.html and out.html.count("<p>") >= 3

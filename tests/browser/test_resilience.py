"""Connections that break: a gateway restart and a browser that goes offline while events are
published (every missed event shows exactly once afterwards), a history that no longer
reaches back (reset: the page refetches), and networks where WebSocket is blocked (SSE or
long-poll carry both the events and the commands)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from config import keys
from tests.browser.conftest import WAIT_MS, Pages, expect
from tests.browser.stack import Person, Stack


@dataclass
class Cohort:
    id: int
    instructor: Person
    students: list[Person]


@pytest.fixture
def cohort(stack: Stack) -> Cohort:
    async def make() -> Cohort:
        cohort = await stack.cohort()
        instructor = await stack.person("instructor", "Ines Instructor")
        await stack.enroll(cohort, instructor, "staff")
        students = [await stack.person("student", n) for n in ("Cleo", "Dev")]
        for s in students:
            await stack.enroll(cohort, s)
            await stack.login(s)
        await stack.login(instructor)
        return Cohort(cohort, instructor, students)

    return stack.call(make())


def announce(stack: Stack, cohort: Cohort, title: str) -> None:
    token = cohort.instructor.session["access_token"]
    stack.call(
        stack.api("POST", f"/api/v1/cohorts/{cohort.id}/announcements", token, {"title": title})
    )


def expect_each_once(page: Any, titles: list[str]) -> None:
    for title in titles:
        expect(page.locator("#announcement-list li h3", has_text=title)).to_have_count(1)
    expect(page.locator("#announcement-list li")).to_have_count(len(titles))


def watch(page: Any, topic: str) -> None:
    """Count what the client library delivers on ``topic``, below the page's own id checks."""
    page.evaluate(
        "(topic) => { window.__seen = [];"
        " window.lectern.subscribe(topic, (e) => window.__seen.push(e.event + ' ' + e.id)); }",
        topic,
    )


def delivered(page: Any, event: str) -> list[str]:
    seen: list[str] = page.evaluate("window.__seen")
    return [s for s in seen if s.startswith(event + " ")]


def wait_status(page: Any, status: str) -> None:
    page.wait_for_function("(s) => window.lectern.state.status === s", arg=status, timeout=WAIT_MS)


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
def test_gateway_restart_loses_and_repeats_nothing(
    pages: Pages, stack: Stack, cohort: Cohort, transport: str
) -> None:
    page = pages.open(cohort.students[0], f"/student?transport={transport}")
    pages.ready(page, transport)
    watch(page, f"cohort:{cohort.id}")
    announce(stack, cohort, "Before the restart")
    expect_each_once(page, ["Before the restart"])

    stack.call(stack.stop_gateway())
    if transport != "poll":  # a waiting long-poll only notices on its next request
        wait_status(page, "reconnecting")
        expect(page.locator("#conn")).to_have_text("reconnecting…")
    during = [f"During the outage {i}" for i in range(3)]
    for title in during:
        announce(stack, cohort, title)
    stack.call(stack.start_gateway())
    announce(stack, cohort, "After the restart")

    expect_each_once(page, ["Before the restart", *during, "After the restart"])
    news = delivered(page, "announcement.new")
    assert len(news) == 5 and len(set(news)) == 5, news
    wait_status(page, "open")
    assert page.evaluate("window.lectern.transport") == transport


def test_offline_browser_catches_up_exactly_once(
    pages: Pages, stack: Stack, cohort: Cohort
) -> None:
    page = pages.open(cohort.students[0], "/student")
    pages.ready(page, "ws")
    watch(page, f"cohort:{cohort.id}")
    announce(stack, cohort, "Online")
    expect_each_once(page, ["Online"])

    page.context.set_offline(True)
    wait_status(page, "reconnecting")
    missed = [f"Missed {i}" for i in range(4)]
    for title in missed:
        announce(stack, cohort, title)
    page.wait_for_timeout(300)
    expect(page.locator("#announcement-list li")).to_have_count(1)
    page.context.set_offline(False)

    expect_each_once(page, ["Online", *missed])
    news = delivered(page, "announcement.new")
    assert len(news) == 5 and len(set(news)) == 5, news
    wait_status(page, "open")


def test_expired_token_is_refreshed_through_the_api(
    pages: Pages, stack: Stack, cohort: Cohort
) -> None:
    """The gateway closes a connection whose token expires (4002); the page gets a new one
    from ``POST /api/v1/auth/refresh`` and resumes where it was."""
    student = cohort.students[0]
    student.session = {
        **student.session,
        "access_token": stack.call(stack.short_lived_token(student, 2)),
    }
    page = pages.open(student, "/student")
    pages.ready(page, "ws")
    watch(page, f"cohort:{cohort.id}")
    announce(stack, cohort, "Before expiry")
    expect_each_once(page, ["Before expiry"])
    page.wait_for_function("() => window.lectern.stats.lastCode === 4002", timeout=WAIT_MS)
    announce(stack, cohort, "After refresh")
    expect_each_once(page, ["Before expiry", "After refresh"])
    wait_status(page, "open")
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('lectern.session'))")
    assert stored["access_token"] != student.session["access_token"]
    assert stored["refresh_token"] != student.session["refresh_token"]  # rotated
    assert len(set(delivered(page, "announcement.new"))) == 2


def test_trimmed_history_resets_and_refetches(pages: Pages, stack: Stack, cohort: Cohort) -> None:
    """A cursor older than the history kept gets ``reset``: the page reloads from the API."""
    page = pages.open(cohort.students[0], "/student")
    pages.ready(page, "ws")
    announce(stack, cohort, "Seen")
    expect_each_once(page, ["Seen"])

    page.context.set_offline(True)
    wait_status(page, "reconnecting")
    announce(stack, cohort, "Lost from history")
    topic = f"cohort:{cohort.id}"
    shards = stack.settings.bus_shards

    async def trim() -> None:
        history = keys.history_key(topic, shards)
        # The outbox relay publishes shortly after the API answers: wait for it, then lose it.
        async with asyncio.timeout(10):
            while await stack.redis.xlen(history) < 2:
                await asyncio.sleep(0.02)
        await stack.redis.delete(history)

    stack.call(trim())
    page.context.set_offline(False)

    expect_each_once(page, ["Seen", "Lost from history"])
    assert page.evaluate("window.lectern.stats.resets") >= 1
    announce(stack, cohort, "Live again")
    expect_each_once(page, ["Seen", "Lost from history", "Live again"])


BLOCK_WEBSOCKET = """
window.WebSocket = class BlockedWebSocket {
  constructor() {
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      if (this.onerror) this.onerror(new Event("error"));
      if (this.onclose) this.onclose({ code: 1006, reason: "" });
    }, 30);
  }
  send() { throw new Error("blocked"); }
  close() {}
};
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [("blocked", "sse"), ("?transport=sse", "sse"), ("?transport=poll", "poll")],
)
def test_without_websocket_events_and_commands_still_flow(
    pages: Pages, stack: Stack, cohort: Cohort, how: str, expected: str
) -> None:
    """WebSocket refused by the network (or left out by the page): the probe moves the client
    down to SSE, or it runs on long-poll; events arrive and commands go over ``POST /cmd``."""
    session = stack.call(stack.live_session(cohort.id, "Fallback room"))
    path = f"/live?session={session}"
    if how == "blocked":
        fallback = pages.open(cohort.students[0], path, init_script=BLOCK_WEBSOCKET)
    else:
        fallback = pages.open(cohort.students[0], f"{path}&{how[1:]}")
    other = pages.open(cohort.students[1], path)
    pages.ready(fallback, expected)
    pages.ready(other, "ws")
    names = {"sse": "SSE fallback", "poll": "long-poll fallback"}
    expect(fallback.locator("#conn")).to_have_text(f"live · {names[expected]}")

    fallback.fill("#chat-input", "sent without a WebSocket")
    fallback.click("#chat-form button[type=submit]")
    expect(other.locator("#chat-list li .body")).to_have_text(["sent without a WebSocket"])
    other.fill("#chat-input", "received without a WebSocket")
    other.click("#chat-form button[type=submit]")
    for page in (fallback, other):
        bodies = page.locator("#chat-list li .body")
        expect(bodies).to_have_text(["sent without a WebSocket", "received without a WebSocket"])
    assert fallback.evaluate("window.lectern.transport") == expected

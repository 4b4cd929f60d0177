"""The pure rules of the live rooms: validation, board diffs, tallies, credit, topics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workers import live_rules as rules
from workers.live_rules import Invalid
from workers.live_state import Room, parse_due_member
from workers.ranking import Board, QaItem

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_text_strips_and_bounds() -> None:
    assert rules.clean_text("  hi \n", "b", 5) == "hi"
    assert rules.clean_text("line\nnext\ttab", "b", 50) == "line\nnext\ttab"
    assert rules.clean_text("é" * 5, "b", 5) == "é" * 5  # characters, not bytes
    assert rules.clean_text(None, "b", 5, required=False) is None
    assert rules.clean_text("   ", "b", 5, required=False) is None
    for value in (None, "", " \n ", 3, ["x"], "x" * 6):
        with pytest.raises(Invalid):
            rules.clean_text(value, "b", 5)
    for bad in ("a\x00b", "a\x07", "\x1b[31m", "a\x7f", "a\ud800"):
        with pytest.raises(Invalid, match="plain text"):
            rules.clean_text(bad, "b", 50)


def test_recording_url() -> None:
    """Only an absolute https URL with a host, no credentials, bounded, and only on stop."""
    ok = "https://video.example.edu/rec/42?t=1"
    rules.check_recording_url(ok, "stopped")
    rules.check_recording_url(None, "stopped")
    rules.check_recording_url(None, "started")
    long_ok = "https://v.example/" + "a" * (rules.RECORDING_URL_MAX - len("https://v.example/"))
    rules.check_recording_url(long_ok, "stopped")
    for bad in (
        "javascript:alert(1)",
        "http://video.example.edu/rec",
        "/rec/42",
        "https://",
        "https:///path",
        "https://user:pw@video.example.edu/",
        "https://video.example.edu/a b",
        "https://video.example.edu/\x00",
        "https://[::1/",
        long_ok + "a",
        "",
    ):
        with pytest.raises(Invalid):
            rules.check_recording_url(bad, "stopped")
    with pytest.raises(Invalid):
        rules.check_recording_url(ok, "started")


def _q(id: int, votes: int = 0, **kw: bool) -> QaItem:
    return QaItem(id=id, votes=votes, created_at=T0 + timedelta(seconds=id), **kw)


def test_board_apply() -> None:
    board = Board([_q(1), _q(2)])
    assert board.order() == [2, 1]
    assert board.apply(_q(3)) and board.order() == [3, 2, 1]  # newest first
    assert board.apply(_q(1, votes=1)) and board.order() == [1, 3, 2]  # upvote reorders
    assert not board.apply(_q(1, votes=2))  # no change of order
    assert board.apply(_q(2, dismissed=True)) and board.order() == [1, 3]
    assert not board.apply(_q(2, dismissed=True))  # was not on the board
    assert board.remove([3, 99]) and board.order() == [1] and not board.remove([3])


def test_poll_tally_from_counts() -> None:
    t = rules.poll_tally({0: 1, 2: 2, 7: 1}, 3)
    assert (t.counts, t.total, t.percentages, t.ignored) == ((1, 0, 2), 3, (33, 0, 67), 1)
    assert rules.tally_view(rules.poll_tally({}, 2)) == {
        "counts": [0, 0],
        "total": 0,
        "percentages": [0, 0],
    }


def test_credit_carries_the_remainder() -> None:
    assert rules.credit(1000, 3500) == (2, 3000)
    assert rules.credit(3000, 3999) == (0, 3000)
    assert rules.credit(5000, 4000) == (0, 5000)  # a clock that went backwards
    since, total = 0, 0
    for now in (700, 1400, 2100, 2800, 3500):
        secs, since = rules.credit(since, now)
        total += secs
    assert total == 3  # the same as crediting 0..3500 at once


def test_session_transitions() -> None:
    assert rules.transition("scheduled", "start") == "live"
    assert rules.transition("live", "end") == "ended"
    for state, action in (
        ("live", "start"),
        ("ended", "start"),
        ("scheduled", "end"),
        ("ended", "end"),
    ):
        assert rules.transition(state, action) is None


def test_topics_and_rooms() -> None:
    room = Room.from_topic("live:3:9")
    assert room is not None and (room.cohort_id, room.session_id) == (3, 9)
    assert room.staff_topic == "staff:3" and room.topic == "live:3:9"
    for topic in ("live:c3:9", "live:3:0", "live:3:99999999999999999999", "live:3:٣"):
        assert Room.from_topic(topic) is None
    assert parse_due_member(room.due_member("tally", "12")) == ("tally", room, "12")
    assert parse_due_member(room.due_member("leave", "42")) == ("leave", room, "42")
    assert parse_due_member(room.due_member("react")) == ("react", room, "")
    assert parse_due_member("junk") is None
    assert parse_due_member("tally|x|9|1") is None


def test_views_use_strings_for_users_and_utc_times() -> None:
    row = {
        "id": 5,
        "session_id": 9,
        "user_id": 42,
        "body": "b",
        "created_at": datetime(2030, 1, 1, 12, tzinfo=UTC),
    }
    assert rules.message_view(row) == {
        "id": 5,
        "session_id": 9,
        "user": "42",
        "name": None,
        "body": "b",
        "created_at": "2030-01-01T12:00:00Z",
    }
    assert rules.message_view({**row, "name": "Ada"})["name"] == "Ada"
    question = {
        **row,
        "answer": None,
        "answered_by": 7,
        "answered_at": None,
        "pinned": False,
        "dismissed": False,
        "votes": 0,
        "name": "Ada",
        "answered_by_name": "Iris",
    }
    view = rules.question_view(question)
    assert (view["user"], view["name"], view["anonymous"]) == ("42", "Ada", False)
    assert view["answered_by"] == "7" and view["answered_by_name"] == "Iris"
    hidden = rules.question_view({**question, "anonymous": True})
    assert (hidden["user"], hidden["name"], hidden["anonymous"]) == (None, None, True)
    assert rules.json_list('["a", "b"]') == ["a", "b"] and rules.json_list(["a"]) == ["a"]

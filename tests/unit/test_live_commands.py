"""Live-room command arguments (workers/live_commands.py): who may send each command, and
which ``data`` each accepts (normalised) or refuses with ``invalid``. Pure: no servers."""

from __future__ import annotations

from typing import Any

import pytest

from config.streams import Command
from workers import live_commands as lc
from workers.command_consumer import CommandError


def cmd(name: str, data: dict[str, Any], *, staff: bool = False) -> Command:
    return Command("gw", "gw.1", "r", name, "live:1:2", "7", "student", staff, data, 0)


def refused(name: str, data: dict[str, Any], *, staff: bool = False) -> str:
    with pytest.raises(CommandError) as info:
        lc.decode(cmd(name, data, staff=staff))
    return info.value.code


def test_every_command_name_has_its_struct() -> None:
    assert set(lc.BY_NAME) == {
        "qa.ask",
        "qa.similar",
        "qa.upvote",
        "qa.unvote",
        "qa.answer",
        "qa.pin",
        "qa.unpin",
        "qa.dismiss",
        "qa.clear_answered",
        "poll.open",
        "poll.vote",
        "poll.close",
        "poll.reveal",
        "chat.send",
        "chat.delete",
        "react",
        "broadcast",
        "broadcast.clear",
        "recording.set",
        "screenshare.signal",
        "quiz.start",
        "quiz.next",
        "quiz.end",
        "quiz.answer",
    }


def test_audience_is_checked_before_the_data() -> None:
    """A student gets forbidden for a staff command even with bad data; staff do not vote."""
    for name, kind in lc.BY_NAME.items():
        if kind.audience == lc.STAFF:
            assert refused(name, {"junk": True}) == "forbidden", name
    assert refused("poll.vote", {"poll_id": 1, "option": 0}, staff=True) == "forbidden"
    assert refused("poll.vote", {}, staff=True) == "forbidden"
    assert refused("quiz.answer", {"live_quiz_id": 1, "question": 0, "answer": 1}, staff=True) == (
        "forbidden"
    )


def test_text_is_stripped_and_bounded() -> None:
    assert lc.decode(cmd("qa.ask", {"body": "  hi \n"})) == lc.QaAsk(body="hi")
    assert lc.decode(cmd("chat.send", {"body": "y" * 500})) == lc.ChatSend(body="y" * 500)
    for data in (
        {},
        {"body": ""},
        {"body": "   "},
        {"body": 42},
        {"body": ["a"]},
        {"body": "x" * 1001},
        {"body": "bell\x07"},
        {"body": "nul\x00"},
    ):
        assert refused("qa.ask", data) == "invalid", data
    assert refused("chat.send", {"body": "x" * 501}) == "invalid"
    assert refused("broadcast", {"text": ""}, staff=True) == "invalid"
    assert refused("broadcast", {"text": "x" * 1001}, staff=True) == "invalid"
    answered = lc.decode(cmd("qa.answer", {"question_id": 3, "answer": "  "}, staff=True))
    assert answered == lc.QaAnswer(question_id=3, answer=None)
    assert refused("qa.answer", {"question_id": 3, "answer": 5}, staff=True) == "invalid"


def test_anonymous_is_a_json_boolean() -> None:
    """Absent or null is false; strings and numbers are refused, not read as intent."""
    assert lc.decode(cmd("qa.ask", {"body": "x"})) == lc.QaAsk(body="x", anonymous=False)
    assert lc.decode(cmd("qa.ask", {"body": "x", "anonymous": None})) == lc.QaAsk(
        body="x", anonymous=False
    )
    assert lc.decode(cmd("qa.ask", {"body": "x", "anonymous": True})) == lc.QaAsk(
        body="x", anonymous=True
    )
    for bad in ("true", 1, 0, [], {}):
        assert refused("qa.ask", {"body": "x", "anonymous": bad}) == "invalid", bad


def test_ids() -> None:
    assert lc.decode(cmd("qa.upvote", {"question_id": 7})) == lc.QaUpvote(question_id=7)
    for value in (0, -1, "7", 7.0, 1.5, True, None, 2**63):
        assert refused("qa.upvote", {"question_id": value}) == "invalid", value
        assert refused("chat.delete", {"message_id": value}) == "invalid", value
    assert refused("qa.upvote", {}) == "invalid"


def test_poll_arguments() -> None:
    opened = lc.decode(cmd("poll.open", {"question": " q ", "options": [" a ", "b"]}, staff=True))
    assert opened == lc.PollOpen(question="q", options=["a", "b"])
    for data in (
        {"question": "q", "options": ["only one"]},
        {"question": "q", "options": ["a", ""]},
        {"question": "q", "options": ["a", 1]},
        {"question": "q", "options": "ab"},
        {"question": "q", "options": None},
        {"question": "q", "options": [str(i) for i in range(21)]},
        {"question": "", "options": ["a", "b"]},
        {"question": "q" * 501, "options": ["a", "b"]},
    ):
        assert refused("poll.open", data, staff=True) == "invalid", data
    assert lc.decode(cmd("poll.vote", {"poll_id": 1, "option": 2})) == lc.PollVote(
        poll_id=1, option=2
    )
    for data in (
        {"poll_id": 1},
        {"poll_id": 1, "option": -1},
        {"poll_id": 1, "option": "1"},
        {"poll_id": 1, "option": False},
        {"poll_id": 1, "option": None},
        {"option": 0},
    ):
        assert refused("poll.vote", data) == "invalid", data


def test_poll_settings_default_to_the_old_behaviour_and_are_validated() -> None:
    base = {"question": "q", "options": ["a", "b"]}
    opened = lc.decode(cmd("poll.open", base, staff=True))
    assert isinstance(opened, lc.PollOpen)
    assert (opened.kind, opened.anonymous, opened.results, opened.duration_s) == (
        "single",
        True,
        "on_reveal",
        None,
    )
    named = lc.decode(
        cmd(
            "poll.open",
            {**base, "kind": "multiple", "anonymous": False, "results": "live", "duration_s": 60},
            staff=True,
        )
    )
    assert isinstance(named, lc.PollOpen)
    assert (named.kind, named.anonymous, named.results, named.duration_s) == (
        "multiple",
        False,
        "live",
        60,
    )
    nulls = lc.decode(cmd("poll.open", {**base, "anonymous": None}, staff=True))
    assert isinstance(nulls, lc.PollOpen) and nulls.anonymous is True
    for bad in (
        {"kind": "ranked"},
        {"kind": 1},
        {"results": "sometimes"},
        {"anonymous": "no"},
        {"anonymous": 0},
        {"duration_s": 4},
        {"duration_s": 3601},
        {"duration_s": 10.5},
        {"duration_s": "60"},
        {"duration_s": True},
    ):
        assert refused("poll.open", {**base, **bad}, staff=True) == "invalid", bad
    vote = lc.decode(cmd("poll.vote", {"poll_id": 1, "options": [2, 0]}))
    assert vote == lc.PollVote(poll_id=1, options=[2, 0])
    for data in (
        {"poll_id": 1, "options": []},
        {"poll_id": 1, "options": [-1]},
        {"poll_id": 1, "options": ["0"]},
        {"poll_id": 1, "options": list(range(21))},
        {"poll_id": 1, "option": 0, "options": [0]},
    ):
        assert refused("poll.vote", data) == "invalid", data


def test_reactions_take_their_allowed_spelling() -> None:
    assert lc.decode(cmd("react", {"emoji": "❤"})) == lc.React(emoji="❤️")
    for data in ({}, {"emoji": "💩"}, {"emoji": 1}, {"emoji": "👍" * 20}):
        assert refused("react", data) == "invalid", data


def test_signals_and_recording() -> None:
    candidate = {"kind": "ice.candidate", "payload": None}
    signal = lc.decode(cmd("screenshare.signal", candidate, staff=True))
    assert signal == lc.ScreenshareSignal(kind="ice.candidate", payload=None)
    big = "x" * 16000
    assert lc.decode(cmd("screenshare.signal", {"kind": "offer", "payload": big}, staff=True))
    for data in (
        {"kind": "offer"},
        {"kind": "offer", "payload": "x" * 16 * 1024},
        *({"kind": kind, "payload": 1} for kind in ("", "Offer", "a b", "x" * 40, 5)),
    ):
        assert refused("screenshare.signal", data, staff=True) == "invalid", data
    stop = {"state": "stopped", "url": "https://video.example.edu/rec/42"}
    assert lc.decode(cmd("recording.set", stop, staff=True)) == lc.RecordingSet(
        state="stopped", url="https://video.example.edu/rec/42"
    )
    for data in (
        {"state": "paused"},
        {},
        {"state": "stopped", "url": 42},
        {"state": "stopped", "url": ["https://video.example.edu"]},
        {"state": "stopped", "url": "javascript:alert(1)"},
        {"state": "started", "url": "https://video.example.edu/rec/42"},
    ):
        assert refused("recording.set", data, staff=True) == "invalid", data


def test_a_cmd_key_in_data_cannot_pick_another_command() -> None:
    """The tag comes from the command's name, never from ``data``."""
    assert lc.decode(cmd("qa.ask", {"body": "x", "cmd": "qa.dismiss"})) == lc.QaAsk(body="x")

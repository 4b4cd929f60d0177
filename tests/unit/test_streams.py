"""Stream entries (config/streams.py): each kind round-trips through its fields, malformed
entries raise BadEntry (never a KeyError or a msgspec error), and the Lua scripts that write
entries use the Structs' field names."""

from __future__ import annotations

import re
from typing import Any

import pytest

from config import streams
from config.streams import (
    BusEntry,
    Command,
    DeadLetter,
    JobEntry,
    Presence,
    PresenceOp,
    Reply,
    Revocation,
    RightsLost,
)
from gateway.publish import PUBLISH_LUA
from workers import jobs


def _as_read(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """Fields as redis-py returns them from XREAD: bytes names and values."""
    return {k.encode(): v.encode() if isinstance(v, str) else v for k, v in fields.items()}


ENTRIES: list[tuple[Any, Any]] = [
    (streams.BUS, BusEntry("cohort:c1", "1-0", "x.y", b'{"a":1}', b"\x81\xa1a\x01")),
    (
        streams.COMMAND,
        Command("gw", "gw.1", "r1", "qa.ask", "live:1:2", "7", "student", True, {"b": "é"}, 5),
    ),
    (streams.REPLY, Reply("gw.1", "r1", True, {"question_id": 3})),
    (streams.REPLY, Reply("gw.1", "r1", False, code="already_voted", message="no")),
    (streams.PRESENCE, Presence(PresenceOp.LEAVE, "7", "live:1:2", "gw.1.4", 1732240000000)),
    (streams.REVOCATION, Revocation("abc")),
    (streams.RIGHTS_LOST, RightsLost("7", "3", 1732240000000)),
    (streams.JOB, JobEntry(b'{"submission_id":1}', 2)),
    (streams.DEAD_LETTER, DeadLetter(b"{}", 3, "1-0", "boom", 9)),
]


@pytest.mark.parametrize(("codec", "entry"), ENTRIES)
def test_round_trip(codec: Any, entry: Any) -> None:
    assert codec.decode(_as_read(codec.encode(entry))) == entry


def test_field_formats_are_the_documented_ones() -> None:
    """Text stays text, ints and bools are decimal text, anything else JSON."""
    cmd = Command("gw", "c", "r", "n", "", "u", "admin", False, {}, 12)
    assert streams.COMMAND.encode(cmd) == {
        "gw": "gw",
        "conn": "c",
        "ref": "r",
        "name": "n",
        "topic": "",
        "user": "u",
        "role": "admin",
        "staff": "0",
        "data": b"{}",
        "ts": "12",
        "id": "",  # the entry ID is Redis's: the consumer fills it in when it reads the entry
    }
    assert streams.JOB.names == ["p", "a"]


_PRESENCE = {b"op": b"join", b"user": b"u", b"topic": b"t", b"conn": b"c", b"ts": b"1"}


@pytest.mark.parametrize(
    ("codec", "fields"),
    [
        (streams.BUS, {b"p": b"t", b"i": b"1-0", b"t": b"x", b"d": b"{}"}),  # no m
        (streams.BUS, {b"p": b"\xff", b"i": b"1-0", b"t": b"x", b"d": b"{}", b"m": b""}),
        (streams.REVOCATION, {}),
        (streams.RIGHTS_LOST, {b"user": b"7", b"cohort": b"3", b"at": b"soon"}),
        (streams.PRESENCE, {**_PRESENCE, b"op": b"jump"}),
        (streams.PRESENCE, {**_PRESENCE, b"ts": b"x"}),
        (streams.JOB, {b"p": b"{}", b"a": b"two"}),
        (streams.REPLY, {b"r": b'{"conn": "c", "ref": "r", "ok": 1}'}),
        (streams.REPLY, {b"r": b"{not json"}),
        (streams.REPLY, {b"conn": b"c"}),
        (streams.COMMAND, {b"gw": b"g"}),
    ],
)
def test_malformed_entries_raise_bad_entry(codec: Any, fields: dict[bytes, bytes]) -> None:
    with pytest.raises(streams.BadEntry):
        codec.decode(fields)


def test_defaults_fill_missing_optional_fields() -> None:
    assert streams.JOB.decode({b"p": b"{}"}) == JobEntry(b"{}", 0)
    reply = streams.REPLY.decode({b"r": b'{"conn": "c", "ref": "r", "ok": false}'})
    assert reply == Reply("c", "r", False)


def _lua_xadd_fields(script: str, stream_arg: str) -> list[str]:
    """The field names of the XADD to ``stream_arg`` (e.g. KEYS[2]) in a Lua script."""
    match = re.search(rf"'XADD', {re.escape(stream_arg)},[^\n]*\n?[^\n]*", script)
    assert match is not None
    return re.findall(r"'([a-z]+)', (?:ARGV|id|j)", match.group(0))


def test_publish_script_writes_bus_entry_fields() -> None:
    assert _lua_xadd_fields(PUBLISH_LUA, "KEYS[2]") == streams.BUS.names


def test_retry_mover_writes_job_entry_fields() -> None:
    assert _lua_xadd_fields(jobs._MOVER_LUA, "KEYS[2]") == streams.JOB.names
    member = jobs._delayed_member(b'{"x":1}', 2, "k")
    assert member == b'{"k":"k","a":"2","p":"{\\"x\\":1}"}'


def test_the_bus_fast_path_agrees_with_the_codec() -> None:
    entry = BusEntry("cohort:c1", "1-0", "x.y", b'{"a":1}', b"\x81\xa1a\x01")
    fields = _as_read(streams.BUS.encode(entry))
    assert streams.decode_bus(fields) == streams.BUS.decode(fields) == entry
    for bad in ({k: v for k, v in fields.items() if k != b"m"}, {**fields, b"p": b"\xff"}):
        with pytest.raises(streams.BadEntry):
            streams.decode_bus(bad)

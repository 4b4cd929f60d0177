"""The event registry (workers/events.py) against docs/api.md's event table, and the wire shape
of the event Structs (the same maps the dicts they replaced sent)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from workers import events

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
TOPIC_PREFIX = {"user": "user:", "cohort": "cohort:", "staff": "staff:", "live": "live:"}


def _rows() -> list[list[str]]:
    """The cells of each row of the table under ``## Events`` (header and rule left out)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def _names(cell: str) -> list[str]:
    """Event names in a row's first cell: backticked words, not field lists."""
    return [n for n in re.findall(r"`([^`]+)`", cell) if not n.startswith("{")]


def _top_level_fields(text: str) -> set[str]:
    """Field names at the top level of every ``{...}`` group in ``text`` (``a: ...``,
    ``b?``, ``...`` skipped; nested groups and ``[...]`` lists are not descended into)."""
    fields: set[str] = set()
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char in "{[":
            if depth == 0 and char == "{":
                start = i + 1
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0 and char == "}":
                fields |= _split(text[start:i])
    return fields


def _split(group: str) -> set[str]:
    names, depth, part = set(), 0, ""
    for char in group + ",":
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        if char == "," and depth == 0:
            name = re.split(r"[:?\s]", part.strip(), maxsplit=1)[0]
            if name and name != "...":
                names.add(name)
            part = ""
        else:
            part += char
    return names


def _fields(cls: type[msgspec.Struct]) -> set[str]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.encode_name for f in info.fields}


def test_every_event_has_one_row_and_every_row_names_events() -> None:
    """An event added to the registry without a doc row fails here, as does a row for an event
    the registry does not have."""
    documented = [name for row in _rows() for name in _names(row[0])]
    assert sorted(documented) == sorted(set(documented)), "an event has two rows"
    assert set(documented) == set(events.EVENTS)


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row[0][:40])
def test_a_row_lists_only_fields_its_events_have(row: list[str]) -> None:
    """Every field a row shows in ``{...}`` is a field of one of the row's events' Structs,
    and the row names every kind of topic its events go to."""
    names = _names(row[0])
    known = set().union(*(_fields(events.EVENTS[n][0]) for n in names))
    # Route paths (`GET /cohorts/{id}/...`) are not field lists.
    text = re.sub(r"`[^`]*/[^`]*`", "", row[0] + " " + row[2])
    shown = _top_level_fields(text)
    assert shown <= known, f"{names}: the doc lists fields the Structs lack: {shown - known}"
    for name in names:
        for kind in events.EVENTS[name][1]:
            assert TOPIC_PREFIX[kind] in row[1], f"{name} goes to {kind}: topics, not documented"


def test_each_struct_is_the_data_of_one_event() -> None:
    """``events.to`` finds the type from the Struct, so no Struct may serve two events."""
    assert len(events.TYPE_OF) == len(events.EVENTS)
    assert events.to("user:1", events.CohortDeleted(cohort_id=1)) == (
        "user:1",
        "cohort.deleted",
        events.CohortDeleted(cohort_id=1),
    )


def test_to_refuses_a_struct_that_is_not_an_event() -> None:
    class NotAnEvent(msgspec.Struct):
        x: int

    with pytest.raises(KeyError):
        events.to("user:1", NotAnEvent(1))


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        # A field that was only sometimes in the dict stays out of the map while unset.
        (
            events.EnrollmentChanged(cohort_id=3, enrolled=True),
            b'{"cohort_id":3,"enrolled":true}',
        ),
        (
            events.EnrollmentChanged(cohort_id=3, kind="member", enrolled=False),
            b'{"cohort_id":3,"kind":"member","enrolled":false}',
        ),
        (events.PollVotes(poll_id=1, total=2), b'{"poll_id":1,"total":2}'),
        (
            events.ImportProgress(
                import_id=1, cohort_id=2, uploaded_by=None, processed=3, total=4, status="done"
            ),
            b'{"import_id":1,"cohort_id":2,"uploaded_by":null,"processed":3,"total":4,'
            b'"status":"done"}',
        ),
        (
            events.QuizResults(
                live_quiz_id=1, index=0, question_id="q", answered=2, outcomes={"correct": 1}
            ),
            b'{"live_quiz_id":1,"index":0,"question_id":"q","answered":2,"outcomes":{"correct":1}}',
        ),
        # A Python keyword on the wire.
        (
            events.ScreenshareSignal(kind="offer", payload={"sdp": "x"}, sender="7"),
            b'{"kind":"offer","payload":{"sdp":"x"},"from":"7"}',
        ),
        # None is sent, not left out (no omit_defaults).
        (
            events.RecordingStatus(state="live", url=None, by="7", at="t"),
            b'{"state":"live","url":null,"by":"7","at":"t"}',
        ),
    ],
)
def test_wire_shape(event: msgspec.Struct, wire: bytes) -> None:
    """The bytes the dicts these Structs replaced encoded to, keys in the same order; the
    MessagePack map has the same keys and values."""
    assert msgspec.json.encode(event) == wire
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(event)) == msgspec.json.decode(wire)

"""The offline-sync conflict rules as pure functions (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from api.routes_sync import SyncIn
from api.sync_apply import LessonComplete, NoteSave, QuizDraft, lww_applies, note_applies, op_type

T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_last_write_wins_only_when_strictly_newer() -> None:
    assert lww_applies(None, T)
    assert lww_applies(T, T + timedelta(microseconds=1))
    assert not lww_applies(T, T)  # a tie keeps the server's value
    assert not lww_applies(T, T - timedelta(seconds=1))


def test_content_edit_applies_only_on_the_server_version() -> None:
    assert note_applies(0, 0) and note_applies(3, 3)
    assert not note_applies(1, 0) and not note_applies(2, 3)


def test_operations_decode_by_type_tag() -> None:
    raw = (
        b'{"operations": [{"type": "lesson.complete", "key": "a", "client_ts":'
        b' "2026-01-05T12:00:00Z", "lesson_id": 3}, {"type": "note.save", "key": "b",'
        b' "client_ts": "2026-01-05T12:00:00+01:00", "lesson_id": 3, "body": "", '
        b'"base_version": 0}, {"type": "quiz.draft", "key": "c", "client_ts":'
        b' "2026-01-05T12:00:00Z", "quiz_id": 1, "answers": {"0": [1, 2]}}]}'
    )
    ops = msgspec.json.decode(raw, type=SyncIn).operations
    assert [type(o) for o in ops] == [LessonComplete, NoteSave, QuizDraft]
    assert [op_type(o) for o in ops] == ["lesson.complete", "note.save", "quiz.draft"]
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"operations": [{"type": "drop.table", "key": "x"}]}', type=SyncIn)

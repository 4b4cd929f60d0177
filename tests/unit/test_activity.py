"""How a person shows in the cohort activity feed (workers.activity): initials and names."""

from __future__ import annotations

from datetime import UTC, datetime

from workers.activity import actor, entry, initials


def test_initials_take_up_to_three_words() -> None:
    assert initials("Ada Lovelace") == "A. L."
    assert initials("ada king lovelace byron") == "A. K. L."
    assert initials("  Élodie   \u00a0Durand ") == "É. D."
    assert initials("\uff21\uff44\uff41") == "A."  # full-width letters fold (NFKC)
    assert initials("") == "?" and initials("-- !!") == "?"


def test_actor_follows_the_privacy_setting() -> None:
    assert actor("Ada Lovelace", "names") == "Ada Lovelace"
    assert actor("Ada Lovelace", "initials") == "A. L."
    # Anything unexpected renders the safer way.
    assert actor("Ada Lovelace", "surprise") == "A. L."


def test_entries_drop_the_subject_of_a_join() -> None:
    row = {
        "id": 1,
        "cohort_id": 2,
        "kind": "member.joined",
        "subject_id": 0,
        "subject_title": "",
        "created_at": datetime(2030, 1, 1, tzinfo=UTC),
        "display_name": "Ada Lovelace",
    }
    joined = entry(row, "initials")
    assert (joined.actor, joined.subject_id, joined.subject_title) == ("A. L.", None, None)
    done = entry(
        {**row, "kind": "lesson.completed", "subject_id": 9, "subject_title": "Streams"}, "names"
    )
    assert (done.actor, done.subject_id, done.subject_title) == ("Ada Lovelace", 9, "Streams")

"""Topic names: builders and the parser agree, and malformed names are refused."""

from __future__ import annotations

import pytest

from config import topics


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("user:u1", topics.Topic("user", "u1")),
        ("cohort:c-1", topics.Topic("cohort", "c-1")),
        ("staff:c_1.x", topics.Topic("staff", "c_1.x")),
        ("live:c1:s1", topics.Topic("live", "c1", "s1")),
    ],
)
def test_parse_valid(topic: str, parsed: topics.Topic) -> None:
    """The four topic kinds split into their parts."""
    assert topics.parse(topic) == parsed


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "user",
        "user:",
        "user:a:b",
        "live:c1",
        "live:c1:",
        "live::s1",
        "live:c1:s1:x",
        "room:c1",
        "USER:u1",
        "user:u 1",
        "user:u/1",
        "user:ü",
        "cohort:" + "c" * 200,
        "bad_topic",
    ],
)
def test_parse_malformed(topic: str) -> None:
    """Unknown kinds, wrong part counts, empty parts, odd characters and overlong names."""
    assert topics.parse(topic) is None


def test_builders_round_trip() -> None:
    """What the builders make, the parser reads back (cohort is empty only for user topics)."""
    assert topics.parse(topics.user_topic(7)) == topics.Topic("user", "7")
    assert topics.parse(topics.cohort_topic(3)) == topics.Topic("cohort", "3")
    assert topics.parse(topics.staff_topic("c3")) == topics.Topic("staff", "c3")
    live = topics.parse(topics.live_topic(3, 9))
    assert live == topics.Topic("live", "3", "9") and live.cohort == "3"
    assert topics.Topic("user", "u1").cohort == ""


def test_parse_live_only_accepts_live_topics() -> None:
    assert topics.parse_live("live:3:9") == topics.Topic("live", "3", "9")
    for topic in ("live:3", "cohort:3", "live::9", "live:3:9:1", ""):
        assert topics.parse_live(topic) is None

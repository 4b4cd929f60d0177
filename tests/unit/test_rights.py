"""Pure rules of gateway/rights.py: which cohorts a token loses after a removal."""

from __future__ import annotations

from gateway.auth import Claims
from gateway.rights import parse_lost, restrict, stale_cohorts


def _claims(iat: int, cohorts: set[str] = frozenset(), staff: set[str] = frozenset()) -> Claims:
    return Claims(
        sub="7",
        role="student",
        exp=iat + 900,
        iat=iat,
        sid="s",
        cohorts=frozenset(cohorts),
        staff=frozenset(staff),
    )


def test_a_token_issued_before_the_removal_loses_the_cohort() -> None:
    claims = _claims(1000, {"1", "2"}, {"3"})
    lost = {"1": 1_000_500, "3": 1_200_000}
    assert stale_cohorts(claims, lost) == {"1", "3"}
    out = restrict(claims, lost)
    assert out.cohorts == {"2"} and out.staff == frozenset()
    assert (out.sub, out.sid, out.iat, out.exp) == ("7", "s", 1000, 1900)


def test_same_second_counts_as_before_later_seconds_are_trusted() -> None:
    # Signed somewhere in second 1000: maybe before the removal at 1000.999, so it loses it.
    assert stale_cohorts(_claims(1000, {"1"}), {"1": 1_000_999}) == {"1"}
    assert stale_cohorts(_claims(1000, {"1"}), {"1": 1_000_000}) == {"1"}
    # Signed in a later second: built from the database after the removal (re-enrolled).
    assert stale_cohorts(_claims(1001, {"1"}), {"1": 1_000_999}) == set()


def test_unrelated_cohorts_and_no_removals_leave_the_claims_alone() -> None:
    claims = _claims(1000, {"1"})
    assert restrict(claims, {}) is claims
    assert restrict(claims, {"9": 2_000_000}) is claims


def test_parse_lost_skips_malformed_entries() -> None:
    raw = {b"1": b"1700000000000", b"2": b"x", "3": "12", b"4": "\u00b2".encode()}
    assert parse_lost(raw) == {"1": 1_700_000_000_000, "3": 12}

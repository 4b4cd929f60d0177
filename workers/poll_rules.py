"""Polls: choices, tallies and who sees which results; pure rules, no I/O (see
:mod:`workers.live_polls`; the settings are typed fields of
:class:`workers.live_commands.PollOpen`).

A poll is opened with (all optional, defaults in brackets):

* ``kind``: ``single`` (one option per voter) [default] or ``multiple`` (any non-empty set of
  distinct options);
* ``anonymous``: true [default]: nobody, staff included, sees who voted for what; false
  ("named"): staff's live tallies list the voters of each option by name;
* ``results``: when students see the per-option counts: ``live`` (while voting),
  ``after_close`` (as soon as it closes), ``on_reveal`` (when staff reveal it) [default] or
  ``never`` (staff only; revealing is refused);
* ``duration_s``: 5 to 3600 seconds after which the server closes the poll by itself; votes
  arriving after that moment are refused even if the close has not run yet.

Tallies count voters: ``total`` is the number of people who voted. For a single-choice poll
the percentages split 100 by largest remainder (they sum to exactly 100); for a
multiple-choice poll each option's percentage is the share of voters who ticked it, rounded
half up (they may sum past 100).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from workers.live_rules import Invalid
from workers.tallies import PollTally, largest_remainder

Kind = Literal["single", "multiple"]
Results = Literal["live", "after_close", "on_reveal", "never"]
KINDS: tuple[Kind, ...] = ("single", "multiple")
RESULTS: tuple[Results, ...] = ("live", "after_close", "on_reveal", "never")
DURATION_MIN_S = 5
DURATION_MAX_S = 3600
#: Polls of a session listed in the room's state (newest first).
HISTORY = 50


def _index(value: Any, option_count: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{name} must be an integer (the option's index)")
    if not 0 <= value < option_count:
        raise Invalid(f"{name} must be between 0 and {option_count - 1}")
    return value


def choices(option: Any, options: Any, option_count: int, kind: str) -> tuple[int, ...]:
    """The options a ``poll.vote`` picks, sorted: ``option`` (an index) for either kind, or
    ``options`` (a non-empty list of distinct indices) for a multiple-choice poll."""
    if options is not None:
        if kind != "multiple":
            raise Invalid("this poll takes one option: send option")
        raw = options
        if not isinstance(raw, list) or not raw:
            raise Invalid("options must be a non-empty list of option indices")
        if len(raw) > option_count:
            raise Invalid("options lists more choices than the poll has")
        picked = [_index(v, option_count, "options[]") for v in raw]
        if len(set(picked)) != len(picked):
            raise Invalid("options must not repeat")
        return tuple(sorted(picked))
    return (_index(option, option_count, "option"),)


def tally(
    counts_by_option: Mapping[int, int], voters: int, option_count: int, kind: str
) -> PollTally:
    """The tally from per-option counts and the number of distinct voters."""
    counts = [0] * option_count
    ignored = 0
    for option, n in counts_by_option.items():
        if 0 <= option < option_count:
            counts[option] += n
        else:
            ignored += n
    if kind == "multiple":
        percentages = [(200 * c + voters) // (2 * voters) if voters else 0 for c in counts]
    else:
        percentages = largest_remainder(counts)
    return PollTally(
        counts=tuple(counts), total=voters, percentages=tuple(percentages), ignored=ignored
    )


def students_see(results: str, state: str) -> bool:
    """Whether students may see the per-option counts of a poll in ``state``."""
    if results == "live":
        return True
    if results == "after_close":
        return state in ("closed", "revealed")
    if results == "on_reveal":
        return state == "revealed"
    return False


def may_reveal(results: str) -> bool:
    """``never`` polls keep their results with staff: revealing one is refused."""
    return results != "never"

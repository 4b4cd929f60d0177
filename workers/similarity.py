"""Whether a question was asked already: pure text similarity, no I/O.

A question is reduced to a set of content words (:func:`terms`): Unicode NFKC, case folding,
everything that is not a letter or a digit is a separator, common English function words are
dropped, and a plural or verb ending is trimmed (:func:`_stem`), so
"How do streams resume?" and "how does a stream resume" share {stream, resume}.

:func:`similarity` is the Jaccard index of two term sets (shared terms over all terms), in
[0, 1], symmetric, and 0 when either side has no terms. :func:`similar` ranks candidates by it
and keeps those at or above :data:`THRESHOLD`, best first (ties: the most voted, then the
newest). Guarantees: deterministic, never raises for any text, linear in the input length.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

#: Smallest similarity reported as "already asked".
THRESHOLD = 0.5
#: Matches returned at most.
LIMIT = 3
#: Text looked at per question (longer input is cut; a question is at most 1000 characters).
MAX_CHARS = 2000

_STOP_TEXT = """a an the and or but if then so of to in on at by for with from as into about over
is are was were be been being am do does did doing have has had having can could will would
shall should may might must i me my we our you your he she it its they them their this that
these those there here what which who whom whose when where why how not no yes any some all
just also very too than please"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def _stem(word: str) -> str:
    """A plural (or third-person) ending off: "queries" -> "query", "classes" -> "class",
    "streams" -> "stream"; words ending in ss, is, us ("class", "redis", "status") keep it."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


def terms(text: str) -> frozenset[str]:
    """The content words of ``text`` (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).casefold()
    cleaned = "".join(ch if ch.isalnum() else " " for ch in text)
    return frozenset(_stem(w) for w in cleaned.split() if w not in STOP_WORDS)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """The Jaccard index of two term sets; 0.0 when either is empty."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    body: str
    votes: int = 0


@dataclass(frozen=True, slots=True)
class Match:
    id: int
    body: str
    votes: int
    score: float


def similar(
    text: str, candidates: Iterable[Candidate], threshold: float = THRESHOLD, limit: int = LIMIT
) -> list[Match]:
    """The candidates at least ``threshold`` similar to ``text``, best first."""
    wanted = terms(text)
    found = []
    for c in candidates:
        score = similarity(wanted, terms(c.body))
        if score >= threshold:
            found.append(Match(id=c.id, body=c.body, votes=c.votes, score=round(score, 3)))
    found.sort(key=lambda m: (-m.score, -m.votes, -m.id))
    return found[:limit]

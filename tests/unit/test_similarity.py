"""The "similar question already asked" rule (workers.similarity): content words, Jaccard
similarity, ranking, and robustness against any text."""

from __future__ import annotations

from workers.similarity import Candidate, similar, similarity, terms


def test_terms_keep_content_words_folded_and_singular() -> None:
    assert terms("How do STREAMS resume?") == {"stream", "resume"}
    assert terms("how does a stream resume") == {"stream", "resume"}
    # Full-width letters fold (NFKC), punctuation separates, "class" keeps its double s.
    assert terms("\uff32\uff45\uff44\uff49\uff53-class, again!!") == {"redis", "class", "again"}
    assert terms("queries about classes and boxes, status") == {
        "query",
        "class",
        "box",
        "status",
    }
    assert terms("") == frozenset() and terms("is it the?") == frozenset()


def test_similarity_is_symmetric_bounded_and_zero_for_empty() -> None:
    a, b = terms("why use redis streams"), terms("why redis streams instead of pubsub")
    assert similarity(a, b) == similarity(b, a) == 2 / 5
    assert similarity(a, a) == 1.0
    assert similarity(a, frozenset()) == 0.0 and similarity(frozenset(), frozenset()) == 0.0


def test_similar_keeps_matches_above_the_threshold_best_first() -> None:
    board = [
        Candidate(1, "How do streams resume after a disconnect?", votes=1),
        Candidate(2, "When is the exam?", votes=9),
        Candidate(3, "Stream resume after disconnect: how?", votes=4),
        Candidate(4, "How does resume work for streams after disconnecting", votes=0),
    ]
    found = similar("how do streams resume after disconnect", board)
    # 1 and 3 share every term; 3 has more votes, so it comes first. 4 ("disconnecting",
    # "work") overlaps less; 2 shares nothing.
    assert [m.id for m in found] == [3, 1, 4]
    assert found[0].score == 1.0 and found[0].votes == 4
    assert similar("when is the exam", board)[0].id == 2
    assert similar("completely unrelated words here", board) == []
    assert len(similar("stream resume disconnect", board * 5)) == 3  # at most LIMIT


def test_similar_never_raises_for_odd_text() -> None:
    odd = ["\x00\x01", "🙂" * 3000, "a" * 100_000, " \u200b\ufeff ", "٣٤٥ ٣٤٥"]
    for text in odd:
        assert isinstance(similar(text, [Candidate(1, t) for t in odd]), list)

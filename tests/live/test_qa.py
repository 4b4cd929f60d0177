"""Live Q&A through real gateway connections: events reach the other members, the board order
follows workers.ranking, votes are once per user, and every refusal has its stable code."""

from __future__ import annotations

from tests.live.conftest import LiveRoom


async def test_ask_upvote_answer_pin_dismiss(live: LiveRoom) -> None:
    """A question asked by one student reaches another student's connection as qa.updated and
    qa.ranked; upvotes reorder the board; staff answer, pin and dismiss it."""
    alice, bob = await live.people(2)
    a = await live.connect(alice)
    b = await live.connect(bob)
    teacher = await live.connect(live.instructor)

    first = (await a.ok("qa.ask", {"body": "  What is a monad?  "}))["question_id"]
    ev = await b.event("qa.updated", lambda d: d["question"]["id"] == first)
    q = ev["data"]["question"]
    assert q["body"] == "What is a monad?" and q["user"] == str(alice.id) and q["votes"] == 0
    assert q["answered"] is False and q["pinned"] is False
    assert (await b.event("qa.ranked"))["data"] == {"order": [first]}

    second = (await b.ok("qa.ask", {"body": "Why Redis Streams?"}))["question_id"]
    # Equal votes: the newer question first (workers.ranking).
    assert (await a.event("qa.ranked", lambda d: second in d["order"]))["data"]["order"] == [
        second,
        first,
    ]

    # One upvote moves the older question to the top; a second upvote is refused.
    assert await b.ok("qa.upvote", {"question_id": first}) == {"question_id": first, "votes": 1}
    assert await b.error("qa.upvote", {"question_id": first}) == "already_voted"
    ev = await a.event(
        "qa.updated", lambda d: d["question"]["id"] == first and d["question"]["votes"] == 1
    )
    await a.event("qa.ranked", lambda d: d["order"] == [first, second])
    # Unvote restores the order; a second unvote is refused.
    assert (await b.ok("qa.unvote", {"question_id": first}))["votes"] == 0
    assert await b.error("qa.unvote", {"question_id": first}) == "not_voted"
    await a.event("qa.ranked", lambda d: d["order"] == [second, first])

    # An upvote that does not change the order updates the question without qa.ranked.
    await a.ok("qa.upvote", {"question_id": second})
    await b.event(
        "qa.updated", lambda d: d["question"]["id"] == second and d["question"]["votes"] == 1
    )

    # Staff: answering drops a question below the unanswered ones; pinning lifts it back.
    await teacher.ok("qa.answer", {"question_id": second, "answer": "A monoid in the category..."})
    ev = await b.event("qa.updated", lambda d: d["question"]["answered"])
    assert ev["data"]["question"]["answer"] == "A monoid in the category..."
    assert ev["data"]["question"]["answered_by"] == str(live.instructor.id)
    await b.event("qa.ranked", lambda d: d["order"] == [first, second])
    await teacher.ok("qa.pin", {"question_id": second})
    await b.event("qa.ranked", lambda d: d["order"] == [second, first])
    await teacher.ok("qa.unpin", {"question_id": second})
    await b.event("qa.ranked", lambda d: d["order"] == [first, second])
    await teacher.ok("qa.answer", {"question_id": first})  # answered out loud: no text
    ev = await b.event(
        "qa.updated", lambda d: d["question"]["id"] == first and d["question"]["answered"]
    )
    assert ev["data"]["question"]["answer"] is None
    # Both answered: the one with a vote first.
    await b.event("qa.ranked", lambda d: d["order"] == [second, first])

    await teacher.ok("qa.dismiss", {"question_id": second})
    await b.event("qa.ranked", lambda d: d["order"] == [first])
    assert await a.error("qa.upvote", {"question_id": second}) == "not_found"
    assert await teacher.error("qa.dismiss", {"question_id": second}) == "not_found"


async def test_qa_validation(live: LiveRoom) -> None:
    """Empty, blank, oversized, non-text and mistyped arguments; unknown and foreign ids."""
    student = await live.connect(await live.student())
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
        assert await student.error("qa.ask", data) == "invalid", data
    assert (await student.ok("qa.ask", {"body": "x" * 1000}))["question_id"] > 0
    for data in (
        {},
        {"question_id": "1"},
        {"question_id": True},
        {"question_id": -3},
        {"question_id": 1.5},
    ):
        assert await student.error("qa.upvote", data) == "invalid", data
    assert await student.error("qa.upvote", {"question_id": 2**62}) == "not_found"
    # A question of another session is not found in this one.
    other = await live.new_session()
    other_topic = f"live:{live.cohort}:{other}"
    qid = (await student.cmd("qa.ask", {"body": "elsewhere"}, topic=other_topic))["data"][
        "question_id"
    ]
    assert await student.error("qa.upvote", {"question_id": qid}) == "not_found"
    # Without a live topic, a room command has nowhere to go.
    assert await student.error("qa.ask", {"body": "hi"}, topic=None) == "bad_topic"
    assert (
        await student.error("qa.ask", {"body": "hi"}, topic=f"cohort:{live.cohort}") == "bad_topic"
    )


async def test_staff_commands_refuse_students(live: LiveRoom) -> None:
    """Every instructor command answers forbidden to a student (and changes nothing)."""
    student = await live.connect(await live.student())
    teacher = await live.connect(live.instructor)
    qid = (await student.ok("qa.ask", {"body": "q"}))["question_id"]
    poll = (await teacher.ok("poll.open", {"question": "?", "options": ["a", "b"]}))["poll_id"]
    refused = [
        ("qa.answer", {"question_id": qid, "answer": "x"}),
        ("qa.pin", {"question_id": qid}),
        ("qa.unpin", {"question_id": qid}),
        ("qa.dismiss", {"question_id": qid}),
        ("poll.open", {"question": "?", "options": ["a", "b"]}),
        ("poll.close", {"poll_id": poll}),
        ("poll.reveal", {"poll_id": poll}),
        ("broadcast", {"text": "hello"}),
        ("recording.set", {"state": "started"}),
        ("screenshare.signal", {"kind": "offer", "payload": {"sdp": "x"}}),
    ]
    for name, data in refused:
        assert await student.error(name, data) == "forbidden", name
    # The instructor does not vote in their own poll.
    assert await teacher.error("poll.vote", {"poll_id": poll, "option": 0}) == "forbidden"
    row = await live.api.db.fetchrow(
        "SELECT answered_at, pinned, dismissed FROM questions WHERE id = $1", qid
    )
    assert tuple(row) == (None, False, False)
    assert await live.api.db.fetchval("SELECT state FROM polls WHERE id = $1", poll) == "open"


async def test_other_cohort_and_wrong_room(live: LiveRoom) -> None:
    """A student of another cohort is refused at the gateway (subscribe and command); a topic
    whose cohort does not own the session is not found."""
    other_cohort = await live.new_cohort()
    outsider = (await live.people(1, cohort=other_cohort))[0]
    m = await live.connect(outsider, topics=[])
    ack = await m.subscribe(live.topic)
    assert ack["type"] == "error" and ack["code"] == "forbidden"
    assert await m.error("qa.ask", {"body": "let me in"}) == "forbidden"
    # Their own cohort's topic with this cohort's session id: the session is not theirs.
    wrong = f"live:{other_cohort}:{live.session}"
    assert await m.error("qa.ask", {"body": "sneaky"}, topic=wrong) == "not_found"
    assert await m.error("qa.ask", {"body": "x"}, topic=f"live:{other_cohort}:abc") == "not_found"
    assert (
        await live.api.db.fetchval(
            "SELECT count(*) FROM questions WHERE session_id = $1", live.session
        )
        == 0
    )


async def test_room_commands_need_a_live_session(live: LiveRoom) -> None:
    """Before the start and after the end, room commands answer session_not_live."""
    student = await live.connect(await live.student())
    scheduled = await live.new_session(start=False)
    topic = f"live:{live.cohort}:{scheduled}"
    for name, data in (
        ("qa.ask", {"body": "early"}),
        ("chat.send", {"body": "hi"}),
        ("react", {"emoji": "👍"}),
    ):
        assert await student.error(name, data, topic=topic) == "session_not_live", name
    status, _, _ = await live.api.request(
        "POST", f"/api/v1/sessions/{live.session}/end", headers=live.instructor.headers
    )
    assert status == 200
    assert await student.error("qa.ask", {"body": "late"}) == "session_not_live"


async def test_clear_answered_dismisses_only_answered_questions(live: LiveRoom) -> None:
    """Staff bulk-dismiss every answered question (pinned too) with one qa.cleared event and a
    new board; students are refused; a second call clears nothing and publishes nothing."""
    alice = await live.student()
    a = await live.connect(alice)
    teacher = await live.connect(live.instructor)
    ids = [(await a.ok("qa.ask", {"body": f"question {i}"}))["question_id"] for i in range(3)]
    await teacher.ok("qa.answer", {"question_id": ids[0], "answer": "yes"})
    await teacher.ok("qa.answer", {"question_id": ids[2]})
    await teacher.ok("qa.pin", {"question_id": ids[2]})
    await a.event("qa.ranked", lambda d: d["order"] == [ids[2], ids[1], ids[0]])

    assert await a.error("qa.clear_answered", {}) == "forbidden"
    assert await teacher.ok("qa.clear_answered", {}) == {"cleared": 2}
    ev = await a.event("qa.cleared")
    assert ev["data"]["question_ids"] == [ids[0], ids[2]]
    assert ev["data"]["by"] == str(live.instructor.id)
    await a.event("qa.ranked", lambda d: d["order"] == [ids[1]])
    assert await a.error("qa.upvote", {"question_id": ids[0]}) == "not_found"

    await a.drain()  # the earlier events still queued
    assert await teacher.ok("qa.clear_answered", {}) == {"cleared": 0}
    assert [f for f in await a.drain() if f.get("event") in ("qa.cleared", "qa.ranked")] == []

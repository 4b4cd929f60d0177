"""People in the live room: display names on questions, answers and chat for everyone,
anonymous questions that name nobody (in events and in the late joiner's state), and the
"similar question already asked" hint (qa.similar), with its refusals."""

from __future__ import annotations

from typing import Any

from tests.live.conftest import LiveRoom, Person


async def named(live: LiveRoom, person: Person, name: str) -> None:
    await live.api.db.execute("UPDATE users SET display_name = $2 WHERE id = $1", person.id, name)


async def state_of(live: LiveRoom, person: Person) -> Any:
    status, data, _ = await live.api.request(
        "GET", f"/api/v1/sessions/{live.session}/state", headers=person.headers
    )
    assert status == 200, data
    return data


async def test_everyone_sees_display_names_and_anonymous_questions_name_nobody(
    live: LiveRoom,
) -> None:
    alice, bob = await live.people(2)
    await named(live, alice, "Alice Ang")
    await named(live, bob, "Bob Brown")
    await named(live, live.instructor, "Iris Instructor")
    a = await live.connect(alice)
    b = await live.connect(bob)
    teacher = await live.connect(live.instructor)

    asked = (await a.ok("qa.ask", {"body": "Why Redis Streams?"}))["question_id"]
    q = (await b.event("qa.updated", lambda d: d["question"]["id"] == asked))["data"]["question"]
    assert (q["user"], q["name"], q["anonymous"]) == (str(alice.id), "Alice Ang", False)

    hidden = (await a.ok("qa.ask", {"body": "Is the exam hard?", "anonymous": True}))["question_id"]
    for member in (b, teacher):
        ev = await member.event("qa.updated", lambda d: d["question"]["id"] == hidden)
        q = ev["data"]["question"]
        assert (q["user"], q["name"], q["anonymous"]) == (None, None, True)
    # Upvoting an anonymous question keeps it anonymous in the new qa.updated.
    await b.ok("qa.upvote", {"question_id": hidden})
    ev = await teacher.event(
        "qa.updated", lambda d: d["question"]["id"] == hidden and d["question"]["votes"] == 1
    )
    assert ev["data"]["question"]["user"] is None and ev["data"]["question"]["name"] is None

    await teacher.ok("qa.answer", {"question_id": asked, "answer": "Resume by ID."})
    ev = await b.event("qa.updated", lambda d: d["question"]["answered"])
    assert ev["data"]["question"]["answered_by_name"] == "Iris Instructor"

    msg = (await b.ok("chat.send", {"body": "hello all"}))["message_id"]
    ev = await a.event("chat.message", lambda d: d["message"]["id"] == msg)
    assert ev["data"]["message"]["name"] == "Bob Brown"

    # The late joiner's state says the same, and tells the asker which questions are theirs.
    mine = {q["id"]: q for q in (await state_of(live, alice))["questions"]}
    theirs = {q["id"]: q for q in (await state_of(live, bob))["questions"]}
    assert mine[hidden]["mine"] is True and theirs[hidden]["mine"] is False
    assert theirs[hidden]["user"] is None and theirs[hidden]["name"] is None
    assert theirs[asked]["name"] == "Alice Ang" and mine[asked]["mine"] is True
    assert theirs[asked]["answered_by_name"] == "Iris Instructor"
    state = await state_of(live, bob)
    assert [m["name"] for m in state["chat"]] == ["Bob Brown"]

    # A late joiner also gets the link of a stopped recording (the state route used to drop it).
    url = "https://video.example.edu/rec/1"
    await teacher.ok("recording.set", {"state": "stopped", "url": url})
    assert (await state_of(live, bob))["recording"]["url"] == url

    assert await a.error("qa.ask", {"body": "x", "anonymous": "yes"}) == "invalid"
    assert await a.error("qa.ask", {"body": "x", "anonymous": 1}) == "invalid"


async def test_similar_questions_are_hinted_before_asking(live: LiveRoom) -> None:
    alice, bob = await live.people(2)
    a = await live.connect(alice)
    b = await live.connect(bob)
    first = (await a.ok("qa.ask", {"body": "How do streams resume after a disconnect?"}))[
        "question_id"
    ]
    last = (await a.ok("qa.ask", {"body": "When is the exam?"}))["question_id"]
    await a.event("qa.updated", lambda d: d["question"]["id"] == last)
    await b.event("qa.updated", lambda d: d["question"]["id"] == last)
    await a.drain()

    reply = await b.ok("qa.similar", {"body": "how does a stream resume after disconnect"})
    assert [m["question_id"] for m in reply["matches"]] == [first]
    assert reply["matches"][0]["body"] == "How do streams resume after a disconnect?"
    assert 0.5 <= reply["matches"][0]["score"] <= 1.0
    assert await b.ok("qa.similar", {"body": "lunch plans?"}) == {"matches": []}
    # Read-only: nobody got a Q&A event.
    assert [f for f in await a.drain() if f.get("event", "").startswith("qa.")] == []

    # A dismissed question is not hinted.
    teacher = await live.connect(live.instructor)
    await teacher.ok("qa.dismiss", {"question_id": first})
    assert await b.ok("qa.similar", {"body": "how do streams resume"}) == {"matches": []}

    for bad in ({}, {"body": ""}, {"body": "   "}, {"body": 7}, {"body": "x" * 1001}):
        assert await b.error("qa.similar", bad) == "invalid", bad
    assert await b.error("qa.similar", {"body": "nul\x00"}) == "invalid"

    ended = await live.new_session(start=False)
    topic = f"live:{live.cohort}:{ended}"
    await b.subscribe(topic)
    reply = await b.cmd("qa.similar", {"body": "streams"}, topic)
    assert reply["error"]["code"] == "session_not_live"
    other = await live.new_cohort()
    reply = await b.cmd("qa.similar", {"body": "streams"}, f"live:{other}:{live.session}")
    assert not reply["ok"] and reply["error"]["code"] in ("forbidden", "not_subscribed")

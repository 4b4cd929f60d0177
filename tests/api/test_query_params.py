"""Integer query parameters: anything but an in-range ASCII integer is a 400 naming the
parameter, never a 500 from int(), PostgreSQL or Redis (each case below was a 500)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.api.test_quizzes import create_quiz, make_class

BIG = str(10**20)  # past bigint: PostgreSQL refused it
SUPERSCRIPT_TWO = "%C2%B2"  # "²": str.isdigit() says yes, int() says no


@pytest.mark.parametrize("value", [BIG, SUPERSCRIPT_TWO, "1%0A", "x", "0", "-1"])
async def test_list_parameters_of_announcements_and_notifications(api: Api, value: str) -> None:
    c = await make_class(api)
    for path, name in (
        (f"/api/v1/cohorts/{c.cohort}/announcements?before={value}", "before"),
        (f"/api/v1/cohorts/{c.cohort}/announcements?limit={value}", "limit"),
        (f"/api/v1/notifications?before={value}", "before"),
        (f"/api/v1/notifications?limit={value}", "limit"),
    ):
        status, data, _ = await api.request("GET", path, c.students[0])
        assert status == 400, (path, data)
        assert data["error"]["code"] == "invalid_field"
        assert data["error"]["details"]["field"] == name


@pytest.mark.parametrize("value", [str(2**63 - 1), BIG, str(10**7), SUPERSCRIPT_TWO, "-1"])
async def test_leaderboard_offset(api: Api, value: str) -> None:
    c = await make_class(api)
    path = f"/api/v1/cohorts/{c.cohort}/leaderboard?offset={value}"
    status, data, _ = await api.request("GET", path, c.students[0])
    assert status == 400, data
    assert data["error"]["details"]["field"] == "offset"


@pytest.mark.parametrize("value", [SUPERSCRIPT_TWO, BIG, "%D9%A1", "0"])
async def test_submissions_user_id(api: Api, value: str) -> None:
    c = await make_class(api)
    quiz = await create_quiz(api, c)
    path = f"/api/v1/quizzes/{quiz['id']}/submissions?user_id={value}"
    status, data, _ = await api.request("GET", path, c.teacher)
    assert status == 400, data
    assert data["error"]["details"]["field"] == "user_id"


async def test_good_values_still_work(api: Api) -> None:
    c = await make_class(api)
    quiz = await create_quiz(api, c)
    for path in (
        f"/api/v1/cohorts/{c.cohort}/announcements?before={2**63 - 1}&limit=1000",
        f"/api/v1/cohorts/{c.cohort}/leaderboard?offset=999999&limit=5",
        f"/api/v1/quizzes/{quiz['id']}/submissions?user_id={c.students[0].id}",
        "/api/v1/notifications?before=%2B5&limit=",
    ):
        status, data, _ = await api.request("GET", path, c.teacher)
        assert status == 200, (path, data)

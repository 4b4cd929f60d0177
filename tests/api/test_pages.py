"""The browser pages as HTTP resources: served by the API with validators, cache headers that
let a deploy show at once, and a Content-Security-Policy that names the gateway."""

from __future__ import annotations

import re

from tests.api.conftest import Api


async def test_pages_are_revalidated_and_carry_the_csp(api: Api) -> None:
    for path in ("/", "/student", "/live", "/instructor"):
        status, _, resp = await api.request("GET", path)
        assert status == 200, path
        assert resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-cache"
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert f":{api.settings.gateway_port}" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        etag = resp.headers["ETag"]
        status, _, resp = await api.request("GET", path, headers={"If-None-Match": etag})
        assert status == 304


async def test_assets_linked_with_their_hash_are_immutable(api: Api) -> None:
    async with api.client.get("/student") as resp:
        html = await resp.text()
    links = re.findall(r'"(/static/[a-z]+\.(?:js|css)\?v=[0-9a-f]+)"', html)
    assert {link.split("?")[0] for link in links} == {"/static/app.css", "/static/student.js"}
    for link in links:
        status, _, resp = await api.request("GET", link)
        assert status == 200
        assert "immutable" in resp.headers["Cache-Control"]
    # Without the version (a module importing another), always revalidated.
    status, _, resp = await api.request("GET", "/static/lectern.js")
    assert status == 200
    assert resp.content_type == "text/javascript"
    assert resp.headers["Cache-Control"] == "no-cache"
    status, _, resp = await api.request("GET", "/static/lectern.js?v=stale")
    assert resp.headers["Cache-Control"] == "no-cache"


async def test_unknown_static_files_are_404(api: Api) -> None:
    for path in ("/static/nope.js", "/static/..%2Fapp.py", "/static/.env"):
        status, body, _ = await api.request("GET", path)
        assert status == 404, path
        assert body["error"]["code"] == "not_found"


async def test_config_tells_the_pages_where_the_gateway_is(api: Api) -> None:
    status, body, resp = await api.request("GET", "/config.json")
    assert status == 200
    assert body["gateway_url"].endswith(f":{api.settings.gateway_port}")
    assert body["gateway_url"].startswith("http://")
    assert resp.headers["Cache-Control"] == "no-cache"

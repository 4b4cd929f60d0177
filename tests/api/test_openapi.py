"""The OpenAPI document is generated from the same declarations as the router."""

from __future__ import annotations

from aiohttp import web

from tests.api.conftest import Api


async def test_document_lists_exactly_the_api_routes(api: Api) -> None:
    status, doc, _ = await api.request("GET", "/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    app: web.Application = api.client.app  # type: ignore[assignment]
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1")
        and route.method != "HEAD"
    }
    assert registered, "no /api/v1 routes registered"
    assert documented == registered


async def test_schemas_resolve_and_errors_are_described(api: Api) -> None:
    _, doc, _ = await api.request("GET", "/api/v1/openapi.json")
    schemas = doc["components"]["schemas"]
    assert "ErrorBody" in schemas
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    ref = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in schemas
    assert "security" not in login
    assert doc["paths"]["/api/v1/me"]["get"]["security"] == [{"bearer": []}]
    params = doc["paths"]["/api/v1/lessons/{id}"]["get"]["parameters"]
    assert params[0]["name"] == "id" and params[0]["schema"]["type"] == "integer"
    text = str(doc)
    for name in set(text.split("#/components/schemas/")[1:]):
        assert name.split("'")[0] in schemas

"""Routes are declared once, here, and the OpenAPI 3.1 document is generated from them.

A route module does::

    def setup(app: web.Application) -> None:
        r = Routes(app, tag="lessons")
        r.get("/api/v1/lessons/{id}", get_lesson, summary="A lesson", response=LessonOut,
              auth="member")

``Routes.add`` registers the aiohttp route *and* its description (method, path, summary,
request and response types, auth), so the document at ``/api/v1/openapi.json`` cannot drift
from the router: a test checks that every ``/api/v1`` route is documented and vice versa.
Schemas come from ``msgspec.json.schema_components``, so a Struct is the single definition of a
body. ``auth`` documents who may call the route (``none``, ``user``, ``member``, ``staff``,
``admin``); the handler still enforces it through :mod:`api.deps`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["none", "user", "member", "staff", "admin"]

_AUTH_TEXT = {
    "none": "No authentication.",
    "user": "Any signed-in user.",
    "member": "Members and staff of the cohort, and admins.",
    "staff": "Staff of the cohort, and admins.",
    "admin": "Admins only.",
}
_PARAM = re.compile(r"\{([_a-zA-Z][_a-zA-Z0-9]*)\}")
_REF = "#/components/schemas/{name}"


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(msgspec.Struct):
    """Every error response: 4xx and 5xx alike."""

    error: ErrorDetail


class RouteDoc(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    summary: str
    tag: str
    auth: Auth = "user"
    request: Any = None
    response: Any = None
    status: int = 200
    request_content_type: str = "application/json"
    response_content_type: str = "application/json"
    query: tuple[tuple[str, str], ...] = ()


#: Every route declared with :class:`Routes`, in registration order; plus the cached document.
ROUTE_DOCS = web.AppKey("route_docs", list)
_DOCUMENT = web.AppKey("openapi_document", dict)


def init(app: web.Application) -> None:
    app[ROUTE_DOCS] = []
    app[_DOCUMENT] = {}


class Routes:
    """Declares one module's routes on ``app``; every route is documented."""

    def __init__(self, app: web.Application, tag: str) -> None:
        self.app = app
        self.tag = tag

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        summary: str,
        auth: Auth = "user",
        request: Any = None,
        response: Any = None,
        status: int = 200,
        request_content_type: str = "application/json",
        response_content_type: str = "application/json",
        query: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.app.router.add_route(method, path, handler)
        doc = RouteDoc(
            method=method.upper(),
            path=path,
            summary=summary,
            tag=self.tag,
            auth=auth,
            request=request,
            response=response,
            status=status,
            request_content_type=request_content_type,
            response_content_type=response_content_type,
            query=query,
        )
        self.app[ROUTE_DOCS].append(doc)

    def get(self, path: str, handler: Handler, **kw: Any) -> None:
        self.add("GET", path, handler, **kw)

    def post(self, path: str, handler: Handler, **kw: Any) -> None:
        self.add("POST", path, handler, **kw)

    def put(self, path: str, handler: Handler, **kw: Any) -> None:
        self.add("PUT", path, handler, **kw)

    def patch(self, path: str, handler: Handler, **kw: Any) -> None:
        self.add("PATCH", path, handler, **kw)

    def delete(self, path: str, handler: Handler, **kw: Any) -> None:
        self.add("DELETE", path, handler, **kw)


def _operation_id(method: str, path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", f"{method.lower()}_{path.removeprefix('/api/v1/')}").strip(
        "_"
    )


def _param(name: str) -> dict[str, Any]:
    integer = name == "id" or name.endswith("_id")
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1} if integer else {"type": "string"},
    }


def build_document(docs: list[RouteDoc], title: str = "Lectern API") -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``docs``."""
    types: list[Any] = [ErrorBody]
    for d in docs:
        for t in (d.request, d.response):
            if t is not None and t is not bytes and t not in types:
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)

    def schema_of(t: Any) -> Any:
        return {"type": "string"} if t is bytes else schemas[types.index(t)]

    error_ref = {"$ref": _REF.format(name="ErrorBody")}
    paths: dict[str, dict[str, Any]] = {}
    for d in docs:
        op: dict[str, Any] = {
            "summary": d.summary,
            "description": _AUTH_TEXT[d.auth],
            "tags": [d.tag],
            "operationId": _operation_id(d.method, d.path),
        }
        params = [_param(name) for name in _PARAM.findall(d.path)]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
            for name, kind in d.query
        ]
        if params:
            op["parameters"] = params
        if d.auth != "none":
            op["security"] = [{"bearer": []}]
        if d.request is not None:
            schema = schema_of(d.request)
            op["requestBody"] = {
                "required": True,
                "content": {d.request_content_type: {"schema": schema}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if d.response is not None:
            schema = schema_of(d.response)
            ok["content"] = {d.response_content_type: {"schema": schema}}
        op["responses"] = {
            str(d.status): ok,
            "4XX": {
                "description": "Client error",
                "content": {"application/json": {"schema": error_ref}},
            },
        }
        paths.setdefault(d.path, {})[d.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    cache = request.app[_DOCUMENT]
    if "body" not in cache:
        cache["body"] = msgspec.json.encode(build_document(request.app[ROUTE_DOCS]))
    return web.Response(body=cache["body"], content_type="application/json")


def setup(app: web.Application) -> None:
    Routes(app, "meta").get(
        "/api/v1/openapi.json", openapi_handler, summary="This OpenAPI document", auth="none"
    )

"""The browser pages, served from ``api/static`` next to the client library ``lectern.js``.

Routes: ``/`` (login), ``/student`` (dashboard), ``/live?session=ID`` (live room),
``/instructor`` (cohort view and controls), ``/enroll`` (staff: enroll from a CSV file);
``/static/{name}`` for the assets (the pages too, as ``name.html``); ``/config.json`` tells the
pages where the gateway is. None of them is under ``/api/v1``, so they stay out of the OpenAPI
document.

**Caching.** Files are read once, at start-up, into memory (they are small). Every response has
a strong ``ETag`` (a hash of the content) and answers ``If-None-Match`` with 304. Pages and
``/config.json`` are ``no-cache`` (revalidated on every load, so a deploy shows at once). A page
names its stylesheet and script with ``?v=<hash>``, and an asset asked for with its current hash
is ``immutable`` for a year; without ``v`` (modules imported by modules) it is ``no-cache``.

**Headers.** A Content-Security-Policy that allows scripts and styles from this origin only (no
inline script, no style attribute) and connections to this origin and the gateway: a second
line of defence behind the pages' rule of rendering every user-supplied text with
``textContent``. Also ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
``X-Frame-Options: DENY``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from api.state import SETTINGS
from config.settings import Settings

STATIC_DIR = Path(__file__).with_name("static")
PAGES = {
    "/": "index.html",
    "/student": "student.html",
    "/live": "live.html",
    "/instructor": "instructor.html",
    "/enroll": "enroll.html",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
_ASSET_REF = re.compile(r'(?P<attr>(?:src|href)=")/static/(?P<name>[A-Za-z0-9_.-]+)"')


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    etag: str
    content_type: str


ASSETS = web.AppKey("page_assets", dict)


def _etag(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def load_assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file of ``directory`` by name; pages get ``?v=<hash>`` on their asset links."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        kind = TYPES.get(path.suffix)
        if kind is None or not path.is_file():
            continue
        body = path.read_bytes()
        assets[path.name] = Asset(body, _etag(body), kind)
    for name, asset in list(assets.items()):
        if not name.endswith(".html"):
            continue

        def versioned(m: re.Match[str]) -> str:
            target = assets.get(m["name"])
            suffix = f"?v={target.etag}" if target else ""
            return f'{m["attr"]}/static/{m["name"]}{suffix}"'

        body = _ASSET_REF.sub(versioned, asset.body.decode()).encode()
        assets[name] = Asset(body, _etag(body), asset.content_type)
    return assets


def gateway_url(settings: Settings, request: web.Request) -> str:
    """Where browsers reach the gateway: ``public_gateway_url`` (ws:// spelled http://), or the
    host this page was loaded from on the gateway port."""
    url = settings.public_gateway_url.strip().rstrip("/")
    if url:
        if url.startswith("ws"):
            url = "http" + url[2:]
        return url.removesuffix("/ws")
    host = request.url.host or settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{settings.gateway_port}"


def security_headers(gateway: str) -> dict[str, str]:
    parts = urlsplit(gateway)
    origin = f"{parts.scheme}://{parts.netloc}"
    ws_origin = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {origin} {ws_origin}; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def _respond(request: web.Request, asset: Asset, cache: str) -> web.Response:
    etag = f'"{asset.etag}"'
    headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if asset.content_type.startswith("text/html"):
        headers.update(security_headers(gateway_url(request.app[SETTINGS], request)))
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


async def page(request: web.Request) -> web.Response:
    asset = request.app[ASSETS][PAGES[request.path]]
    return _respond(request, asset, NO_CACHE)


async def static_file(request: web.Request) -> web.Response:
    asset = request.app[ASSETS].get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    version = request.query.get("v")
    cache = IMMUTABLE if version == asset.etag else NO_CACHE
    return _respond(request, asset, cache)


async def page_config(request: web.Request) -> web.Response:
    body = msgspec.json.encode({"gateway_url": gateway_url(request.app[SETTINGS], request)})
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"Cache-Control": NO_CACHE, "X-Content-Type-Options": "nosniff"},
    )


def setup(app: web.Application) -> None:
    app[ASSETS] = load_assets()
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/config.json", page_config)

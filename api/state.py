"""Typed application state of the API (aiohttp ``web.AppKey``), set up by :mod:`api.app`."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from api.passwords import Hasher
from config.settings import Settings
from gateway.auth import Claims
from gateway.publish import Publisher

SETTINGS = web.AppKey("settings", Settings)
#: Set by the cleanup context: available in handlers, not at route-registration time.
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
PUBLISHER = web.AppKey("publisher", Publisher)
HASHER = web.AppKey("hasher", Hasher)

#: Per-request values (aiohttp >= 3.14).
REQUEST_ID = web.RequestKey("request_id", str)
CLAIMS = web.RequestKey("claims", Claims)

"""Login throttling that an attacker cannot turn against the account's owner.

Only **failed** logins count; a successful one is never held against anyone. Three counters,
each a fixed window of ``login_window_s`` that starts at its first failure:

* **(account, IP)**: ``login_failures_per_account_ip`` failures of one account from one client
  IP lock that pair only. Guessing from one address is slow; everyone else is unaffected.
  A successful login from that IP clears its count.
* **IP**: ``login_failures_per_ip`` failures from one IP across all accounts (password
  spraying) lock that IP.
* **Account**: ``login_failures_per_account`` failures of one account from all IPs together
  (a distributed guess) lock the account, **except** for IPs that signed in to it successfully
  within ``login_trusted_ip_ttl_s``: the owner's usual addresses keep working, so a botnet that
  cannot sign in as the owner cannot keep them out either. The price: during such an attack the
  owner cannot sign in from a new address until the window ends.

The account is named by its normalised email whether or not it exists, so the limits reveal
nothing about which emails have accounts. Limits are checked before the password is verified
and failures recorded after; concurrent guesses can overshoot a limit by at most the number
of password checks running at once (``password_hash_concurrency`` per API process).
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings


class Refusal(msgspec.Struct, frozen=True):
    """Why a login is refused before its password is checked, and for how long."""

    scope: str
    retry_after_s: int


def _keys(email: str, ip: str) -> tuple[str, str, str]:
    return (
        keys.login_limit_key("ip", ip),
        keys.login_limit_key("account-ip", f"{ip}|{email}"),
        keys.login_limit_key("account", email),
    )


async def check(redis: aioredis.Redis, settings: Settings, email: str, ip: str) -> Refusal | None:
    """``None`` when a login of ``email`` from ``ip`` may be tried now."""
    ip_key, pair_key, account_key = _keys(email, ip)
    pipe = redis.pipeline(transaction=False)
    for key in (ip_key, pair_key, account_key):
        pipe.get(key)
        pipe.ttl(key)
    pipe.exists(keys.login_trusted_key(email, ip))
    ip_n, ip_ttl, pair_n, pair_ttl, account_n, account_ttl, trusted = await pipe.execute()
    checks = (
        ("ip", ip_n, ip_ttl, settings.login_failures_per_ip),
        ("account_ip", pair_n, pair_ttl, settings.login_failures_per_account_ip),
        ("account", account_n, account_ttl, settings.login_failures_per_account),
    )
    for scope, count, ttl, limit in checks:
        if scope == "account" and trusted:
            continue
        if count is not None and int(count) >= limit:
            return Refusal(scope, max(1, int(ttl)))
    return None


async def failed(redis: aioredis.Redis, settings: Settings, email: str, ip: str) -> None:
    """Count one failed login in all three windows."""
    pipe = redis.pipeline(transaction=True)
    for key in _keys(email, ip):
        pipe.set(key, 0, ex=settings.login_window_s, nx=True)
        pipe.incr(key)
    await pipe.execute()


async def succeeded(redis: aioredis.Redis, settings: Settings, email: str, ip: str) -> None:
    """Clear this IP's failures on the account and trust the IP for it from now on."""
    _, pair_key, _ = _keys(email, ip)
    pipe = redis.pipeline(transaction=True)
    pipe.delete(pair_key)
    pipe.set(keys.login_trusted_key(email, ip), 1, ex=settings.login_trusted_ip_ttl_s)
    await pipe.execute()

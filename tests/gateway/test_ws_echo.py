"""``/ws-echo``, the conformance endpoint (gateway/wsecho.py): absent unless ``ws_echo`` is on,
and when on, the real connection core with messages echoed."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from pathlib import Path

import aiohttp
import pytest

from benchmarks.conformance import SLOW_GROUPS, summarize
from gateway import wsframe
from tests.gateway.clients import RawWs, http_request, until, ws_headers
from tests.gateway.conftest import Gateway, GatewayFactory


async def test_the_echo_endpoint_is_absent_by_default(gateway: Gateway) -> None:
    assert not gateway.hub.settings.ws_echo
    response = await http_request(gateway.port, "/ws-echo", ws_headers())
    assert response.status == 404


async def test_echo_through_the_connection_core(make_gateway: GatewayFactory) -> None:
    """Text and binary messages come back as they were sent, pings are answered, a client
    close with any valid code gets 1000, and the connection is unregistered afterwards."""
    gw = await make_gateway(ws_echo=True, dev_mode=True)
    url = f"ws://127.0.0.1:{gw.port}/ws-echo"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, autoping=False)
        await until(lambda: len(gw.hub.ws) == 1)
        await ws.send_str("héllo")
        await ws.send_bytes(b"\x00\xff")
        await ws.ping(b"p")
        received = [await ws.receive(timeout=5) for _ in range(3)]
        assert [(m.type, m.data) for m in received] == [
            (aiohttp.WSMsgType.TEXT, "héllo"),
            (aiohttp.WSMsgType.BINARY, b"\x00\xff"),
            (aiohttp.WSMsgType.PONG, b"p"),
        ]
        await ws.close(code=4000)
        assert ws.close_code == 1000
    await until(lambda: not gw.hub.ws)


async def test_echo_reassembles_fragments_and_fails_invalid_utf8(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(ws_echo=True, dev_mode=True)
    ws = await RawWs.connect(gw.port, "", path="/ws-echo")
    try:
        await ws.send(wsframe.OP_TEXT, "κό".encode(), fin=False)
        await ws.send(wsframe.OP_PING, b"between")
        await ws.send(wsframe.OP_CONT, "σμε".encode(), fin=True)
        assert await ws.recv() == (wsframe.OP_PONG, b"between")
        assert await ws.recv() == (wsframe.OP_TEXT, "κόσμε".encode())
        await ws.send(wsframe.OP_TEXT, b"\xce\xba\xed\xa0\x80")  # a UTF-16 surrogate
        opcode, payload = await ws.recv()
        assert opcode == wsframe.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1007
        assert await ws.at_eof()
    finally:
        ws.close()
    await until(lambda: not gw.hub.ws)


@pytest.mark.one_loop
@pytest.mark.timeout(300)
async def test_autobahn_cases_pass_on_the_echo(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The RFC 6455 conformance run (benchmarks.conformance, docs/benchmarks.md) as a test:
    the Autobahn cases outside 9.*, 12.* and 13.*, run by kosoku in a child process (its
    runtime stays out of the test process) against /ws-echo under the shipped limits, and
    none fails."""
    gw = await make_gateway(ws_echo=True, dev_mode=True)
    out = tmp_path / "rows.json"
    argv = ["-m", "benchmarks.conformance", "--drive", f"ws://127.0.0.1:{gw.port}/ws-echo"]
    argv += ["--out", str(out), *(f"--exclude={g}" for g in SLOW_GROUPS)]
    proc = await asyncio.create_subprocess_exec(sys.executable, *argv)
    try:
        await asyncio.wait_for(proc.wait(), 280)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    summary = summarize(json.loads(out.read_text()))
    assert summary["cases"] == 247 and summary["failed_cases"] == []
    assert summary["unimplemented"] == 0
    await until(lambda: not gw.hub.ws)

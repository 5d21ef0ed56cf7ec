"""A customer's callback endpoint for the tests: a real HTTP server that checks every signature with an
HMAC computed here (not the relay's code) and counts callbacks per message."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    body: dict
    verified: bool
    at: float


@dataclass
class Endpoint:
    secrets: list[str]
    # path -> (how many times this event was seen before) -> status code to answer
    behaviour: Callable[[str, int], int]
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def verify(self, header: str, raw: bytes) -> bool:
        fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
        stamps = [v for k, v in fields if k == "t"]
        if len(stamps) != 1 or abs(time.time() - int(stamps[0])) > 300:
            return False
        given = {v for k, v in fields if k == "v1"}
        for secret in self.secrets:
            mac = hmac.new(secret.encode("utf-8"), stamps[0].encode() + b"." + raw, hashlib.sha256)
            if mac.hexdigest() in given:
                return True
        return False

    def by_message(self, path: str | None = None) -> dict[str, list[Received]]:
        with self.lock:
            found: dict[str, list[Received]] = {}
            for r in self.received:
                if path is None or r.path == path:
                    found.setdefault(r.body["id"], []).append(r)
            return found

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.received if r.path == path)


@contextmanager
def serving(endpoint: Endpoint) -> Iterator[Endpoint]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.loads(raw)
            verified = endpoint.verify(self.headers.get("X-Relay-Signature", ""), raw)
            with endpoint.lock:
                seen = sum(1 for r in endpoint.received if r.body["event_id"] == body["event_id"])
                endpoint.received.append(Received(self.path, body, verified, time.monotonic()))
            if endpoint.delay_s:
                time.sleep(endpoint.delay_s)
            code = endpoint.behaviour(self.path, seen) if verified else 401
            try:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the relay gave up waiting
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()

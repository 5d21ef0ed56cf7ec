"""A customer's callback endpoint for the benchmarks, in a process of its own so its work does not
slow the benchmark's client: it checks every signature with an HMAC computed here (not the relay's
code), answers 204 (401 when the signature is wrong), and notes when each callback arrived.

`python -m bench.callback_sink --port PORT --secret SECRET`; `GET /received` answers
`{"callbacks": [[message id, status, received at (epoch s), verified], ...]}`, `POST /reset` forgets them.
Only 127.0.0.1; it stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import signal
import time

import orjson

from simulator.http11 import HttpServer, Request, Response, json_response

SIGNATURE_HEADER = "x-relay-signature"
MAX_SKEW_S = 300


def verified(header: str, raw: bytes, secret: bytes) -> bool:
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in fields if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(time.time() - int(stamps[0])) > MAX_SKEW_S:
        return False
    expected = hmac.new(secret, stamps[0].encode() + b"." + raw, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in fields)


class Sink:
    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self.received: list[tuple[str, str, float, bool]] = []

    async def handle(self, request: Request) -> Response:
        at = time.time()
        if request.method == "GET" and request.path == "/received":
            return json_response(200, {"callbacks": self.received})
        if request.method == "POST" and request.path == "/reset":
            self.received = []
            return json_response(200, {})
        ok = verified(request.headers.get(SIGNATURE_HEADER, ""), request.body, self._secret)
        try:
            body = orjson.loads(request.body)
            self.received.append((str(body["id"]), str(body["status"]), at, ok))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return json_response(400, {"error": "not a callback"})
        return Response(status=204 if ok else 401)


async def serve(port: int, secret: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = HttpServer(host="127.0.0.1", port=port, handler=Sink(secret).handle)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.secret))


if __name__ == "__main__":
    main()

"""wrk as the one load generator of the Kannel comparison: its Lua scripts, its runs and its output.

wrk (a C load generator, Debian package `wrk`) costs far less CPU per request than any Python client, so
on a shared 2-core machine the servers measured, not the client, set the rate. Every request carries one
message with a text of its own; the recipients cycle through `NUMBERS` numbers, as one-time codes and
alerts go to the same users again and again. A script's `done` prints one `WRKJSON {...}` line: the
figures are read from it, not from wrk's human summary.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"
NUMBERS = 1000
MARKER = "WRKJSON "

# Every thread numbers its requests itself; `tid` keeps two threads' texts apart.
_COMMON = """
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local counter = 0
local function next_message()
  counter = counter + 1
  return string.format("+3161%07d", counter % {numbers}), string.format("code %d-%d", tid or 0, counter)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

_RELAY = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
function request()
  local to, text = next_message()
  local body = string.format('{{"to": "%s", "from": "Bench", "body": "%s"}}', to, text)
  return wrk.format(nil, "/v1/messages", nil, body)
end
"""

_KANNEL = """
function request()
  local to, text = next_message()
  local path = "/cgi-bin/sendsms?{credentials}&from=Bench&to=" .. to:gsub("%+", "%%2B") ..
    "&text=" .. text:gsub(" ", "+")
  return wrk.format("GET", path)
end
"""


def relay_script(key: str) -> str:
    """POST /v1/messages, one JSON message per request, with the tenant's API key."""
    return _COMMON.format(numbers=NUMBERS, marker=MARKER) + _RELAY.format(key=key)


def kannel_script(username: str, password: str) -> str:
    """Kannel's sendsms GET, one message per request."""
    credentials = urllib.parse.urlencode({"username": username, "password": password})
    return _COMMON.format(numbers=NUMBERS, marker=MARKER) + _KANNEL.format(credentials=credentials)


@dataclass(frozen=True, slots=True, kw_only=True)
class WrkResult:
    requests: int  # answered requests, whatever their status
    failed: int  # answered with a status >= 400
    errors: int  # connect, read, write errors and timeouts
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def accepted(self) -> int:
        return self.requests - self.failed

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "failed": self.failed,
            "errors": self.errors,
            "seconds": round(self.duration_s, 3),
            "accepted_per_s": round(self.accepted_per_s, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }


def parse_output(text: str) -> WrkResult:
    """The figures of the `WRKJSON` line a script's `done` printed; ValueError if there is none."""
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise ValueError(f"no {MARKER.strip()} line in wrk's output:\n{text[-1500:]}")
    data = json.loads(line[len(MARKER) :])
    return WrkResult(
        requests=int(data["requests"]),
        failed=int(data["status"]),
        errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
        duration_s=int(data["duration_us"]) / 1e6,
        p50_ms=int(data["p50_us"]) / 1000,
        p99_ms=int(data["p99_us"]) / 1000,
    )


def combine(results: list[WrkResult]) -> WrkResult:
    """Several wrk processes run at once as one load: their counts add up over the longest duration."""
    return WrkResult(
        requests=sum(r.requests for r in results),
        failed=sum(r.failed for r in results),
        errors=sum(r.errors for r in results),
        duration_s=max((r.duration_s for r in results), default=0.0),
        p50_ms=max((r.p50_ms for r in results), default=0.0),
        p99_ms=max((r.p99_ms for r in results), default=0.0),
    )


def wrk_binary() -> str:
    """Path of wrk; SystemExit with how to install it if it is missing."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(INSTALL_HINT)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    url: str  # http://127.0.0.1:port (the script names the path)
    script: Path
    connections: int
    threads: int


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_loads(loads: list[Load], *, duration_s: float) -> tuple[WrkResult, float]:
    """Run one wrk per load at once for `duration_s`; their combined figures and the CPU seconds the wrk
    processes used (read from the reaped children's usage: nothing else of ours ends meanwhile)."""
    binary = wrk_binary()
    before_s = _children_cpu_s()
    procs = [
        await asyncio.create_subprocess_exec(
            binary,
            "-t",
            str(load.threads),
            "-c",
            str(load.connections),
            "-d",
            f"{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(load.script),
            load.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for load in loads
    ]
    began = time.monotonic()
    outputs = []
    for proc in procs:
        remaining = max(1.0, duration_s + 30.0 - (time.monotonic() - began))
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=remaining)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        outputs.append(parse_output(out.decode(errors="replace")))
    return combine(outputs), _children_cpu_s() - before_s

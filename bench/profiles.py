"""Sampling profiles of running relay processes with py-spy, reduced to the functions that own the time.

py-spy (`pip install py-spy`, in the dev extras) samples another process's Python stacks from outside,
so the process profiled runs its ordinary code, and `--nonblocking` keeps it from being paused for each
sample. Its raw output is one `frame;frame;...;leaf count` line per distinct stack; a function's own
time is the share of the samples whose innermost frame it is.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 10
RATE_HZ = 97  # not a multiple of the event loop's timers, so the samples do not beat with them
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::\d+)?\)$")
_LIBRARY_ROOT = re.compile(r"^.*/(?:site-packages|lib/python3\.\d+)/")
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1]) + "/"


def py_spy() -> str | None:
    """py-spy beside this interpreter (a virtualenv's bin) or on the PATH; None if neither."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    """`handle (/…/site-packages/h11/_connection.py:412)` -> `handle (h11/_connection.py)`: one entry
    per function, its path from the package or project root."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = _LIBRARY_ROOT.sub("", match["path"]).removeprefix(_PROJECT_ROOT)
    return f"{match['function']} ({path})"


def own_time(raw: str, *, top: int = TOP) -> dict[str, Any]:
    """The `top` functions by own-time share of py-spy's raw (collapsed stacks) output."""
    leaves: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaves[_frame_name(stack.rsplit(";", 1)[-1])] += int(count)
    total = sum(leaves.values())
    return {
        "samples": total,
        "top_own": [{"function": name, "share": round(n / total, 3)} for name, n in leaves.most_common(top)],
    }


async def record(pid: int, *, seconds: float, output: Path, subprocesses: bool = False) -> dict[str, Any]:
    """Sample process `pid` (and its children with `subprocesses`) for `seconds`; its top functions."""
    binary = py_spy()
    if binary is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    args = [binary, "record", "-p", str(pid), "-d", f"{max(1, round(seconds))}", "-r", str(RATE_HZ)]
    args += ["-f", "raw", "-o", str(output), "--nonblocking"]
    if subprocesses:
        args.append("--subprocesses")
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=seconds + 30)
    raw = _read(output)
    if proc.returncode != 0 or raw is None:
        return {"skipped": f"py-spy exited {proc.returncode}: {out.decode(errors='replace')[-500:]}"}
    return own_time(raw)


def _read(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.exists() else None

"""The spool file: order, persistence across reopen, one file per process, orphans found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingress.spool import Spool, SpoolEntry, SpoolLock, claim_spool_file, spool_file, spool_files
from shared.broker import Fate


def entry(n: int) -> SpoolEntry:
    return SpoolEntry(message_id=f"m{n}", routing_key="a", headers={"x-relay-attempt": 0}, body=b"%d" % n)


async def test_append_head_remove_keep_order_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool(path=path).open()
    await spool.append([entry(n) for n in range(5)])
    await spool.append([entry(n) for n in range(5, 8)])
    assert spool.backlog == 8 and spool.changed.is_set()
    head = await spool.head(3)
    assert [s.entry.message_id for s in head] == ["m0", "m1", "m2"]
    assert head[0].entry.headers == {"x-relay-attempt": 0} and head[0].entry.body == b"0"
    await spool.settle([(head[0].seq, Fate.CONFIRMED), (head[2].seq, Fate.CONFIRMED)])
    await spool.close()

    reopened = await Spool(path=path).open()
    assert reopened.backlog == 6
    assert [s.entry.message_id for s in await reopened.head(100)] == ["m1", "m3", "m4", "m5", "m6", "m7"]
    await reopened.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    import asyncio

    spool = await Spool(path=tmp_path / "spool.db").open()
    await asyncio.gather(*(spool.append([entry(n)]) for n in range(200)))
    assert spool.backlog == 200
    assert len(await spool.head(1000)) == 200
    await spool.close()


def test_each_process_claims_its_own_file_and_a_dead_ones_file_is_free(tmp_path: Path) -> None:
    base = tmp_path / "relay-spool.db"
    first = claim_spool_file(base)
    second = claim_spool_file(base)
    assert first.path == base and second.path == spool_file(base, 1) == tmp_path / "relay-spool.1.db"
    assert SpoolLock.try_acquire(base) is None  # held
    second.release()
    third = claim_spool_file(base)
    assert third.path == second.path
    third.release()
    first.release()

    # A lock held by another process is released by the kernel when that process dies.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from ingress.spool import claim_spool_file;"
            f"lock = claim_spool_file(Path({str(base)!r})); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert SpoolLock.try_acquire(base) is None
    finally:
        holder.kill()
        holder.wait()
    lock = SpoolLock.try_acquire(base)
    assert lock is not None
    lock.release()


def test_spool_files_lists_siblings_only(tmp_path: Path) -> None:
    base = tmp_path / "relay-spool.db"
    for path in (base, spool_file(base, 1), spool_file(base, 12), tmp_path / "relay-spool.x.db"):
        path.write_bytes(b"")
    assert spool_files(base) == [base, spool_file(base, 1), spool_file(base, 12)]

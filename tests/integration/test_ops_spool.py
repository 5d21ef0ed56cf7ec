"""`relay spool show` and `relay spool drain` on real spool files against the real broker: a file left by
a replica that never comes back is drained in order of arrival, marked entries as possible duplicates; a
file a live process holds is refused; the exit code says whether the file is empty afterwards."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from ingress.spool import Spool, SpoolEntry, SpoolLock, summarize
from ops.context import EXIT_BROKER, EXIT_CHECK_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from shared.envelope import H_ATTEMPT, H_ORIGIN, H_POSSIBLE_DUPLICATE, H_SITE, H_SITE_ATTEMPT, encode_job
from shared.model import Job
from shared.topology import site_queue
from tests.helpers import free_port
from tests.ingress_helpers import drain
from tests.integration.ops_support import invoke_relay, relay_env

pytestmark = pytest.mark.integration


def job(n: int) -> Job:
    now = time.time()
    return Job(
        id=f"{n:032x}",
        tenant="t",
        to="+31612345678",
        sender="S",
        body=f"m{n}",
        accepted_at=now,
        expires_at=now + 600,
    )


async def left_behind(path: Path, entries: list[tuple[Job, str, bool]]) -> None:
    """A spool file as a replica leaves it when it dies: (job, site, maybe sent before) in order."""
    spool = await Spool(path=path).open()
    await spool.append(
        [
            SpoolEntry(
                message_id=j.id,
                routing_key=site,
                headers={H_ATTEMPT: 0, H_SITE_ATTEMPT: 0, H_SITE: site, H_ORIGIN: site},
                body=encode_job(j),
                maybe_sent=marked,
            )
            for j, site, marked in entries
        ]
    )
    await spool.close()


async def relay(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(invoke_relay, args, env=env)


async def test_drain_forwards_an_orphaned_spool_in_order_marking_what_may_be_queued(
    tmp_path: Path, broker_url: str, prefix: str, store_url: str, broker_cleanup: None
) -> None:
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)
    path = tmp_path / "replica-b.spool.db"
    jobs = [job(n) for n in range(8)]
    entries = [(j, "a" if n % 3 else "b", n % 2 == 0) for n, j in enumerate(jobs)]
    await left_behind(path, entries)

    shown = await relay(["spool", "show", str(path), "--json"], env)
    assert shown.returncode == EXIT_OK, shown.stderr
    summary = json.loads(shown.stdout)
    assert (summary["backlog"], summary["marked"], summary["in_use"]) == (8, 4, False)
    assert summary["by_site"] == {"a": 5, "b": 3}
    assert 0 <= summary["oldest_age_s"] < 60

    drained = await relay(["spool", "drain", str(path), "--json"], env)
    assert drained.returncode == EXIT_OK, drained.stderr
    assert json.loads(drained.stdout) == {
        "path": str(path),
        "before": 8,
        "marked": 4,
        "drained": 8,
        "left": 0,
    }
    assert summarize(path).backlog == 0
    for site in ("a", "b"):
        wanted = [(j.id, marked) for j, s, marked in entries if s == site]
        got = await drain(broker_url, site_queue(prefix, site), expect=len(wanted), timeout_s=5)
        # In order of arrival, one copy each, the mark exactly where the spool had it.
        assert [(q.job.id, bool(q.headers.get(H_POSSIBLE_DUPLICATE))) for q in got] == wanted
        assert all(q.persistent and q.message_id == q.job.id for q in got)


async def test_drain_refuses_a_file_a_live_process_holds_and_changes_nothing(
    tmp_path: Path, broker_url: str, prefix: str, store_url: str, broker_cleanup: None
) -> None:
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)
    path = tmp_path / "live.spool.db"
    await left_behind(path, [(job(1), "a", False)])
    lock = SpoolLock.try_acquire(path)  # as the ingress that owns the file holds it
    assert lock is not None
    try:
        refused = await relay(["spool", "drain", str(path)], env)
        shown = await relay(["spool", "show", str(path), "--json"], env)
    finally:
        lock.release()
    assert refused.returncode == EXIT_USAGE
    assert "is in use" in refused.stderr
    assert json.loads(shown.stdout)["in_use"] is True
    assert summarize(path).backlog == 1

    missing = await relay(["spool", "drain", str(tmp_path / "nothing.db")], env)
    assert missing.returncode == EXIT_NOT_FOUND
    assert not (tmp_path / "nothing.db").exists()


async def test_drain_exits_non_zero_when_the_file_is_not_emptied(
    tmp_path: Path, broker_url: str, prefix: str, store_url: str, broker_cleanup: None
) -> None:
    path = tmp_path / "orphan.spool.db"
    # The second entry is for a site this configuration does not route: the broker returns it and it
    # stays in the file; the others of its batch are confirmed and gone.
    await left_behind(path, [(job(1), "a", False), (job(2), "gone", False), (job(3), "a", False)])
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)
    partial = await relay(["spool", "drain", str(path), "--json"], env)
    assert partial.returncode == EXIT_CHECK_FAILED, partial.stderr
    result = json.loads(partial.stdout)
    assert (result["drained"], result["left"]) == (2, 1)
    assert summarize(path).by_site == {"gone": 1}

    unreachable = {**env, "RELAY_BROKER__URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    away = await relay(["spool", "drain", str(path)], unreachable)
    assert away.returncode == EXIT_BROKER, away.stderr
    assert summarize(path).backlog == 1

"""`relay dead ...` against a real migrated SQLite store and the real RabbitMQ, run as a child process."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import pty
import select
import subprocess
import time
from datetime import timedelta

import aio_pika
import pytest

from shared.envelope import H_ATTEMPT, H_ORIGIN, H_REPLAY, H_SITE, H_SITE_ATTEMPT, decode_jobs
from shared.store.models import Report, utcnow
from shared.topology import site_queue
from tests.helpers import RELAY, free_port
from tests.integration.ops_support import (
    attempt_row,
    dead_row,
    fetch_dead,
    fetch_message,
    insert,
    invoke_relay,
    make_job,
    message_row,
    relay_env,
    run_relay,
)

pytestmark = pytest.mark.integration

BOX_CHARACTERS = set("│┃─━┏┓┗┛╭╮╰╯┡┩")


@pytest.fixture
def env(broker_url: str, prefix: str, store_url: str) -> dict[str, str]:
    return relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)


async def relay(args: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(invoke_relay, args, env=env)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def get_all(broker_url: str, queue_name: str, *, wait_s: float = 2.0) -> list[aio_pika.IncomingMessage]:
    """Everything in a queue now (acked), waiting briefly for the first one."""
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        got: list[aio_pika.IncomingMessage] = []
        deadline = time.monotonic() + wait_s
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                if got or time.monotonic() > deadline:
                    return got
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            got.append(message)


async def test_list_filters_json_and_table(store_url: str, env: dict[str, str]) -> None:
    acme = [make_job() for _ in range(3)]
    other = make_job(tenant="globex")
    old = make_job()
    await insert(
        store_url,
        [
            *(dead_row(job, dead_ago=timedelta(minutes=i + 1)) for i, job in enumerate(acme)),
            dead_row(other, site="b", reason="expired", detail="validity passed"),
            dead_row(old, reason="attempts-exhausted", attempts=12, dead_ago=timedelta(days=3)),
        ],
    )

    everything = await relay(["dead", "list", "--json"], env=env)
    assert everything.returncode == 0, everything.stderr
    rows = json_lines(everything.stdout)
    assert {r["id"] for r in rows} == {j.id for j in [*acme, other, old]}
    assert rows[-1]["id"] == old.id  # newest first
    assert all("counts" not in r for r in rows)

    async def ids(*args: str) -> set[str]:
        result = await relay(["dead", "list", "--json", *args], env=env)
        assert result.returncode == 0, result.stderr
        return {r["id"] for r in json_lines(result.stdout)}

    assert await ids("--reason", "rejected") == {j.id for j in acme}
    assert await ids("--site", "b") == {other.id}
    assert await ids("--tenant", "globex") == {other.id}
    assert await ids("--since", "1d") == {j.id for j in [*acme, other]}
    assert await ids("--limit", "2") == {acme[0].id, acme[1].id}  # dead 1 and 2 minutes ago: the newest

    table = await relay(["dead", "list"], env=env)
    assert table.returncode == 0, table.stderr
    for job in [*acme, other, old]:
        assert job.id in table.stdout
    assert "5 shown of 5 matching" in table.stdout
    assert "attempts-exhausted 1, expired 1, rejected 3" in table.stdout
    # Into a pipe: plain lines, a header and one line per dead letter, no box drawn around them.
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "tenant",
        "site",
        "reason",
        "attempts",
        "dead",
        "at",
        "(UTC)",
        "replayed",
    ]
    assert lines[1].split()[:4] == [acme[0].id, "acme", "a", "rejected"]
    assert not BOX_CHARACTERS & set(table.stdout)


async def test_every_site_filter_must_name_a_known_site(store_url: str, env: dict[str, str]) -> None:
    job = make_job()
    await insert(store_url, [dead_row(job, site="gone")])  # a site taken out of the configuration since
    for command in (
        ["dead", "list"],
        ["dead", "export"],
        ["dead", "purge", "--older-than", "1d", "--yes"],
        ["dead", "replay", "--all", "--dry-run"],
    ):
        unknown = await relay([*command, "--site", "zz"], env=env)
        assert unknown.returncode == 2, (command, unknown.stdout, unknown.stderr)
        assert unknown.stderr == "relay: --site: unknown site 'zz'; configured sites: a, b\n"
        assert unknown.stdout == ""
        known = await relay([*command, "--site", "gone"], env=env)
        assert known.returncode == 0, (command, known.stderr)
    listed = await relay(["dead", "list", "--json", "--site", "gone"], env=env)
    assert [row["id"] for row in json_lines(listed.stdout)] == [job.id]


async def test_show_masks_unless_revealed(store_url: str, env: dict[str, str]) -> None:
    job = make_job(to="+31687654321")
    await insert(
        store_url,
        [
            dead_row(job, reason="rejected", detail="24: invalid destination", attempts=2),
            message_row(job),
            attempt_row(job, site="a", attempt=1, outcome="unavailable", detail="503", ago_s=30),
            attempt_row(
                job, site="b", attempt=2, outcome="rejected", detail="24: invalid destination", ago_s=10
            ),
        ],
    )
    shown = await relay(["dead", "show", job.id, "--json"], env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["reason"] == "rejected"
    assert data["message"]["to"] == "+316******21"
    assert data["message"]["body"] == f"<{len(job.body)} chars>"
    assert job.body not in shown.stdout and job.to not in shown.stdout
    assert [(a["site"], a["outcome"], a["detail"]) for a in data["attempt_history"]] == [
        ("a", "unavailable", "503"),
        ("b", "rejected", "24: invalid destination"),
    ]

    revealed = json.loads((await relay(["dead", "show", job.id, "--json", "--reveal"], env=env)).stdout)
    assert revealed["message"]["to"] == job.to
    assert revealed["message"]["body"] == job.body

    table = await relay(["dead", "show", job.id], env=env)
    assert table.returncode == 0, table.stderr
    assert "24: invalid destination" in table.stdout
    assert job.body not in table.stdout
    assert ["reason", "rejected"] in [line.split() for line in table.stdout.splitlines()]
    assert not BOX_CHARACTERS & set(table.stdout)


async def test_show_lists_the_delivery_reports_of_a_dead_message(store_url: str, env: dict[str, str]) -> None:
    """An ambiguous attempt may have reached the handset after all: its report shows beside the attempts."""
    job = make_job()
    await insert(
        store_url,
        [
            dead_row(job, reason="attempts-exhausted", detail="timeout", attempts=1),
            message_row(job),
            attempt_row(job, site="a", attempt=1, outcome="ambiguous", detail="timeout", ago_s=30),
            Report(
                key="k" * 64,
                message_id=job.id,
                attempt=1,
                site="a",
                platform="smpp",
                state="delivered",
                platform_status="DELIVRD",
                error_code="000",
                platform_id="0000002a",
                received_at=utcnow(),
                raw="id:0000002a stat:DELIVRD err:000",
                matched=True,
            ),
        ],
    )
    data = json.loads((await relay(["dead", "show", job.id, "--json"], env=env)).stdout)
    assert [(r["attempt"], r["site"], r["status"], r["platform_status"]) for r in data["reports"]] == [
        (1, "a", "delivered", "DELIVRD")
    ]
    table = await relay(["dead", "show", job.id], env=env)
    assert "delivery reports:" in table.stdout and "DELIVRD" in table.stdout


async def test_replay_publishes_the_job_once_and_refuses_a_second(
    store_url: str, env: dict[str, str], broker_url: str, prefix: str, broker_cleanup: None
) -> None:
    job = make_job(expires_in_s=-120)  # expired: the replay must carry a fresh validity
    await insert(store_url, [dead_row(job, reason="expired"), message_row(job, status="expired")])

    before_s = time.time()
    result = await relay(["dead", "replay", job.id], env=env)
    assert result.returncode == 0, result.stderr
    assert "replayed 1 (a 1)" in result.stdout

    [message] = await get_all(broker_url, site_queue(prefix, "a"))
    [replayed] = decode_jobs(message.body)
    assert message.message_id == job.id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (replayed.id, replayed.to, replayed.body, replayed.tenant) == (
        job.id,
        job.to,
        job.body,
        job.tenant,
    )
    original_validity_s = job.expires_at - job.accepted_at
    assert replayed.expires_at >= before_s + original_validity_s - 1
    assert message.headers[H_ATTEMPT] == 0 and message.headers[H_SITE_ATTEMPT] == 0
    assert message.headers[H_SITE] == "a" and message.headers[H_ORIGIN] == "a"
    assert message.headers[H_REPLAY] == 1

    dead = await fetch_dead(store_url, job.id)
    assert dead is not None and dead.replayed_at is not None
    assert (dead.replay_count, dead.replayed_to_site) == (1, "a")
    stored = await fetch_message(store_url, job.id)
    assert stored is not None and stored.status == "accepted"

    again = await relay(["dead", "replay", job.id], env=env)
    assert again.returncode == 2
    assert "already replayed" in again.stderr and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert await get_all(broker_url, site_queue(prefix, "a"), wait_s=0.3) == []

    forced = await relay(["dead", "replay", job.id, "--force", "--to-site", "b"], env=env)
    assert forced.returncode == 0, forced.stderr
    [moved] = await get_all(broker_url, site_queue(prefix, "b"))
    assert moved.message_id == job.id and moved.headers[H_REPLAY] == 2 and moved.headers[H_SITE] == "b"
    dead = await fetch_dead(store_url, job.id)
    assert dead is not None and (dead.replay_count, dead.replayed_to_site) == (2, "b")


async def test_replay_all_with_filters_and_dry_run(
    store_url: str, env: dict[str, str], broker_url: str, prefix: str, broker_cleanup: None
) -> None:
    rejected = [make_job() for _ in range(4)]
    expired = make_job()
    await insert(store_url, [*(dead_row(j) for j in rejected), dead_row(expired, site="b", reason="expired")])
    dry = await relay(["dead", "replay", "--all", "--reason", "rejected", "--dry-run"], env=env)
    assert dry.returncode == 0, dry.stderr
    assert "4 would be replayed" in dry.stdout
    assert all(f"would replay {j.id} to site a" in dry.stdout for j in rejected)
    assert (await fetch_dead(store_url, rejected[0].id)).replayed_at is None  # type: ignore[union-attr]

    result = await relay(["dead", "replay", "--all", "--reason", "rejected"], env=env)
    assert result.returncode == 0, result.stderr
    got = await get_all(broker_url, site_queue(prefix, "a"))
    assert sorted(m.message_id for m in got) == sorted(j.id for j in rejected)
    assert (await fetch_dead(store_url, expired.id)).replayed_at is None  # type: ignore[union-attr]

    # Already replayed ones are left out of a second --all.
    again = await relay(["dead", "replay", "--all", "--reason", "rejected"], env=env)
    assert again.returncode == 0 and "replayed 0" in again.stdout


async def test_replay_refuses_unknown_site_and_bad_arguments(
    store_url: str, env: dict[str, str], broker_cleanup: None
) -> None:
    job = make_job()
    await insert(store_url, [dead_row(job, site="gone")])
    result = await relay(["dead", "replay", job.id], env=env)
    assert result.returncode == 2 and "not configured" in result.stderr
    assert (await fetch_dead(store_url, job.id)).replayed_at is None  # type: ignore[union-attr]
    in_bulk = await relay(["dead", "replay", "--all"], env=env)
    assert in_bulk.returncode == 2
    assert "refused 1" in in_bulk.stdout and "not configured" in in_bulk.stderr
    assert (await fetch_dead(store_url, job.id)).replayed_at is None  # type: ignore[union-attr]
    both = await relay(["dead", "replay", job.id, "--all"], env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    bad_site = await relay(["dead", "replay", job.id, "--to-site", "z"], env=env)
    assert bad_site.returncode == 2 and "--to-site" in bad_site.stderr


async def test_purge_asks_unless_yes(store_url: str, env: dict[str, str]) -> None:
    old = [make_job() for _ in range(2)]
    recent = make_job()
    await insert(
        store_url,
        [
            *(dead_row(j, dead_ago=timedelta(days=10)) for j in old),
            dead_row(recent, dead_ago=timedelta(hours=1)),
        ],
    )
    refused = await relay(["dead", "purge", "--older-than", "7d"], env=env)  # stdin is not a terminal
    assert refused.returncode == 2
    assert "without --yes" in refused.stderr
    assert await fetch_dead(store_url, old[0].id) is not None

    done = await relay(["dead", "purge", "--older-than", "7d", "--yes"], env=env)
    assert done.returncode == 0, done.stderr
    assert "deleted 2 dead letters" in done.stdout
    assert await fetch_dead(store_url, old[0].id) is None
    assert await fetch_dead(store_url, recent.id) is not None


async def test_export_jsonl_and_csv_of_thousands(store_url: str, env: dict[str, str]) -> None:
    jobs = [make_job(to=f"+3161{i:07d}") for i in range(3000)]
    await insert(store_url, [dead_row(j, dead_ago=timedelta(seconds=i)) for i, j in enumerate(jobs)])
    expected = {j.id for j in jobs}

    jsonl = await relay(["dead", "export", "--format", "jsonl"], env=env)
    assert jsonl.returncode == 0, jsonl.stderr
    records = json_lines(jsonl.stdout)
    assert len(records) == 3000 and {r["id"] for r in records} == expected
    assert records[0]["dead_at"] <= records[-1]["dead_at"]  # oldest first
    assert all(r["job"]["to"].count("*") == 6 for r in records)
    assert "+31610000000" not in jsonl.stdout

    as_csv = await relay(["dead", "export", "--format", "csv", "--reveal"], env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(table) == 3000 and {r["id"] for r in table} == expected
    first = next(r for r in table if r["id"] == jobs[0].id)
    assert json.loads(first["job"])["to"] == jobs[0].to
    assert first["reason"] == "rejected" and first["replayed_at"] == ""


async def test_errors_are_one_line_with_exit_codes(
    store_url: str, env: dict[str, str], broker_url: str, prefix: str
) -> None:
    job = make_job()
    await insert(store_url, [dead_row(job)])

    missing = await relay(["dead", "show", "0" * 32], env=env)
    assert missing.returncode == 3 and "no dead letter" in missing.stderr
    missing_replay = await relay(["dead", "replay", job.id, "f" * 32], env=env)
    assert missing_replay.returncode == 3 and "f" * 32 in missing_replay.stderr
    assert (await fetch_dead(store_url, job.id)).replayed_at is None  # type: ignore[union-attr]

    bad_since = await relay(["dead", "list", "--since", "2 fortnights"], env=env)
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
    assert len(bad_since.stderr.strip().splitlines()) == 1

    bad_reason = await relay(["dead", "list", "--reason", "lost"], env=env)
    assert bad_reason.returncode == 2 and "--reason" in bad_reason.stderr

    closed = free_port()
    no_store = {**env, "RELAY_STORE__URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/none"}
    # The last two through a child process: `relay` itself prints the one line and exits with the code.
    store_down = run_relay(["dead", "list"], env=no_store)
    assert store_down.returncode == 5, store_down.stderr
    assert store_down.stderr.startswith("relay: the store cannot be reached")
    assert len(store_down.stderr.strip().splitlines()) == 1

    no_broker = {**env, "RELAY_BROKER__URL": f"amqp://guest:guest@127.0.0.1:{closed}/"}
    broker_down = run_relay(["dead", "replay", job.id], env=no_broker)
    assert broker_down.returncode == 4, broker_down.stderr
    assert broker_down.stderr.startswith("relay: cannot connect to the broker")
    assert len(broker_down.stderr.strip().splitlines()) == 1
    assert (await fetch_dead(store_url, job.id)).replayed_at is None  # type: ignore[union-attr]


def converse_on_a_terminal(args: list[str], *, env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run `relay` with a pseudo-terminal as stdin/stdout, answer its prompt, return (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RELAY, *args], env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal: it has exited
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(master, answer)
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=10), seen.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


async def test_purge_on_a_terminal_asks_and_a_no_deletes_nothing(store_url: str, env: dict[str, str]) -> None:
    old = make_job()
    await insert(store_url, [dead_row(old, dead_ago=timedelta(days=30))])

    code, seen = converse_on_a_terminal(["dead", "purge", "--older-than", "7d"], env=env, answer=b"n\n")
    assert "Delete 1 dead letters" in seen
    assert code == 1 and "nothing deleted" in seen
    assert await fetch_dead(store_url, old.id) is not None

    code, seen = converse_on_a_terminal(["dead", "purge", "--older-than", "7d"], env=env, answer=b"y\n")
    assert code == 0 and "deleted 1 dead letters" in seen
    assert await fetch_dead(store_url, old.id) is None

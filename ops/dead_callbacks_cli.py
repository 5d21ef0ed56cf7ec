"""`relay dead ... --kind callback`: callbacks that kept failing, listed, shown and replayed.

A replay publishes the callback again (confirmed) with its tries counted from zero, under the same event
id, and marks it replayed; one that fails again is a dead callback again.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer

from ops import output
from ops.context import settings
from ops.store_access import open_store, run
from shared.broker import ConfirmedPublisher, connect
from shared.callbacks.wire import CallbackJob, encode_callback
from shared.envelope import H_CALLBACK_ATTEMPT
from shared.errors import BrokerUnavailable, PermanentError
from shared.settings import Settings
from shared.store.callbacks import (
    DeadCallback,
    get_dead_callback,
    list_dead_callbacks,
    mark_callbacks_replayed,
)
from shared.topology import CALLBACK_KEY, callbacks_exchange, declare, topology_from

MESSAGE = "message"
CALLBACK = "callback"
KIND_OPTION = typer.Option(MESSAGE, "--kind", metavar="message|callback", help="Dead messages or callbacks.")
LIST_COLUMNS = ("event id", "message", "tenant", "status", "reason", "tries", "dead at", "url")


def check_kind(kind: str, **message_only: object) -> bool:
    """Whether `kind` asks for callbacks; refuses options that only select dead messages."""
    if kind not in (MESSAGE, CALLBACK):
        raise PermanentError(f"--kind is {MESSAGE} or {CALLBACK}, not {kind!r}")
    if kind == CALLBACK:
        given = [name for name, value in message_only.items() if value not in (None, False)]
        if given:
            raise PermanentError(f"{', '.join(given)} select dead messages only, not callbacks")
    return kind == CALLBACK


def summary(row: DeadCallback) -> dict[str, Any]:
    data = asdict(row)
    data["dead_at"] = output.iso(row.dead_at)
    data["replayed_at"] = output.iso(row.replayed_at)
    return data


def list_callbacks(*, tenant: str | None, limit: int, as_json: bool) -> None:
    async def read() -> list[DeadCallback]:
        async with open_store(settings().store) as sessions, sessions() as session:
            return await list_dead_callbacks(session, tenant=tenant, limit=limit)

    rows = run(read())
    if as_json:
        output.write_lines(output.json_line(summary(row)) for row in rows)
        return
    table = [
        [
            r.event_id,
            r.message_id,
            r.tenant,
            r.status,
            r.reason,
            str(r.attempts),
            output.iso(r.dead_at) or "",
            r.url,
        ]
        for r in rows
    ]
    output.print_table(list(LIST_COLUMNS), table, foot=f"{len(rows)} dead callbacks shown")


def show_callback(event_id: str, *, as_json: bool) -> None:
    async def read() -> DeadCallback:
        async with open_store(settings().store) as sessions, sessions() as session:
            return await get_dead_callback(session, event_id)

    data = summary(run(read()))
    if as_json:
        output.write_lines([output.json_line(data)])
        return
    output.write_lines(f"{key}: {value}" for key, value in data.items())


def replay_callbacks(
    event_ids: list[str], *, all_matching: bool, tenant: str | None, force: bool, dry_run: bool
) -> None:
    if bool(event_ids) == all_matching:
        raise PermanentError("name the event ids to replay, or give --all, not both")
    rows = run(_rows(settings(), event_ids, tenant=tenant, force=force))
    if dry_run:
        output.write_lines(
            f"would replay {r.event_id} ({r.status} of {r.message_id}) to {r.url}" for r in rows
        )
        return
    replayed = run(_publish(settings(), rows))
    typer.echo(f"replayed {len(replayed)} dead callbacks")
    if len(replayed) < len(rows):
        raise BrokerUnavailable(f"the broker did not take {len(rows) - len(replayed)}; run the command again")


async def _rows(
    config: Settings, event_ids: list[str], *, tenant: str | None, force: bool
) -> list[DeadCallback]:
    async with open_store(config.store) as sessions, sessions() as session:
        if not event_ids:
            return await list_dead_callbacks(session, tenant=tenant, include_replayed=force, limit=10_000)
        rows = [await get_dead_callback(session, event_id) for event_id in dict.fromkeys(event_ids)]
    before = [r.event_id for r in rows if r.replayed_at is not None]
    if before and not force:
        raise PermanentError(f"replayed before: {', '.join(before)} (--force replays them again)")
    return rows


async def _publish(config: Settings, rows: list[DeadCallback]) -> list[str]:
    connection = await connect(config.broker, name="relay dead replay --kind callback")
    replayed: list[str] = []
    try:
        publisher = await ConfirmedPublisher.open(
            connection, confirm_timeout_s=config.broker.confirm_timeout_s
        )
        await declare(publisher.channel, topology_from(config))
        for row in rows:
            job = CallbackJob(**row.job)
            try:
                await publisher.publish(
                    encode_callback(job),
                    exchange=callbacks_exchange(config.broker.prefix),
                    routing_key=CALLBACK_KEY,
                    message_id=job.event_id,
                    headers={H_CALLBACK_ATTEMPT: 0},
                    timeout_s=5.0,
                )
            except Exception as exc:  # this one stays dead; the others go on
                typer.echo(f"relay: {row.event_id}: {exc}", err=True)
                continue
            replayed.append(row.event_id)
    finally:
        await connection.close()
    async with open_store(config.store) as sessions, sessions.begin() as session:
        await mark_callbacks_replayed(session, replayed)
    return replayed

"""`relay dead replay`: the command around `ops.replay.Replayer`, which does the claiming and publishing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ops import dead_callbacks_cli, output
from ops.context import check_site, settings
from ops.dead_filters import (
    REASON_OPTION,
    SINCE_OPTION,
    SITE_OPTION,
    TENANT_OPTION,
    check_filter_site,
    make_filter,
)
from ops.replay import Replayer, ReplayResult
from ops.store_access import open_store, run
from shared.broker import ConfirmedPublisher, connect
from shared.errors import BrokerUnavailable, PermanentError, ValidationFailed
from shared.settings import Settings
from shared.store import dead_letters
from shared.store.dead_letters import PAGE_SIZE, DeadFilter
from shared.store.models import DeadLetter
from shared.topology import declare, topology_from


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRequest:
    """What to replay: the ids named, or (with none) every row the filter matches."""

    ids: list[str]
    dead_filter: DeadFilter
    to_site: str | None
    dry_run: bool
    force: bool
    confirm_timeout_s: float


def replay_command(
    message_ids: list[str] | None = typer.Argument(None, metavar="ID", help="Ids to replay."),
    all_matching: bool = typer.Option(False, "--all", help="Replay every dead letter the filters match."),
    site: str | None = SITE_OPTION,
    reason: str | None = REASON_OPTION,
    tenant: str | None = TENANT_OPTION,
    since: str | None = SINCE_OPTION,
    to_site: str | None = typer.Option(
        None, "--to-site", metavar="SITE", help="Send to this site, not the original one."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be replayed; change nothing."),
    force: bool = typer.Option(False, "--force", help="Replay ids that were replayed before."),
    confirm_timeout_s: float = typer.Option(
        5.0,
        "--confirm-timeout-s",
        metavar="SECONDS",
        min=0.1,
        help="How long to wait for the broker's confirm of each replay.",
    ),
    kind: str = dead_callbacks_cli.KIND_OPTION,
) -> None:
    """Publish dead letters again (confirmed) to their site's queue, or to --to-site; with --kind
    callback, dead callbacks to the callback workers."""
    ids = list(dict.fromkeys(message_ids or []))
    if dead_callbacks_cli.check_kind(
        kind, **{"--site": site, "--reason": reason, "--since": since, "--to-site": to_site}
    ):
        dead_callbacks_cli.replay_callbacks(
            ids, all_matching=all_matching, tenant=tenant, force=force, dry_run=dry_run
        )
        return
    if bool(ids) == all_matching:
        raise PermanentError("name the ids to replay, or give --all (with filters), not both")
    if ids and any(v is not None for v in (site, reason, tenant, since)):
        raise PermanentError("--site, --reason, --tenant and --since select rows for --all only")
    config = settings()
    check_site(config, to_site, option="--to-site")
    request = ReplayRequest(
        ids=ids,
        dead_filter=make_filter(
            site=site, reason=reason, tenant=tenant, since=since, replayed=None if force else False
        ),
        to_site=to_site,
        dry_run=dry_run,
        force=force,
        confirm_timeout_s=confirm_timeout_s,
    )
    result = run(_replay(config, request))
    if not dry_run:
        _report(result)


def _report(result: ReplayResult) -> None:
    by_site: dict[str, int] = {}
    for _, target in result.replayed:
        by_site[target] = by_site.get(target, 0) + 1
    typer.echo(
        f"replayed {len(result.replayed)} ({output.format_counts(by_site)}); "
        f"skipped {len(result.skipped)} replayed before or by someone else; "
        f"refused {len(result.refused)}; failed {len(result.failed)}"
    )
    for message_id, why in [*result.refused, *result.failed]:
        typer.echo(f"relay: {message_id}: {why}", err=True)
    if result.failed:
        raise BrokerUnavailable(
            f"the broker did not take {len(result.failed)} dead letters; "
            "they are unchanged: run the command again"
        )
    if result.refused:
        raise PermanentError(f"{len(result.refused)} dead letters cannot be replayed as they are (see above)")


async def _replay(config: Settings, request: ReplayRequest) -> ReplayResult:
    async with open_store(config.store) as sessions:
        rows: list[DeadLetter] = []
        async with sessions() as session:
            if request.ids:
                rows = await dead_letters.get_many(session, request.ids)
                _refuse_replayed(rows, force=request.force)
                if request.to_site is None:
                    _check_row_sites(config, rows)
                total = len(rows)
            else:
                await check_filter_site(session, config, request.dead_filter)
                total = await dead_letters.count(session, request.dead_filter)
        if request.dry_run:
            await _dry_run(sessions, config, request)
            return ReplayResult()
        return await _publish(sessions, config, request, rows=rows, total=total)


async def _publish(
    sessions: async_sessionmaker[AsyncSession],
    config: Settings,
    request: ReplayRequest,
    *,
    rows: list[DeadLetter],
    total: int,
) -> ReplayResult:
    output.quiet_client_logs()
    connection = await connect(config.broker, name="relay-dead-replay")
    async with connection:
        publisher = await ConfirmedPublisher.open(connection, confirm_timeout_s=request.confirm_timeout_s)
        await declare(publisher.channel, topology_from(config))
        result = ReplayResult()
        with _progress(total) as advance:
            replayer = Replayer(
                sessions=sessions,
                publisher=publisher,
                prefix=config.broker.prefix,
                to_site=request.to_site,
                known_sites=frozenset(config.sites),
                force=request.force,
                default_validity_s=config.ingress.default_validity_s,
                on_progress=advance,
            )
            if request.ids:
                for start in range(0, len(rows), PAGE_SIZE):
                    await replayer.replay(rows[start : start + PAGE_SIZE], result)
            else:
                after: str | None = None
                while True:
                    async with sessions() as session:
                        page = await dead_letters.page_ids(
                            session, request.dead_filter, after=after, limit=PAGE_SIZE
                        )
                        if not page:
                            break
                        page_rows = await dead_letters.get_many(session, page)
                    after = page[-1]
                    await replayer.replay(page_rows, result)
        return result


def _refuse_replayed(rows: list[DeadLetter], *, force: bool) -> None:
    if force:
        return
    replayed = [row for row in rows if row.replayed_at is not None]
    if replayed:
        names = ", ".join(
            f"{row.message_id} (at {output.iso(row.replayed_at)} to {row.replayed_to_site})"
            for row in replayed
        )
        raise PermanentError(f"already replayed: {names}; add --force to replay again")


def _check_row_sites(config: Settings, rows: list[DeadLetter]) -> None:
    """A job for a site no longer configured would be unroutable: say so before touching anything."""
    unknown = sorted({row.site for row in rows} - set(config.sites))
    if unknown:
        raise ValidationFailed(
            [{"field": "--to-site", "message": f"site {', '.join(unknown)} is not configured; name one"}]
        )


async def _dry_run(
    sessions: async_sessionmaker[AsyncSession], config: Settings, request: ReplayRequest
) -> None:
    def line(row: DeadLetter) -> str:
        target = request.to_site or row.site
        note = "" if target in config.sites else " (site not configured: give --to-site)"
        return f"would replay {row.message_id} to site {target}{note}"

    count = 0
    async with sessions() as session:
        if request.ids:
            rows = await dead_letters.get_many(session, request.ids)
            output.write_lines(line(row) for row in rows)
            count = len(rows)
        else:
            async for row in dead_letters.stream(session, request.dead_filter):
                output.write_lines([line(row)])
                count += 1
    output.write_lines([f"{count} would be replayed (dry run: nothing changed)"])


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr when it is a terminal; nothing otherwise."""
    bar = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output.stderr_console(),
        disable=not output.is_terminal(sys.stderr) or total < 2,
        transient=True,
    )
    task = bar.add_task("replay", total=total)
    with bar:
        yield lambda n: bar.advance(task, n)

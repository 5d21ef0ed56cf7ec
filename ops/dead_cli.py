"""`relay dead`: list, show, purge and export the dead-letter store (replay: `ops.dead_replay_cli`).

`list --json` writes one JSON object per dead letter and nothing else (no counts line), so each line can
be fed to `jq` alike; the counts by reason are on the table's foot and in `relay status --json`.
"""

from __future__ import annotations

import csv
import io
import sys

import typer

from ops import dead_callbacks_cli, output
from ops.context import settings
from ops.dead_callbacks_cli import KIND_OPTION, check_kind
from ops.dead_filters import (
    REASON_OPTION,
    REVEAL_OPTION,
    SINCE_OPTION,
    SITE_OPTION,
    TENANT_OPTION,
    check_filter_site,
    make_filter,
)
from ops.dead_replay_cli import replay_command
from ops.dead_views import LIST_COLUMNS, detail_dict, list_rows, masked_job, print_detail, row_summary
from ops.store_access import open_store, run
from shared.errors import PermanentError, ValidationFailed
from shared.settings import Settings
from shared.store import dead_letters
from shared.store.dead_letters import DeadDetail, DeadFilter
from shared.store.models import DeadLetter

dead_app = typer.Typer(help="Inspect, replay, purge and export dead letters.", no_args_is_help=True)

# --- list -----------------------------------------------------------------------------------------------


@dead_app.command("list")
def list_command(
    site: str | None = SITE_OPTION,
    reason: str | None = REASON_OPTION,
    tenant: str | None = TENANT_OPTION,
    since: str | None = SINCE_OPTION,
    limit: int = typer.Option(50, "--limit", metavar="N", help="Most rows to show, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, no foot."),
    kind: str = KIND_OPTION,
) -> None:
    """Dead letters, newest first, with the counts by reason at the foot."""
    if limit < 1:
        raise ValidationFailed([{"field": "--limit", "message": "must be 1 or more"}])
    if check_kind(kind, **{"--site": site, "--reason": reason, "--since": since}):
        dead_callbacks_cli.list_callbacks(tenant=tenant, limit=limit, as_json=as_json)
        return
    dead_filter = make_filter(site=site, reason=reason, tenant=tenant, since=since)
    rows, counts = run(_list(settings(), dead_filter, limit))
    if as_json:
        output.write_lines(output.json_line(row_summary(row)) for row in rows)
        return
    total = sum(counts.values())
    foot = f"{len(rows)} shown of {total} matching; by reason: {output.format_counts(counts)}"
    output.print_table(list(LIST_COLUMNS), list_rows(rows), foot=foot)


async def _list(
    config: Settings, dead_filter: DeadFilter, limit: int
) -> tuple[list[DeadLetter], dict[str, int]]:
    async with open_store(config.store) as sessions, sessions() as session:
        await check_filter_site(session, config, dead_filter)
        rows = await dead_letters.list_dead(session, dead_filter, limit=limit)
        counts = await dead_letters.counts_by_reason(session, dead_filter)
        return rows, counts


# --- show -----------------------------------------------------------------------------------------------


@dead_app.command("show")
def show_command(
    message_id: str = typer.Argument(..., metavar="ID", help="The message id (a callback's event id)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    reveal: bool = REVEAL_OPTION,
    kind: str = KIND_OPTION,
) -> None:
    """One dead letter: the message (masked unless --reveal), every attempt, and the reason."""
    if check_kind(kind):
        dead_callbacks_cli.show_callback(message_id, as_json=as_json)
        return
    detail = run(_show(settings(), message_id))
    data = detail_dict(detail, reveal=reveal)
    if as_json:
        output.write_lines([output.json_line(data)])
        return
    print_detail(detail, data)


async def _show(config: Settings, message_id: str) -> DeadDetail:
    async with open_store(config.store) as sessions, sessions() as session:
        return await dead_letters.get_detail(session, message_id)


dead_app.command("replay")(replay_command)


# --- purge ----------------------------------------------------------------------------------------------


@dead_app.command("purge")
def purge_command(
    older_than: str = typer.Option(
        ..., "--older-than", metavar="DURATION", help="Delete those dead longer than this, e.g. 7d."
    ),
    site: str | None = SITE_OPTION,
    reason: str | None = REASON_OPTION,
    tenant: str | None = TENANT_OPTION,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete old dead letters for good (asks first unless --yes)."""
    dead_filter = make_filter(site=site, reason=reason, tenant=tenant, older_than=older_than)
    config = settings()
    matching = run(_count(config, dead_filter))
    if matching == 0:
        typer.echo("no dead letters match; nothing deleted")
        return
    if not yes:
        if not output.is_terminal(sys.stdin):
            raise PermanentError(
                f"refusing to delete {matching} dead letters without --yes: stdin is not a terminal"
            )
        before = output.iso(dead_filter.before)
        if not typer.confirm(f"Delete {matching} dead letters dead before {before} for good?"):
            typer.echo("nothing deleted", err=True)
            raise typer.Exit(1)
    deleted = run(_purge(config, dead_filter))
    typer.echo(f"deleted {deleted} dead letters")


async def _count(config: Settings, dead_filter: DeadFilter) -> int:
    async with open_store(config.store) as sessions, sessions() as session:
        await check_filter_site(session, config, dead_filter)
        return await dead_letters.count(session, dead_filter)


async def _purge(config: Settings, dead_filter: DeadFilter) -> int:
    async with open_store(config.store) as sessions, sessions.begin() as session:
        return await dead_letters.purge(session, dead_filter)


# --- export ---------------------------------------------------------------------------------------------

EXPORT_FIELDS = (
    "id",
    "tenant",
    "site",
    "reason",
    "detail",
    "attempts",
    "dead_at",
    "replayed_at",
    "replay_count",
    "replayed_to_site",
    "job",
)


@dead_app.command("export")
def export_command(
    export_format: str = typer.Option("jsonl", "--format", metavar="jsonl|csv", help="jsonl or csv."),
    site: str | None = SITE_OPTION,
    reason: str | None = REASON_OPTION,
    tenant: str | None = TENANT_OPTION,
    since: str | None = SINCE_OPTION,
    reveal: bool = REVEAL_OPTION,
) -> None:
    """Every matching dead letter to stdout, oldest first, streamed (flat memory for any count)."""
    if export_format not in ("jsonl", "csv"):
        raise ValidationFailed([{"field": "--format", "message": f"{export_format!r} is not jsonl or csv"}])
    dead_filter = make_filter(site=site, reason=reason, tenant=tenant, since=since)
    try:
        run(_export(settings(), dead_filter, export_format=export_format, reveal=reveal))
    except BrokenPipeError:
        sys.stdout = None  # the reader left (`| head`): not an error


async def _export(config: Settings, dead_filter: DeadFilter, *, export_format: str, reveal: bool) -> None:
    out = sys.stdout
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if export_format == "csv":
        writer.writerow(EXPORT_FIELDS)
    async with open_store(config.store) as sessions, sessions() as session:
        await check_filter_site(session, config, dead_filter)
        async for row in dead_letters.stream(session, dead_filter):
            record = {**row_summary(row), "job": masked_job(row.job, reveal=reveal)}
            if export_format == "jsonl":
                buffer.write(output.json_line(record))
                buffer.write("\n")
            else:
                record["job"] = output.json_line(record["job"])
                writer.writerow(["" if record[k] is None else record[k] for k in EXPORT_FIELDS])
            if buffer.tell() >= 64 * 1024:
                out.write(buffer.getvalue())
                buffer.seek(0)
                buffer.truncate()
    out.write(buffer.getvalue())
    out.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(dead_app, name="dead")

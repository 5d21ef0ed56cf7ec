"""`relay dead`: list, show, replay, purge and export the dead-letter store.

`list --json` writes one JSON object per dead letter and nothing else (no counts line), so each line can
be fed to `jq` alike; the counts by reason are on the table's foot and in `relay status --json`.
"""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, datetime
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops import output
from ops.context import settings
from ops.replay import Replayer, ReplayResult
from ops.store_access import open_store, run
from shared.broker import ConfirmedPublisher, connect
from shared.errors import BrokerUnavailable, PermanentError, ValidationFailed
from shared.logs import mask_number, mask_text
from shared.model import DeadReason
from shared.settings import Settings
from shared.store import dead_letters
from shared.store.dead_letters import PAGE_SIZE, DeadDetail, DeadFilter
from shared.store.models import DeadLetter, utcnow
from shared.topology import declare, topology_from

dead_app = typer.Typer(help="Inspect, replay, purge and export dead letters.", no_args_is_help=True)

_SITE = typer.Option(None, "--site", help="Only dead letters of this site.")
_REASON = typer.Option(
    None, "--reason", help="Only this reason: " + ", ".join(r.value for r in DeadReason) + "."
)
_TENANT = typer.Option(None, "--tenant", help="Only this tenant's dead letters.")
_SINCE = typer.Option(None, "--since", help="Only those dead within this long, e.g. 30m, 2h, 7d.")
_REVEAL = typer.Option(False, "--reveal", help="Show phone numbers and message texts unmasked.")


def make_filter(
    *,
    site: str | None = None,
    reason: str | None = None,
    tenant: str | None = None,
    since: str | None = None,
    older_than: str | None = None,
    replayed: bool | None = None,
) -> DeadFilter:
    if reason is not None and reason not in {r.value for r in DeadReason}:
        known = ", ".join(r.value for r in DeadReason)
        raise ValidationFailed([{"field": "--reason", "message": f"{reason!r} is not one of {known}"}])
    now = utcnow()
    return DeadFilter(
        site=site,
        reason=reason,
        tenant=tenant,
        since=now - output.parse_duration(since, option="--since") if since else None,
        before=now - output.parse_duration(older_than, option="--older-than") if older_than else None,
        replayed=replayed,
    )


def _replayed_text(row: DeadLetter) -> str:
    if row.replayed_at is None:
        return "-"
    return f"{output.short_time(row.replayed_at)} -> {row.replayed_to_site} (x{row.replay_count})"


def row_summary(row: DeadLetter) -> dict[str, Any]:
    return {
        "id": row.message_id,
        "tenant": row.tenant,
        "site": row.site,
        "reason": row.reason,
        "detail": row.detail,
        "attempts": row.attempts,
        "dead_at": output.iso(row.dead_at),
        "replayed_at": output.iso(row.replayed_at),
        "replay_count": row.replay_count,
        "replayed_to_site": row.replayed_to_site,
    }


def masked_job(job: dict[str, Any], *, reveal: bool) -> dict[str, Any]:
    if reveal:
        return dict(job)
    shown = dict(job)
    if isinstance(shown.get("to"), str):
        shown["to"] = mask_number(shown["to"])
    if isinstance(shown.get("body"), str):
        shown["body"] = mask_text(shown["body"])
    return shown


# --- list -----------------------------------------------------------------------------------------------


@dead_app.command("list")
def list_command(
    site: str | None = _SITE,
    reason: str | None = _REASON,
    tenant: str | None = _TENANT,
    since: str | None = _SINCE,
    limit: int = typer.Option(50, "--limit", help="Most rows to show, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, no foot."),
) -> None:
    """Dead letters, newest first, with the counts by reason at the foot."""
    if limit < 1:
        raise ValidationFailed([{"field": "--limit", "message": "must be 1 or more"}])
    dead_filter = make_filter(site=site, reason=reason, tenant=tenant, since=since)
    rows, counts = run(_list(settings(), dead_filter, limit))
    if as_json:
        output.write_lines(output.json_line(row_summary(row)) for row in rows)
        return
    table = Table(title=None, show_lines=False)
    for name in ("id", "tenant", "site", "reason", "attempts", "dead at (UTC)", "replayed"):
        table.add_column(name, justify="right" if name == "attempts" else "left", no_wrap=name == "id")
    for row in rows:
        table.add_row(
            row.message_id,
            row.tenant,
            row.site,
            row.reason,
            str(row.attempts),
            output.short_time(row.dead_at),
            _replayed_text(row),
        )
    console = output.stdout_console()
    console.print(table)
    total = sum(counts.values())
    console.print(f"{len(rows)} shown of {total} matching; by reason: {output.format_counts(counts)}")


async def _list(
    config: Settings, dead_filter: DeadFilter, limit: int
) -> tuple[list[DeadLetter], dict[str, int]]:
    async with open_store(config.store) as sessions, sessions() as session:
        rows = await dead_letters.list_dead(session, dead_filter, limit=limit)
        counts = await dead_letters.counts_by_reason(session, dead_filter)
        return rows, counts


# --- show -----------------------------------------------------------------------------------------------


@dead_app.command("show")
def show_command(
    message_id: str = typer.Argument(..., metavar="ID", help="The message id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    reveal: bool = _REVEAL,
) -> None:
    """One dead letter: the message (masked unless --reveal), every attempt, and the reason."""
    detail = run(_show(settings(), message_id))
    data = detail_dict(detail, reveal=reveal)
    if as_json:
        output.write_lines([output.json_line(data)])
        return
    console = output.stdout_console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key in ("id", "tenant", "reason", "detail", "site", "attempts", "dead_at"):
        grid.add_row(key, str(data[key]))
    grid.add_row("replayed", _replayed_text(detail.dead))
    for key, value in data["message"].items():
        grid.add_row(key, "-" if value is None else str(value))
    console.print(grid)
    attempts = Table(title="attempts")
    for name in ("#", "site", "outcome", "platform answer", "at (UTC)", "latency ms", "worker"):
        attempts.add_column(name)
    for item in data["attempt_history"]:
        latency = item["latency_ms"]
        attempts.add_row(
            str(item["attempt"]),
            item["site"],
            item["outcome"],
            item["detail"],
            item["at"] or "-",
            "-" if latency is None else f"{latency:.0f}",
            item["worker"],
        )
    console.print(attempts)


def detail_dict(detail: DeadDetail, *, reveal: bool) -> dict[str, Any]:
    dead, message = detail.dead, detail.message
    job = masked_job(dead.job, reveal=reveal)
    if message is not None:
        shown = {
            "to": message.to_number if reveal else mask_number(message.to_number),
            "sender": message.sender,
            "body": message.body if reveal else mask_text(message.body),
            "status": message.status,
            "client_reference": message.client_reference,
            "segments": message.segments,
            "accepted_at": output.iso(message.accepted_at),
            "expires_at": output.iso(message.expires_at),
        }
    else:  # the recorder had not written the message row: the job carries the same facts
        shown = {
            "to": job.get("to"),
            "sender": job.get("sender"),
            "body": job.get("body"),
            "status": None,
            "client_reference": job.get("reference"),
            "segments": job.get("segments"),
            "accepted_at": _epoch_iso(job.get("accepted_at")),
            "expires_at": _epoch_iso(job.get("expires_at")),
        }
    return {
        **row_summary(dead),
        "message": shown,
        "attempt_history": [
            {
                "attempt": a.attempt,
                "site": a.site,
                "outcome": a.outcome,
                "detail": a.detail,
                "at": output.iso(a.at),
                "latency_ms": a.latency_ms,
                "worker": a.worker,
            }
            for a in detail.attempts
        ],
    }


def _epoch_iso(value: object) -> str | None:
    if not isinstance(value, int | float):
        return None
    return output.iso(datetime.fromtimestamp(value, UTC))


async def _show(config: Settings, message_id: str) -> DeadDetail:
    async with open_store(config.store) as sessions, sessions() as session:
        return await dead_letters.get_detail(session, message_id)


# --- replay ---------------------------------------------------------------------------------------------


@dead_app.command("replay")
def replay_command(
    message_ids: list[str] | None = typer.Argument(None, metavar="[ID]...", help="Ids to replay."),
    all_matching: bool = typer.Option(False, "--all", help="Replay every dead letter the filters match."),
    site: str | None = _SITE,
    reason: str | None = _REASON,
    tenant: str | None = _TENANT,
    since: str | None = _SINCE,
    to_site: str | None = typer.Option(None, "--to-site", help="Send to this site, not the original one."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be replayed; change nothing."),
    force: bool = typer.Option(False, "--force", help="Replay ids that were replayed before."),
    confirm_timeout_s: float = typer.Option(
        5.0, "--confirm-timeout-s", min=0.1, help="How long to wait for the broker's confirm of each replay."
    ),
) -> None:
    """Publish dead letters again (confirmed) to their site's queue, or to --to-site."""
    ids = list(dict.fromkeys(message_ids or []))
    if bool(ids) == all_matching:
        raise PermanentError("name the ids to replay, or give --all (with filters), not both")
    has_filters = any(v is not None for v in (site, reason, tenant, since))
    if ids and has_filters:
        raise PermanentError("--site, --reason, --tenant and --since select rows for --all only")
    config = settings()
    if to_site is not None and to_site not in config.sites:
        known = ", ".join(config.site_names)
        raise ValidationFailed([{"field": "--to-site", "message": f"{to_site!r} is not a site ({known})"}])
    dead_filter = make_filter(
        site=site, reason=reason, tenant=tenant, since=since, replayed=None if force else False
    )
    result = run(
        _replay(
            config,
            ids=ids,
            dead_filter=dead_filter,
            to_site=to_site,
            dry_run=dry_run,
            force=force,
            confirm_timeout_s=confirm_timeout_s,
        )
    )
    if dry_run:
        return
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


async def _replay(
    config: Settings,
    *,
    ids: list[str],
    dead_filter: DeadFilter,
    to_site: str | None,
    dry_run: bool,
    force: bool,
    confirm_timeout_s: float,
) -> ReplayResult:
    async with open_store(config.store) as sessions:
        if ids:
            async with sessions() as session:
                rows = await dead_letters.get_many(session, ids)
            _refuse_replayed(rows, force=force)
            total = len(rows)
        else:
            async with sessions() as session:
                total = await dead_letters.count(session, dead_filter)
        _check_sites(config, dead_filter, rows if ids else None, to_site=to_site)
        if dry_run:
            await _dry_run(sessions, config, ids, dead_filter, to_site)
            return ReplayResult()

        output.quiet_broker_client_logs()
        connection = await connect(config.broker, name="relay-dead-replay")
        async with connection:
            publisher = await ConfirmedPublisher.open(connection, confirm_timeout_s=confirm_timeout_s)
            await declare(publisher.channel, topology_from(config))
            result = ReplayResult()
            with _progress(total) as advance:
                replayer = Replayer(
                    sessions=sessions,
                    publisher=publisher,
                    prefix=config.broker.prefix,
                    to_site=to_site,
                    known_sites=frozenset(config.sites),
                    force=force,
                    default_validity_s=config.ingress.default_validity_s,
                    on_progress=advance,
                )
                if ids:
                    for start in range(0, len(rows), PAGE_SIZE):
                        await replayer.replay(rows[start : start + PAGE_SIZE], result)
                else:
                    after: str | None = None
                    while True:
                        async with sessions() as session:
                            page = await dead_letters.page_ids(
                                session, dead_filter, after=after, limit=PAGE_SIZE
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


def _check_sites(
    config: Settings, dead_filter: DeadFilter, rows: list[DeadLetter] | None, *, to_site: str | None
) -> None:
    """A job for a site no longer configured would be unroutable: say so before touching anything."""
    if to_site is not None or rows is None:
        return
    unknown = sorted({row.site for row in rows} - set(config.sites))
    if unknown:
        raise ValidationFailed(
            [{"field": "--to-site", "message": f"site {', '.join(unknown)} is not configured; name one"}]
        )


async def _dry_run(
    sessions: Any, config: Settings, ids: list[str], dead_filter: DeadFilter, to_site: str | None
) -> None:
    def line(row: DeadLetter) -> str:
        target = to_site or row.site
        note = "" if target in config.sites else " (site not configured: give --to-site)"
        return f"would replay {row.message_id} to site {target}{note}"

    count = 0
    async with sessions() as session:
        if ids:
            rows = await dead_letters.get_many(session, ids)
            output.write_lines(line(row) for row in rows)
            count = len(rows)
        else:
            async for row in dead_letters.stream(session, dead_filter):
                output.write_lines([line(row)])
                count += 1
    output.write_lines([f"{count} would be replayed (dry run: nothing changed)"])


class _progress:
    """A Rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, total: int) -> None:
        self._bar = Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=output.stderr_console(),
            disable=not output.is_terminal(sys.stderr) or total < 2,
            transient=True,
        )
        self._task = self._bar.add_task("replay", total=total)

    def __enter__(self) -> Any:
        self._bar.start()
        return lambda n: self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


# --- purge ----------------------------------------------------------------------------------------------


@dead_app.command("purge")
def purge_command(
    older_than: str = typer.Option(..., "--older-than", help="Delete those dead longer than this, e.g. 7d."),
    site: str | None = _SITE,
    reason: str | None = _REASON,
    tenant: str | None = _TENANT,
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
    export_format: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    site: str | None = _SITE,
    reason: str | None = _REASON,
    tenant: str | None = _TENANT,
    since: str | None = _SINCE,
    reveal: bool = _REVEAL,
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

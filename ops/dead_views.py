"""What `relay dead` shows of a dead letter: summaries, masked jobs, the detail of one, and their tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from ops import output
from shared.logs import mask_number, mask_text
from shared.store.dead_letters import DeadDetail
from shared.store.models import DeadLetter

LIST_COLUMNS = ("id", "tenant", "site", "reason", "attempts", "dead at (UTC)", "replayed")
ATTEMPT_COLUMNS = ("#", "site", "outcome", "platform answer", "at (UTC)", "latency ms", "worker")
REPORT_COLUMNS = ("#", "site", "status", "platform status", "error", "received (UTC)")


def replayed_text(row: DeadLetter) -> str:
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
    shown = dict(job)
    if reveal:
        return shown
    if isinstance(shown.get("to"), str):
        shown["to"] = mask_number(shown["to"])
    if isinstance(shown.get("body"), str):
        shown["body"] = mask_text(shown["body"])
    return shown


def list_rows(rows: list[DeadLetter]) -> list[list[str]]:
    """The cells of `relay dead list`, one row per dead letter, in `LIST_COLUMNS` order."""
    return [
        [
            row.message_id,
            row.tenant,
            row.site,
            row.reason,
            str(row.attempts),
            output.short_time(row.dead_at),
            replayed_text(row),
        ]
        for row in rows
    ]


def detail_dict(detail: DeadDetail, *, reveal: bool) -> dict[str, Any]:
    return {
        **row_summary(detail.dead),
        "message": _message(detail, reveal=reveal),
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
        "reports": [
            {
                "attempt": r.attempt,
                "site": r.site,
                "status": r.state,
                "platform_status": r.platform_status,
                "error_code": r.error_code,
                "received_at": output.iso(r.received_at),
            }
            for r in detail.reports
        ],
    }


def _message(detail: DeadDetail, *, reveal: bool) -> dict[str, Any]:
    message = detail.message
    if message is not None:
        return {
            "to": message.to_number if reveal else mask_number(message.to_number),
            "sender": message.sender,
            "body": message.body if reveal else mask_text(message.body),
            "status": message.status,
            "client_reference": message.client_reference,
            "segments": message.segments,
            "accepted_at": output.iso(message.accepted_at),
            "expires_at": output.iso(message.expires_at),
        }
    # The recorder had not written the message row: the job carries the same facts.
    job = masked_job(detail.dead.job, reveal=reveal)
    return {
        "to": job.get("to"),
        "sender": job.get("sender"),
        "body": job.get("body"),
        "status": None,
        "client_reference": job.get("reference"),
        "segments": job.get("segments"),
        "accepted_at": _epoch_iso(job.get("accepted_at")),
        "expires_at": _epoch_iso(job.get("expires_at")),
    }


def _epoch_iso(value: object) -> str | None:
    if not isinstance(value, int | float):
        return None
    return output.iso(datetime.fromtimestamp(value, UTC))


def detail_fields(detail: DeadDetail, data: dict[str, Any]) -> list[list[str]]:
    """`relay dead show`'s key/value rows: the dead letter, then its message."""
    fields = [
        [key, str(data[key])] for key in ("id", "tenant", "reason", "detail", "site", "attempts", "dead_at")
    ]
    fields.append(["replayed", replayed_text(detail.dead)])
    fields.extend([key, "-" if value is None else str(value)] for key, value in data["message"].items())
    return fields


def attempt_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for item in data["attempt_history"]:
        latency = item["latency_ms"]
        rows.append(
            [
                str(item["attempt"]),
                item["site"],
                item["outcome"],
                item["detail"],
                item["at"] or "-",
                "-" if latency is None else f"{latency:.0f}",
                item["worker"],
            ]
        )
    return rows


def print_detail(detail: DeadDetail, data: dict[str, Any]) -> None:
    """The dead letter's fields and its attempts: Rich tables on a terminal, plain lines otherwise."""
    fields = detail_fields(detail, data)
    attempts = attempt_rows(data)
    reports = [[str(v) for v in item.values()] for item in data["reports"]]
    if not output.is_terminal_out():
        lines = output.plain_table(["field", "value"], fields, header=False)
        lines += ["", "attempts:", *output.plain_table(list(ATTEMPT_COLUMNS), attempts)]
        if reports:
            lines += ["", "delivery reports:", *output.plain_table(list(REPORT_COLUMNS), reports)]
        output.write_lines(lines)
        return
    console = output.stdout_console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in fields:
        grid.add_row(key, value)
    console.print(grid)
    output.print_table(list(ATTEMPT_COLUMNS), attempts, title="attempts")
    if reports:
        output.print_table(list(REPORT_COLUMNS), reports, title="delivery reports")

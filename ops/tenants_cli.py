"""`relay tenants`: each tenant's limits (rate, burst, open submits, queued messages) and current use,
and its default callback URL.

Running ingress processes read the limits again every `guard.limits_refresh_s` (at most 5 s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ingress.callback_check import CallbackCheck
from ingress.tenant_guard import Policy, policy_of
from ops.context import settings
from ops.store_access import open_store, run
from shared.errors import ValidationFailed
from shared.store.callbacks import set_default_url
from shared.store.tenant_limits import (
    USE_WINDOW_S,
    Limits,
    all_limits,
    known_tenants,
    recent_by_tenant,
    set_limits,
    unsettled_by_tenant,
)

tenants_app = typer.Typer(help="Tenants' limits and their current use.", no_args_is_help=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantRow:
    tenant: str
    own: Limits | None
    policy: Policy
    per_second_now: float
    queued: int

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "per_second": self.policy.per_second,
            "burst": self.policy.burst,
            "max_open": self.policy.max_open,
            "max_queued": self.policy.max_queued,
            "default": self.own is None,
            "use": {"per_second": round(self.per_second_now, 3), "queued": self.queued},
        }


@tenants_app.command("limit")
def tenants_limit(
    tenant: str = typer.Argument(..., help="The tenant, as its API keys name it."),
    per_second: float | None = typer.Option(
        None, "--per-second", min=0, help="Messages per second on average (0: no limit)."
    ),
    burst: int | None = typer.Option(
        None, "--burst", min=1, help="Messages at once above the average (default: one second's worth)."
    ),
    max_open: int | None = typer.Option(
        None, "--max-open", min=0, help="Submits open at once, per ingress process (0: no cap)."
    ),
    max_queued: int | None = typer.Option(
        None, "--max-queued", min=0, help="Messages accepted and not yet settled (0: no cap)."
    ),
) -> None:
    """Set a tenant's limits; options left out keep what the tenant had (or the default)."""
    if per_second is None and burst is None and max_open is None and max_queued is None:
        raise typer.BadParameter("give at least one of --per-second, --burst, --max-open, --max-queued")

    async def change() -> Limits:
        async with open_store(settings().store) as sessions, sessions.begin() as session:
            return await set_limits(
                session,
                tenant=tenant,
                per_second=per_second,
                burst=burst,
                max_open=max_open,
                max_queued=max_queued,
            )

    limits = run(change())
    policy = policy_of(limits, settings().guard)
    typer.echo(
        f"tenant {limits.tenant}: {_rate(policy)}, open {_cap(policy.max_open)}, "
        f"queued {_cap(policy.max_queued)} (running ingress processes take it within "
        f"{settings().guard.limits_refresh_s:g} s)"
    )


@tenants_app.command("callback")
def tenants_callback(
    tenant: str = typer.Argument(..., help="The tenant, as its API keys name it."),
    url: str | None = typer.Option(
        None, "--url", help="Default callback URL of the tenant's messages that name none."
    ),
    clear: bool = typer.Option(False, "--clear", help="No default callback URL any more."),
) -> None:
    """Set (or clear) a tenant's default callback URL; checked as a submit checks callback_url."""
    if (url is None) == clear:
        raise typer.BadParameter("give --url URL or --clear")
    if url is not None:
        why = run(CallbackCheck(settings().callbacks).errors(url))
        if why:
            raise ValidationFailed([{"field": "--url", "message": why[0]["message"]}])

    async def change() -> None:
        async with open_store(settings().store) as sessions, sessions.begin() as session:
            await set_default_url(session, tenant=tenant, url=url)

    run(change())
    typer.echo(f"tenant {tenant}: default callback URL {url or 'none'}")


@tenants_app.command("list")
def tenants_list(as_json: bool = typer.Option(False, "--json", help="One JSON object per tenant.")) -> None:
    """Every tenant with a key or a limit: its limits in force and its use (last minute, queued)."""
    rows = run(_rows())
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_json()))
        return
    table = Table(title="Tenants")
    for column in ("tenant", "rate", "open", "queued cap", f"use (last {USE_WINDOW_S} s)", "queued"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.tenant + ("" if row.own is not None else " (default)"),
            _rate(row.policy),
            _cap(row.policy.max_open),
            _cap(row.policy.max_queued),
            f"{row.per_second_now:.1f}/s",
            str(row.queued),
        )
    Console(width=200).print(table)


async def _rows() -> list[TenantRow]:
    guard = settings().guard
    async with open_store(settings().store) as sessions, sessions() as session:
        limits = await all_limits(session)
        recent = await recent_by_tenant(session)
        queued = await unsettled_by_tenant(session)
        tenants = await known_tenants(session) | set(recent)
    return [
        TenantRow(
            tenant=tenant,
            own=limits.get(tenant),
            policy=policy_of(limits.get(tenant), guard),
            per_second_now=recent.get(tenant, 0) / USE_WINDOW_S,
            queued=queued.get(tenant, 0),
        )
        for tenant in sorted(tenants)
    ]


def _rate(policy: Policy) -> str:
    if policy.per_second <= 0:
        return "no rate limit"
    return f"{policy.per_second:g}/s burst {policy.burst}"


def _cap(value: int) -> str:
    return str(value) if value else "none"


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants")

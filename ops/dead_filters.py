"""What selects the dead letters a `relay dead` command acts on: the filter options and their checks."""

from __future__ import annotations

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from ops import output
from ops.context import check_site
from shared.errors import ValidationFailed
from shared.model import DeadReason
from shared.settings import Settings
from shared.store import dead_letters
from shared.store.dead_letters import DeadFilter
from shared.store.models import utcnow

SITE_OPTION = typer.Option(None, "--site", metavar="SITE", help="Only dead letters of this site.")
REASON_OPTION = typer.Option(
    None,
    "--reason",
    metavar="REASON",
    help="Only this reason: " + ", ".join(r.value for r in DeadReason) + ".",
)
TENANT_OPTION = typer.Option(None, "--tenant", metavar="TENANT", help="Only this tenant's dead letters.")
SINCE_OPTION = typer.Option(
    None, "--since", metavar="DURATION", help="Only those dead within this long, e.g. 30m, 2h, 7d."
)
REVEAL_OPTION = typer.Option(False, "--reveal", help="Show phone numbers and message texts unmasked.")


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


async def check_filter_site(session: AsyncSession, config: Settings, dead_filter: DeadFilter) -> None:
    """`--site` names a configured site, or one the store still holds dead letters of (a site taken out of
    the configuration since): a typo must not look like an empty dead-letter store."""
    site = dead_filter.site
    if site is None or site in config.sites:
        return
    check_site(config, site, known={site} if await dead_letters.has_site(session, site) else set())

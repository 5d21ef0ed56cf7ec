"""The status changes a fold applies: what each messages row held before, and what it became.

`shared.store.recording.fold` is the one place a message's status changes; it reads each row it folds
into (locked on PostgreSQL, in id order, as the update takes them), so the changes it reports are the
ones it made. On SQLite, where the rows are read before the write lock is taken, a second recorder may
have raised a status in between: the read is then lower than the truth, never higher, so a change may be
reported twice (the callback's event id is the same both times) but never missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import Job, Status
from shared.store.callbacks import default_urls
from shared.store.messages import MESSAGES


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    """One message's status as a fold changed it."""

    message_id: str
    old: str
    new: str
    site: str
    at: float  # when the report that changed it was made (epoch seconds)
    error_code: str | None = None  # an attempt's outcome or a dead letter's reason
    error_detail: str | None = None  # the platform's own answer: for operators, not tenants
    tenant: str = ""
    reference: str | None = None
    # The message's callback URL, else its tenant's default; None: nobody is told.
    callback_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """What a messages row held when the fold read it."""

    tenant: str
    status: str
    reference: str | None = None
    callback_url: str | None = None

    @classmethod
    def of_job(cls, job: Job) -> Stored:
        return cls(
            tenant=job.tenant,
            status=Status.ACCEPTED.value,
            reference=job.reference,
            callback_url=job.callback_url,
        )


async def read_stored(session: AsyncSession, ids: Iterable[str]) -> dict[str, Stored]:
    """The rows of `ids` that exist, locked for this transaction where the store can lock rows."""
    query = (
        select(
            MESSAGES.c.id,
            MESSAGES.c.tenant,
            MESSAGES.c.status,
            MESSAGES.c.client_reference,
            MESSAGES.c.callback_url,
        )
        .where(MESSAGES.c.id.in_(list(ids)))
        .order_by(MESSAGES.c.id)
        .with_for_update()
    )
    return {
        row.id: Stored(
            tenant=row.tenant,
            status=row.status,
            reference=row.client_reference,
            callback_url=row.callback_url,
        )
        for row in (await session.execute(query)).all()
    }


def filled(stored: Stored, job: Job) -> Stored:
    """A placeholder's view once a job filled it in; its status stays."""
    return replace(stored, tenant=job.tenant, reference=job.reference, callback_url=job.callback_url)


# A tenant's default callback URL, as read (None: it has none), by store and tenant: a query per fold
# batch was a measurable part of the recorder's work. A change (`relay tenants callback`) reaches the
# callbacks of the changes folded within this many seconds.
DEFAULT_URLS_TTL_S = 5.0
_DEFAULTS_MAX = 10_000
_defaults: dict[tuple[str, str], tuple[float, str | None]] = {}


async def _default_urls(session: AsyncSession, tenants: set[str]) -> dict[str, str]:
    store = str(session.get_bind().engine.url)
    now = time.monotonic()
    found: dict[str, str] = {}
    unknown = set()
    for tenant in tenants:
        cached = _defaults.get((store, tenant))
        if cached is None or now >= cached[0]:
            unknown.add(tenant)
        elif cached[1] is not None:
            found[tenant] = cached[1]
    if unknown:
        read = await default_urls(session, unknown)
        if len(_defaults) + len(unknown) > _DEFAULTS_MAX:
            _defaults.clear()
        for tenant in unknown:
            _defaults[(store, tenant)] = (now + DEFAULT_URLS_TTL_S, read.get(tenant))
        found.update(read)
    return found


async def with_default_urls(session: AsyncSession, changes: list[StatusChange]) -> list[StatusChange]:
    """`changes` with the tenant's default URL where the message names none."""
    tenants = {c.tenant for c in changes if c.callback_url is None and c.tenant}
    defaults: dict[str, Any] = await _default_urls(session, tenants) if tenants else {}
    if not defaults:
        return changes
    return [replace(c, callback_url=defaults.get(c.tenant)) if c.callback_url is None else c for c in changes]


class Pending(Protocol):
    """What a fold means to do to one row's status (`shared.store.recording._Change`)."""

    rank: int
    status: str | None
    status_at: float
    status_site: str
    error: tuple[str, str] | None


def applied_changes(
    pending: Iterable[tuple[str, Pending]], stored: dict[str, Stored], rank_of: Callable[[str], int]
) -> list[StatusChange]:
    """The status changes an update makes: those that rise above what the row held."""
    applied = []
    for message_id, change in pending:
        before = stored[message_id]
        if change.status is None or change.rank <= rank_of(before.status):
            continue
        code, detail = change.error if change.error is not None else (None, None)
        applied.append(
            StatusChange(
                message_id=message_id,
                old=before.status,
                new=change.status,
                site=change.status_site,
                at=change.status_at,
                error_code=code,
                error_detail=detail,
                tenant=before.tenant,
                reference=before.reference,
                callback_url=before.callback_url,
            )
        )
    return applied

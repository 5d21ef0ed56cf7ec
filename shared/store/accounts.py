"""Tenants' account SIDs: "AC" and 32 hex digits, the user name a Twilio client authenticates with (its
password is one of the tenant's API keys). Unlike a key, a SID is no secret and never changes."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.store.models import TenantAccount, utcnow

ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")


def new_account_sid() -> str:
    return "AC" + secrets.token_hex(16)


async def account_sid_of(session: AsyncSession, tenant: str) -> str | None:
    return await session.scalar(select(TenantAccount.account_sid).where(TenantAccount.tenant == tenant))


async def ensure_account_sid(sessions: async_sessionmaker[AsyncSession], *, tenant: str) -> str:
    """The tenant's account SID, made the first time it is asked for."""
    async with sessions() as session:
        known = await account_sid_of(session, tenant)
    if known is not None:
        return known
    try:
        async with sessions.begin() as session:
            session.add(TenantAccount(tenant=tenant, account_sid=new_account_sid(), created_at=utcnow()))
    except IntegrityError:
        pass  # made at the same moment by another caller: theirs stands
    async with sessions() as session:
        made = await account_sid_of(session, tenant)
    assert made is not None
    return made

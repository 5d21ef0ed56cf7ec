"""API keys of the launcher's demo tenant and the drill's own tenant, kept in a local file between runs.

A key is made with `relay keys create --tenant NAME` as a child process (so it reaches the same store as
the deployment) and reused while the ingress still accepts it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from ops.supervisor import run_once
from shared.errors import TransientError

KEY_CREATE_TIMEOUT_S = 60.0


class KeyUnavailable(TransientError):
    """No API key could be made or checked."""


async def create_key(relay: list[str], *, tenant: str) -> str:
    """A new key of `tenant`: the last line `relay keys create` prints."""
    code, output = await run_once(
        [*relay, "keys", "create", "--tenant", tenant], timeout_s=KEY_CREATE_TIMEOUT_S
    )
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if code != 0 or not lines:
        raise KeyUnavailable(
            f"`relay keys create --tenant {tenant}` failed ({code}): {output.strip()[-500:]}"
        )
    return lines[-1]


async def key_accepted(client: httpx.AsyncClient, *, api_url: str, key: str) -> bool:
    """Whether the ingress knows the key: asking for a message that does not exist answers 404, not 401."""
    response = await client.get(
        f"{api_url}/v1/messages/{uuid.uuid4().hex}", headers={"Authorization": f"Bearer {key}"}
    )
    return response.status_code not in (401, 403)


async def obtain_key(
    relay: list[str], *, tenant: str, key_file: Path, api_url: str, client: httpx.AsyncClient
) -> str:
    """The key stored in `key_file` if the ingress still accepts it, else a new one (stored there)."""
    stored = _read_key(key_file)
    if stored and await key_accepted(client, api_url=api_url, key=stored):
        return stored
    key = await create_key(relay, tenant=tenant)
    _write_key(key_file, key)
    return key


def _read_key(key_file: Path) -> str | None:
    return key_file.read_text().strip() if key_file.is_file() else None


def _write_key(key_file: Path, key: str) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)

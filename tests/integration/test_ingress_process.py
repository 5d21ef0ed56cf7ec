"""`relay keys` and `relay ingress` as real child processes: keys, masked logs, and a SIGKILL right
after a burst of accepted submits (some spooled) that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from ops.context import settings
from ops.service_commands import register
from shared.errors import NotFound
from shared.topology import site_queue
from tests.helpers import RELAY, SITES_ENV, free_port, spawned, wait_for_port
from tests.ingress_helpers import TcpProxy, drain, sms
from tests.integration.test_ingress_durability import via_port, wait_until

pytestmark = pytest.mark.integration


def relay_env(tmp_path: Path, *, broker_url: str, prefix: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "RELAY_BROKER__URL": broker_url,
        "RELAY_BROKER__PREFIX": prefix,
        "RELAY_BROKER__CONFIRM_TIMEOUT_S": "0.5",
        "RELAY_STORE__URL": f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}",
        "RELAY_INGRESS__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RELAY_INGRESS__PORT": str(port),
        "RELAY_ROUTING__POLICY": "primary",
        "RELAY_LOG__LEVEL": "DEBUG",
        **SITES_ENV,
        **extra,
    }


def relay(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAY, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def cli(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Result:
    """The ingress's commands in this process (a child `relay` costs seconds of imports)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Logging set up inside CliRunner would write to its captured stream, closed afterwards.
    monkeypatch.setattr("shared.logs.configure_logging", lambda **_: None)
    settings.cache_clear()
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    try:
        return CliRunner().invoke(app, args)
    finally:
        settings.cache_clear()


def test_keys_create_list_revoke_and_a_served_submit_logs_masked(
    tmp_path, store_url, broker_url, prefix, broker_cleanup, monkeypatch
):
    port = free_port()
    env = relay_env(tmp_path, broker_url=broker_url, prefix=prefix, port=port)
    created = cli(["keys", "create", "--tenant", "acme"], env, monkeypatch)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("rk_") and len(key) > 30
    second = cli(["keys", "create", "--tenant", "acme"], env, monkeypatch).stdout.strip().splitlines()[-1]

    listed = cli(["keys", "list", "--json"], env, monkeypatch)
    keys = json.loads(listed.stdout)
    assert [(k["tenant"], k["prefix"], k["revoked"]) for k in keys] == [
        ("acme", key[:11], False),
        ("acme", second[:11], False),
    ]
    assert key not in listed.stdout
    table = cli(["keys", "list"], env, monkeypatch)
    assert "acme" in table.stdout and key[:11] in table.stdout
    assert cli(["keys", "revoke", second[:11]], env, monkeypatch).exit_code == 0
    missing = cli(["keys", "revoke", "rk_nosuchkey"], env, monkeypatch)
    assert isinstance(missing.exception, NotFound)
    assert json.loads(cli(["keys", "list", "--json"], env, monkeypatch).stdout)[1]["revoked"] is True

    log = tmp_path / "ingress.log"
    with spawned([*RELAY, "ingress"], env=env, log=log) as ingress:
        wait_for_port(port, timeout_s=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            body = "Secret code 424242 for you"
            response = client.post(
                "/v1/messages",
                json=sms(to="+31687654321", body=body),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 202
            revoked = client.post("/v1/messages", json=sms(), headers={"Authorization": f"Bearer {second}"})
            assert revoked.status_code == 401
        ingress.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal for its default meaning.
        assert ingress.wait(timeout=15) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert f"http://127.0.0.1:{port}" in text
    assert '"ingress stopped"' in text
    accepted = [json.loads(line) for line in text.splitlines() if '"message accepted"' in line]
    assert len(accepted) == 1
    assert accepted[0]["id"] == response.json()["id"] or "*" in accepted[0]["id"]
    assert accepted[0]["to"] == "+316******21" and accepted[0]["body"] == f"<{len(body)} chars>"
    assert "+31687654321" not in text and "424242" not in text and "Secret" not in text


async def test_sigkill_after_a_burst_loses_nothing(tmp_path, store_url, broker_url, prefix, broker_cleanup):
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    port = free_port()
    env = relay_env(tmp_path, broker_url=via_port(broker_url, proxy.port), prefix=prefix, port=port)
    key = relay(["keys", "create", "--tenant", "acme"], env).stdout.strip().splitlines()[-1]
    accepted: list[str] = []
    log = tmp_path / "ingress.log"
    try:
        with spawned([*RELAY, "ingress"], env=env, log=log) as first:
            await asyncio.to_thread(wait_for_port, port, timeout_s=30)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=10
            ) as client:

                async def burst(start: int, count: int) -> None:
                    async def one(n: int) -> None:
                        response = await client.post("/v1/messages", json=sms(body=f"m{n}"))
                        assert response.status_code == 202, response.text
                        accepted.append(response.json()["id"])

                    await asyncio.gather(*(one(n) for n in range(start, start + count)))

                await burst(0, 100)  # confirmed by the broker
                await proxy.cut()
                await burst(100, 100)  # spooled
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        assert len(accepted) == 200
        await proxy.restore()
        with spawned([*RELAY, "ingress"], env=env, log=log):
            got = await drain(broker_url, site_queue(prefix, "a"), expect=200, timeout_s=30)
    finally:
        await proxy.close()
    ids = [item.job.id for item in got]
    assert set(ids) == set(accepted), f"lost {len(set(accepted) - set(ids))}"
    places = [
        json.loads(line).get("durable_in") for line in log.read_text().splitlines() if "durable_in" in line
    ]
    assert places.count("queued") >= 50 and places.count("spooled") >= 50, "the burst was meant to spool some"
    print(f"accepted 200, queued {len(ids)} ({len(ids) - len(set(ids))} duplicates by id)")


async def test_several_processes_each_claim_a_spool_file(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    from ingress.spool import SpoolLock, spool_file

    port = free_port()
    env = relay_env(tmp_path, broker_url=broker_url, prefix=prefix, port=port, RELAY_INGRESS__PROCESSES="2")
    async with api_key(env) as key, asyncio.timeout(60):
        with spawned([*RELAY, "ingress"], env=env, log=tmp_path / "ingress.log"):
            await asyncio.to_thread(wait_for_port, port, timeout_s=30)
            base = Path(env["RELAY_INGRESS__SPOOL_PATH"])
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=10
            ) as client:
                await wait_until(lambda: spool_file(base, 1).exists() and base.exists(), 20)
                responses = await asyncio.gather(
                    *(client.post("/v1/messages", json=sms()) for _ in range(40))
                )
                assert {r.status_code for r in responses} == {202}
            # Both files are held, by two live processes.
            assert SpoolLock.try_acquire(base) is None
            assert SpoolLock.try_acquire(spool_file(base, 1)) is None
            got = await drain(broker_url, site_queue(prefix, "a"), expect=40, timeout_s=10)
    assert sorted(item.job.id for item in got) == sorted(r.json()["id"] for r in responses)


@contextlib.asynccontextmanager
async def api_key(env: dict[str, str]):
    from shared.settings import StoreSettings
    from shared.store.api_keys import create_key
    from shared.store.engine import make_engine, make_sessionmaker

    engine = make_engine(StoreSettings(url=env["RELAY_STORE__URL"]))
    try:
        key, _ = await create_key(make_sessionmaker(engine), tenant="acme")
        yield key
    finally:
        await engine.dispose()

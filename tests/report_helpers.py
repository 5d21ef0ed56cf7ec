"""Helpers of the delivery-report tests: a relay in this process (the ingress on a real port, since
platforms call it back, and one worker per site) with report secrets and a public URL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from ingress.app import create_app
from ingress.service import Ingress, running
from shared.reports import REPORTS_PATH, report_urls
from shared.settings import Settings
from shared.store.api_keys import create_key
from tests.helpers import free_port, wait_for_port
from workers.metrics import WorkerMetrics
from workers.platforms import make_platform
from workers.runtime import Worker

START_TIMEOUT_S = 10.0
SECRET = "test-report-secret-0123456789"


@dataclass
class ReportingRelay:
    url: str
    ingress: Ingress
    settings: Settings
    key: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def report_url(self, site: str, *, secret: str = SECRET, platform: str | None = None) -> str:
        kind = platform or self.settings.sites[site].platform.value
        return f"{self.url}{REPORTS_PATH}/{site}/{secret}/{kind}"

    async def submit(self, client: httpx.AsyncClient, **fields: Any) -> str:
        body = {"to": "+31612345678", "from": "MyBank", "body": "Your code is 123456", **fields}
        answer = await client.post(f"{self.url}/v1/messages", json=body, headers=self.auth())
        assert answer.status_code == 202, answer.text
        message_id: str = answer.json()["id"]
        return message_id

    async def message(self, client: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
        answer = await client.get(f"{self.url}/v1/messages/{message_id}", headers=self.auth())
        found: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
        return found

    async def wait_for(
        self,
        client: httpx.AsyncClient,
        message_id: str,
        done: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 20.0,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        view = await self.message(client, message_id)
        while not done(view) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            view = await self.message(client, message_id)
        return view


def with_reports(
    settings_factory: Callable[..., Settings], sites: dict[str, dict[str, Any]], **sections: Any
) -> Settings:
    """Settings of a relay whose sites report to an ingress on a free port (`sections` as overrides)."""
    port = free_port()
    return settings_factory(
        ingress={"port": port, "public_url": f"http://127.0.0.1:{port}"},
        sites={name: {"report_secret": SECRET, **site} for name, site in sites.items()},
        routing={"policy": "primary", "primary": sorted(sites)[0]},
        **sections,
    )


@contextlib.asynccontextmanager
async def reporting_relay(settings: Settings, *, workers: bool = True) -> AsyncIterator[ReportingRelay]:
    async with running(settings) as ingress:
        await asyncio.wait_for(ingress.link.ready.wait(), START_TIMEOUT_S)
        key, _ = await create_key(ingress.sessions, tenant="bank-a")
        config = uvicorn.Config(
            create_app(settings, ingress=ingress),
            host="127.0.0.1",
            port=settings.ingress.port,
            lifespan="off",
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        running_workers: list[tuple[Worker, asyncio.Task[None]]] = []
        try:
            await asyncio.to_thread(wait_for_port, settings.ingress.port, timeout_s=START_TIMEOUT_S)
            for site in settings.site_names if workers else []:
                platform = make_platform(settings.sites[site], reports=report_urls(settings, site))
                worker = await Worker.start(
                    settings=settings, site=site, platform=platform, metrics=WorkerMetrics(site=site)
                )
                running_workers.append((worker, asyncio.create_task(worker.run())))
            yield ReportingRelay(
                url=f"http://127.0.0.1:{settings.ingress.port}", ingress=ingress, settings=settings, key=key
            )
        finally:
            for worker, task in running_workers:
                worker.request_stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 15)
            server.should_exit = True
            await serving

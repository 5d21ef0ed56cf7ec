"""What one-message-per-request adapters (Kannel, Jasmin) share: a request per job, sent concurrently,
and one classification of each answer."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

from shared.http1 import Http1Client, HttpAnswer, TransportFailure
from shared.model import Job, Outcome
from shared.reports import ReportUrls
from workers.platforms.base import Result, attempt_of
from workers.platforms.http_client import HttpRequester, classify_transport_error


class PerMessagePlatform(ABC):
    """Sends each job as a request of its own; a subclass forms the request and classifies the answer."""

    max_batch = 1

    def __init__(
        self,
        *,
        url: str,
        username: str,
        password: str,
        timeout_s: float,
        concurrency: int = 64,
        client: HttpRequester | None = None,
        reports: ReportUrls | None = None,
    ) -> None:
        self._reports = reports  # None: ask the platform for no delivery reports
        self._http = client or Http1Client(url=url, timeout_s=timeout_s, size=concurrency)
        self._target = Http1Client.target_of(url)
        self._username = username
        self._password = password
        self.problem: str | None = None  # from the last answer that said the site is misconfigured

    async def send(self, jobs: Sequence[Job], *, attempts: Sequence[int] = ()) -> list[Result]:
        return list(
            await asyncio.gather(
                *(self._send_one(job, attempt_of(attempts, i)) for i, job in enumerate(jobs))
            )
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send_one(self, job: Job, attempt: int) -> Result:
        try:
            answer = await self._request(job, attempt)
        except TransportFailure as exc:
            return classify_transport_error(exc)
        result = self._classify(answer)
        if result.problem is not None:
            self.problem = result.problem
        elif result.outcome is Outcome.ACCEPTED:
            self.problem = None
        return result

    @abstractmethod
    async def _request(self, job: Job, attempt: int) -> HttpAnswer:
        """Send the request of one job through `self._http`; raises `TransportFailure` only."""

    @abstractmethod
    def _classify(self, answer: HttpAnswer) -> Result:
        """The outcome of one job by the platform's answer."""

"""A site's queue that refuses every publish does not hold its messages: the real broker nacks them (a
max-length 0 policy with reject-publish on site b's quorum queue), the spool keeps them, and after
`ingress.detour_after_s` they go to site a's queue, marked. Every accepted message is queued, once
unmarked at most."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from ingress.metrics import DETOURED
from shared.envelope import H_POSSIBLE_DUPLICATE
from shared.topology import site_queue
from tests.helpers import missing_service
from tests.ingress_helpers import api_for, drain, sms
from tests.integration.test_ingress_durability import wait_until

pytestmark = pytest.mark.integration

DETOUR_AFTER_S = 1.0
MESSAGES = 40


def ctl(*args: str) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        missing_service("rabbitmqctl is needed to set a policy on the test's queue")
    subprocess.run([str(rabbitmqctl), "-q", *args], capture_output=True, timeout=60, check=True)


@pytest.fixture
def refusing_site_b(prefix: str) -> Iterator[None]:
    name = f"{prefix}-refuse"
    pattern = "^" + site_queue(prefix, "b").replace(".", r"\.") + "$"
    policy = {"max-length": 0, "overflow": "reject-publish"}
    ctl("set_policy", "--apply-to", "queues", name, pattern, json.dumps(policy))
    try:
        yield
    finally:
        ctl("clear_policy", name)


async def test_messages_a_site_queue_keeps_refusing_are_queued_at_the_other_site(
    broker_cleanup, refusing_site_b, settings_factory, store_url, broker_url, prefix
):
    settings = settings_factory(ingress={"detour_after_s": DETOUR_AFTER_S})
    detoured_before = DETOURED.labels("b", "a")._value.get()
    accepted: list[str] = []
    async with api_for(settings) as api:
        for n in range(MESSAGES):
            response = await api.submit(sms(body=f"detour {n}"))
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        spool = api.ingress.spool
        assert spool is not None
        await wait_until(lambda: spool.backlog == 0 and spool.held == 0, 30)
    at_a = await drain(broker_url, site_queue(prefix, "a"), expect=MESSAGES, timeout_s=5)
    at_b = await drain(broker_url, site_queue(prefix, "b"), expect=MESSAGES, timeout_s=2)
    # Quorum queues let one message past a limit of 0 before they refuse: site b holds at most that one.
    assert len(at_b) <= 1
    every = Counter(item.job.id for item in at_a + at_b)
    unmarked = Counter(item.job.id for item in at_a + at_b if not item.headers.get(H_POSSIBLE_DUPLICATE))
    assert set(every) == set(accepted), "every accepted message is queued at one site or the other"
    assert all(count <= 1 for count in unmarked.values()), "a second copy is always marked"
    detoured = DETOURED.labels("b", "a")._value.get() - detoured_before
    assert detoured >= MESSAGES // 2 - 1, f"only {detoured} messages went from b to a"

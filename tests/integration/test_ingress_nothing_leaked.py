"""What a tenant sees of a failed delivery, through a real ingress and a real worker: a status and a
fixed text per kind of failure, never the platform's address or answer; operators see those in
`relay dead show`."""

from __future__ import annotations

import asyncio
import json

import pytest

from ingress.public_texts import REFUSED
from tests.guard_helpers import cli, new_key, served_ingress
from tests.helpers import RELAY, free_port, spawned
from tests.ingress_helpers import sms

pytestmark = pytest.mark.integration


async def test_tenants_see_a_fixed_text_and_operators_the_platforms_answer(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    closed_a, closed_b = free_port(), free_port()  # platforms that refuse every connection
    sites = {
        "RELAY_SITES__A__URL": f"http://127.0.0.1:{closed_a}/internal/submit",
        "RELAY_SITES__B__URL": f"http://127.0.0.1:{closed_b}/internal/submit",
        "RELAY_WORKER__MAX_ATTEMPTS": "2",
        "RELAY_WORKER__ATTEMPTS_PER_SITE": "1",
        "RELAY_WORKER__RETRY_DELAYS_S": "[1]",
        "RELAY_WORKER__METRICS_PORT": "0",
    }
    async with served_ingress(tmp_path, broker_url=broker_url, prefix=prefix, **sites) as ingress:
        key = await new_key(ingress.env, "acme")
        with spawned([*RELAY, "worker", "--site", "a"], env=ingress.env, log=tmp_path / "worker.log"):
            async with ingress.client(key) as client:
                message_id = (await client.post("/v1/messages", json=sms())).json()["id"]
                view: dict = {}
                for _ in range(300):
                    view = (await client.get(f"/v1/messages/{message_id}")).json()
                    if view.get("status") == "dead" and len(view["history"]) == 2:
                        break
                    await asyncio.sleep(0.2)
        assert view["status"] == "dead", view
        assert [h["detail"] for h in view["history"]] == [REFUSED, REFUSED]
        shown = json.dumps(view)
        for secret in (str(closed_a), "127.0.0.1", "internal", "ConnectionRefused", "not sent"):
            assert secret not in shown

        operator = json.loads((await cli(["dead", "show", message_id, "--json"], ingress.env)).stdout)
        details = " ".join(a["detail"] for a in operator["attempt_history"])
        assert details.count("ConnectionRefusedError") == 2

"""Callbacks through a whole relay (`relay up`: ingress with its recorder, a worker per site, a callback
worker, simulated platforms) against a customer endpoint that checks every signature and counts."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.drill_traffic import drill_number
from ops.harness.deployment import Deployment, relay_up
from ops.harness.processes import RELAY, free_port_run
from tests.integration.callback_endpoint import Endpoint, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_ATTEMPTS = 3
CALLBACKS = {
    "retry_delays_s": [1],
    "max_attempts": MAX_ATTEMPTS,
    "timeout_s": 2.0,
    "connect_timeout_s": 1.0,
    "per_host_concurrency": 2,
    "per_host_waiting": 2,
}
# Two tries per message at most, the breaker never opening: a failing platform makes `dead`, a down
# one with a short validity `expired`.
WORKER = {"max_attempts": 2, "breaker_failure_threshold": 1000, "retry_delays_s": [1]}


def _relay(up: Deployment, *args: str) -> str:
    done = subprocess.run(
        [*RELAY, "--config", str(up.config), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _submit(client: httpx.Client, up: Deployment, n: int, **extra: Any) -> list[str]:
    ids = []
    for i in range(n):
        body = {
            "to": drill_number(i),
            "from": "TEST",
            "body": f"callback {i}",
            "reference": f"ref-{i}",
            **extra,
        }
        answer = client.post(f"{up.api_url}/v1/messages", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _statuses(client: httpx.Client, up: Deployment, ids: list[str]) -> dict[str, str]:
    return {i: client.get(f"{up.api_url}/v1/messages/{i}").json()["status"] for i in ids}


def _delivery_time_s(client: httpx.Client, up: Deployment, n: int, **extra: Any) -> float:
    started = time.monotonic()
    ids = _submit(client, up, n, **extra)
    pending = set(ids)
    while pending:
        assert time.monotonic() - started < 60, "deliveries did not finish"
        pending = {i for i, s in _statuses(client, up, sorted(pending)).items() if s != "sent"}
        time.sleep(0.05)
    return time.monotonic() - started


def _flaky(path: str, seen: int) -> int:
    return {"/ok": 200, "/gone": 410, "/fail": 500}.get(path, 500 if seen < 2 else 204)


def test_callbacks_signed_retried_stopped_dead_and_replayed_and_never_slowing_deliveries(
    tmp_path: Path, broker_url: str, prefix: str
) -> None:
    # Without delivery reports each taken message makes one event (`sent`), so tries count per message;
    # `delivered` callbacks from reports are checked in test_launcher_up.
    # Metrics ports for the two workers, then the callback worker's.
    metrics_base_port = free_port_run(3)
    with relay_up(
        tmp_path,
        broker_url=broker_url,
        prefix=prefix,
        worker=WORKER,
        callbacks=CALLBACKS,
        reports=False,
        metrics_base_port=metrics_base_port,
    ) as up:
        secret = _relay(up, "keys", "secret", "--tenant", "demo").strip().splitlines()[-1]
        with (
            serving(Endpoint(secrets=[secret], behaviour=_flaky)) as customer,
            serving(Endpoint(secrets=[secret], behaviour=lambda p, s: 200, delay_s=8.0)) as slow,
            httpx.Client(headers={"Authorization": f"Bearer {up.key}"}, timeout=10) as client,
        ):
            # Refused at submit: an address callbacks may not reach (link-local, not allowed).
            refused = client.post(
                f"{up.api_url}/v1/messages",
                json={"to": drill_number(1), "from": "T", "body": "x", "callback_url": "http://169.254.1.1/"},
            )
            assert refused.status_code == 422 and "link-local" in refused.text
            ftp = client.post(
                f"{up.api_url}/v1/messages",
                json={"to": drill_number(1), "from": "T", "body": "x", "callback_url": "ftp://example.com/"},
            )
            assert ftp.status_code == 422 and "callback_url" in ftp.text

            # Deliveries alone, then with a slow endpoint taking every callback: measured the same way.
            alone_s = _delivery_time_s(client, up, 40)
            with_slow_s = _delivery_time_s(client, up, 40, callback_url=slow.url + "/slow")
            # While the slow host holds its own callbacks, another endpoint's arrive at once.
            ok_ids = _submit(client, up, 5, callback_url=customer.url + "/ok")
            _until(lambda: len(customer.by_message("/ok")) == 5, 10, "callbacks beside a slow endpoint")
            assert slow.count("/slow") >= 1, "the slow endpoint was called during the deliveries"
            # Each slow callback takes the worker 2 s (its timeout); had deliveries waited on callbacks,
            # 40 of them, 2 at a time, would take 40 s.
            print(f"40 deliveries: {alone_s:.2f} s alone, {with_slow_s:.2f} s with a slow callback endpoint")
            assert with_slow_s < 2 * alone_s + 3.0, (alone_s, with_slow_s)

            flaky_ids = _submit(client, up, 3, callback_url=customer.url + "/flaky")
            gone_ids = _submit(client, up, 3, callback_url=customer.url + "/gone")
            fail_ids = _submit(client, up, 2, callback_url=customer.url + "/fail")
            _until(
                lambda: (
                    len(customer.by_message("/flaky")) == 3
                    and all(len(r) >= 3 for r in customer.by_message("/flaky").values())
                ),
                30,
                "flaky callbacks to succeed",
            )
            _until(lambda: customer.count("/fail") >= 2 * MAX_ATTEMPTS, 30, "failing callbacks to die")

            # Rejected by the platforms; dead after two failed tries; expired while both are down.
            for sim in up.simulators.values():
                sim.set_fault("reject")
            rejected_ids = _submit(client, up, 2, callback_url=customer.url + "/ok")
            _until(lambda: set(_statuses(client, up, rejected_ids).values()) == {"rejected"}, 30, "rejected")
            for sim in up.simulators.values():
                sim.set_fault("error")
            dead_ids = _submit(client, up, 2, callback_url=customer.url + "/ok")
            _until(lambda: set(_statuses(client, up, dead_ids).values()) == {"dead"}, 30, "dead")
            for sim in up.simulators.values():
                sim.set_fault("down")
            expired_ids = _submit(client, up, 2, callback_url=customer.url + "/ok", validity_s=1)
            _until(lambda: set(_statuses(client, up, expired_ids).values()) == {"expired"}, 30, "expired")
            for sim in up.simulators.values():
                sim.set_fault("none")

            def final(ids: list[str], status: str) -> bool:
                got = customer.by_message("/ok")
                return all(status in {r.body["status"] for r in got.get(i, [])} for i in ids)

            _until(lambda: final(rejected_ids, "rejected") and final(dead_ids, "dead"), 20, "callbacks")
            _until(lambda: final(expired_ids, "expired"), 20, "expired callbacks")

            # Every callback was signed with the tenant's secret, and carries the fields promised.
            assert all(r.verified for r in customer.received + slow.received)
            per_message = customer.by_message("/ok")
            for message_id in ok_ids:
                (only,) = per_message[message_id]
                assert only.body["status"] == "sent" and only.body["error"] is None
                assert only.body["site"] in ("a", "b") and only.body["reference"].startswith("ref-")
            rejected_body = next(
                r.body for r in per_message[rejected_ids[0]] if r.body["status"] == "rejected"
            )
            assert rejected_body["error"]["code"] == "rejected" and rejected_body["error"]["text"]
            # 500s were retried until a 2xx: one event, three tries, nothing after.
            for message_id in flaky_ids:
                tries = customer.by_message("/flaky")[message_id]
                assert len(tries) == 3 and len({r.body["event_id"] for r in tries}) == 1
            # A 410 stops them: one try each.
            assert all(len(r) == 1 for r in customer.by_message("/gone").values())
            assert sorted(customer.by_message("/gone")) == sorted(gone_ids)

            # The always failing ones are dead callbacks, listed and replayable.
            _until(lambda: len(_dead_callbacks(up, fail_ids)) == 2, 20, "dead callbacks in the store")
            dead = _dead_callbacks(up, fail_ids)
            assert {d["message_id"] for d in dead} == set(fail_ids)
            assert all(d["attempts"] == MAX_ATTEMPTS and d["reason"] == "attempts-exhausted" for d in dead)
            assert _relay(up, "dead", "show", "--kind", "callback", dead[0]["event_id"])
            before = customer.count("/fail")
            _relay(up, "dead", "replay", "--kind", "callback", *[d["event_id"] for d in dead])
            _until(lambda: customer.count("/fail") >= before + 2 * MAX_ATTEMPTS, 30, "replayed callbacks")
            _until(lambda: len(_dead_callbacks(up, fail_ids)) == 2, 20, "replayed callbacks dead again")

            # The callback worker counted what it did: every try by its result, each request timed.
            # (The slow endpoint's callbacks may still be going on: lower bounds where they count.)
            metrics = _callback_metrics(metrics_base_port + 2)
            sent = {r: v for (name, r), v in metrics.items() if name == "relay_callbacks_sent_total"}
            # /ok, /flaky's last tries, the rejected, dead and expired statuses.
            assert sent["2xx"] >= 5 + 3 + 6 and sent["gone"] == 3, metrics
            assert sent["retry"] >= 3 * 2 + 2 * 2 * (MAX_ATTEMPTS - 1), metrics  # /flaky; /fail twice
            assert sent["dead"] >= 2 * 2 and sent["refused-address"] == 0, metrics
            # A try is timed before it is counted, and the scrape reads the counter first.
            timed = metrics[("relay_callbacks_request_duration_seconds_count", "")]
            assert timed >= sum(sent.values()), metrics


def _callback_metrics(port: int) -> dict[tuple[str, str], float]:
    """The callback worker's counters and histogram counts, by name and result."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, sample.labels.get("result", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("relay_callbacks_") and "le" not in sample.labels
    }


def _dead_callbacks(up: Deployment, message_ids: list[str]) -> list[dict[str, Any]]:
    """Dead callbacks not replayed since, of these messages."""
    out = _relay(up, "dead", "list", "--kind", "callback", "--json")
    found = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [d for d in found if d["message_id"] in message_ids]

"""Property-based tests generated from the ingress's own OpenAPI document (schemathesis), against a real
`relay ingress` process: whatever a client sends within or around the documented shapes, no answer is
a 5xx, and every refusal is RFC 9457 problem+json. Bounded for CI: a fixed number of examples per
operation and no per-example deadline on this shared machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from shared.settings import StoreSettings
from shared.store.migrate import upgrade
from tests.guard_helpers import _cli, guard_env
from tests.helpers import RELAY, free_port, spawned, wait_for_port

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40
PROBLEM = "application/problem+json"
# Answers that are documented bodies of their own rather than problems.
NOT_PROBLEMS = {("GET", "/readyz")}
# The drop-in APIs answer refusals in their own gateway's format (CM's, Kannel's, Twilio's), so a client's
# existing error handling keeps working, and the delivery-report endpoint answers platforms in plain text
# (Jasmin stops resending only on `ACK/Jasmin`); for them only the absence of a 5xx is checked here.
DROP_IN_PREFIXES = ("/v1.0/", "/cgi-bin/", "/2010-04-01/", "/v1/reports/")


@pytest.fixture
def relay_api(tmp_path, broker_url: str, prefix: str, broker_cleanup) -> Iterator[tuple[str, str]]:
    """A served ingress's URL and an API key of it."""
    port = free_port()
    env = guard_env(tmp_path, broker_url=broker_url, prefix=prefix, port=port)
    upgrade(StoreSettings(url=env["RELAY_STORE__URL"]))
    key = _cli(["keys", "create", "--tenant", "acme"], env).stdout.strip().splitlines()[-1]
    with spawned([*RELAY, "ingress"], env=env, log=tmp_path / "ingress.log"):
        wait_for_port(port, timeout_s=60)
        yield f"http://127.0.0.1:{port}", key


def problem_json_for_every_refusal(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    own_format = (case.method.upper(), case.path) in NOT_PROBLEMS or case.path.startswith(DROP_IN_PREFIXES)
    if response.status_code >= 400 and not own_format:
        media_type = response.headers.get("content-type", [""])[0]
        assert media_type == PROBLEM, f"{response.status_code} answered as {media_type!r}"
        body = response.json()
        assert body["status"] == response.status_code and body["type"] and body["title"]


CHECKS = [not_a_server_error, schemathesis.check(problem_json_for_every_refusal)]


def run_operation(operation, mode: GenerationMode, url: str, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def calls(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(base_url=url, headers=headers, timeout=30, checks=CHECKS)

    calls()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_no_5xx_and_a_problem_for_every_refusal(relay_api, mode: GenerationMode) -> None:
    url, key = relay_api
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    tried = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = {"Authorization": f"Bearer {key}"} if operation.path.startswith("/v1/") else {}
        try:
            run_operation(operation, mode, url, headers)
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid one
            continue
        tried.add(operation.label)
    assert {"POST /v1/messages", "POST /v1/messages/batch"} <= tried
    if mode is GenerationMode.POSITIVE:
        assert "GET /v1/messages/{message_id}" in tried

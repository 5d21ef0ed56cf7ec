"""What `relay up` starts and prints, and how the drill reads the API's answers; no processes."""

from __future__ import annotations

import json
import shlex

import phonenumbers
import pytest

from ops.drill import ambiguous_in
from ops.drill_traffic import drill_number, message_id_from, submit_body
from ops.launcher import api_url, curl_example, local_simulators, plan_children
from shared.errors import ConfigError
from shared.settings import load_settings

RELAY = ["relay"]


def test_default_settings_start_two_simulators_on_the_documented_ports() -> None:
    sims = local_simulators(load_settings())
    assert [(s.site, s.port, s.admin_port) for s in sims] == [("a", 9001, 9101), ("b", 9002, 9102)]


def test_only_local_sites_with_an_admin_url_get_a_simulator() -> None:
    config = load_settings(
        sites={
            "a": {"url": "http://127.0.0.1:7001/v1.0/message", "sim_admin_url": "http://127.0.0.1:7101"},
            "b": {
                "url": "https://platform.example.com/v1.0/message",
                "sim_admin_url": "http://127.0.0.1:7102",
            },
            "c": {"url": "http://localhost:7003/v1.0/message"},
        }
    )
    assert [s.site for s in local_simulators(config)] == ["a"]


def test_a_local_simulator_without_ports_is_a_configuration_error() -> None:
    config = load_settings(
        sites={"a": {"url": "http://127.0.0.1/v1.0/message", "sim_admin_url": "http://127.0.0.1:7101"}}
    )
    with pytest.raises(ConfigError, match="explicit ports"):
        local_simulators(config)


def test_plan_starts_simulators_first_then_ingress_then_workers_with_metrics_ports() -> None:
    specs = plan_children(
        load_settings(), relay=RELAY, with_simulators=True, workers_per_site=2, metrics_base_port=9200
    )
    assert [s.name for s in specs] == [
        "platform-sim-a",
        "platform-sim-b",
        "ingress",
        "worker-a-1",
        "worker-a-2",
        "worker-b-1",
        "worker-b-2",
    ]
    by_name = {s.name: s.args for s in specs}
    assert by_name["platform-sim-b"] == (
        "relay", "platform-sim", "--host", "127.0.0.1", "--port", "9002", "--admin-port", "9102"
    )  # fmt: skip
    assert by_name["worker-a-2"] == ("relay", "worker", "--site", "a", "--metrics-port", "9201")
    assert by_name["worker-b-2"][-1] == "9203"


def test_no_sims_and_no_metrics() -> None:
    specs = plan_children(
        load_settings(), relay=RELAY, with_simulators=False, workers_per_site=1, metrics_base_port=0
    )
    assert [s.name for s in specs] == ["ingress", "worker-a-1", "worker-b-1"]
    assert specs[1].args[-1] == "0"


def test_api_url_reaches_a_wildcard_listener_through_loopback() -> None:
    assert api_url(load_settings(ingress={"host": "0.0.0.0", "port": 8181})) == "http://127.0.0.1:8181"


def test_curl_example_is_a_valid_command_with_a_valid_body() -> None:
    words = shlex.split(curl_example("http://127.0.0.1:8080", "rk_secret"))
    assert words[:4] == ["curl", "-sS", "-X", "POST"]
    assert "Authorization: Bearer rk_secret" in words
    body = json.loads(words[words.index("-d") + 1])
    assert set(body) == {"to", "from", "body"}


def test_drill_numbers_are_valid_and_distinct() -> None:
    numbers = [drill_number(i) for i in (0, 1, 2, 9_999_999)]
    assert len(set(numbers)) == 4
    for number in numbers:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number))


def test_submit_body_carries_the_reference_only_when_given() -> None:
    assert "reference" not in submit_body(to="+31612345678", sender="X", text="t")
    assert submit_body(to="+31612345678", sender="X", text="t", reference="r")["reference"] == "r"


def test_message_id_is_read_from_the_submit_answer() -> None:
    assert message_id_from({"id": "abc", "status": "accepted"}) == "abc"
    assert message_id_from({"status": "accepted"}) is None
    assert message_id_from(["abc"]) is None


def test_ambiguous_attempts_come_from_the_history_else_the_counter() -> None:
    history = [{"outcome": "ambiguous"}, {"outcome": "accepted"}, {"outcome": "ambiguous"}]
    assert ambiguous_in({"history": history, "possible_duplicates": 9}) == 2
    assert ambiguous_in({"possible_duplicates": 1}) == 1
    assert ambiguous_in({}) == 0

"""What `relay up` starts and leaves in its run directory, how the drill finds the deployment, and how it
reads the API's answers; no processes."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
import pytest

from ops.context import settings
from ops.drill import load_target, parse_simulators
from ops.drill_faults import simulator_fault
from ops.drill_status import ambiguous_in
from ops.drill_traffic import drill_number, message_id_from, submit_body
from ops.launcher import api_url, curl_example, plan_children, prepare
from ops.launcher_sites import DEFAULT_ADMIN_PORTS, simulated_sites, with_default_sites
from ops.run_dir import RunFile, read_run_file, remove_run_file, write_run_file
from shared.config_file import use_config_file
from shared.errors import ConfigError
from shared.settings import PlatformKind, Settings, load_settings

RELAY = ["relay"]


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's settings as on a fresh machine: no configuration file, no RELAY_ variable."""
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    use_config_file(None)
    settings.cache_clear()
    yield
    use_config_file(None)
    settings.cache_clear()


def two_sites() -> Settings:
    return load_settings(
        sites={
            "a": {"url": "http://127.0.0.1:7001/v1.0/message"},
            "b": {"url": "http://127.0.0.1:7002/v1.0/message"},
        }
    )


def test_without_sites_relay_up_runs_the_default_two_on_the_documented_ports(
    no_config: None, tmp_path: Path
) -> None:
    deployment = prepare(tmp_path / "run", with_simulators=True)
    assert deployment.config.site_names == ["a", "b"]
    assert deployment.config.sites["b"].url == "http://127.0.0.1:9002/v1.0/message"
    assert [(s.site, s.port, s.admin_port) for s in deployment.simulators] == [
        ("a", 9001, 9101),
        ("b", 9002, 9102),
    ]
    # Its children read the sites from the configuration it wrote in the run directory.
    assert deployment.config_file == (tmp_path / "run" / "relay.toml").resolve()


def test_default_sites_are_added_to_a_configuration_that_names_none(tmp_path: Path) -> None:
    own = tmp_path / "own.toml"
    own.write_text('[broker]\nprefix = "mine"\n[worker]\nconcurrency = 4')
    generated = with_default_sites(own, tmp_path / "run")
    use_config_file(generated)
    try:
        config = load_settings()
    finally:
        use_config_file(None)
    assert config.broker.prefix == "mine" and config.worker.concurrency == 4
    assert config.site_names == ["a", "b"]


def test_configured_sites_are_kept_and_their_simulators_get_free_admin_ports(
    no_config: None, tmp_path: Path
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[sites.a]\nurl = "http://127.0.0.1:7001/v1.0/message"\n')
    use_config_file(config)
    deployment = prepare(tmp_path / "run", with_simulators=True)
    assert deployment.config_file == config.resolve()
    [sim] = deployment.simulators
    assert (sim.site, sim.port) == ("a", 7001)
    assert sim.admin_port not in (0, 7001, *DEFAULT_ADMIN_PORTS.values())


def test_every_simulated_site_gets_a_report_secret_of_its_run(no_config: None, tmp_path: Path) -> None:
    first = prepare(tmp_path / "run", with_simulators=True)
    secrets = {site: first.config.sites[site].report_secret for site in ("a", "b")}
    assert all(s is not None and len(s) >= 16 for s in secrets.values()), secrets
    assert len(set(secrets.values())) == 2 and first.env == ()  # in the file it wrote, each its own
    settings.cache_clear()
    use_config_file(None)
    again = prepare(tmp_path / "run", with_simulators=True)
    assert again.config.sites["a"].report_secret not in (None, secrets["a"])  # made for each run
    settings.cache_clear()
    use_config_file(None)
    quiet = prepare(tmp_path / "quiet", with_simulators=True, reports=False)
    assert [quiet.config.sites[site].report_secret for site in ("a", "b")] == [None, None]


def test_configured_simulated_sites_get_their_secret_in_the_childrens_environment(
    no_config: None, tmp_path: Path
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        '[sites.a]\nurl = "http://127.0.0.1:7001/v1.0/message"\n'
        '[sites.b]\nurl = "http://127.0.0.1:7002/v1.0/message"\nreport_secret = "b-secret-of-its-own"\n'
        '[sites.c]\nurl = "https://platform.example.com/v1.0/message"\n'
    )
    use_config_file(config)
    deployment = prepare(tmp_path / "run", with_simulators=True)
    assert deployment.config_file == config.resolve()  # the owner's file, untouched
    # Only a, simulated and without a secret; b keeps its own, c's platform is not simulated.
    [(name, secret)] = deployment.env
    assert name == "RELAY_SITES__a__REPORT_SECRET" and len(secret) >= 16
    specs = plan_children(
        deployment.config, relay=RELAY, simulators=deployment.simulators, workers_per_site=1,
        metrics_base_port=0, env=deployment.env,
    )  # fmt: skip
    for spec in specs:
        relay_process = not spec.name.startswith("platform-sim")
        assert ((name, secret) in spec.env) is relay_process, spec
    settings.cache_clear()
    assert prepare(tmp_path / "run", with_simulators=True, reports=False).env == ()


def test_only_local_http_json_sites_get_a_simulator() -> None:
    config = load_settings(
        sites={
            "a": {"url": "http://127.0.0.1:7001/v1.0/message"},
            "b": {"url": "https://platform.example.com/v1.0/message"},
            "c": {"url": "http://localhost:7003/cgi-bin/sendsms", "platform": "kannel"},
        }
    )
    assert [s.site for s in simulated_sites(config, admin_ports={"a": 7101})] == ["a"]


def test_a_local_smpp_site_gets_a_simulated_smsc_that_takes_its_credentials() -> None:
    smpp = {"platform": "smpp", "port": 2775, "system_id": "relay", "password": "pw"}
    config = load_settings(
        sites={
            "a": {"url": "http://127.0.0.1:7001/v1.0/message"},
            "b": {**smpp, "host": "localhost"},
            "c": {**smpp, "host": "smsc.example.net"},
        }
    )
    sims = simulated_sites(config, admin_ports={"a": 7101, "b": 7102})
    assert [s.site for s in sims] == ["a", "b"]
    specs = plan_children(config, relay=RELAY, simulators=sims, workers_per_site=1, metrics_base_port=0)
    by_name = {s.name: s.args for s in specs}
    assert by_name["smsc-sim-b"] == (
        "relay", "smsc-sim", "--host", "localhost", "--port", "2775", "--admin-port", "7102",
        "--system-id", "relay", "--password", "pw",
    )  # fmt: skip
    assert by_name["platform-sim-a"][1] == "platform-sim"
    assert [s.name for s in specs][:3] == ["platform-sim-a", "smsc-sim-b", "ingress"]


def test_the_drills_faults_at_a_simulated_smsc() -> None:
    assert [simulator_fault(f, PlatformKind.SMPP) for f in ("down", "blackhole", "error")] == [
        "down",
        "no-resp",
        "bind-refused",
    ]
    assert [simulator_fault(f, PlatformKind.HTTP_JSON) for f in ("down", "blackhole", "error")] == [
        "down",
        "blackhole",
        "error",
    ]


def test_a_local_platform_without_a_port_is_a_configuration_error() -> None:
    config = load_settings(sites={"a": {"url": "http://127.0.0.1/v1.0/message"}})
    with pytest.raises(ConfigError, match="explicit port"):
        simulated_sites(config, admin_ports={})


def test_plan_starts_simulators_first_then_ingress_then_workers_with_metrics_ports() -> None:
    config = two_sites()
    specs = plan_children(
        config,
        relay=RELAY,
        simulators=simulated_sites(config, admin_ports={"a": 7101, "b": 7102}),
        workers_per_site=2,
        metrics_base_port=9200,
    )
    assert [s.name for s in specs] == [
        "platform-sim-a",
        "platform-sim-b",
        "ingress",
        "worker-a-1",
        "worker-a-2",
        "worker-b-1",
        "worker-b-2",
        "callbacks-1",
    ]
    by_name = {s.name: s.args for s in specs}
    # Everything relay up runs is on this machine: its callbacks may go to loopback.
    assert dict(next(s for s in specs if s.name == "callbacks-1").env)["RELAY_CALLBACKS__ALLOW_NETWORKS"]
    assert by_name["platform-sim-b"] == (
        "relay", "platform-sim", "--host", "127.0.0.1", "--port", "7002", "--admin-port", "7102"
    )  # fmt: skip
    assert by_name["worker-a-2"] == ("relay", "worker", "--site", "a", "--metrics-port", "9201")
    assert by_name["worker-b-2"][-1] == "9203"
    assert by_name["callbacks-1"][-2:] == ("--metrics-port", "9204")  # after the workers'


def test_no_sims_and_no_metrics() -> None:
    specs = plan_children(two_sites(), relay=RELAY, simulators=[], workers_per_site=1, metrics_base_port=0)
    assert [s.name for s in specs] == ["ingress", "worker-a-1", "worker-b-1", "callbacks-1"]
    assert specs[1].args[-1] == "0" and specs[3].args[-1] == "0"


def test_the_run_file_round_trips_and_goes_away(tmp_path: Path) -> None:
    assert read_run_file(tmp_path) is None
    run = RunFile(config=tmp_path / "relay.toml", simulators={"a": "http://127.0.0.1:9101"})
    write_run_file(tmp_path, run)
    assert read_run_file(tmp_path) == run
    remove_run_file(tmp_path)
    assert read_run_file(tmp_path) is None


def test_the_drill_reads_the_deployment_from_the_run_file_unless_told_otherwise(
    no_config: None, tmp_path: Path
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[ingress]\nport = 8181\n[sites.a]\nurl = "http://127.0.0.1:7001/v1.0/message"\n')
    write_run_file(tmp_path, RunFile(config=config, simulators={"a": "http://127.0.0.1:7101"}))
    target = load_target(tmp_path, [])
    assert target.config.ingress.port == 8181
    assert target.simulators == {"a": "http://127.0.0.1:7101"}
    assert target.relay[-2:] == ["--config", str(config.resolve())]
    named = load_target(tmp_path, ["a=http://127.0.0.1:7999"])
    assert named.simulators == {"a": "http://127.0.0.1:7999"}
    with pytest.raises(ConfigError, match="not configured: z"):
        load_target(tmp_path, ["z=http://127.0.0.1:7999"])


def test_simulator_options_name_a_site_and_an_admin_url() -> None:
    assert parse_simulators(["a=http://sim-a:9101", "b=http://sim-b:9101"]) == {
        "a": "http://sim-a:9101",
        "b": "http://sim-b:9101",
    }
    for bad in ("a", "=http://x:1", "a=sim-a:9101"):
        with pytest.raises(ConfigError, match="SITE=http"):
            parse_simulators([bad])


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


def test_attempts_that_may_have_left_a_copy_come_from_the_history_else_the_counter() -> None:
    history = [
        {"outcome": "ambiguous"},
        {"outcome": "accepted"},
        {"outcome": "ambiguous"},
        {"outcome": "accepted", "possible_duplicate": True},
        {"outcome": "accepted", "possible_duplicate": False},
    ]
    assert ambiguous_in({"history": history, "possible_duplicates": 9}) == 3
    assert ambiguous_in({"possible_duplicates": 1}) == 1
    assert ambiguous_in({}) == 0

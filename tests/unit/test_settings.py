from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import PlatformKind, RoutingPolicy, load_settings, use_config_file

CONFIG = """
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/"
prefix = "relay"
[store]
url = "sqlite+aiosqlite:///relay.db"
[ingress]
host = "127.0.0.1"
port = 8080
[routing]
policy = "primary"
primary = "b"
[sites.a]
platform = "http-json"
url = "http://127.0.0.1:9001/v1.0/message"
[sites.b]
platform = "kannel"
url = "http://127.0.0.1:14013/cgi-bin/sendsms"
username = "tester"
password = "foobar"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG)
    for var in list(__import__("os").environ):
        if var.startswith("RELAY_"):
            monkeypatch.delenv(var)
    use_config_file(path)
    yield path
    use_config_file(None)


def test_toml_file_is_read(config_file: Path) -> None:
    settings = load_settings()
    assert settings.sites["b"].platform is PlatformKind.KANNEL
    assert settings.sites["b"].username == "tester"
    assert settings.routing.policy is RoutingPolicy.PRIMARY
    assert settings.site_names == ["a", "b"]


def test_environment_overrides_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_BROKER__PREFIX", "other")
    monkeypatch.setenv("RELAY_SITES__A__TIMEOUT_S", "1.5")
    monkeypatch.setenv("RELAY_INGRESS__PORT", "9999")
    settings = load_settings()
    assert settings.broker.prefix == "other"
    assert settings.sites["a"].timeout_s == 1.5
    assert settings.sites["a"].url == "http://127.0.0.1:9001/v1.0/message"
    assert settings.ingress.port == 9999


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[sites.c]\nplatform = "ussd"\nurl = "http://x"\n', "sites.c.platform"),
        ("[ingress]\nport = 70000\n", "ingress.port"),
        ('[broker]\nprefxi = "x"\n', "broker.prefxi: unknown key"),
        ('[sites.c]\nurl = "ftp://x"\n', "sites.c.url"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, snippet: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(snippet)
    use_config_file(path)
    try:
        with pytest.raises(ConfigError) as caught:
            load_settings()
    finally:
        use_config_file(None)
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)


def test_routing_must_name_known_sites() -> None:
    with pytest.raises(ConfigError, match="unknown site 'z'"):
        load_settings(routing={"policy": "primary", "primary": "z"})


def test_cli_reports_bad_config_in_one_line_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[ingress]\nport = "eighty"\n')
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "--config", str(path), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "ingress.port" in lines[0]
    assert "Traceback" not in result.stderr
